"""transformers + PyTorch training-step time on the same checkpoint, shapes and threads
as bench_train: B random sequences of T tokens, loss on every token, forward +
backward + AdamW; frozen blocks get requires_grad=False (attention and MLP weights).

    python bench/hf_train_step.py DIR --batch B --seq T --steps N [--freeze a-b] [--threads K]
    python bench/hf_train_step.py --preset llama-3-8b --layers 4 --device cuda --batch 4 --seq 1024 \
        --steps 3 [--compare-freeze 1-2]

On CUDA the model is what the HF Trainer's --bf16 runs: fp32 weights (the masters), fp32
AdamW moments (fused kernel), forward and backward under bf16 autocast, SDPA attention;
random weights at a preset's shape (the config fields of models/presets.cpp), so no
checkpoint is needed. With --compare-freeze it prints one JSON object per run (full,
then frozen); steps are timed with CUDA synchronisation, median over --steps after one
warm-up step.
"""
import argparse
import json
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

# The fields of models/presets.cpp (the config.json of each model on the Hub).
PRESETS = {
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                       max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
                       tie_word_embeddings=False),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=False),
    "gemma-2b": dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=256000,
                     max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0,
                     hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    "phi-3-mini": dict(model_type="phi3", hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=2047,
                       tie_word_embeddings=False),
}


def build_model(a):
    if a.preset:
        fields = dict(PRESETS[a.preset])
        if a.layers:
            fields["num_hidden_layers"] = a.layers
        cfg = AutoConfig.for_model(fields.pop("model_type"), **fields)
        torch.manual_seed(0)
        with torch.device(a.device):
            return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")  # fp32 by default
    return AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="sdpa").to(a.device)


def set_freeze(model, freeze):
    lo, hi = (int(x) for x in freeze.split("-")) if freeze else (1, 0)
    for name, p in model.named_parameters():
        parts = name.split(".")
        frozen = len(parts) > 3 and parts[1] == "layers" and lo <= int(parts[2]) <= hi and "layernorm" not in name
        p.requires_grad_(not frozen)


def run(model, a, freeze):
    set_freeze(model, freeze)
    cuda = a.device == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **({"fused": True} if cuda else {}))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (a.batch, a.seq), generator=g).to(a.device)
    times = []
    for s in range(a.steps + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        if s:
            times.append(t1 - t0)
    times.sort()
    med = times[len(times) // 2]
    out = {"engine": "transformers", "freeze": freeze, "device": a.device, "batch": a.batch, "seq": a.seq,
           "trainable_params": sum(p.numel() for p in params), "step_seconds_median": med,
           "step_seconds": times, "tokens_per_s": a.batch * a.seq / med, "torch": torch.__version__}
    if cuda:
        out.update(precision="fp32 weights + bf16 autocast, fused AdamW", gpu=torch.cuda.get_device_name(),
                   peak_allocated_bytes=torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
    else:
        out.update(threads=torch.get_num_threads())
    del opt
    for p in model.parameters():
        p.grad = None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--freeze", default="")
    ap.add_argument("--compare-freeze", default="")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if bool(a.dir) == bool(a.preset):
        ap.error("give a checkpoint DIR or --preset NAME")
    if a.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    model = build_model(a)
    model.train()
    if a.compare_freeze:
        for freeze in ("", a.compare_freeze):
            print(json.dumps(run(model, a, freeze)), flush=True)
    else:
        print(json.dumps(run(model, a, a.freeze)))


if __name__ == "__main__":
    main()
