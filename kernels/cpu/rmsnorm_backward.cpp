// Backward of rmsnorm_forward. Two passes: dw by column blocks (reads dy), then dx
// by rows (so dx may overwrite dy). Row reductions in double, like the forward.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, bool unit_offset, Tensor& dx,
                      Tensor* dw, bool accumulate_dx) {
  const auto n = x.dim(0), h = x.dim(1);
  if (n == 0 || h == 0) return;
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* gp = dy.data<float>();
  float* dxp = dx.data<float>();
  const double offset = unit_offset ? 1.0 : 0.0;
  const bool big = n * h > 65536;

  // r[n] = 1 / sqrt(mean(x^2) + eps)
  std::vector<double> r(n);
#pragma omp parallel for if (big)
  for (std::int64_t row = 0; row < n; ++row) {
    const float* xr = xp + row * h;
    double ss = 0;
    for (std::int64_t j = 0; j < h; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    r[row] = 1.0 / std::sqrt(ss / h + eps);
  }

  if (dw) {  // dw[j] += sum_n dy[n, j] x[n, j] r[n]
    float* dwp = dw->data<float>();
    constexpr std::int64_t kBlock = 256;
    const std::int64_t blocks = (h + kBlock - 1) / kBlock;
#pragma omp parallel for if (big)
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      const std::int64_t c0 = blk * kBlock, c1 = std::min(h, c0 + kBlock);
      double acc[kBlock] = {};
      for (std::int64_t row = 0; row < n; ++row) {
        const float* xr = xp + row * h;
        const float* gr = gp + row * h;
        const double rr = r[row];
        for (std::int64_t c = c0; c < c1; ++c) acc[c - c0] += static_cast<double>(gr[c]) * xr[c] * rr;
      }
      for (std::int64_t c = c0; c < c1; ++c) dwp[c] += static_cast<float>(acc[c - c0]);
    }
  }

  // dx[n, j] = r w'_j dy_j - x_j r^3 / H * sum_k dy_k w'_k x_k
#pragma omp parallel for if (big)
  for (std::int64_t row = 0; row < n; ++row) {
    const float* xr = xp + row * h;
    const float* gr = gp + row * h;
    float* dr = dxp + row * h;
    double dot = 0;
    for (std::int64_t j = 0; j < h; ++j) dot += static_cast<double>(gr[j]) * (wp[j] + offset) * xr[j];
    const double rr = r[row];
    const float a = static_cast<float>(rr), b = static_cast<float>(rr * rr * rr * dot / h);
    const float off = static_cast<float>(offset);
    if (accumulate_dx)
      for (std::int64_t j = 0; j < h; ++j) dr[j] += a * (wp[j] + off) * gr[j] - b * xr[j];
    else
      for (std::int64_t j = 0; j < h; ++j) dr[j] = a * (wp[j] + off) * gr[j] - b * xr[j];
  }
}

}  // namespace sppft::cpu
