// How much a rate measured on a few hundred queries can be trusted. R_h on 520 AdvBench goals
// moves by a few points between two runs of the same model by chance alone; these say whether a
// difference between runs is larger than that.
#pragma once

#include <cstdint>
#include <string>

namespace sppft {

struct Interval {
  double lo = 0, hi = 0;
};

// The Wilson score interval of a proportion observed as `rate` over n trials, at the normal
// quantile z (1.96: 95%). Unlike the normal approximation p +- z sqrt(p(1-p)/n) it stays inside
// [0, 1] and is not empty at p = 0 or 1 (0 of 100 answered gives [0, 3.7%]). n must be positive.
Interval wilson_interval(double rate, std::int64_t n, double z = 1.959963984540054);

// The two-sided exact McNemar test of two runs judged on the same queries: b queries counted
// (answered, refused, unsafe) by the second run only, c by the first only. Under "no difference"
// each of the b + c discordant queries falls on either side with probability 1/2, so
// p = min(1, 2 P[X <= min(b, c)]) for X ~ Binomial(b + c, 1/2); 1 when b + c = 0.
double mcnemar_exact_p(std::int64_t b, std::int64_t c);

// A p-value as the reports print it: three decimals, or two significant digits below 0.001.
std::string p_value_text(double p);

}  // namespace sppft
