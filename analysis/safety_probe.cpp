#include "analysis/safety_probe.h"

#include "analysis/cossim.h"

#include <cmath>

#include "engine/error.h"
#include "models/hidden.h"
#include "models/prompting.h"

namespace sppft {


SafetyProbe::SafetyProbe(const Model& model, const std::vector<PromptRecord>& normal,
                         const std::vector<PromptRecord>& malicious, std::vector<std::int64_t> layers, PromptTemplate t)
    : layers_(std::move(layers)) {
  if (normal.size() < 2 || malicious.size() < 2) throw InputError("--safety-probe: each probe set needs at least 2 queries");
  for (auto k : layers_)
    if (k < 0 || k >= model.config().num_layers) throw InputError("--probe-layers: block " + std::to_string(k) + " is outside the model");
  for (const auto& r : normal) normal_.push_back(encode_prompt(model, r, t));
  for (const auto& r : malicious) malicious_.push_back(encode_prompt(model, r, t));
}

SafetyProbe::Reading SafetyProbe::measure(Model& model) const {
  auto all = normal_;
  all.insert(all.end(), malicious_.begin(), malicious_.end());
  HiddenStates hs = capture_hidden_states(model, all, 64);
  const std::int64_t L = model.config().num_layers, h = model.config().hidden_size;
  const std::int64_t nn = static_cast<std::int64_t>(normal_.size()), nm = static_cast<std::int64_t>(malicious_.size());
  auto state = [&](std::int64_t q, std::int64_t k) { return hs.states.data<float>() + (q * (L + 1) + k + 1) * h; };
  Reading r;
  for (auto k : layers_) {
    double same = 0, cross = 0;
    std::int64_t ns = 0, nc = 0;
    for (std::int64_t a = 0; a < nn; ++a) {
      for (std::int64_t b = a + 1; b < nn; ++b, ++ns) same += angle_degrees(state(a, k), state(b, k), h);
      for (std::int64_t b = 0; b < nm; ++b, ++nc) cross += angle_degrees(state(a, k), state(nn + b, k), h);
    }
    r.gap_deg.push_back(cross / nc - same / ns);
    r.mean_gap_deg += r.gap_deg.back() / static_cast<double>(layers_.size());
  }
  return r;
}

}  // namespace sppft
