#!/usr/bin/env bash
# Static resources of every CUDA kernel as ptxas assigns them (no GPU needed): registers per
# thread, spill stores/loads and stack bytes, static shared memory, for one architecture.
# A kernel over 64 registers cannot launch with 1024 threads; spills cost local-memory
# traffic; registers x threads bound the blocks per SM.
#   bash bench/kernel_resources.sh [ARCH] [FILTER]    ARCH default 90a; FILTER a regex on names
# Compiles kernels/cuda/*.cu with the build's flags (build/compile_commands.json, so run
# `make` first) into a temporary folder; prints one row per kernel, most registers first.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-90a}
filter=${2:-.}
[[ -f build/compile_commands.json ]] || { echo "kernel_resources: build/compile_commands.json missing; run make first" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$arch" "$tmp" <<'PY'
import json, re, shlex, subprocess, sys
arch, tmp = sys.argv[1], sys.argv[2]
for e in json.load(open("build/compile_commands.json")):
    if not e["file"].endswith(".cu"):
        continue
    args = shlex.split(e["command"])
    keep, skip = [], False
    for a in args:  # drop the build's architectures and output; ours follow
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a.startswith("--generate-code") or a.startswith("-gencode") or a.startswith("-arch"):
            continue
        keep.append(a)
    name = e["file"].rsplit("/", 1)[1]
    keep += [f"--generate-code=arch=compute_{arch},code=[sm_{arch}]", "--resource-usage", "-o", f"{tmp}/{name}.o"]
    r = subprocess.run(keep, cwd=e["directory"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"kernel_resources: {name} did not compile for sm_{arch}:\n{r.stderr[-2000:]}")
    open(f"{tmp}/{name}.txt", "w").write(r.stderr + r.stdout)
PY
python3 - "$tmp" "$arch" "$filter" <<'PY'
import glob, re, subprocess, sys
tmp, arch, flt = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
rows = []
for path in glob.glob(f"{tmp}/*.txt"):
    src = path.rsplit("/", 1)[1][:-4]
    name = frame = None
    for line in open(path):
        m = re.search(r"entry function '([^']+)'", line)
        if m:
            name, frame = m.group(1), (0, 0, 0)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            frame = tuple(int(x) for x in m.groups())
            continue
        m = re.search(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?$", line.strip())
        if m and name:
            smem = re.search(r"(\d+) bytes smem", line)
            rows.append((int(m.group(1)), frame, int(smem.group(1)) if smem else 0, src, name))
            name = None
names = subprocess.run(["c++filt"], input="\n".join(r[4] for r in rows), capture_output=True, text=True).stdout.splitlines()
def short(n):  # kernel<template args> without the parameter list and namespaces
    n = re.sub(r"^void ", "", n).replace("(anonymous namespace)::", "")
    depth, cut = 0, len(n)
    for i, c in enumerate(n):
        depth += c == "<"
        depth -= c == ">"
        if c == "(" and depth == 0:
            cut = i
            break
    n = n[:cut]
    return re.sub(r"sppft::cuda::(attn::)?", "", n).replace("__nv_bfloat16", "bf16")
rows = sorted(((r, short(d)) for r, d in zip(rows, names)), key=lambda x: (-x[0][0], x[1]))
print(f"sm_{arch}: {len(rows)} kernels (ptxas --resource-usage)")
print(f"{'regs':>4s} {'spill st/ld B':>13s} {'stack B':>7s} {'static smem B':>13s}  {'file':18s} kernel")
for (regs, (stack, st, ld), smem, src, _), n in rows:
    if flt.search(n):
        print(f"{regs:4d} {f'{st}/{ld}':>13s} {stack:7d} {smem:13d}  {src:18s} {n}")
PY
