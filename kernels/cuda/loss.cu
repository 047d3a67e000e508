// cross_entropy on the GPU.
//
//   loss = sum over non-ignored n of  lse(logits[n, :]) - logits[n, targets[n]]        (double)
//   dlogits[n, :] = grad_scale * (softmax(logits[n, :]) - onehot(targets[n]))   (0 for ignored rows)
//   logits, dlogits [N, V]; targets I32 [N], -100 = ignored (ops::kIgnoreIndex).
// With softcap > 0 (Gemma-2's final_logit_softcapping) both are those of the capped logits
// z' = softcap * tanh(z / softcap), and the gradient goes through the cap to the raw logits:
//   loss = sum lse(z'[n, :]) - z'[n, targets[n]],
//   dlogits[n, :] = grad_scale * (softmax(z'[n, :]) - onehot(targets[n])) * (1 - (z'[n, :] / softcap)^2)
// softcap == 0: no cap, and the arithmetic of the uncapped kernel unchanged (a uniform branch).
//
// dtypes: logits F32 or BF16; dlogits F32 or BF16 (any pair; when it aliases logits, same
// storage and offset, it has logits' dtype). All arithmetic fp32; row losses in double.
//
// Three steps on the stream, two synchronisations:
//  1. check_targets flags a target outside [0, V) that is not -100; the host reads the flag
//     back (sync 1) and throws InputError before anything is written, like the CPU reference.
//  2. ce_row_kernel, one block per row (grid-stride over rows): pass 1 is an online
//     max / sum-of-exp over the row in fp32 (each thread its strided elements, then a fixed
//     warp-shuffle and cross-warp combine: deterministic for a given V, which fixes the block
//     size); the target logit is read before the block's barrier, so an in-place dlogits
//     (aliasing logits) is only written after every read of the row. Pass 2 writes
//     dlogits = exp(x - max) * (grad_scale / sum), minus grad_scale at the target. Capped,
//     both passes cap each raw logit as they read it (pass 2 reads the raw logit of the
//     element it then overwrites, in the same thread: an in-place call is safe) and pass 2
//     multiplies by the slope 1 - (x' / softcap)^2 of that capped x'.
//     Each row's loss, lse - target logit in double (0 for ignored rows), goes to scratch.
//  3. sum_rows_kernel, one block of 1024 threads, adds the N row losses in a fixed order
//     (thread t sums rows t, t + 1024, ... in order, then a fixed tree), and the host reads
//     the double back (sync 2). So the result has the same bits on every run.
#include <cmath>
#include <string>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/device_scratch.h"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using detail::bf16;

__global__ void check_targets_kernel(const std::int32_t* __restrict__ targets, std::int64_t n, std::int64_t vocab,
                                     int* __restrict__ flag) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int32_t t = targets[i];
    if (t != ops::kIgnoreIndex && (t < 0 || t >= vocab)) {
      if (atomicExch(&flag[0], 1) == 0) flag[1] = t;  // the first bad target found is reported
    }
  }
}

// Online softmax state: running max mx and sum of exp(x - mx).
struct MaxSum {
  float mx, s;
};
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float mx = fmaxf(a.mx, b.mx);
  if (mx == -INFINITY) return {mx, 0.0f};  // both empty (or all -inf)
  return {mx, a.s * expf(a.mx - mx) + b.s * expf(b.mx - mx)};
}
__device__ __forceinline__ void push(MaxSum& st, float x) {
  if (x > st.mx) {
    st.s = st.s * expf(st.mx - x) + 1.0f;  // st.mx = -inf at first: exp(-inf) = 0
    st.mx = x;
  } else if (x != -INFINITY) {
    st.s += expf(x - st.mx);
  }
}

// Combine over the block; every thread gets the result. blockDim.x a multiple of 32, <= 1024.
__device__ __forceinline__ MaxSum block_combine(MaxSum v, MaxSum* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, v.mx, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = combine(v, other);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  MaxSum t = lane < warps ? sh[lane] : MaxSum{-INFINITY, 0.0f};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, t.mx, o), __shfl_xor_sync(0xffffffffu, t.s, o)};
    t = combine(t, other);
  }
  __syncthreads();  // sh may be reused by the next row
  return t;
}

// VEC: V % 8 == 0 and both bases 16-byte aligned, so every row is read/written in packs of 8.
template <typename TL, typename TD, bool VEC>
__global__ void ce_row_kernel(const TL* logits, const std::int32_t* __restrict__ targets, TD* dlogits,
                              double* __restrict__ row_loss, std::int64_t n, std::int64_t vocab, float grad_scale,
                              float softcap) {
  // logits and dlogits may alias (in place): no __restrict__ on them.
  __shared__ MaxSum sh[32];
  __shared__ float target_logit;
  for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const std::int32_t t = targets[r];
    const TL* l = logits + r * vocab;
    TD* g = dlogits ? dlogits + r * vocab : nullptr;
    if (t == ops::kIgnoreIndex) {  // uniform over the block
      if (g) {
        for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) g[j] = detail::from_f32<TD>(0.0f);
      }
      if (threadIdx.x == 0) row_loss[r] = 0.0;
      continue;
    }
    const bool capped = softcap > 0.0f;  // uniform over the grid
    if (threadIdx.x == 0) {  // read before any write of the row
      target_logit = detail::to_f32(l[t]);
      if (capped) target_logit = detail::soft_cap(target_logit, softcap);
    }
    MaxSum st{-INFINITY, 0.0f};
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < vocab; j += blockDim.x * 8) {
        float v[8];
        detail::load8(l + j, v);
        if (capped) {
#pragma unroll
          for (int e = 0; e < 8; ++e) push(st, detail::soft_cap(v[e], softcap));
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) push(st, v[e]);
        }
      }
    } else if (capped) {
      for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) push(st, detail::soft_cap(detail::to_f32(l[j]), softcap));
    } else {
      for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) push(st, detail::to_f32(l[j]));
    }
    st = block_combine(st, sh);  // its barriers also publish target_logit and end every read of pass 1
    const float tl = target_logit;
    if (g) {
      const float k = grad_scale / st.s;
      if constexpr (VEC) {
        for (std::int64_t j = threadIdx.x * 8; j < vocab; j += blockDim.x * 8) {
          float v[8];
          detail::load8(l + j, v);
          if (capped) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
              const float c = detail::soft_cap(v[e], softcap);
              v[e] = expf(c - st.mx) * k;
              if (j + e == t) v[e] -= grad_scale;
              v[e] *= detail::soft_cap_slope(c, softcap);
            }
          } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
              v[e] = expf(v[e] - st.mx) * k;
              if (j + e == t) v[e] -= grad_scale;
            }
          }
          detail::store8(g + j, v);
        }
      } else if (capped) {
        for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
          const float c = detail::soft_cap(detail::to_f32(l[j]), softcap);
          float v = expf(c - st.mx) * k;
          if (j == t) v -= grad_scale;
          g[j] = detail::from_f32<TD>(v * detail::soft_cap_slope(c, softcap));
        }
      } else {
        for (std::int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
          float v = expf(detail::to_f32(l[j]) - st.mx) * k;
          if (j == t) v -= grad_scale;
          g[j] = detail::from_f32<TD>(v);
        }
      }
    }
    if (threadIdx.x == 0)
      row_loss[r] = static_cast<double>(st.mx) + log(static_cast<double>(st.s)) - static_cast<double>(tl);
    __syncthreads();  // target_logit is rewritten by the next row
  }
}

constexpr int kSumThreads = 1024;

// out[0] = sum of x[0 .. n), in a fixed order. One block of kSumThreads threads.
__global__ void sum_rows_kernel(const double* __restrict__ x, std::int64_t n, double* __restrict__ out) {
  __shared__ double sh[kSumThreads];
  double s = 0.0;
  for (std::int64_t i = threadIdx.x; i < n; i += kSumThreads) s += x[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int half = kSumThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) sh[threadIdx.x] += sh[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = sh[0];
}

}  // namespace

double cross_entropy(const Tensor& logits, const Tensor& targets, float grad_scale, Tensor* dlogits, float softcap) {
  const char* op = "cross_entropy";
  using detail::check;
  check(softcap >= 0.0f, op, "softcap must be >= 0");
  detail::check_cuda_tensor(logits, op, "logits");
  detail::check_cuda_tensor(targets, op, "targets");
  check(logits.rank() == 2, op, "logits must be [N, V]");
  detail::check_float(logits, op, "logits");
  check(targets.dtype() == DType::I32 && targets.rank() == 1, op, "targets must be a 1-d I32 tensor");
  const std::int64_t n = logits.dim(0), vocab = logits.dim(1);
  check(targets.dim(0) == n, op, "targets must have one entry per logits row");
  if (dlogits) {
    detail::check_cuda_tensor(*dlogits, op, "dlogits");
    detail::check_float(*dlogits, op, "dlogits");
    detail::check_shape(*dlogits, logits.shape(), op, "dlogits");
    check(dlogits->raw() != logits.raw() || dlogits->dtype() == logits.dtype(), op,
          "dlogits aliasing logits must have logits' dtype");
  }
  if (n == 0) return 0.0;

  cudaStream_t s = detail::stream();
  int* flag = detail::error_flag();
  SPPFT_CUDA_CHECK(cudaMemsetAsync(flag, 0, 2 * sizeof(int), s));
  check_targets_kernel<<<detail::grid_blocks(n, 256, 1024), 256, 0, s>>>(targets.data<std::int32_t>(), n, vocab,
                                                                          flag);
  detail::check_launch();
  int host_flag[2] = {0, 0};
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(host_flag, flag, sizeof host_flag, cudaMemcpyDeviceToHost, s));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(s));
  if (host_flag[0])
    throw InputError("cross_entropy: target " + std::to_string(host_flag[1]) + " outside the vocabulary (size " +
                     std::to_string(vocab) + ") and not -100 (ignored)");
  if (vocab == 0) return 0.0;  // every row ignored (any other target would have thrown)

  // Scratch: n row losses, then the total.
  auto* row_loss = static_cast<double*>(detail::scratch(device_scratch::cross_entropy(n)));
  double* total = row_loss + n;
  const bool vec = vocab % 8 == 0 && detail::aligned16(logits.raw()) && (!dlogits || detail::aligned16(dlogits->raw()));
  const std::int64_t items = vec ? vocab / 8 : vocab;  // per row
  const int threads = items >= 8192 ? 1024 : items >= 2048 ? 512 : items >= 512 ? 256 : 128;
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(n, 1 << 20));
  detail::dispatch_float(logits.dtype(), [&](auto tl) {
    using TL = typename decltype(tl)::type;
    detail::dispatch_float(dlogits ? dlogits->dtype() : logits.dtype(), [&](auto td) {
      using TD = typename decltype(td)::type;
      TD* g = dlogits ? dlogits->data<TD>() : nullptr;
      if (vec)
        ce_row_kernel<TL, TD, true><<<blocks, threads, 0, s>>>(logits.data<TL>(), targets.data<std::int32_t>(), g,
                                                               row_loss, n, vocab, grad_scale, softcap);
      else
        ce_row_kernel<TL, TD, false><<<blocks, threads, 0, s>>>(logits.data<TL>(), targets.data<std::int32_t>(), g,
                                                                row_loss, n, vocab, grad_scale, softcap);
      detail::check_launch();
    });
  });
  sum_rows_kernel<<<1, kSumThreads, 0, s>>>(row_loss, n, total);
  detail::check_launch();
  double result = 0.0;
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(&result, total, sizeof result, cudaMemcpyDeviceToHost, s));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(s));
  return result;
}

}  // namespace sppft::cuda
