#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace sppft {

Schedule parse_schedule(const std::string& name) {
  if (name == "constant") return Schedule::Constant;
  if (name == "linear") return Schedule::Linear;
  if (name == "cosine") return Schedule::Cosine;
  throw InputError("--schedule: unknown schedule '" + name + "' (expected constant, linear or cosine)");
}

double learning_rate(Schedule s, double base_lr, std::int64_t step, std::int64_t warmup, std::int64_t total) {
  if (step < warmup) return base_lr * static_cast<double>(step) / std::max<std::int64_t>(1, warmup);
  if (s == Schedule::Constant) return base_lr;
  const double progress = static_cast<double>(step - warmup) / std::max<std::int64_t>(1, total - warmup);
  if (s == Schedule::Linear) return base_lr * std::max(0.0, 1.0 - progress);
  return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace sppft
