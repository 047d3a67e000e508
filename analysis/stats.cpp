#include "analysis/stats.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"
#include "engine/text.h"

namespace sppft {

Interval wilson_interval(double rate, std::int64_t n, double z) {
  if (n <= 0) throw InputError("wilson_interval: the number of trials must be positive, got " + std::to_string(n));
  if (!(rate >= 0 && rate <= 1)) throw InputError("wilson_interval: rate " + std::to_string(rate) + " is outside [0, 1]");
  const double nn = static_cast<double>(n), z2 = z * z;
  const double centre = (rate + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z / (1 + z2 / nn) * std::sqrt(rate * (1 - rate) / nn + z2 / (4 * nn * nn));
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

double mcnemar_exact_p(std::int64_t b, std::int64_t c) {
  if (b < 0 || c < 0) throw InputError("mcnemar_exact_p: counts must be >= 0");
  const std::int64_t m = b + c, k = std::min(b, c);
  if (m == 0) return 1.0;
  // P[X <= k] as a sum of terms C(m, i) / 2^m in log space: m reaches thousands.
  const double log_half_m = static_cast<double>(m) * std::log(0.5), lg_m1 = std::lgamma(static_cast<double>(m) + 1);
  double tail = 0;
  for (std::int64_t i = 0; i <= k; ++i)
    tail += std::exp(lg_m1 - std::lgamma(static_cast<double>(i) + 1) - std::lgamma(static_cast<double>(m - i) + 1) + log_half_m);
  return std::min(1.0, 2 * tail);
}

std::string p_value_text(double p) { return printf_string(p < 1e-3 ? "%.1e" : "%.3f", p); }

}  // namespace sppft
