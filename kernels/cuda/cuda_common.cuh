// Internal helpers shared by the kernels/cuda/*.cu files (not part of the public
// API, which is kernels/cuda/cuda_ops.h): the stream, per-device scratch, host-side
// argument checks, dtype dispatch, fp32 <-> storage conversion, 16-byte packed
// loads and stores, warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "engine/cuda_check.h"
#include "engine/error.h"
#include "engine/tensor.h"

namespace sppft::cuda::detail {

using bf16 = __nv_bfloat16;

// ---- runtime (kernels/cuda/runtime.cu) ----
// The stream every op queues its work on (legacy default stream for now: one place to
// change when the engine gets stream objects).
cudaStream_t stream();
// Multiprocessor count of the current device (cached).
int sm_count();
// Device scratch of at least `bytes` for the current device, grown on demand, valid until
// the next scratch() call; stream order makes reuse by the next op safe.
void* scratch(std::size_t bytes);
// Two device ints for error reports from kernels (per device).
int* error_flag();
// Frees the scratch and flag of the current device (runtime.cu) and the cuBLASLt state
// (linear.cu).
void release_runtime_cache();
void release_linear_cache();

// ---- host-side checks (throw InputError naming op and tensor) ----
inline void check(bool cond, const char* op, const std::string& what) {
  if (!cond) throw InputError(std::string(op) + " (cuda): " + what);
}
inline void check_cuda_tensor(const Tensor& t, const char* op, const char* name) {
  check(t.defined(), op, std::string(name) + " is undefined");
  check(t.device() == Device::CUDA, op, std::string(name) + " must be on the GPU (it is on the CPU)");
}
inline void check_float(const Tensor& t, const char* op, const char* name) {
  check(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op,
        std::string(name) + " must be F32 or BF16, not " + std::string(dtype_name(t.dtype())));
}
inline void check_shape(const Tensor& t, const Shape& s, const char* op, const char* name) {
  check(t.shape() == s, op, std::string(name) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(s));
}
inline void check_launch() { SPPFT_CUDA_CHECK(cudaGetLastError()); }

// Per-device caches (cuBLASLt state, workspaces) are indexed by device; this bounds them.
constexpr int kMaxDevices = 64;
inline int current_device() {
  int dev = 0;
  SPPFT_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= kMaxDevices) throw RuntimeFailure("cuda: device index " + std::to_string(dev) + " unsupported");
  return dev;
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Blocks for a grid-stride loop over n items, capped (the loop covers the rest).
inline unsigned grid_blocks(std::int64_t n, int threads, std::int64_t cap = 65536) {
  std::int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

// ---- dtype dispatch: f(TypeTag<float>{}) or f(TypeTag<bf16>{}) ----
template <typename T>
struct TypeTag {
  using type = T;
};
template <typename F>
decltype(auto) dispatch_float(DType dt, F&& f) {
  if (dt == DType::BF16) return f(TypeTag<bf16>{});
  return f(TypeTag<float>{});  // callers have checked F32 / BF16
}

// ---- device: conversions ----
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  return __float2bfloat16_rn(x);  // round to nearest even, as torch and engine/dtype.h
}

// ---- device: packs of 8 elements, one or two 16-byte accesses ----
// The pointer must be 16-byte aligned (callers check the base and keep offsets multiples of 8).
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void load8(const bf16* p, float (&v)[8]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h;
    *reinterpret_cast<unsigned*>(&h) = w[i];
    const float2 f = __bfloat1622float2(h);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(bf16* p, const float (&v)[8]) {
  unsigned w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);  // .x = low half = first
    w[i] = *reinterpret_cast<const unsigned*>(&h);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- device: Gemma-2 soft-capping (ops::soft_cap, ops::soft_cap_slope) ----
// cap(x) = softcap * tanh(x / softcap) and its derivative at the capped value c,
// 1 - (c / softcap)^2. Only for softcap > 0: callers branch on it, so that the uncapped path
// keeps its exact arithmetic.
__device__ __forceinline__ float soft_cap(float x, float softcap) { return softcap * tanhf(x / softcap); }
__device__ __forceinline__ float soft_cap_slope(float c, float softcap) {
  const float u = c / softcap;
  return 1.0f - u * u;
}

// ---- device: warp reductions (all 32 lanes take part and get the result) ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One key tile of the online softmax (flash attention) for the R query rows a warp
// holds, one key per lane: `score[i]` is this lane's scaled score for row i (-inf when
// the key is masked). Updates the running max m[i] and sum l[i] (warp-uniform), rescales
// the row's output columns o[i][:] and leaves this lane's probability in p[i] (0 when
// masked, or while no key of the row has been visible yet).
template <int R, int C>
__device__ __forceinline__ void online_softmax_step(const float (&score)[R], float (&m)[R], float (&l)[R],
                                                    float (&o)[R][C], float (&p)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const float mnew = fmaxf(m[i], warp_max(score[i]));
    if (mnew == -INFINITY) {
      p[i] = 0.0f;
      continue;
    }
    p[i] = score[i] == -INFINITY ? 0.0f : expf(score[i] - mnew);
    const float corr = expf(m[i] - mnew);  // 0 when m was -inf
    l[i] = l[i] * corr + warp_sum(p[i]);
    m[i] = mnew;
#pragma unroll
    for (int c = 0; c < C; ++c) o[i][c] *= corr;
  }
}

// acc[i][c] += sum over jj < n of (lane jj's w[i]) * rows[jj * stride + lane + 32 c]: each
// lane's per-row weight (a probability, a dS) broadcast across the warp and applied to a
// shared-memory tile whose columns lane + 32 c this lane owns (P V, dS K).
template <int R, int C>
__device__ __forceinline__ void accumulate_broadcast(const float (&w)[R], const float* rows, int stride, int n,
                                                     float (&acc)[R][C]) {
  for (int jj = 0; jj < n; ++jj) {
    float r[C];
#pragma unroll
    for (int c = 0; c < C; ++c) r[c] = rows[jj * stride + (threadIdx.x % 32) + 32 * c];
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const float wj = __shfl_sync(0xffffffffu, w[i], jj);
#pragma unroll
      for (int c = 0; c < C; ++c) acc[i][c] = fmaf(wj, r[c], acc[i][c]);
    }
  }
}

}  // namespace sppft::cuda::detail
