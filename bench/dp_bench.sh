#!/usr/bin/env bash
# Data parallel on the CPU: full fine-tuning vs SPPFT, plain vs ZeRO-1, on
# `mpirun -np 2`: memory per rank (planned and measured), bytes communicated
# per optimizer step and tokens/s, printed as one table.
#   bash bench/dp_bench.sh [MODEL_DIR] [FREEZE]   (after `make` and `make demo`)
# MODEL_DIR defaults to the 130M bench Llama (bench/make_bench_model.py) with the
# demo's tokenizer ($TOKENIZER, default demo-out/model-base/tokenizer.model);
# FREEZE defaults to 2-5.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-build/bench/llama-130m-tok}
freeze=${2:-2-5}
tokenizer=${TOKENIZER:-demo-out/model-base/tokenizer.model}
if [[ $model == build/bench/llama-130m-tok && ! -f $model/tokenizer.model ]]; then
  [[ -f $tokenizer ]] || { echo "dp_bench: $tokenizer missing (run make demo, or give MODEL_DIR)" >&2; exit 2; }
  [[ -f build/bench/llama-130m/config.json ]] || build/pyenv/bin/python bench/make_bench_model.py build/bench/llama-130m
  mkdir -p $model
  ln -sf "$PWD"/build/bench/llama-130m/{config.json,model.safetensors} $model/
  cp "$tokenizer" $model/
fi
cores=$(nproc)  # before OMP_NUM_THREADS=1, which nproc obeys
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
out=build/dp-bench
rm -rf $out
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $cores cores; mpirun -np 2, 1 thread per rank; model $model"
for zero in "" "--zero1"; do
  for fr in "" "$freeze"; do
    name="full"; [[ -n $fr ]] && name="sppft-$fr"; [[ -n $zero ]] && name="$name-zero1"
    args="$model --data data/finetune_normal.json --out $out/$name --micro-batch 2 --grad-accum 1 --cutoff 128 --max-steps 3 --lr 1e-5 $zero"
    [[ -n $fr ]] && args="$args --freeze $fr"
    mkdir -p $out
    mpirun -np 2 --oversubscribe build/bin/sppft train $args >/dev/null 2>$out/$name.log || { tail -5 $out/$name.log; exit 1; }
  done
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
mib = lambda b: b / 2**20
print(f"{'run':18s} {'rank':>4s} {'planned MiB':>12s} {'measured MiB':>13s} {'grads MiB':>10s} {'optim MiB':>10s}"
      f" {'comm/step MiB':>14s} {'ring/rank MiB':>14s} {'tok/s':>7s} {'overlap':>8s}")
for name in ["full", *sorted(n for n in os.listdir(out) if os.path.isdir(f"{out}/{n}") and n != "full")]:
    m = json.load(open(f"{out}/{name}/memory.json"))
    steps = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")]
    tps = sum(s["tokens_per_s"] for s in steps[1:]) / max(1, len(steps) - 1)
    busy = sum(s["comm_busy_s"] for s in steps[1:])
    overlap = 1 - sum(s["comm_exposed_s"] for s in steps[1:]) / busy if busy > 0 else 0  # reductions hidden behind backward
    c = m["comm_per_step_measured"]
    for r in m["per_rank"]:
        p, q = r["predicted"], r["measured_peak"]
        print(f"{name:18s} {r['rank']:4d} {mib(p['total_bytes']):12.2f} {mib(q['total_bytes']):13.2f} {mib(q['grads']):10.2f}"
              f" {mib(q['optimizer']):10.2f} {mib(c['payload_bytes']):14.2f} {mib(c['ring_bytes_per_rank']):14.2f}"
              + (f" {tps:7.0f} {100 * overlap:7.0f}%" if r["rank"] == 0 else f" {'-':>7s} {'-':>8s}"))
PY
