// Cross-entropy over the vocabulary, one row per task, optionally in place on the
// logits (each row's log-sum-exp and target logit are read before the row is
// overwritten with its gradient). Row losses are summed in order, in double, so the
// result does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/error.h"
#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

double cross_entropy(const Tensor& logits, const Tensor& targets, float grad_scale, Tensor* dlogits, float softcap) {
  const auto n = logits.dim(0), vocab = logits.dim(1);
  const auto* tg = targets.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i)
    if (tg[i] != ops::kIgnoreIndex && (tg[i] < 0 || tg[i] >= vocab))
      throw InputError("cross_entropy: target " + std::to_string(tg[i]) + " at row " + std::to_string(i) +
                       " outside the vocabulary (size " + std::to_string(vocab) + ") and not -100 (ignored)");
  const float* lp = logits.data<float>();
  float* dp = dlogits ? dlogits->data<float>() : nullptr;
  std::vector<double> row_loss(n, 0.0);
#pragma omp parallel if (n * vocab > 65536)
  {
    std::vector<float> capped(softcap > 0 ? vocab : 0);  // the row's capped logits (the gradient may overwrite the row)
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      const float* l = lp + i * vocab;
      float* g = dp ? dp + i * vocab : nullptr;
      if (tg[i] == ops::kIgnoreIndex) {
        if (g) std::fill_n(g, vocab, 0.0f);
        continue;
      }
      if (softcap > 0) {
        for (std::int64_t j = 0; j < vocab; ++j) capped[j] = ops::soft_cap(l[j], softcap);
        l = capped.data();
      }
      float mx = -INFINITY;
      for (std::int64_t j = 0; j < vocab; ++j) mx = std::max(mx, l[j]);
      const float target_logit = l[tg[i]];  // read before an in-place gradient overwrites it
      double sum = 0;
      if (g) {  // keep exp(l - max) in the gradient row: one exp per element
        for (std::int64_t j = 0; j < vocab; ++j) {
          const float e = std::exp(l[j] - mx);
          g[j] = e;
          sum += e;
        }
        const float k = static_cast<float>(grad_scale / sum);
        for (std::int64_t j = 0; j < vocab; ++j) g[j] *= k;
        g[tg[i]] -= grad_scale;
        if (softcap > 0)  // through the cap
          for (std::int64_t j = 0; j < vocab; ++j) g[j] *= ops::soft_cap_slope(l[j], softcap);
      } else {
        for (std::int64_t j = 0; j < vocab; ++j) sum += std::exp(l[j] - mx);
      }
      row_loss[i] = mx + std::log(sum) - target_logit;
    }
  }
  double total = 0;
  for (double x : row_loss) total += x;
  return total;
}

}  // namespace sppft::cpu
