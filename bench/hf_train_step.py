"""transformers + PyTorch training-step time on the same checkpoint, shapes and threads
as bench_train: B random sequences of T tokens, loss on every token, forward +
backward + AdamW; frozen blocks get requires_grad=False (attention and MLP weights).

    python bench/hf_train_step.py DIR --batch B --seq T --steps N [--freeze a-b] [--threads K]
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--freeze", default="")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    if a.freeze:
        lo, hi = (int(x) for x in a.freeze.split("-"))
        for name, p in model.named_parameters():
            parts = name.split(".")
            if len(parts) > 3 and parts[1] == "layers" and lo <= int(parts[2]) <= hi and "layernorm" not in name:
                p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (a.batch, a.seq), generator=g)
    times = []
    for s in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if s:
            times.append(t1 - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"engine": "transformers", "freeze": a.freeze, "threads": torch.get_num_threads(), "batch": a.batch,
                      "seq": a.seq, "step_seconds_median": med, "tokens_per_s": a.batch * a.seq / med,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
