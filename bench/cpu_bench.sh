#!/usr/bin/env bash
# CPU inference: sppft vs transformers on the same random Llama checkpoint, same
# shapes and threads, printed side by side with the ratio.
#   bash bench/cpu_bench.sh [THREADS]     (from the repository root, after `make`)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
py=build/pyenv/bin/python
model=build/bench/llama-130m
[[ -f $model/config.json ]] || $py bench/make_bench_model.py $model
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; threads used: $threads"
for shape in "1 128 32" "4 128 32"; do
  set -- $shape
  s=$(build/bin/bench_inference $model --batch $1 --prompt-len $2 --new-tokens $3 --json)
  h=$($py bench/hf_inference.py $model --batch $1 --prompt-len $2 --new-tokens $3 --threads $threads)
  python3 - "$s" "$h" <<'PY'
import json, sys
s, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"batch {s['batch']} prompt {s['prompt_len']} new {s['new_tokens']}:")
for k, name in (("prefill_tokens_per_s", "prefill"), ("decode_tokens_per_s", "decode")):
    print(f"  {name:8s} sppft {s[k]:9.1f} tok/s   transformers {h[k]:9.1f} tok/s   ratio {s[k] / h[k]:.2f}x")
PY
done

# Training step: full fine-tuning vs SPPFT (blocks 2-5 of 8 frozen), both engines.
for freeze in "" "2-5"; do
  args="--batch 4 --seq 128 --steps 3"
  [[ -n $freeze ]] && args="$args --freeze $freeze"
  s=$(build/bin/bench_train $model $args --json)
  h=$($py bench/hf_train_step.py $model $args --threads $threads 2>/dev/null)
  python3 - "$s" "$h" <<'PY'
import json, sys
s, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])
m = s["memory"]
label = "SPPFT freeze " + s["freeze"] if s["freeze"] else "full fine-tuning"
print(f"train step, {label} (batch {s['batch']} x {s['seq']}):")
print(f"  step     sppft {s['step_seconds_median']:8.3f} s ({s['tokens_per_s']:.0f} tok/s)   transformers {h['step_seconds_median']:8.3f} s"
      f" ({h['tokens_per_s']:.0f} tok/s)   ratio {h['step_seconds_median'] / s['step_seconds_median']:.2f}x")
print("  bytes    " + ", ".join(f"{k} {m[k] / 2**20:.1f} MiB" for k in ("weights", "grads", "optimizer", "activations", "workspace"))
      + f", total {m['total_bytes'] / 2**20:.1f} MiB")
PY
done
