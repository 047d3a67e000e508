// rmsnorm_forward on the GPU.
//
//   y[n, j] = (x[n, j] * r_n) * (w[j] + offset),  r_n = 1 / sqrt(mean_j x[n, j]^2 + eps)
//   x, y [N, H], w [H]; offset = 1 for gemma's (1 + w) (unit_offset), else 0.
//
// dtypes: x, w, y each F32 or BF16 (any combination); all arithmetic fp32.
// One block per row (grid-stride over rows): each thread sums the squares of its elements
// in fp32, warp-shuffle then cross-warp reduction, then a second pass over the row (from
// L1/L2) writes y. 16-byte packs of 8 elements when H % 8 == 0 and the bases are aligned.
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using detail::bf16;

// Sum over the block; every thread gets the total. blockDim.x is a multiple of 32, <= 1024.
__device__ __forceinline__ float block_sum(float v, float* sh) {
  v = detail::warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  float t = lane < warps ? sh[lane] : 0.0f;
  t = detail::warp_sum(t);
  __syncthreads();  // sh may be reused by the next row
  return t;
}

template <typename TX, typename TW, typename TY, bool VEC>
__global__ void rmsnorm_kernel(const TX* __restrict__ x, const TW* __restrict__ w, TY* __restrict__ y, std::int64_t n,
                               std::int64_t h, float eps, float offset) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const TX* xr = x + r * h;
    TY* yr = y + r * h;
    float ss = 0.0f;
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float v[8];
        detail::load8(xr + j, v);
#pragma unroll
        for (int e = 0; e < 8; ++e) ss = fmaf(v[e], v[e], ss);
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) {
        const float v = detail::to_f32(xr[j]);
        ss = fmaf(v, v, ss);
      }
    }
    ss = block_sum(ss, sh);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float v[8], wv[8];
        detail::load8(xr + j, v);
        detail::load8(w + j, wv);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = (v[e] * inv) * (wv[e] + offset);
        detail::store8(yr + j, v);
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x)
        yr[j] = detail::from_f32<TY>((detail::to_f32(xr[j]) * inv) * (detail::to_f32(w[j]) + offset));
    }
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y) {
  const char* op = "rmsnorm_forward";
  detail::check_cuda_tensor(x, op, "x");
  detail::check_cuda_tensor(w, op, "w");
  detail::check_cuda_tensor(y, op, "y");
  detail::check(x.rank() == 2, op, "x must be [N, H]");
  detail::check_float(x, op, "x");
  detail::check_float(w, op, "w");
  detail::check_float(y, op, "y");
  const std::int64_t n = x.dim(0), h = x.dim(1);
  detail::check_shape(w, {h}, op, "w");
  detail::check_shape(y, x.shape(), op, "y");
  if (n == 0 || h == 0) return;

  const bool vec = h % 8 == 0 && detail::aligned16(x.raw()) && detail::aligned16(w.raw()) && detail::aligned16(y.raw());
  const std::int64_t per_thread_items = vec ? h / 8 : h;
  const int threads = static_cast<int>(std::clamp<std::int64_t>((per_thread_items + 31) / 32 * 32, 32, 256));
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(n, 1 << 20));
  const float offset = unit_offset ? 1.0f : 0.0f;
  cudaStream_t s = detail::stream();
  detail::dispatch_float(x.dtype(), [&](auto tx) {
    using TX = typename decltype(tx)::type;
    detail::dispatch_float(w.dtype(), [&](auto tw) {
      using TW = typename decltype(tw)::type;
      detail::dispatch_float(y.dtype(), [&](auto ty) {
        using TY = typename decltype(ty)::type;
        if (vec)
          rmsnorm_kernel<TX, TW, TY, true>
              <<<blocks, threads, 0, s>>>(x.data<TX>(), w.data<TW>(), y.data<TY>(), n, h, eps, offset);
        else
          rmsnorm_kernel<TX, TW, TY, false>
              <<<blocks, threads, 0, s>>>(x.data<TX>(), w.data<TW>(), y.data<TY>(), n, h, eps, offset);
        detail::check_launch();
      });
    });
  });
}

}  // namespace sppft::cuda
