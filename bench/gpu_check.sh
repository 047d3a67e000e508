#!/usr/bin/env bash
# GPU check: builds the CUDA backend for the local GPU, runs the tests labelled `gpu`
# (tests/gpu/*_test.cpp: every CUDA op against the CPU reference, the NCCL communicator at
# world size 1), then benchmarks: bench_kernels (each kernel's GB/s or TFLOP/s against the
# copy bandwidth and BF16 GEMM rate it measures itself) and bench/torch_attention.py
# (PyTorch SDPA at the same attention shape, per backend), a Llama-3-8B-shaped training step
# through `sppft profile` (full vs SPPFT) and through transformers + PyTorch
# (bench/hf_train_step.py). Prints one table last.
#
#   source .devdeps/env.sh && bash bench/gpu_check.sh OUTDIR
#                                     on the GPU machine, from the repository root, after
#                                     ../shared/device/pack-deps.sh pkgconf-bin libpkgconf3 here
#   bash bench/gpu_check.sh OUTDIR            where the build dependencies are installed
#   bash bench/gpu_check.sh --pack-deps DIR   older way: copies the installed dependencies into
#                                             DIR, a prefix to carry (SPPFT_DEPS_PREFIX=DIR)
#
# Writes OUTDIR/gpu_check.log (everything the stages printed), OUTDIR/summary.json (machine,
# commit, per-stage status and seconds, per-test results, benchmark numbers),
# OUTDIR/ctest-junit.xml, OUTDIR/kernels.json, OUTDIR/profile.json (+ profile-trace.json),
# OUTDIR/torch_attention.json and OUTDIR/torch_step.jsonl.
# Exit status: 0 when every gpu test passed on a real GPU, 1 otherwise (benchmarks
# never change it).
#
# Time: must finish within 6 minutes. Each stage has its own limit (configure 60 s,
# build 180 s, tests 90 s, kernels 60 s, profile 120 s, torch 45 s, torch_step 60 s: the
# limits are caps, the expected total is under 6 minutes); the summary says which stage stopped.
# Only the gpu test executables, bench_kernels and the libraries they link are built, for
# one architecture.
#
# Environment:
#   SPPFT_GPU_BUILD_DIR  build folder (default build-gpu, reused between runs)
#   SPPFT_CUDA_ARCH      CMAKE_CUDA_ARCHITECTURES (default 90a on compute capability 9.0, else native)
#   SPPFT_DEPS_PREFIX    dependency prefix made by --pack-deps (default .devdeps when it exists)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# ---------------------------------------------------------------- --pack-deps
if [[ "${1:-}" == "--pack-deps" ]]; then
  dest=${2:?usage: gpu_check.sh --pack-deps DIR}
  mkdir -p "$dest"
  # Headers, shared libraries, CMake/pkg-config files and pkgconf itself; no static archives, docs or manuals.
  pkgs=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0 libsentencepiece-dev libsentencepiece0
        nlohmann-json3-dev doctest-dev libpcre2-dev libpcre2-8-0 pkgconf-bin libpkgconf3)
  for p in "${pkgs[@]}"; do
    dpkg -L "$p" >/dev/null 2>&1 || { echo "pack-deps: package $p is not installed" >&2; exit 2; }
    dpkg -L "$p" | while read -r f; do
      [[ -f $f || -L $f ]] || continue
      case $f in *.a | */liblapack.so* | */libblas.so* | /usr/share/doc/* | /usr/share/man/* | /usr/share/lintian/*) continue ;; esac
      mkdir -p "$dest$(dirname "$f")"
      cp -a "$f" "$dest$f"
    done
  done
  du -sh "$dest"
  echo "pack-deps: done; carry $dest (e.g. as .devdeps) and run bash bench/gpu_check.sh OUTDIR"
  exit 0
fi

out=${1:?usage: bash bench/gpu_check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/gpu_check.log
: >"$log"
build=${SPPFT_GPU_BUILD_DIR:-build-gpu}
start=$(date +%s)
declare -A status seconds

say() { echo "$*" | tee -a "$log"; }
# stage NAME LIMIT_S CMD...: runs CMD with a time limit, output to the log; records status and seconds.
stage() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  say "== $name: $*"
  timeout --signal=TERM --kill-after=5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  seconds[$name]=$(($(date +%s) - t0))
  if ((rc == 0)); then status[$name]=ok; elif ((rc == 124 || rc == 137)); then status[$name]=timeout; else status[$name]=failed; fi
  say "== $name: ${status[$name]} (${seconds[$name]} s)"
  return $rc
}

# ---------------------------------------------------------------- the machine
gpu=$(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
nvcc_version=$( (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version 2>/dev/null) | grep -o 'release [0-9.]*' | head -1)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | grep -c . || true)
if [[ -n ${SPPFT_CUDA_ARCH:-} ]]; then arch=$SPPFT_CUDA_ARCH
elif [[ $cc == 9.0 ]]; then arch=90a
else arch=native; fi
say "gpu: ${gpu:-none}; nvcc: ${nvcc_version:-none}; commit: $commit (uncommitted files: $dirty); arch: $arch"
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH=$PATH:/usr/local/cuda/bin

# ---------------------------------------------------------------- dependencies carried as a prefix
cmake_args=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=$arch" -DSPPFT_CUDA=ON)
deps=${SPPFT_DEPS_PREFIX:-}
[[ -z $deps && -d .devdeps && ! -f .devdeps/env.sh ]] && deps=.devdeps
if [[ -f .devdeps/env.sh && -z ${SPPFT_DEPS_PREFIX:-} ]]; then
  # ../shared/device/pack-deps.sh layout: env.sh (sourced by the caller) unpacked into /opt/devdeps.
  say "dependencies: .devdeps/env.sh (CMAKE_PREFIX_PATH=${CMAKE_PREFIX_PATH:-unset})"
  [[ -n ${CMAKE_PREFIX_PATH:-} ]] || say "warning: .devdeps/env.sh exists but was not sourced; run: source .devdeps/env.sh"
  if ! command -v pkg-config >/dev/null && [[ -x /opt/devdeps/usr/bin/pkgconf ]]; then
    cmake_args+=("-DPKG_CONFIG_EXECUTABLE=/opt/devdeps/usr/bin/pkgconf")
  fi
elif [[ -n $deps ]]; then
  deps=$(cd "$deps" && pwd)
  say "dependency prefix: $deps"
  # pkg-config files name prefix=/usr: rewrite them for where the prefix lies now.
  pcdir=$root/$build/deps-pkgconfig
  mkdir -p "$pcdir"
  for pc in "$deps"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc; do
    [[ -f $pc ]] && sed "s|^prefix=/usr|prefix=$deps/usr|" "$pc" >"$pcdir/$(basename "$pc")"
  done
  export PKG_CONFIG_PATH=$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:$deps/usr/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cmake_args+=("-DCMAKE_PREFIX_PATH=$deps/usr")
  if ! command -v pkg-config >/dev/null && [[ -x $deps/usr/bin/pkgconf ]]; then
    cmake_args+=("-DPKG_CONFIG_EXECUTABLE=$deps/usr/bin/pkgconf")
  fi
fi

# ---------------------------------------------------------------- configure, build, test
targets=(bench_kernels sppft)
for t in tests/gpu/*_test.cpp; do targets+=("$(basename "$t" .cpp)"); done
generator=()
[[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null && generator=(-G Ninja)

overall=failed
if stage configure 60 cmake -S . -B "$build" "${generator[@]}" "${cmake_args[@]}"; then
  if ! grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' "$build/CMakeCache.txt"; then
    say "configure: nvcc was not found, so the CUDA backend is not in this build"
    status[configure]=no_cuda
  elif stage build 180 cmake --build "$build" --target "${targets[@]}" -j "$(nproc)"; then
    stage test 90 ctest --test-dir "$build" -L '^gpu$' --output-on-failure --timeout 80 --output-junit "$out/ctest-junit.xml"
    if [[ ${status[test]} == ok ]]; then
      if grep -q "skipped: no CUDA device" "$out/ctest-junit.xml" 2>/dev/null; then overall=skipped_no_gpu; else overall=passed; fi
    fi
    # Benchmarks run whatever the tests said: a failing kernel's speed is still worth knowing.
    stage kernels 60 bash -c "'$build/bin/bench_kernels' --json > '$out/kernels.json'"
    # One training step of a Llama-3-8B-shaped stack, full vs SPPFT (blocks 1-2 of 4 frozen):
    # per-block forward / dX / dW / optimizer on CUDA events, MFU, the saving vs the dW FLOP share.
    stage profile 120 bash -c "'$build/bin/sppft' profile --preset llama-3-8b --layers 4 --device cuda --micro-batch 4 \
      --seq 1024 --steps 3 --warmup 1 --compare-freeze 1-2 --trace '$out/profile-trace.json' --json > '$out/profile.json'"
  fi
fi
python=${SPPFT_PYTHON:-python3}
[[ -x build/pyenv/bin/python ]] && python=build/pyenv/bin/python
stage torch 45 bash -c "'$python' bench/torch_attention.py > '$out/torch_attention.json'"
# The same training step through transformers + PyTorch (HF Trainer's --bf16: fp32 weights,
# bf16 autocast, fused AdamW), full and frozen 1-2, for tokens/s next to sppft's.
stage torch_step 60 bash -c "'$python' bench/hf_train_step.py --preset llama-3-8b --layers 4 --device cuda --batch 4 \
  --seq 1024 --steps 3 --compare-freeze 1-2 > '$out/torch_step.jsonl'"
total=$(($(date +%s) - start))
say "gpu_check: $overall in $total s; log $log"

# ---------------------------------------------------------------- summary.json
stages_json=$(for s in configure build test kernels profile torch torch_step; do
  [[ -n ${status[$s]:-} ]] && printf '{"stage":"%s","status":"%s","seconds":%s}\n' "$s" "${status[$s]}" "${seconds[$s]}"
done)
python3 - "$out" "$overall" "$total" "$gpu" "$nvcc_version" "$commit" "$dirty" "$arch" "$stages_json" <<'PY'
import json, os, sys, time, xml.etree.ElementTree as ET
out, overall, total, gpu, nvcc, commit, dirty, arch, stages = sys.argv[1:10]
tests = []
junit = os.path.join(out, "ctest-junit.xml")
if os.path.exists(junit):
    for case in ET.parse(junit).getroot().iter("testcase"):
        status = case.get("status") or ("failed" if case.find("failure") is not None else "run")
        text = "".join(x.text or "" for x in case.iter("system-out"))
        tests.append({"name": case.get("name"), "status": status, "seconds": float(case.get("time") or 0),
                      "skipped_no_gpu": "skipped: no CUDA device" in text})
summary = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "result": overall, "total_seconds": int(total),
    "gpu": gpu or None, "nvcc": nvcc or None, "commit": commit, "uncommitted_files": int(dirty or 0),
    "cuda_architectures": arch, "stages": [json.loads(l) for l in stages.splitlines() if l.strip()], "tests": tests,
    "benchmarks": {},
}
for name in ("kernels", "torch_attention", "profile"):
    path = os.path.join(out, name + ".json")
    try:
        with open(path) as f:
            summary["benchmarks"][name] = json.loads(f.read())
    except Exception as e:  # noqa: BLE001
        summary["benchmarks"][name] = {"missing": f"{path}: {e}"}
try:
    with open(os.path.join(out, "torch_step.jsonl")) as f:
        summary["benchmarks"]["torch_step"] = [json.loads(l) for l in f if l.strip()]
except Exception as e:  # noqa: BLE001
    summary["benchmarks"]["torch_step"] = {"missing": str(e)}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
k = summary["benchmarks"].get("kernels", {})
if "rows" in k:
    print(f"{'op':30s} {'shape':42s} {'ms':>9s} {'rate':>10s} {'unit':8s} {'of ceiling':>10s}")
    for r in k["rows"]:
        print(f"{r['op']:30s} {r['shape']:42s} {r['ms']:9.3f} {r['rate']:10.1f} {r['unit']:8s} {100 * r['share_of_ceiling']:9.0f}%")
prof = summary["benchmarks"].get("profile", {})
if "runs" in prof:
    gemm = k.get("gemm_bf16_tflops") or 0
    for r in prof["runs"]:
        flops = sum(r["flops"].values())
        step = r["step_seconds"]["median"]
        tf = flops / step / 1e12
        r["tflops"], r["mfu_vs_989"], r["mfu_vs_measured_gemm"] = tf, tf / 989.0, tf / gemm if gemm else None
        print(f"train step {r['label']:5s} ({r['freeze']}): {step * 1e3:.1f} ms, {r['tokens'] / step:.0f} tokens/s, "
              f"{tf:.0f} TFLOP/s = MFU {100 * tf / 989:.0f}% of 989 (dense bf16 datasheet)"
              + (f", {100 * tf / gemm:.0f}% of the measured GEMM rate" if gemm else ""))
    c = prof.get("comparison", {}).get("total")
    if c and len(prof["runs"]) == 2:
        full = prof["runs"][0]
        share = c["predicted_saved_flops"] / sum(full["flops"].values())
        print(f"SPPFT saved {100 * c['saved_seconds'] / c['full_seconds']:.1f}% of the step; the frozen blocks' dW FLOPs are "
              f"{100 * share:.1f}% of the full step's FLOPs")
hf = summary["benchmarks"].get("torch_step")
if isinstance(hf, list):
    mine_runs = prof.get("runs", [])  # the same order: full, then frozen 1-2
    for i, r in enumerate(hf):
        if "step_seconds_median" not in r:
            print(f"transformers step: {r}")
            continue
        step = r["step_seconds_median"]
        mine = mine_runs[i] if i < len(mine_runs) else None
        line = (f"transformers step ({r['freeze'] or 'full'}): {step * 1e3:.1f} ms, {r['tokens_per_s']:.0f} tokens/s, "
                f"peak {r.get('peak_allocated_bytes', 0) / 2**30:.1f} GiB")
        if mine:
            tf = sum(mine["flops"].values()) / step / 1e12
            line += f"; {tf:.0f} TFLOP/s by sppft's FLOP count; sppft/transformers step time {mine['step_seconds']['median'] / step:.2f}"
        print(line)
t = summary["benchmarks"].get("torch_attention", {})
for be, r in t.get("backends", {}).items():
    if "forward_ms" in r:
        print(f"torch SDPA {be:9s} {t['shape']}: forward {r['forward_ms']:.3f} ms ({r['forward_tflops']:.0f} TFLOP/s), "
              f"forward+backward {r['forward_backward_ms']:.3f} ms ({r['forward_backward_tflops']:.0f} TFLOP/s)")
    else:
        print(f"torch SDPA {be}: {r.get('error')}")
print(json.dumps({k: summary[k] for k in ("result", "total_seconds", "gpu")}))
PY
[[ $overall == passed ]]
