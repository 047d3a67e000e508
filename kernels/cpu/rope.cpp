// RoPE on the CPU, forward and backward. The rotation is orthogonal, so the backward rotates the
// gradient back by the same fp32 angle (its transpose), in place.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

namespace {

// Rotates each pair (i, i + half) of every head of row r by `sign` * positions[r] * inv_freq[i],
// half = len(inv_freq) (head_dim / 2, or less: the dimensions past 2 * half are not rotated),
// cos and sin times `scale` (1: bitwise the plain rotation).
void rotate_half_pairs(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float sign,
                       float scale) {
  const auto n = x.dim(0), width = x.dim(1), heads = width / head_dim, half = inv_freq.dim(0);
  const auto* pos = positions.data<std::int32_t>();
  const float* freq = inv_freq.data<float>();
  float* xp = x.data<float>();
#pragma omp parallel for if (n * width > 65536)
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t i = 0; i < half; ++i) {
      // fp32 angle, as transformers computes it (inv_freq @ positions in float32).
      const float a = static_cast<float>(pos[r]) * freq[i];
      const float c = std::cos(a) * scale, s = sign * (std::sin(a) * scale);
      for (std::int64_t h = 0; h < heads; ++h) {
        float* v = xp + r * width + h * head_dim;
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * s;
        v[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale) {
  rotate_half_pairs(x, positions, inv_freq, head_dim, 1.0f, scale);
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale) {
  rotate_half_pairs(dx, positions, inv_freq, head_dim, -1.0f, scale);
}

}  // namespace sppft::cpu
