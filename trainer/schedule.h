// Learning-rate schedules, as transformers' get_*_schedule_with_warmup:
// linear warmup from 0 over `warmup` steps, then constant, linear decay to 0,
// or cosine decay to 0 at `total` steps. `step` counts optimizer steps from 0.
#pragma once

#include <cstdint>
#include <string>

namespace sppft {

enum class Schedule { Constant, Linear, Cosine };
Schedule parse_schedule(const std::string& name);  // InputError on unknown names

double learning_rate(Schedule s, double base_lr, std::int64_t step, std::int64_t warmup, std::int64_t total);

}  // namespace sppft
