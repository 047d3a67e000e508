// Backward of glu_forward, elementwise. Each element's inputs are read before its
// outputs are written, so dgate may alias gate or dout and dup may alias up or dout.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

namespace {
template <typename F>
void glu_backward_loop(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup, F act) {
  const auto n = gate.numel();
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  const float* d = dout.data<float>();
  float* dg = dgate.data<float>();
  float* du = dup.data<float>();
#pragma omp parallel for if (n > 65536)
  for (std::int64_t i = 0; i < n; ++i) {
    const float x = g[i], ui = u[i], di = d[i];
    float a, da;
    act(x, a, da);
    dg[i] = di * ui * da;
    du[i] = di * a;
  }
}
}  // namespace

void glu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, ops::GluActivation act, Tensor& dgate,
                  Tensor& dup) {
  switch (act) {
    case ops::GluActivation::SiLU:
      glu_backward_loop(gate, up, dout, dgate, dup, [](float x, float& a, float& da) {
        const float s = 1.0f / (1.0f + std::exp(-x));
        a = x * s;
        da = s * (1.0f + x * (1.0f - s));
      });
      break;
    case ops::GluActivation::GeluTanh:
      glu_backward_loop(gate, up, dout, dgate, dup, [](float x, float& a, float& da) {
        const float k = std::sqrt(2.0f / static_cast<float>(M_PI)), c = 0.044715f;
        const float t = std::tanh(k * (x + c * x * x * x));
        a = 0.5f * x * (1.0f + t);
        da = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
      });
      break;
    case ops::GluActivation::GeluErf:
      glu_backward_loop(gate, up, dout, dgate, dup, [](float x, float& a, float& da) {
        const float inv_sqrt2 = static_cast<float>(M_SQRT1_2);
        const float inv_sqrt_2pi = static_cast<float>(0.5 * M_2_SQRTPI * M_SQRT1_2);  // 1 / sqrt(2 pi)
        const float cdf = 0.5f * (1.0f + std::erf(x * inv_sqrt2));
        a = x * cdf;
        da = cdf + x * std::exp(-0.5f * x * x) * inv_sqrt_2pi;
      });
      break;
  }
}

}  // namespace sppft::cpu
