// Backward of linear_forward on the CPU: OpenBLAS sgemm for dx and dw, a
// column-blocked double-precision sum for dbias.
#include <cblas.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

// dx [N, K] (+)= dy [N, M] . w [M, K]
void linear_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  const auto n = dy.dim(0), m = dy.dim(1), k = w.dim(1);
  if (n == 0 || k == 0) return;
  if (m == 0) {
    if (!accumulate) std::fill_n(dx.data<float>(), n * k, 0.0f);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(k), static_cast<int>(m),
              1.0f, dy.data<float>(), static_cast<int>(m), w.data<float>(), static_cast<int>(k),
              accumulate ? 1.0f : 0.0f, dx.data<float>(), static_cast<int>(k));
}

// dw [M, K] += dy^T [M, N] . x [N, K];  dbias [M] += sum_n dy[n, :]
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor* dbias) {
  const auto n = dy.dim(0), m = dy.dim(1), k = x.dim(1);
  if (n == 0 || m == 0) return;
  if (k > 0)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(k), static_cast<int>(n),
                1.0f, dy.data<float>(), static_cast<int>(m), x.data<float>(), static_cast<int>(k), 1.0f,
                dw.data<float>(), static_cast<int>(k));
  if (!dbias) return;
  // Columns in blocks, rows in order inside each block: deterministic and cache friendly.
  const float* g = dy.data<float>();
  float* b = dbias->data<float>();
  constexpr std::int64_t kBlock = 256;
  const std::int64_t blocks = (m + kBlock - 1) / kBlock;
#pragma omp parallel for if (n * m > 65536)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(m, c0 + kBlock);
    double acc[kBlock] = {};
    for (std::int64_t r = 0; r < n; ++r) {
      const float* row = g + r * m;
      for (std::int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
    }
    for (std::int64_t c = c0; c < c1; ++c) b[c] += static_cast<float>(acc[c - c0]);
  }
}

}  // namespace sppft::cpu
