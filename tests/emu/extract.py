#!/usr/bin/env python3
"""Copies the tensor-core attention kernels for the CPU emulation test (tc_attention_emu_test)
into OUT_DIR with only these textual changes: includes -> the emulation headers, the host-only
parts cut, and the three `extern __shared__ __align__(128) unsigned char tc_smem[];`
declarations -> a per-block pointer. Every other byte of the kernel file's device part is kept;
the script checks that.

    python3 tests/emu/extract.py SOURCE_DIR OUT_DIR
"""
import hashlib, os, sys
if len(sys.argv) != 3:
    sys.exit("usage: extract.py SOURCE_DIR OUT_DIR")
SRC, gen = sys.argv[1], sys.argv[2]
os.makedirs(gen, exist_ok=True)

def rd(p): return open(os.path.join(SRC, p)).read()
def must_replace(text, old, new, count=1):
    n = text.count(old)
    if n != count: sys.exit(f"extract: expected {count} x {old!r}, found {n}")
    return text.replace(old, new)

# cuda_common.cuh: drop the host section (runtime, checks, dispatch on Tensor types).
cc = rd("kernels/cuda/cuda_common.cuh")
cc = must_replace(cc, "#include <cuda_bf16.h>\n#include <cuda_runtime.h>\n", '#include "emu_cuda.h"\n')
cc = must_replace(cc, '#include "engine/cuda_check.h"\n#include "engine/error.h"\n#include "engine/tensor.h"\n',
                  '#include "emu_stubs.h"\n')
a = cc.index("// ---- runtime (kernels/cuda/runtime.cu) ----"); b = cc.index("// ---- device: conversions ----")
cc = cc[:a] + "// [emulation: host section cut]\n" + cc[b:]
open(os.path.join(gen, "cuda_common_emu.cuh"), "w").write(cc)

# attention_tiles.cuh: includes only.
at = rd("kernels/cuda/attention_tiles.cuh")
at = must_replace(at, '#include "engine/error.h"\n#include "kernels/cuda/cuda_common.cuh"\n#include "kernels/ops.h"\n',
                  '#include "emu_stubs.h"\n#include "cuda_common_emu.cuh"\n')
open(os.path.join(gen, "attention_tiles_emu.cuh"), "w").write(at)

# attention_train_tc.cu: includes, smem declarations, host tail.
tc_orig = rd("kernels/cuda/attention_train_tc.cu")
cut = tc_orig.index("std::atomic<bool> g_tc_enabled")
tc = tc_orig[:cut]
tc = must_replace(tc, "#include <mma.h>\n", '#include "emu_cuda.h"\n')
tc = must_replace(tc, '#include "kernels/cuda/attention_tiles.cuh"\n', '#include "attention_tiles_emu.cuh"\n')
tc = must_replace(tc, '#include "kernels/cuda/cuda_common.cuh"\n', '#include "cuda_common_emu.cuh"\n')
decl = "extern __shared__ __align__(128) unsigned char tc_smem[];"
tc = must_replace(tc, decl, "unsigned char* const tc_smem = ::emu::dyn_smem();", 3)
tc += "}  // namespace\n\n}  // namespace sppft::cuda::attn\n"
open(os.path.join(gen, "attention_train_tc_emu.h"), "w").write(tc)

# Self-check: undoing the substitutions gives back the original prefix byte for byte.
back = tc[: -len("}  // namespace\n\n}  // namespace sppft::cuda::attn\n")]
back = back.replace("unsigned char* const tc_smem = ::emu::dyn_smem();", decl)
back = back.replace('#include "emu_cuda.h"\n', "#include <mma.h>\n")
back = back.replace('#include "attention_tiles_emu.cuh"\n', '#include "kernels/cuda/attention_tiles.cuh"\n')
back = back.replace('#include "cuda_common_emu.cuh"\n', '#include "kernels/cuda/cuda_common.cuh"\n')
assert back == tc_orig[:cut], "extraction changed kernel text"
print(f"extract: attention_train_tc.cu sha256 {hashlib.sha256(tc_orig.encode()).hexdigest()[:16]}, "
      f"{tc_orig[:cut].count(chr(10))} of {tc_orig.count(chr(10))} lines kept (host tail cut), kernel text verified")
