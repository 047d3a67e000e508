#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim) {
  const auto n = x.dim(0), width = x.dim(1), heads = width / head_dim, half = head_dim / 2;
  const auto* pos = positions.data<std::int32_t>();
  const float* freq = inv_freq.data<float>();
  float* xp = x.data<float>();
#pragma omp parallel for if (n * width > 65536)
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t i = 0; i < half; ++i) {
      // fp32 angle, as transformers computes it (inv_freq @ positions in float32).
      const float a = static_cast<float>(pos[r]) * freq[i];
      const float c = std::cos(a), s = std::sin(a);
      for (std::int64_t h = 0; h < heads; ++h) {
        float* v = xp + r * width + h * head_dim;
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * s;
        v[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

}  // namespace sppft::cpu
