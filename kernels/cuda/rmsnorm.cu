// rmsnorm_forward, add_rmsnorm_forward and rmsnorm_backward on the GPU.
//
//   y[n, j] = (x[n, j] * r_n) * (w[j] + offset),  r_n = 1 / sqrt(mean_j x[n, j]^2 + eps)
//   x, y [N, H], w [H]; offset = 1 for gemma's (1 + w) (unit_offset), else 0.
//   add_rmsnorm_forward: first x[n, j] += delta[n, j] (rounded to x's dtype) in the kernel's
//   first pass, then the same norm of the stored sum.
//
// dtypes: x, w, y each F32 or BF16 (any combination); all arithmetic fp32.
// One block per row (grid-stride over rows): each thread sums the squares of its elements
// in fp32, warp-shuffle then cross-warp reduction, then a second pass over the row (from
// L1/L2) writes y. 16-byte packs of 8 elements when H % 8 == 0 and the bases are aligned.
//
// rmsnorm_backward (math: kernels/ops.h), with w' = w + offset:
//   dx[n, j] = r_n w'_j dy[n, j] - x[n, j] r_n^3 / H * sum_k dy[n, k] w'_k x[n, k]   (overwritten,
//              or added to dx with accumulate_dx, rounded once)
//   dw[j]   += sum_n dy[n, j] x[n, j] r_n                                          (accumulated)
// dtypes: x, w, dy, dx, dw each F32 or BF16 (any combination; dx may alias dy only with
// the same dtype); fp32 arithmetic, dw read, summed in fp32 and rounded once.
// Kernel 1, rows: `blocks` blocks, block b takes rows b, b + blocks, ... . Per row, pass 1
// sums x^2 and dy w' x (fp32, one block reduction of both), pass 2 re-reads the row and
// writes dx; each element is read and written by the same thread after the row's
// reduction, so dx may overwrite dy. Column j of every row is always handled by the same
// thread of a block, so with dw that thread also accumulates dy x r for its columns into
// the block's own row of partial sums: in shared memory when H <= 8192 (copied to scratch
// at the end), else directly in scratch (L2-resident). Kernel 2 (dw): one thread per
// column sums the `blocks` partials in a fixed order (8 strided fp32 sums, then those 8
// in order) and adds into dw. No atomics: dw is bitwise reproducible run to run (with
// dw, blocks = min(N, 512), independent of the GPU; dx never depends on the grid).
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/device_scratch.h"
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

// delta null: y = rmsnorm(x). Else first x += delta (rounded to TX, which the norm then
// reads): the same thread handles the same columns in both passes, so no barrier is needed
// between writing x and re-reading it.
template <typename TX, typename TW, typename TY, bool VEC>
__global__ void rmsnorm_kernel(TX* __restrict__ x, const TX* __restrict__ delta, const TW* __restrict__ w,
                               TY* __restrict__ y, std::int64_t n, std::int64_t h, float eps, float offset) {
  __shared__ float sh[32];
  for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    TX* xr = x + r * h;
    const TX* dr = delta ? delta + r * h : nullptr;
    TY* yr = y + r * h;
    float ss = 0.0f;
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float v[8];
        detail::load8(xr + j, v);
        if (dr) {
          float d[8];
          detail::load8(dr + j, d);
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] = detail::to_f32(detail::from_f32<TX>(v[e] + d[e]));
          detail::store8(xr + j, v);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) ss = fmaf(v[e], v[e], ss);
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) {
        float v = detail::to_f32(xr[j]);
        if (dr) {
          const TX sum = detail::from_f32<TX>(v + detail::to_f32(dr[j]));
          xr[j] = sum;
          v = detail::to_f32(sum);
        }
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

// ---- backward ----

// Blocks of the backward when dw is wanted (each writes one row of dw partial sums).
constexpr std::int64_t kDwBlocks = device_scratch::kRmsnormDwBlocks;
// Largest H whose per-block dw partials live in shared memory (32 KiB).
constexpr std::int64_t kDwSharedMaxH = 8192;

// Block sums of two values at once; every thread gets both totals.
__device__ __forceinline__ float2 block_sum2(float a, float b, float2* sh) {
  a = detail::warp_sum(a);
  b = detail::warp_sum(b);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) sh[warp] = make_float2(a, b);
  __syncthreads();
  float2 t = lane < warps ? sh[lane] : make_float2(0.0f, 0.0f);
  t.x = detail::warp_sum(t.x);
  t.y = detail::warp_sum(t.y);
  __syncthreads();  // sh may be reused by the next row
  return t;
}

// part: null (no dw) or scratch of gridDim.x * h floats; acc_shared: accumulate the block's
// partials in dynamic shared memory (h floats) and copy them to part at the end.
// No __restrict__ on dy / dx: dx may alias dy.
// accumulate: dx += the value (dx then never aliases dy).
template <typename TX, typename TW, typename TG, typename TD, bool VEC>
__global__ void rmsnorm_backward_kernel(const TX* __restrict__ x, const TW* __restrict__ w, const TG* dy, TD* dx,
                                        float* __restrict__ part, bool acc_shared, bool accumulate, std::int64_t n,
                                        std::int64_t h, float eps, float offset) {
  extern __shared__ float4 dyn_sh[];  // float4: 16-byte aligned for the packed accesses
  __shared__ float2 red[32];
  float* acc = nullptr;
  if (part) {
    acc = acc_shared ? reinterpret_cast<float*>(dyn_sh) : part + blockIdx.x * h;
    // Each thread zeroes (and later touches) only its own columns: no barrier needed.
    if constexpr (VEC) {
      const float z[8] = {};
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) detail::store8(acc + j, z);
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) acc[j] = 0.0f;
    }
  }
  for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const TX* xr = x + r * h;
    const TG* gr = dy + r * h;
    TD* dr = dx + r * h;
    float ss = 0.0f, dot = 0.0f;
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float v[8], g[8], wv[8];
        detail::load8(xr + j, v);
        detail::load8(gr + j, g);
        detail::load8(w + j, wv);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          ss = fmaf(v[e], v[e], ss);
          dot = fmaf(g[e] * (wv[e] + offset), v[e], dot);
        }
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) {
        const float v = detail::to_f32(xr[j]), g = detail::to_f32(gr[j]);
        ss = fmaf(v, v, ss);
        dot = fmaf(g * (detail::to_f32(w[j]) + offset), v, dot);
      }
    }
    const float2 t = block_sum2(ss, dot, red);
    const float rr = 1.0f / sqrtf(t.x / static_cast<float>(h) + eps);  // as the forward
    const float a = rr, b = rr * rr * rr * t.y / static_cast<float>(h);
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float v[8], g[8], wv[8], o[8];
        detail::load8(xr + j, v);
        detail::load8(gr + j, g);
        detail::load8(w + j, wv);
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = a * (wv[e] + offset) * g[e] - b * v[e];
        if (accumulate) {
          float old[8];
          detail::load8(dr + j, old);
#pragma unroll
          for (int e = 0; e < 8; ++e) o[e] += old[e];
        }
        if (acc) {
          float s[8];
          detail::load8(acc + j, s);
#pragma unroll
          for (int e = 0; e < 8; ++e) s[e] = fmaf(g[e] * v[e], rr, s[e]);
          detail::store8(acc + j, s);
        }
        detail::store8(dr + j, o);  // after every read of this pack (dr may be gr)
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) {
        const float v = detail::to_f32(xr[j]), g = detail::to_f32(gr[j]);
        const float o = a * (detail::to_f32(w[j]) + offset) * g - b * v;
        if (acc) acc[j] = fmaf(g * v, rr, acc[j]);
        dr[j] = detail::from_f32<TD>(accumulate ? detail::to_f32(dr[j]) + o : o);
      }
    }
  }
  if (part && acc_shared) {
    float* dst = part + blockIdx.x * h;
    const float* src = reinterpret_cast<const float*>(dyn_sh);
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float s[8];
        detail::load8(src + j, s);
        detail::store8(dst + j, s);
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) dst[j] = src[j];
    }
  }
}

// dw[j] += sum over b of part[b, j], in a fixed order. Block (32, 8): 32 columns; thread
// (tx, ty) sums partial rows ty, ty + 8, ..., then row ty == 0 adds the 8 sums in order.
template <typename TDW>
__global__ void rmsnorm_dw_kernel(const float* __restrict__ part, TDW* __restrict__ dw, std::int64_t parts,
                                  std::int64_t h) {
  __shared__ float sh[8][33];
  const std::int64_t j = blockIdx.x * 32 + static_cast<std::int64_t>(threadIdx.x);
  float s = 0.0f;
  if (j < h)
    for (std::int64_t b = threadIdx.y; b < parts; b += 8) s += part[b * h + j];
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < h) {
    float t = sh[0][threadIdx.x];
#pragma unroll
    for (int k = 1; k < 8; ++k) t += sh[k][threadIdx.x];
    dw[j] = detail::from_f32<TDW>(detail::to_f32(dw[j]) + t);
  }
}

}  // namespace

namespace {
// rmsnorm_forward (delta null) and add_rmsnorm_forward.
void launch_rmsnorm(const Tensor& x, const Tensor* delta, const Tensor& w, float eps, bool unit_offset, Tensor& y,
                    const char* op) {
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
  if (delta) {
    detail::check_cuda_tensor(*delta, op, "delta");
    detail::check(delta->dtype() == x.dtype(), op, "delta must have x's dtype");
    detail::check_shape(*delta, x.shape(), op, "delta");
  }
  if (n == 0 || h == 0) return;

  const bool vec = h % 8 == 0 && detail::aligned16(x.raw()) && detail::aligned16(w.raw()) &&
                   detail::aligned16(y.raw()) && (!delta || detail::aligned16(delta->raw()));

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
        TX* xp = x.data<TX>();  // written only with a delta (add_rmsnorm_forward's x)
        const TX* dp = delta ? delta->data<TX>() : nullptr;
        if (vec)
          rmsnorm_kernel<TX, TW, TY, true>
              <<<blocks, threads, 0, s>>>(xp, dp, w.data<TW>(), y.data<TY>(), n, h, eps, offset);
        else
          rmsnorm_kernel<TX, TW, TY, false>
              <<<blocks, threads, 0, s>>>(xp, dp, w.data<TW>(), y.data<TY>(), n, h, eps, offset);
        detail::check_launch();
      });
    });
  });
}
}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y) {
  launch_rmsnorm(x, nullptr, w, eps, unit_offset, y, "rmsnorm_forward");
}

void add_rmsnorm_forward(Tensor& x, const Tensor& delta, const Tensor& w, float eps, bool unit_offset, Tensor& y) {
  detail::check(y.raw() != x.raw() && y.raw() != delta.raw(), "add_rmsnorm_forward", "y must not alias x or delta");
  launch_rmsnorm(x, &delta, w, eps, unit_offset, y, "add_rmsnorm_forward");
}

void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, bool unit_offset, Tensor& dx,
                      Tensor* dw, bool accumulate_dx) {
  const char* op = "rmsnorm_backward";
  detail::check_cuda_tensor(x, op, "x");
  detail::check_cuda_tensor(w, op, "w");
  detail::check_cuda_tensor(dy, op, "dy");
  detail::check_cuda_tensor(dx, op, "dx");
  if (dw) detail::check_cuda_tensor(*dw, op, "dw");
  detail::check(x.rank() == 2, op, "x must be [N, H]");
  detail::check_float(x, op, "x");
  detail::check_float(w, op, "w");
  detail::check_float(dy, op, "dy");
  detail::check_float(dx, op, "dx");
  if (dw) detail::check_float(*dw, op, "dw");
  const std::int64_t n = x.dim(0), h = x.dim(1);
  detail::check_shape(w, {h}, op, "w");
  detail::check_shape(dy, x.shape(), op, "dy");
  detail::check_shape(dx, x.shape(), op, "dx");
  if (dw) detail::check_shape(*dw, {h}, op, "dw");
  if (n == 0 || h == 0) return;
  detail::check(dx.raw() != x.raw(), op, "dx must not alias x");
  detail::check(dx.raw() != dy.raw() || dx.dtype() == dy.dtype(), op, "dx may alias dy only with the same dtype");
  detail::check(!accumulate_dx || dx.raw() != dy.raw(), op, "an accumulated dx must not alias dy");

  const bool vec = h % 8 == 0 && detail::aligned16(x.raw()) && detail::aligned16(w.raw()) &&
                   detail::aligned16(dy.raw()) && detail::aligned16(dx.raw());
  const std::int64_t per_thread_items = vec ? h / 8 : h;
  const int threads = static_cast<int>(std::clamp<std::int64_t>((per_thread_items + 31) / 32 * 32, 32, 256));
  const float offset = unit_offset ? 1.0f : 0.0f;
  std::int64_t blocks = std::min<std::int64_t>(n, 1 << 20);
  float* part = nullptr;
  bool acc_shared = false;
  std::size_t shmem = 0;
  if (dw) {
    blocks = std::min(n, kDwBlocks);
    part = static_cast<float*>(detail::scratch(device_scratch::rmsnorm_backward(n, h, true)));
    acc_shared = h <= kDwSharedMaxH;
    shmem = acc_shared ? static_cast<std::size_t>(h) * sizeof(float) : 0;
  }
  cudaStream_t s = detail::stream();
  detail::dispatch_float(x.dtype(), [&](auto tx) {
    using TX = typename decltype(tx)::type;
    detail::dispatch_float(w.dtype(), [&](auto tw) {
      using TW = typename decltype(tw)::type;
      detail::dispatch_float(dy.dtype(), [&](auto tg) {
        using TG = typename decltype(tg)::type;
        detail::dispatch_float(dx.dtype(), [&](auto td) {
          using TD = typename decltype(td)::type;
          const auto grid = static_cast<unsigned>(blocks);
          if (vec)
            rmsnorm_backward_kernel<TX, TW, TG, TD, true><<<grid, threads, shmem, s>>>(
                x.data<TX>(), w.data<TW>(), dy.data<TG>(), dx.data<TD>(), part, acc_shared, accumulate_dx, n, h, eps, offset);
          else
            rmsnorm_backward_kernel<TX, TW, TG, TD, false><<<grid, threads, shmem, s>>>(
                x.data<TX>(), w.data<TW>(), dy.data<TG>(), dx.data<TD>(), part, acc_shared, accumulate_dx, n, h, eps, offset);
          detail::check_launch();
        });
      });
    });
  });
  if (dw) {
    const auto grid = static_cast<unsigned>((h + 31) / 32);
    detail::dispatch_float(dw->dtype(), [&](auto tdw) {
      using TDW = typename decltype(tdw)::type;
      rmsnorm_dw_kernel<TDW><<<grid, dim3(32, 8), 0, s>>>(part, dw->data<TDW>(), blocks, h);
      detail::check_launch();
    });
  }
}

}  // namespace sppft::cuda
