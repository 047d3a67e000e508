// The safety probe: how far apart normal and malicious queries sit in the
// chosen layers, cheap enough to run every K training steps. For probe sets N
// and M (a few dozen queries each) and layers S, the probe reports per layer
// mean angle(N-M pairs) - mean angle(N-N pairs) in degrees over all pairs, and
// the mean over S. Fine-tuning that erodes safety shrinks this gap.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/prompts.h"
#include "models/model.h"

namespace sppft {

class SafetyProbe {
 public:
  SafetyProbe(const Model& model, const std::vector<PromptRecord>& normal, const std::vector<PromptRecord>& malicious,
              std::vector<std::int64_t> layers, PromptTemplate t = PromptTemplate::Alpaca);
  struct Reading {
    std::vector<double> gap_deg;  // per probed layer
    double mean_gap_deg = 0;
  };
  Reading measure(Model& model) const;
  const std::vector<std::int64_t>& layers() const { return layers_; }

 private:
  std::vector<std::vector<std::int32_t>> normal_, malicious_;
  std::vector<std::int64_t> layers_;
};

}  // namespace sppft
