// Backward of rope_forward: the rotation is orthogonal, so the gradient is rotated
// back by the same angle (its transpose), in place.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim) {
  const auto n = dx.dim(0), width = dx.dim(1), heads = width / head_dim, half = head_dim / 2;
  const auto* pos = positions.data<std::int32_t>();
  const float* freq = inv_freq.data<float>();
  float* xp = dx.data<float>();
#pragma omp parallel for if (n * width > 65536)
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t i = 0; i < half; ++i) {
      // Same fp32 angle as the forward.
      const float a = static_cast<float>(pos[r]) * freq[i];
      const float c = std::cos(a), s = std::sin(a);
      for (std::int64_t h = 0; h < heads; ++h) {
        float* v = xp + r * width + h * head_dim;
        const float g1 = v[i], g2 = v[i + half];
        v[i] = g1 * c + g2 * s;
        v[i + half] = g2 * c - g1 * s;
      }
    }
  }
}

}  // namespace sppft::cpu
