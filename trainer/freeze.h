// The freeze plan: which parameters train. `--freeze 6-12` (inclusive,
// 0-indexed, several ranges allowed: "2-3,6-12") freezes the attention and MLP
// weights (and biases) of those blocks, as the paper's SPPFT does; options
// also freeze their RMSNorm weights, the embeddings and the lm_head.
//
// A frozen tensor gets no gradient buffer, no fp32 master copy, no optimizer
// moments and no weight-gradient computation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/config.h"

namespace sppft {

struct LayerRange {
  std::int64_t first;
  std::int64_t last;  // inclusive
};

// Parses "6-12", "6-12,20-21" or "7"; InputError for malformed text or a
// range outside [0, num_layers).
std::vector<LayerRange> parse_layer_ranges(const std::string& text, std::int64_t num_layers, const std::string& flag);
std::string format_layer_ranges(const std::vector<LayerRange>& r);
// "[6, 12]": how reports, logs and plots name one range.
std::string layer_range_label(LayerRange r);
// The range at JSON pointer `pointer` of a document sppft wrote ([first, last], as in cossim.json's
// initial_range and locate.json's final_range); InputError naming `where` unless it is two
// block indices, first <= last. (The caller checks them against its model.)
LayerRange layer_range_at(const Json& doc, std::string_view pointer, std::string_view where);

struct FreezePlan {
  std::vector<bool> block_frozen;  // attention + MLP weights of block k frozen
  bool norms = false;              // also the two RMSNorm weights of frozen blocks
  bool embeddings = false;
  bool lm_head = false;
  bool final_norm = false;

  static FreezePlan none(std::int64_t num_layers) { return FreezePlan{std::vector<bool>(num_layers, false)}; }
  static FreezePlan from_ranges(const std::vector<LayerRange>& ranges, std::int64_t num_layers);

  // Whether the parameter with this Hugging Face name (block -1 = not in a block) trains.
  bool trains(const std::string& name, int block, const ModelConfig& c) const;
  // Whether block k has any trainable parameter.
  bool block_has_trainable(std::int64_t k) const;
  // Lowest block whose backward is needed: below it nothing trains (when the
  // embeddings are frozen too), so backward stops there. num_layers when no
  // block needs backward.
  std::int64_t lowest_backward_block(std::int64_t num_layers) const;
  std::string describe() const;
};

}  // namespace sppft
