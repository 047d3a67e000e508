#!/usr/bin/env python3
"""The end of bench/gpu_check.sh: reads what the stages left in OUTDIR (ctest-junit.xml,
kernels.json, profile.json, profile-mma.json, profile-recompute.json, torch_attention.json, torch_step.jsonl),
writes OUTDIR/summary.json
and prints the closing table (kernel rates against their ceilings, the training step's
tokens/s and MFU full vs SPPFT, the transformers step, PyTorch SDPA). A missing or partial
input is recorded as such and skipped in the table.

    python3 bench/gpu_summary.py OUTDIR RESULT TOTAL_S GPU NVCC COMMIT DIRTY ARCH STAGES_JSONL
"""
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
for name, file in (("kernels", "kernels"), ("torch_attention", "torch_attention"), ("profile", "profile"),
                   ("profile_mma", "profile-mma"), ("profile_recompute", "profile-recompute")):
    path = os.path.join(out, file + ".json")
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
k = summary["benchmarks"].get("kernels", {})
if k.get("partial"):
    print(f"kernels: partial, the stage stopped after {len(k.get('rows', []))} rows")
if "rows" in k:
    print(f"{'op':44s} {'shape':36s} {'ms':>9s} {'rate':>10s} {'unit':8s} {'of ceiling':>10s}")
    for r in k["rows"]:
        print(f"{r['op']:44s} {r['shape']:36s} {r['ms']:9.3f} {r['rate']:10.1f} {r['unit']:8s} {100 * r['share_of_ceiling']:9.0f}%")
for agree in (k[key] for key in k if key.startswith("attention_agreement")):
    for path in ("tensor_cores", "mma_sync") if agree else ():
        if path not in agree:
            continue
        r = agree[path]
        print(f"attention {path} vs fp32 CUDA cores at {agree['shape']}: max |diff| / max |ref| "
              + ", ".join(f"{name} {r[name]:.1e}" for name in ("out", "lse", "dq", "dk", "dv") if name in r))
prof = summary["benchmarks"].get("profile", {})


def model_flops(run):
    # MFU counts the model's FLOPs: a recomputed forward is extra work, not progress.
    return sum(v for phase, v in run["flops"].items() if phase != "recompute")



gemm = k.get("gemm_bf16_tflops") or 0
for p in (prof, summary["benchmarks"].get("profile_mma", {}), summary["benchmarks"].get("profile_recompute", {})):
    for r in p.get("runs", []):
        flops = model_flops(r)
        step = r["step_seconds"]["median"]
        tf = flops / step / 1e12
        r["tflops"], r["mfu_vs_989"], r["mfu_vs_measured_gemm"] = tf, tf / 989.0, tf / gemm if gemm else None
        recomputed = ", activations recomputed" if r.get("activation_policy") == "recompute" else ""
        print(f"train step {r['label']:5s} ({r['freeze']}{recomputed}), attention {p.get('attention_kernels', '?')}: {step * 1e3:.1f} ms, "
              f"{r['tokens'] / step:.0f} tokens/s, {tf:.0f} TFLOP/s = MFU {100 * tf / 989:.0f}% of 989 (dense bf16 datasheet)"
              + (f", {100 * tf / gemm:.0f}% of the measured GEMM rate" if gemm else ""))
for r in summary["benchmarks"].get("profile_recompute", {}).get("runs", [])[:1]:
    reruns = sum(part["seconds"]["recompute"]["median"] for part in r["parts"] if "recompute" in part["seconds"])
    line = (f"  --recompute: the reruns take {reruns * 1e3:.1f} ms, {100 * reruns / r['step_seconds']['median']:.1f}% of the step; "
            f"activations {r['bytes']['activations'] / 2**30:.2f} GiB")
    saved = prof.get("runs", [None])[0]  # the same full step with its activations saved
    if saved and saved.get("tokens") == r.get("tokens"):
        line += (f" instead of {saved['bytes']['activations'] / 2**30:.2f} GiB, for a step "
                 f"{100 * (r['step_seconds']['median'] / saved['step_seconds']['median'] - 1):+.1f}% longer")
    print(line)
for r in prof.get("runs", [])[:1]:  # where the full step's time goes, slowest ops first
    step = r["step_seconds"]["median"]
    for op in sorted(r.get("ops", []), key=lambda o: -o["seconds"]["median"])[:8]:
        t = op["seconds"]["median"]
        print(f"  op {op['name']:24s} {op['phase']:11s} {op['calls']:4d} calls {t * 1e3:9.3f} ms  {100 * t / step:5.1f}% of the step")
if "runs" in prof:
    c = prof.get("comparison", {}).get("total")
    if c and len(prof["runs"]) == 2:
        full = prof["runs"][0]
        share = c["predicted_saved_flops"] / model_flops(full)
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
            tf = model_flops(mine) / step / 1e12
            line += f"; {tf:.0f} TFLOP/s by sppft's FLOP count; sppft/transformers step time {mine['step_seconds']['median'] / step:.2f}"
        print(line)
t = summary["benchmarks"].get("torch_attention", {})
for shape in (t, t.get("d256", {}), t.get("d96", {})):
    for be, r in shape.get("backends", {}).items():
        if "forward_ms" in r:
            print(f"torch SDPA {be:9s} {shape['shape']}: forward {r['forward_ms']:.3f} ms ({r['forward_tflops']:.0f} TFLOP/s), "
                  f"forward+backward {r['forward_backward_ms']:.3f} ms ({r['forward_backward_tflops']:.0f} TFLOP/s)")
        else:
            print(f"torch SDPA {be} {shape['shape']}: {r.get('error')}")
# Written last: the table's derived numbers (TFLOP/s, MFU per run) go into it too.
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(json.dumps({k: summary[k] for k in ("result", "total_seconds", "gpu")}))
