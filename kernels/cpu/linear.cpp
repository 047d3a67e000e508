// linear_forward on the CPU: one OpenBLAS sgemm, y = x w^T (+ bias).
#include <cblas.h>

#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const auto n = x.dim(0), k = x.dim(1), m = w.dim(0);
  float* out = y.data<float>();
  if (bias) {
    const float* b = bias->data<float>();
    for (std::int64_t r = 0; r < n; ++r) std::memcpy(out + r * m, b, m * sizeof(float));
  }
  if (n == 0) return;
  if (n == 1) {  // decode of one sequence: a matrix-vector product, memory-bound
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(m), static_cast<int>(k), 1.0f, w.data<float>(),
                static_cast<int>(k), x.data<float>(), 1, bias ? 1.0f : 0.0f, out, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
              1.0f, x.data<float>(), static_cast<int>(k), w.data<float>(), static_cast<int>(k), bias ? 1.0f : 0.0f,
              out, static_cast<int>(m));
}

}  // namespace sppft::cpu
