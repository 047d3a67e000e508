#include "analysis/safety_probe.h"

#include <cmath>

#include "engine/error.h"
#include "models/hidden.h"
#include "models/prompting.h"

namespace sppft {

namespace {
double angle_deg(const float* a, const float* b, std::int64_t h) {
  double dot = 0, na = 0, nb = 0;
  for (std::int64_t i = 0; i < h; ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  const double c = na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
  return std::acos(std::max(-1.0, std::min(1.0, c))) * 180.0 / M_PI;
}
}  // namespace

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
      for (std::int64_t b = a + 1; b < nn; ++b, ++ns) same += angle_deg(state(a, k), state(b, k), h);
      for (std::int64_t b = 0; b < nm; ++b, ++nc) cross += angle_deg(state(a, k), state(nn + b, k), h);
    }
    r.gap_deg.push_back(cross / nc - same / ns);
    r.mean_gap_deg += r.gap_deg.back() / static_cast<double>(layers_.size());
  }
  return r;
}

}  // namespace sppft
