"""Writes a random-weight Llama checkpoint with transformers for the CPU benchmarks
(both engines then load the same files).   python bench/make_bench_model.py OUTDIR"""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=4, vocab_size=16384, max_position_embeddings=1024, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
LlamaForCausalLM(cfg).to(torch.float32).save_pretrained(out, safe_serialization=True)
print(f"wrote {out}: {sum(p.numel() for p in LlamaForCausalLM(cfg).parameters()) / 1e6:.1f}M parameters")
