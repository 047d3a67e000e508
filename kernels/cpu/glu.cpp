#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void glu_forward(const Tensor& gate, const Tensor& up, ops::GluActivation act, Tensor& out) {
  const auto n = gate.numel();
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  switch (act) {
    case ops::GluActivation::SiLU:
#pragma omp parallel for if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      break;
    case ops::GluActivation::GeluTanh: {
      const float k = std::sqrt(2.0f / static_cast<float>(M_PI));
#pragma omp parallel for if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) {
        const float x = g[i];
        o[i] = 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x))) * u[i];
      }
      break;
    }
    case ops::GluActivation::GeluErf:
#pragma omp parallel for if (n > 65536)
      for (std::int64_t i = 0; i < n; ++i) o[i] = 0.5f * g[i] * (1.0f + std::erf(g[i] / std::sqrt(2.0f))) * u[i];
      break;
  }
}

void add_inplace(Tensor& x, const Tensor& y) {
  const auto n = x.numel();
  float* a = x.data<float>();
  const float* b = y.data<float>();
#pragma omp parallel for if (n > 65536)
  for (std::int64_t i = 0; i < n; ++i) a[i] += b[i];
}

}  // namespace sppft::cpu
