// Helpers for gradient clipping: sum of squares (for the global norm) and scaling.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

double sum_squares(const Tensor& t) {
  const auto n = t.numel();
  const float* p = t.data<float>();
  // Fixed chunks summed in a fixed order: the same bits whatever the thread count.
  constexpr std::int64_t kChunk = 1 << 14;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(chunks, 0.0);
#pragma omp parallel for if (n > 65536)
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t b = c * kChunk, e = std::min(n, b + kChunk);
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t i = b; i < e; ++i) s += static_cast<double>(p[i]) * p[i];
    part[c] = s;
  }
  double total = 0;
  for (double s : part) total += s;
  return total;
}

void scale_inplace(Tensor& t, float s) {
  const auto n = t.numel();
  float* p = t.data<float>();
#pragma omp parallel for simd if (n > 65536)
  for (std::int64_t i = 0; i < n; ++i) p[i] *= s;
}

}  // namespace sppft::cpu
