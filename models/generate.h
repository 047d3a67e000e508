// Batched generation: all prompts of a chunk prefilled together (packed, no
// padding), then one decode step per new token over the sequences still
// running. Greedy or seeded temperature / top-k / top-p sampling; a sequence
// stops at any EOS id or after max_new_tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "models/model.h"

namespace sppft {

struct SamplingOptions {
  std::int64_t max_new_tokens = 64;
  float temperature = 0.0f;  // 0 = greedy
  std::int64_t top_k = 0;    // 0 = off
  float top_p = 1.0f;        // 1 = off
  std::uint64_t seed = 0;
  std::int64_t batch_size = 16;  // prompts per prefill chunk
};

struct Generation {
  std::vector<std::int32_t> prompt_ids;
  std::vector<std::int32_t> new_ids;  // EOS included when generation stopped on it
  bool stopped_on_eos = false;
};

// `progress(done_prompts, total_prompts)` is called after each chunk.
std::vector<Generation> generate(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                 const SamplingOptions& opts,
                                 const std::function<void(std::size_t, std::size_t)>& progress = {});

// Picks the next token from one row of logits (exposed for tests). Greedy
// takes the first maximum (as torch.argmax). Sampling: logits / temperature,
// keep the top_k largest, keep the smallest set whose probability reaches
// top_p, renormalise, draw with `u` in [0, 1).
std::int32_t pick_token(const float* logits, std::int64_t vocab, const SamplingOptions& opts, double u);

}  // namespace sppft
