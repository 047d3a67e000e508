// Hidden-state capture: the residual stream at the last prompt position of
// every block, Hugging Face indexing (0 = embeddings, k + 1 = raw output of
// block k, no final norm), plus the final-normed last state.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/model.h"

namespace sppft {

struct HiddenStates {
  Tensor states;        // [prompts, L + 1, H]
  Tensor final_normed;  // [prompts, H]
};

HiddenStates capture_hidden_states(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                   std::int64_t batch_size = 16,
                                   const std::function<void(std::size_t, std::size_t)>& progress = {});

// Writes tensors `hidden_states` and `final_normed` (fp32) atomically.
void save_hidden_states(const HiddenStates& h, const fs::path& path);

}  // namespace sppft
