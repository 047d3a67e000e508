"""PyTorch SDPA attention, forward and forward+backward, at the shapes bench_kernels
uses (B=4, 32 query / 8 KV heads, head dim 128, causal, bf16; under "d256", gemma-2b's
8 query / 1 KV heads of 256; under "d96", Phi-3-mini's 32 / 32 heads of 96), per backend
(flash, cuDNN, efficient) that this torch can run. Prints one JSON object.
   python bench/torch_attention.py [--seq T]
Timed with CUDA events, median of 5 samples of `reps` calls after warm-up; GQA is
given to SDPA natively (enable_gqa) when supported, else K/V heads are repeated
(the copy is made once, outside the timed region)."""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"skipped": f"torch not importable: {e}"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0

    def timed(fn):
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(5):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(a.reps):
                fn()
            e.record()
            torch.cuda.synchronize()
            samples.append(s.elapsed_time(e) / a.reps)
        return sorted(samples)[2]

    def bench_shape(b, hq, hkv, d, t):
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(b, hq, t, d, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        k = torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        v = torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        dout = torch.randn(b, hq, t, d, device="cuda", dtype=torch.bfloat16, generator=g)
        fwd_flops = b * hq * 2 * 2 * (t * t / 2) * d
        res = {"shape": f"B{b} Hq{hq} Hkv{hkv} T{t} D{d} causal bf16", "backends": {}}
        backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None),
                    "efficient": SDPBackend.EFFICIENT_ATTENTION}
        for name, be in backends.items():
            if be is None:
                continue
            try:
                with sdpa_kernel(be):
                    try:
                        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                        kk, vv, extra = k, v, {"enable_gqa": True}
                    except (TypeError, RuntimeError):
                        kk = k.repeat_interleave(hq // hkv, dim=1).detach().requires_grad_()
                        vv = v.repeat_interleave(hq // hkv, dim=1).detach().requires_grad_()
                        extra = {}

                    def fwd():
                        with torch.no_grad():
                            F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **extra)

                    def fwd_bwd():
                        o = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, **extra)
                        o.backward(dout)

                    f_ms, fb_ms = timed(fwd), timed(fwd_bwd)
                res["backends"][name] = {"forward_ms": f_ms, "forward_backward_ms": fb_ms,
                                         "forward_tflops": fwd_flops / (f_ms * 1e-3) / 1e12,
                                         "forward_backward_tflops": 3.5 * fwd_flops / (fb_ms * 1e-3) / 1e12,
                                         "gqa_native": bool(extra)}
            except Exception as e:  # noqa: BLE001
                res["backends"][name] = {"error": str(e).splitlines()[0][:200]}
        return res

    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    out.update(bench_shape(4, 32, 8, 128, a.seq))
    out["d256"] = bench_shape(4, 8, 1, 256, a.seq)  # gemma-2b's heads, as bench_kernels' "(d256)" rows
    out["d96"] = bench_shape(4, 32, 32, 96, a.seq)  # Phi-3-mini's heads, as its "(d96)" rows
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
