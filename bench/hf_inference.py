"""transformers + PyTorch inference throughput on the same checkpoint, shapes and
threads as bench_inference: prefill tokens/s (B prompts of T tokens, one pass) and
greedy decode tokens/s with the KV cache.

    python bench/hf_inference.py DIR --batch B --prompt-len T --new-tokens N [--threads K]
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
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    best_prefill = best_decode = float("inf")
    with torch.inference_mode():
        for r in range(a.repeats + 1):
            ids = torch.randint(3, vocab, (a.batch, a.prompt_len), generator=g)
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            t1 = time.perf_counter()
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(a.new_tokens):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
            if r == 0:
                continue
            best_prefill = min(best_prefill, t1 - t0)
            best_decode = min(best_decode, t2 - t1)
    print(json.dumps({"engine": "transformers", "threads": torch.get_num_threads(), "batch": a.batch,
                      "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
                      "prefill_tokens_per_s": a.batch * a.prompt_len / best_prefill,
                      "decode_tokens_per_s": a.batch * a.new_tokens / best_decode,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
