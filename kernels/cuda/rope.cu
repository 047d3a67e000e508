// rope_forward and rope_backward on the GPU (Hugging Face half-split layout), in place.
//
//   for each row n, head h, i < R/2:  a = float(positions[n]) * inv_freq[i]   (fp32, as transformers)
//     x1 = x[n, h*D + i], x2 = x[n, h*D + i + R/2]
//     x1' = x1 cos a - x2 sin a,   x2' = x2 cos a + x1 sin a
//   x [N, heads * D], positions I32 [N], inv_freq F32 [R/2], R <= D the rotated dimensions of
//   each head (R < D: a partial_rotary_factor; dimensions R..D-1 are not touched).
//   cos a and sin a are multiplied by `scale` first (1: exact, the plain rotation).
//
// dtypes: x F32 or BF16 (rotation in fp32, rounded once on store).
// One thread per (row, i): it computes sincos(a) once (full-precision sincosf, no fast
// math) and rotates that pair in every head; consecutive threads touch consecutive i, so
// each head's half-rows are read and written coalesced. Products and differences use
// explicitly rounded intrinsics (no FMA contraction) to follow the CPU reference's
// operation order.
//
// rope_backward: the inverse rotation, in place on the gradient (same angle, halves, layout):
//   dx1' = dx1 cos a + dx2 sin a,   dx2' = dx2 cos a - dx1 sin a
// The same kernel with INVERSE = true: the angle and its sincosf are computed by the very
// same code as the forward, so both directions use bitwise the same cos / sin.
#include <string>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

template <typename T, bool INVERSE>
__global__ void rope_kernel(T* __restrict__ x, const std::int32_t* __restrict__ pos, const float* __restrict__ freq,
                            std::int64_t n, std::int64_t width, std::int64_t heads, std::int64_t head_dim,
                            std::int64_t half, float scale) {
  const std::int64_t total = n * half;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = idx / half, i = idx % half;
    const float a = __fmul_rn(static_cast<float>(pos[r]), freq[i]);
    float sn, cs;
    sincosf(a, &sn, &cs);
    cs = __fmul_rn(cs, scale);
    sn = __fmul_rn(sn, scale);
    T* base = x + r * width + i;
    for (std::int64_t h = 0; h < heads; ++h) {
      T* v = base + h * head_dim;
      const float x1 = detail::to_f32(v[0]), x2 = detail::to_f32(v[half]);
      if constexpr (!INVERSE) {
        v[0] = detail::from_f32<T>(__fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn)));
        v[half] = detail::from_f32<T>(__fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn)));
      } else {
        v[0] = detail::from_f32<T>(__fadd_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn)));
        v[half] = detail::from_f32<T>(__fsub_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn)));
      }
    }
  }
}

// Checks and launch shared by rope_forward (name "x") and rope_backward (name "dx").
void rope_launch(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale,
                 bool inverse, const char* op, const char* name) {
  using detail::check;
  detail::check_cuda_tensor(x, op, name);
  detail::check_cuda_tensor(positions, op, "positions");
  detail::check_cuda_tensor(inv_freq, op, "inv_freq");
  check(x.rank() == 2 && head_dim > 0 && head_dim % 2 == 0 && x.dim(1) % head_dim == 0, op,
        std::string(name) + " must be [N, heads * head_dim] with an even head_dim");
  detail::check_float(x, op, name);
  check(positions.dtype() == DType::I32 && positions.rank() == 1 && positions.dim(0) == x.dim(0), op,
        "positions must be a 1-d I32 tensor with one entry per row");
  check(inv_freq.dtype() == DType::F32 && inv_freq.rank() == 1 && inv_freq.dim(0) >= 1 && inv_freq.dim(0) <= head_dim / 2,
        op, "inv_freq must be F32 [R/2] with 1 <= R/2 <= head_dim / 2");
  const std::int64_t n = x.dim(0), width = x.dim(1), heads = width / head_dim, half = inv_freq.dim(0);
  if (n == 0 || width == 0) return;
  const std::int64_t total = n * half;
  const unsigned blocks = detail::grid_blocks(total, 256);
  cudaStream_t s = detail::stream();
  detail::dispatch_float(x.dtype(), [&](auto tx) {
    using T = typename decltype(tx)::type;
    if (inverse)
      rope_kernel<T, true><<<blocks, 256, 0, s>>>(x.data<T>(), positions.data<std::int32_t>(), inv_freq.data<float>(),
                                                   n, width, heads, head_dim, half, scale);
    else
      rope_kernel<T, false><<<blocks, 256, 0, s>>>(x.data<T>(), positions.data<std::int32_t>(),
                                                    inv_freq.data<float>(), n, width, heads, head_dim, half, scale);
    detail::check_launch();
  });
}

}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale) {
  rope_launch(x, positions, inv_freq, head_dim, scale, false, "rope_forward", "x");
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale) {
  rope_launch(dx, positions, inv_freq, head_dim, scale, true, "rope_backward", "dx");
}

}  // namespace sppft::cuda
