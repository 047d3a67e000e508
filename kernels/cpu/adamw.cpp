// AdamW, one tensor per call, written to follow torch.optim.AdamW's single-tensor
// path (torch 2.x, torch/optim/adam.py `_single_tensor_adam`, amsgrad = maximize =
// False, capturable = False) operation by operation: scalars in double (Python
// floats), tensor math in fp32 with each torch op's rounding:
//   param.mul_(1 - lr * wd)
//   exp_avg.lerp_(grad, 1 - beta1)                 lerp(a, b, w) = |w| < 0.5 ? a + w (b - a) : b - (b - a)(1 - w),
//                                                  one fused multiply-add as torch's vectorized lerp
//   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value = 1 - beta2)
//   denom = exp_avg_sq.sqrt() / sqrt(1 - beta2^step) + eps
//   param.addcdiv_(exp_avg, denom, value = -lr / (1 - beta1^step))
// Agreement with torch is within a couple of ulps, not bitwise: torch's vectorized
// sqrt is not always correctly rounded (tests/kernels/optimizer_test.cpp).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWParams& hp,
                std::int64_t step) {
  const auto n = param.numel();
  float* p = param.data<float>();
  const float* g = grad.data<float>();
  float* mp = m.data<float>();
  float* vp = v.data<float>();
  const double st = static_cast<double>(step);
  const float decay = static_cast<float>(1.0 - hp.lr * hp.weight_decay);
  const float w1 = static_cast<float>(1.0 - hp.beta1);
  const bool lerp_low = std::fabs(w1) < 0.5f;
  const float b2 = static_cast<float>(hp.beta2);
  const float w2 = static_cast<float>(1.0 - hp.beta2);
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(hp.beta2, st)));
  const float eps = static_cast<float>(hp.eps);
  const float neg_step = static_cast<float>(-(hp.lr / (1.0 - std::pow(hp.beta1, st))));
#pragma omp parallel for if (n > 65536)
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    float pi = p[i] * decay;
    const float mi = mp[i];
    const float mn = lerp_low ? std::fma(w1, gi - mi, mi) : std::fma(w1 - 1.0f, gi - mi, gi);
    float vi = vp[i] * b2;
    vi = vi + w2 * gi * gi;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    pi = pi + neg_step * mn / denom;
    p[i] = pi;
    mp[i] = mn;
    vp[i] = vi;
  }
}

}  // namespace sppft::cpu
