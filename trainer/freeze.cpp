#include "trainer/freeze.h"

#include <sstream>

#include "engine/error.h"

namespace sppft {

namespace {
bool parse_int(const std::string& s, std::int64_t& out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 9) return false;
  out = std::stoll(s);
  return true;
}
}  // namespace

std::vector<LayerRange> parse_layer_ranges(const std::string& text, std::int64_t num_layers, const std::string& flag) {
  std::vector<LayerRange> out;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    LayerRange r{};
    auto dash = part.find('-');
    bool ok = dash == std::string::npos ? parse_int(part, r.first) && parse_int(part, r.last)
                                        : parse_int(part.substr(0, dash), r.first) && parse_int(part.substr(dash + 1), r.last);
    if (!ok) throw InputError(flag + ": '" + part + "' is not a layer range (expected a-b, 0-indexed, inclusive)");
    if (r.first > r.last) throw InputError(flag + ": range " + part + " is empty (first > last)");
    if (r.last >= num_layers)
      throw InputError(flag + ": range " + part + " is outside the model (blocks 0-" + std::to_string(num_layers - 1) + ")");
    out.push_back(r);
  }
  if (out.empty()) throw InputError(flag + ": no layer range given");
  return out;
}

std::string format_layer_ranges(const std::vector<LayerRange>& r) {
  std::string s;
  for (const auto& x : r) {  // appends, not operator+ chains: GCC 12 warns (-Wrestrict) on those
    if (!s.empty()) s += ',';
    s += std::to_string(x.first);
    s += '-';
    s += std::to_string(x.last);
  }
  return s;
}

std::string layer_range_label(LayerRange r) {
  std::string s = "[";
  s += std::to_string(r.first);
  s += ", ";
  s += std::to_string(r.last);
  s += ']';
  return s;
}

LayerRange layer_range_at(const Json& doc, std::string_view pointer, std::string_view where) {
  const std::string p(pointer);
  const Json& v = json_at<Json>(doc, pointer, where);
  if (!v.is_array() || v.size() != 2)
    throw InputError(std::string(where) + ": field '" + p.substr(1) + "' must be [first, last] block indices, got " +
                     v.dump(-1, ' ', false, Json::error_handler_t::replace).substr(0, 40));
  const LayerRange r{json_at<std::int64_t>(doc, p + "/0", where), json_at<std::int64_t>(doc, p + "/1", where)};
  if (r.first < 0 || r.first > r.last)
    throw InputError(std::string(where) + ": field '" + p.substr(1) + "' is " + layer_range_label(r) +
                     ", expected block indices with first <= last");
  return r;
}

FreezePlan FreezePlan::from_ranges(const std::vector<LayerRange>& ranges, std::int64_t num_layers) {
  FreezePlan p = none(num_layers);
  for (const auto& r : ranges)
    for (std::int64_t k = r.first; k <= r.last; ++k) p.block_frozen[k] = true;
  return p;
}

bool FreezePlan::trains(const std::string& name, int block, const ModelConfig&) const {
  if (block < 0) {
    if (name == "model.embed_tokens.weight") return !embeddings;
    if (name == "lm_head.weight") return !lm_head;
    if (name == "model.norm.weight") return !final_norm;
    return true;
  }
  if (!block_frozen[block]) return true;
  const bool is_norm = name.find("layernorm") != std::string::npos;
  return is_norm && !norms;
}

bool FreezePlan::block_has_trainable(std::int64_t k) const { return !block_frozen[k] || !norms; }

std::int64_t FreezePlan::lowest_backward_block(std::int64_t num_layers) const {
  if (!embeddings) return 0;
  for (std::int64_t k = 0; k < num_layers; ++k)
    if (block_has_trainable(k)) return k;
  return num_layers;
}

std::string FreezePlan::describe() const {
  std::vector<LayerRange> r;
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(block_frozen.size()); ++k) {
    if (!block_frozen[k]) continue;
    if (!r.empty() && r.back().last == k - 1) r.back().last = k;
    else r.push_back({k, k});
  }
  std::string s = r.empty() ? "full fine-tuning (nothing frozen)" : "frozen blocks " + format_layer_ranges(r) + (norms ? " (with norms)" : " (attention + MLP)");
  if (embeddings) s += ", embeddings frozen";
  if (lm_head) s += ", lm_head frozen";
  return s;
}

}  // namespace sppft
