// glu_forward, glu_backward, add_inplace and convert on the GPU (elementwise; the CPU twins are
// kernels/cpu/glu.cpp and glu_backward.cpp).
//
//   glu:  out[i] = act(gate[i]) * up[i]      gate, up, out [N, F]
//     silu(g) = g / (1 + e^-g)
//     gelu_tanh(g) = g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
//     gelu_erf(g) = g/2 (1 + erf(g / sqrt 2))
//   add:  x[i] += y[i]                         same shapes
//   convert: dst[i] = src[i]                   same element count, F32 <-> BF16 (round to nearest even)
//
// dtypes: glu: gate and up of one dtype (F32 or BF16), out F32 or BF16; out may alias gate
// or up exactly (each thread reads its elements before writing them). add, convert: each
// side F32 or BF16. fp32 math (full-precision expf / tanhf / erff), rounded once on store.
// Grid-stride loops; 16-byte packs of 8 elements when the count is a multiple of 8 and
// every base is 16-byte aligned, scalar otherwise.
//
// glu_backward (math: kernels/ops.h; operation order of kernels/cpu/glu_backward.cpp):
//   dgate = dout * up * act'(gate),  dup = dout * act(gate)
// dtypes: gate and up of one dtype, dout, dgate and dup of one dtype (each F32 or BF16);
// fp32 math, rounded once on store. Same grid-stride / 16-byte-pack scheme as the forward;
// each thread loads gate, up and dout of its elements before storing dgate and dup, so
// dgate may alias gate or dout and dup may alias up or dout (exactly; an alias with gate
// or up needs that dtype too). dgate and dup must be distinct.
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using detail::bf16;

enum : int { kSiLU = 0, kGeluTanh = 1, kGeluErf = 2 };

// Same operation order as the CPU reference.
template <int ACT>
__device__ __forceinline__ float glu_one(float g, float u, float k_tanh) {
  if constexpr (ACT == kSiLU) {
    return g / (1.0f + expf(-g)) * u;
  } else if constexpr (ACT == kGeluTanh) {
    return 0.5f * g * (1.0f + tanhf(k_tanh * (g + 0.044715f * g * g * g))) * u;
  } else {
    return 0.5f * g * (1.0f + erff(g / sqrtf(2.0f))) * u;
  }
}

// No __restrict__: out may alias gate or up.
template <int ACT, typename TI, typename TO, bool VEC>
__global__ void glu_kernel(const TI* gate, const TI* up, TO* out, std::int64_t n, float k_tanh) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if constexpr (VEC) {
    for (std::int64_t p = first; p < n / 8; p += stride) {
      float g[8], u[8];
      detail::load8(gate + p * 8, g);
      detail::load8(up + p * 8, u);
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = glu_one<ACT>(g[e], u[e], k_tanh);
      detail::store8(out + p * 8, g);
    }
  } else {
    for (std::int64_t i = first; i < n; i += stride)
      out[i] = detail::from_f32<TO>(glu_one<ACT>(detail::to_f32(gate[i]), detail::to_f32(up[i]), k_tanh));
  }
}

// act(g) and act'(g), as kernels/cpu/glu_backward.cpp.
template <int ACT>
__device__ __forceinline__ void glu_grad_one(float x, float k_tanh, float& a, float& da) {
  if constexpr (ACT == kSiLU) {
    const float s = 1.0f / (1.0f + expf(-x));
    a = x * s;
    da = s * (1.0f + x * (1.0f - s));
  } else if constexpr (ACT == kGeluTanh) {
    constexpr float c = 0.044715f;
    const float t = tanhf(k_tanh * (x + c * x * x * x));
    a = 0.5f * x * (1.0f + t);
    da = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k_tanh * (1.0f + 3.0f * c * x * x);
  } else {
    constexpr float inv_sqrt2 = static_cast<float>(M_SQRT1_2);
    constexpr float inv_sqrt_2pi = static_cast<float>(0.5 * M_2_SQRTPI * M_SQRT1_2);  // 1 / sqrt(2 pi)
    const float cdf = 0.5f * (1.0f + erff(x * inv_sqrt2));
    a = x * cdf;
    da = cdf + x * expf(-0.5f * x * x) * inv_sqrt_2pi;
  }
}

// No __restrict__: dgate may alias gate or dout, dup may alias up or dout.
template <int ACT, typename TI, typename TG, bool VEC>
__global__ void glu_backward_kernel(const TI* gate, const TI* up, const TG* dout, TG* dgate, TG* dup, std::int64_t n,
                                    float k_tanh) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if constexpr (VEC) {
    for (std::int64_t p = first; p < n / 8; p += stride) {
      float g[8], u[8], d[8];
      detail::load8(gate + p * 8, g);
      detail::load8(up + p * 8, u);
      detail::load8(dout + p * 8, d);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float a, da;
        glu_grad_one<ACT>(g[e], k_tanh, a, da);
        g[e] = d[e] * u[e] * da;  // dgate
        u[e] = d[e] * a;          // dup
      }
      detail::store8(dgate + p * 8, g);
      detail::store8(dup + p * 8, u);
    }
  } else {
    for (std::int64_t i = first; i < n; i += stride) {
      const float g = detail::to_f32(gate[i]), u = detail::to_f32(up[i]), d = detail::to_f32(dout[i]);
      float a, da;
      glu_grad_one<ACT>(g, k_tanh, a, da);
      dgate[i] = detail::from_f32<TG>(d * u * da);
      dup[i] = detail::from_f32<TG>(d * a);
    }
  }
}

// x = x + y (ADD) or x = y (convert), elementwise through fp32, rounded once on store.
template <typename TX, typename TY, bool VEC, bool ADD>
__global__ void add_kernel(TX* x, const TY* y, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if constexpr (VEC) {
    for (std::int64_t p = first; p < n / 8; p += stride) {
      float a[8], b[8];
      if constexpr (ADD) detail::load8(x + p * 8, a);
      detail::load8(y + p * 8, b);
#pragma unroll
      for (int e = 0; e < 8; ++e) a[e] = ADD ? a[e] + b[e] : b[e];
      detail::store8(x + p * 8, a);
    }
  } else {
    for (std::int64_t i = first; i < n; i += stride)
      x[i] = detail::from_f32<TX>(ADD ? detail::to_f32(x[i]) + detail::to_f32(y[i]) : detail::to_f32(y[i]));
  }
}

// launch(std::integral_constant<int, A>{}) with the kernel constant of `act`.
template <typename F>
void dispatch_activation(ops::GluActivation act, F&& launch) {
  switch (act) {
    case ops::GluActivation::SiLU: launch(std::integral_constant<int, kSiLU>{}); break;
    case ops::GluActivation::GeluTanh: launch(std::integral_constant<int, kGeluTanh>{}); break;
    case ops::GluActivation::GeluErf: launch(std::integral_constant<int, kGeluErf>{}); break;
  }
}

}  // namespace

void glu_forward(const Tensor& gate, const Tensor& up, ops::GluActivation act, Tensor& out) {
  const char* op = "glu_forward";
  detail::check_cuda_tensor(gate, op, "gate");
  detail::check_cuda_tensor(up, op, "up");
  detail::check_cuda_tensor(out, op, "out");
  detail::check_float(gate, op, "gate");
  detail::check_float(out, op, "out");
  detail::check(up.dtype() == gate.dtype(), op, "gate and up must have the same dtype");
  detail::check_shape(up, gate.shape(), op, "up");
  detail::check_shape(out, gate.shape(), op, "out");
  detail::check((out.raw() != gate.raw() && out.raw() != up.raw()) || out.dtype() == gate.dtype(), op,
                "out may alias gate or up only with the same dtype");
  const std::int64_t n = gate.numel();
  if (n == 0) return;
  const float k_tanh = std::sqrt(2.0f / static_cast<float>(M_PI));  // as the CPU reference
  const bool vec =
      n % 8 == 0 && detail::aligned16(gate.raw()) && detail::aligned16(up.raw()) && detail::aligned16(out.raw());
  const unsigned blocks = detail::grid_blocks(vec ? n / 8 : n, 256);
  cudaStream_t s = detail::stream();
  detail::dispatch_float(gate.dtype(), [&](auto ti) {
    using TI = typename decltype(ti)::type;
    detail::dispatch_float(out.dtype(), [&](auto to) {
      using TO = typename decltype(to)::type;
      auto launch = [&](auto act_tag) {
        constexpr int A = decltype(act_tag)::value;
        if (vec)
          glu_kernel<A, TI, TO, true><<<blocks, 256, 0, s>>>(gate.data<TI>(), up.data<TI>(), out.data<TO>(), n, k_tanh);
        else
          glu_kernel<A, TI, TO, false><<<blocks, 256, 0, s>>>(gate.data<TI>(), up.data<TI>(), out.data<TO>(), n, k_tanh);
        detail::check_launch();
      };
      dispatch_activation(act, launch);
    });
  });
}

namespace {
// x = x + y (add) or x = y (convert); y's element count must equal x's.
template <bool ADD>
void elementwise_into(Tensor& x, const Tensor& y, const char* op) {
  detail::check_cuda_tensor(x, op, ADD ? "x" : "dst");
  detail::check_cuda_tensor(y, op, ADD ? "y" : "src");
  detail::check_float(x, op, ADD ? "x" : "dst");
  detail::check_float(y, op, ADD ? "y" : "src");
  if constexpr (ADD) {
    detail::check_shape(y, x.shape(), op, "y");
  } else {
    detail::check(y.numel() == x.numel(), op, "element counts differ: " + shape_str(y.shape()) + " vs " + shape_str(x.shape()));
    detail::check(y.raw() != x.raw() || y.dtype() == x.dtype(), op, "src and dst overlap with different dtypes");
  }
  const std::int64_t n = x.numel();
  if (n == 0) return;
  const bool vec = n % 8 == 0 && detail::aligned16(x.raw()) && detail::aligned16(y.raw());
  const unsigned blocks = detail::grid_blocks(vec ? n / 8 : n, 256);
  cudaStream_t s = detail::stream();
  detail::dispatch_float(x.dtype(), [&](auto tx) {
    using TX = typename decltype(tx)::type;
    detail::dispatch_float(y.dtype(), [&](auto ty) {
      using TY = typename decltype(ty)::type;
      if (vec)
        add_kernel<TX, TY, true, ADD><<<blocks, 256, 0, s>>>(x.data<TX>(), y.data<TY>(), n);
      else
        add_kernel<TX, TY, false, ADD><<<blocks, 256, 0, s>>>(x.data<TX>(), y.data<TY>(), n);
      detail::check_launch();
    });
  });
}
}  // namespace

void add_inplace(Tensor& x, const Tensor& y) { elementwise_into<true>(x, y, "add_inplace"); }

void convert(const Tensor& src, Tensor& dst) { elementwise_into<false>(dst, src, "convert"); }

void glu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, ops::GluActivation act, Tensor& dgate,
                  Tensor& dup) {
  const char* op = "glu_backward";
  detail::check_cuda_tensor(gate, op, "gate");
  detail::check_cuda_tensor(up, op, "up");
  detail::check_cuda_tensor(dout, op, "dout");
  detail::check_cuda_tensor(dgate, op, "dgate");
  detail::check_cuda_tensor(dup, op, "dup");
  detail::check_float(gate, op, "gate");
  detail::check_float(dout, op, "dout");
  detail::check(up.dtype() == gate.dtype(), op, "gate and up must have the same dtype");
  detail::check(dgate.dtype() == dout.dtype() && dup.dtype() == dout.dtype(), op,
                "dout, dgate and dup must have the same dtype");
  detail::check_shape(up, gate.shape(), op, "up");
  detail::check_shape(dout, gate.shape(), op, "dout");
  detail::check_shape(dgate, gate.shape(), op, "dgate");
  detail::check_shape(dup, gate.shape(), op, "dup");
  const std::int64_t n = gate.numel();
  if (n == 0) return;
  detail::check(dgate.raw() != dup.raw(), op, "dgate and dup must be distinct buffers");
  detail::check(dgate.raw() != gate.raw() || dgate.dtype() == gate.dtype(), op,
                "dgate may alias gate only with the same dtype");
  detail::check(dup.raw() != up.raw() || dup.dtype() == up.dtype(), op, "dup may alias up only with the same dtype");
  const float k_tanh = std::sqrt(2.0f / static_cast<float>(M_PI));  // as the CPU reference
  const bool vec = n % 8 == 0 && detail::aligned16(gate.raw()) && detail::aligned16(up.raw()) &&
                   detail::aligned16(dout.raw()) && detail::aligned16(dgate.raw()) && detail::aligned16(dup.raw());
  const unsigned blocks = detail::grid_blocks(vec ? n / 8 : n, 256);
  cudaStream_t s = detail::stream();
  detail::dispatch_float(gate.dtype(), [&](auto ti) {
    using TI = typename decltype(ti)::type;
    detail::dispatch_float(dout.dtype(), [&](auto tg) {
      using TG = typename decltype(tg)::type;
      auto launch = [&](auto act_tag) {
        constexpr int A = decltype(act_tag)::value;
        if (vec)
          glu_backward_kernel<A, TI, TG, true><<<blocks, 256, 0, s>>>(
              gate.data<TI>(), up.data<TI>(), dout.data<TG>(), dgate.data<TG>(), dup.data<TG>(), n, k_tanh);
        else
          glu_backward_kernel<A, TI, TG, false><<<blocks, 256, 0, s>>>(
              gate.data<TI>(), up.data<TI>(), dout.data<TG>(), dgate.data<TG>(), dup.data<TG>(), n, k_tanh);
        detail::check_launch();
      };
      dispatch_activation(act, launch);
    });
  });
}

}  // namespace sppft::cuda
