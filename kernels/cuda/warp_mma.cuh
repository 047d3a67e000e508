// Warp-level tensor-core and asynchronous-copy primitives of sm_80+ (PTX), for kernels that
// keep their matrix fragments in registers (attention_train_mma.cu). The emulated-device
// build (tests/emu/emu_cuda.h defines SPPFT_EMU_DEVICE) provides the same functions on
// emulated warps, with the fragment layouts below.
//
// Fragment layouts of mma.m16n8k16 (bf16 in, fp32 accumulate); lane = 4 g + t
// (g = lane / 4, t = lane % 4); each 32-bit register holds two bf16, the lower-numbered
// column (A) or row (B) in its low half:
//   A (16 x 16, row major)  a[0]: (g, 2t..2t+1)  a[1]: (g+8, 2t..)  a[2]: (g, 2t+8..)  a[3]: (g+8, 2t+8..)
//   B (16 x 8, "col")       b[0]: rows (2t, 2t+1) of column g      b[1]: rows (2t+8, 2t+9) of column g
//   C, D (16 x 8, fp32)     c[0], c[1]: (g, 2t), (g, 2t+1)         c[2], c[3]: (g+8, 2t), (g+8, 2t+1)
// ldmatrix.x4: lanes 8i .. 8i+7 give the 16-byte row addresses of 8 x 8 bf16 matrix i; lane
// l gets in r[i] the elements (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1) of matrix i
// (.trans: (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4), i.e. of its transpose).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sppft::cuda::ptx {

#if defined(SPPFT_EMU_DEVICE)
using ::emu::ptx::cp_async_16;
using ::emu::ptx::cp_async_commit;
using ::emu::ptx::cp_async_wait;
using ::emu::ptx::ldmatrix_x4;
using ::emu::ptx::ldmatrix_x4_trans;
using ::emu::ptx::mma_16816;
#else
__device__ __forceinline__ unsigned smem_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// r[i] = this lane's two elements of matrix i (see above); row must be 16-byte aligned shared memory.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row))
               : "memory");
}

// d += A B (16 x 16 by 16 x 8, bf16 products exact in fp32, fp32 accumulation).
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without passing through registers; complete after
// cp_async_wait<n> once at most n newer groups are pending (then __syncthreads to share).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(smem_dst)), "l"(gmem_src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

// Two floats as a bf16 pair, `lo` in the low half (the lower column of an A fragment).
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}

}  // namespace sppft::cuda::ptx
