#!/usr/bin/env python3
"""Copies CUDA kernel files for the CPU emulation tests (tests/emu/*_emu.cpp) into OUT_DIR
with only these textual changes (their CUDA includes resolve to the emulated headers in
tests/emu/device/, so includes stay as they are): each file's host part
cut (from a per-file marker: the line where the host section starts; host code between
kernels, e.g. linear.cu's cuBLASLt calls, cut between a start and an end marker), `extern __shared__`
declarations -> a per-block pointer, and static `__shared__ T name[dims];` declarations ->
`EMU_SHARED(T, name, [dims]);` (a reference to the block's copy, emu_cuda.h). Every other
byte of each kernel file's device part is kept; the script checks that by undoing the
substitutions and comparing with the original, byte for byte.

    python3 tests/emu/extract.py SOURCE_DIR OUT_DIR

SOURCE_DIR is the repository root (or a copy of it, e.g. with a mutated kernel).
"""
import hashlib, os, sys

from shared_decls import restore_static, rewrite_static
if len(sys.argv) != 3:
    sys.exit("usage: extract.py SOURCE_DIR OUT_DIR")
SRC, gen = sys.argv[1], sys.argv[2]
os.makedirs(gen, exist_ok=True)

def rd(p): return open(os.path.join(SRC, p)).read()
def must_replace(text, old, new, count=1):
    n = text.count(old)
    if n != count: sys.exit(f"extract: expected {count} x {old!r}, found {n}")
    return text.replace(old, new)

TC_DECL = "extern __shared__ __align__(128) unsigned char tc_smem[];"
SMEM4 = ("extern __shared__ float4 smem4[];", "float4* const smem4 = reinterpret_cast<float4*>(::emu::dyn_smem());")
# Per kernel file: output name, cut marker (start of the host section, cut with all after it),
# tail appended (closes the namespaces the marker leaves open), exact substitutions
# (old, new, count), and optional `drops`: (start, end) marker pairs of host code between the
# kernels, each cut from its start marker up to (not including) its end marker and replaced by
# a placeholder line. Static __shared__ declarations are always rewritten.
FILES = [
    dict(src="kernels/cuda/attention_train_tc.cu", out="attention_train_tc_emu.h",
         cut="std::atomic<bool> g_tc_enabled",
         tail="}  // namespace\n\n}  // namespace sppft::cuda::attn\n",
         subs=[(TC_DECL, "unsigned char* const tc_smem = ::emu::dyn_smem();", 3)]),
    dict(src="kernels/cuda/attention_train_mma.cu", out="attention_train_mma_emu.h",
         cut="// ---------------------------------------------------------------- host side",
         tail="}  // namespace sppft::cuda::attn\n",
         subs=[("extern __shared__ __align__(128) unsigned char mma_smem[];",
                "unsigned char* const mma_smem = ::emu::dyn_smem();", 3)]),
    dict(src="kernels/cuda/rmsnorm.cu", out="rmsnorm_emu.h",
         cut="namespace {\n// rmsnorm_forward (delta null) and add_rmsnorm_forward.",
         tail="}  // namespace sppft::cuda\n",
         subs=[("extern __shared__ float4 dyn_sh[];",
                "float4* const dyn_sh = reinterpret_cast<float4*>(::emu::dyn_smem());", 1)]),
    dict(src="kernels/cuda/loss.cu", out="loss_emu.h",
         cut="double cross_entropy(const Tensor& logits",
         tail="}  // namespace sppft::cuda\n",
         subs=[]),
    dict(src="kernels/cuda/optimizer.cu", out="optimizer_emu.h",
         cut="// Launches the kernel over `entries`",
         tail="}  // namespace\n\n}  // namespace sppft::cuda\n",
         subs=[]),
    dict(src="kernels/cuda/glu.cu", out="glu_emu.h",
         cut="// launch(std::integral_constant<int, A>{}) with the kernel constant of `act`.",
         tail="}  // namespace\n\n}  // namespace sppft::cuda\n",
         subs=[]),
    dict(src="kernels/cuda/rope.cu", out="rope_emu.h",
         cut="// Checks and launch shared by rope_forward",
         tail="}  // namespace\n\n}  // namespace sppft::cuda\n",
         subs=[]),
    dict(src="kernels/cuda/embedding.cu", out="embedding_emu.h",
         cut="void embedding_forward(const Tensor& ids",
         tail="}  // namespace sppft::cuda\n",
         subs=[]),
    dict(src="kernels/cuda/attention.cu", out="attention_emu.h",
         cut="// ---------------------------------------------------------------- host side",
         tail="}  // namespace\n\n}  // namespace sppft::cuda\n",
         subs=[(*SMEM4, 1)]),
    dict(src="kernels/cuda/attention_train.cu", out="attention_train_emu.h",
         cut="// ---------------------------------------------------------------- host side",
         tail="}  // namespace\n\n}  // namespace sppft::cuda\n",
         subs=[(*SMEM4, 3)]),
    # linear.cu: only its own kernels (broadcast_bias, gemm_fallback, colsum_partial/finish);
    # the cuBLASLt state and calls between them and the launchers are cut.
    dict(src="kernels/cuda/linear.cu", out="linear_emu.h",
         cut="void column_sums_into(const Tensor& g, Tensor& dbias) {",
         tail="}  // namespace\n\n}  // namespace sppft::cuda\n",
         subs=[],
         drops=[("using detail::current_device;\n", "// y[n, :] = bias (converted to y's dtype)"),
                ("void gemm_fallback(const Gemm& g) {", "// ---- dbias: deterministic column sums ----")]),
]

for f in FILES:
    orig = rd(f["src"])
    if orig.count(f["cut"]) != 1: sys.exit(f"extract: cut marker {f['cut']!r} not found exactly once in {f['src']}")
    cut = orig.index(f["cut"])
    keep = orig[:cut]
    text = keep
    dropped = []  # (placeholder, cut text)
    for i, (start, end) in enumerate(f.get("drops", [])):
        if text.count(start) != 1: sys.exit(f"extract: drop start {start!r} not found exactly once in {f['src']}")
        a = text.index(start)
        b = text.find(end, a)
        if b < 0 or text.count(end) != 1: sys.exit(f"extract: drop end {end!r} not found once after its start in {f['src']}")
        ph = f"// [emulation: host code cut ({i + 1}), {text[a:b].count(chr(10))} lines]\n"
        if ph in keep: sys.exit(f"extract: placeholder {ph!r} already in {f['src']}")
        dropped.append((ph, text[a:b]))
        text = text[:a] + ph + text[b:]
    for old, new, count in f["subs"]:
        if new in keep: sys.exit(f"extract: {new!r} already in {f['src']}: substitution not reversible")
        text = must_replace(text, old, new, count)
    if "EMU_SHARED(" in keep: sys.exit(f"extract: EMU_SHARED already in {f['src']}")
    text, n_static = rewrite_static(text)
    left = [l for l in text.splitlines() if "__shared__" in l]
    if left: sys.exit(f"extract: {f['src']}: __shared__ declarations not handled: {left}")
    open(os.path.join(gen, f["out"]), "w").write(text + f["tail"])

    # Self-check: undoing the substitutions gives back the original prefix byte for byte.
    back = restore_static(text)
    for old, new, _ in reversed(f["subs"]):
        back = back.replace(new, old)
    for ph, cut_text in dropped:
        assert back.count(ph) == 1, f"placeholder of {f['src']} lost"
        back = back.replace(ph, cut_text)
    assert back == keep, f"extraction changed kernel text of {f['src']}"
    n_dropped = sum(t.count(chr(10)) for _, t in dropped)
    print(f"extract: {os.path.basename(f['src'])} sha256 {hashlib.sha256(orig.encode()).hexdigest()[:16]}, "
          f"{keep.count(chr(10)) - n_dropped} of {orig.count(chr(10))} lines kept (host tail"
          f"{f' and {len(dropped)} host section(s)' if dropped else ''} cut), "
          f"{n_static} static __shared__ declaration(s) rebound, kernel text verified")
