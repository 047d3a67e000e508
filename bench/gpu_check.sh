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
# OUTDIR/ctest-junit.xml, OUTDIR/kernels.json (if the stage stops early, the rows it had
# measured, marked "partial"), OUTDIR/profile.json (+ profile-trace.json),
# OUTDIR/profile-mma.json (the full step with --attention mma), OUTDIR/profile-recompute.json (with
# --recompute),
# OUTDIR/torch_attention.json and OUTDIR/torch_step.jsonl.
# Exit status: 0 when every gpu test passed on a real GPU, 1 otherwise (benchmarks
# never change it).
#
# Time: must finish within 6 minutes. Each stage has its own limit (configure 60 s,
# build 180 s, tests 90 s, kernels 60 s, profile 120 s, profile_mma 60 s, profile_recompute 45 s,
# torch 45 s, torch_step 60 s: the limits are caps, the expected total is under 6 minutes); the
# summary says which stage stopped.
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
    stage kernels 60 bash -c "'$build/bin/bench_kernels' --json --partial '$out/kernels.partial.json' > '$out/kernels.json'"
    # Stopped by its limit or a failure: keep the rows it had measured (marked "partial").
    if [[ ${status[kernels]} != ok && -s $out/kernels.partial.json ]]; then
      cp "$out/kernels.partial.json" "$out/kernels.json"
    fi
    # One training step of a Llama-3-8B-shaped stack, full vs SPPFT (blocks 1-2 of 4 frozen):
    # per-block forward / dX / dW / optimizer on CUDA events, MFU, the saving vs the dW FLOP share,
    # and every op's time (--ops: which kernel the step's time goes to).
    stage profile 120 bash -c "'$build/bin/sppft' profile --preset llama-3-8b --layers 4 --device cuda --micro-batch 4 \
      --seq 1024 --steps 3 --warmup 1 --compare-freeze 1-2 --ops --trace '$out/profile-trace.json' --json > '$out/profile.json'"
    # The full step again on the mma.sync attention kernels (attention_train_mma.cu): MFU of both paths.
    stage profile_mma 60 bash -c "'$build/bin/sppft' profile --preset llama-3-8b --layers 4 --device cuda --micro-batch 4 \
      --seq 1024 --steps 3 --warmup 1 --attention mma --json > '$out/profile-mma.json'"
    # And with --recompute: what rerunning each block's forward before its backward costs.
    stage profile_recompute 45 bash -c "'$build/bin/sppft' profile --preset llama-3-8b --layers 4 --device cuda --micro-batch 4 \
      --seq 1024 --steps 3 --warmup 1 --recompute --json > '$out/profile-recompute.json'"
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
stages_json=$(for s in configure build test kernels profile profile_mma profile_recompute torch torch_step; do
  [[ -n ${status[$s]:-} ]] && printf '{"stage":"%s","status":"%s","seconds":%s}\n' "$s" "${status[$s]}" "${seconds[$s]}"
done)
python3 bench/gpu_summary.py "$out" "$overall" "$total" "$gpu" "$nvcc_version" "$commit" "$dirty" "$arch" "$stages_json"
[[ $overall == passed ]]
