#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y) {
  const auto n = x.dim(0), h = x.dim(1);
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* yp = y.data<float>();
  const float offset = unit_offset ? 1.0f : 0.0f;
#pragma omp parallel for if (n * h > 65536)
  for (std::int64_t r = 0; r < n; ++r) {
    const float* xr = xp + r * h;
    double ss = 0;  // double accumulation: the reference must not drift with H
    for (std::int64_t j = 0; j < h; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / h) + eps);
    float* yr = yp + r * h;
    for (std::int64_t j = 0; j < h; ++j) yr[j] = (xr[j] * inv) * (wp[j] + offset);
  }
}

}  // namespace sppft::cpu
