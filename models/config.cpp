#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string_view>

#include "engine/error.h"
#include "engine/safetensors.h"

namespace sppft {

namespace {

std::int64_t positive(const Json& j, const char* key, const std::string& where) {
  auto v = json_get<std::int64_t>(j, key, where);
  if (v <= 0) throw InputError(where + ": field '" + key + "' must be positive, got " + std::to_string(v));
  return v;
}

// longrope and yarn: the pretraining length as transformers reads it (a top-level
// original_max_position_embeddings wins, as Phi-3 writes it, then the scaling's, then
// max_position_embeddings) and factor, by default max / original.
void parse_pretraining_length(const Json& j, const Json& scaling, const ModelConfig& c, RopeConfig& r,
                              const std::string& where, const std::string& sw) {
  r.original_max_position_embeddings = json_get_or<std::int64_t>(
      j, "original_max_position_embeddings",
      json_get_or<std::int64_t>(scaling, "original_max_position_embeddings", c.max_position_embeddings, sw), where);
  if (r.original_max_position_embeddings <= 0) throw InputError(sw + ": original_max_position_embeddings must be positive");
  r.factor = json_get_or<double>(
      scaling, "factor",
      static_cast<double>(c.max_position_embeddings) / static_cast<double>(r.original_max_position_embeddings), sw);
}

// One RoPE parameter object (rope_parameters, or the Hub's rope_scaling; null: none) into `r`,
// whose theta is already read; `sw` names the object in errors.
void parse_rope_scaling(const Json& j, const Json& scaling, const ModelConfig& c, RopeConfig& r, const std::string& where,
                        const std::string& sw) {
  if (!(r.theta > 0)) throw InputError(sw + ": rope_theta must be positive");
  if (scaling.is_null()) return;
  if (!scaling.is_object()) throw InputError(sw + ": expected an object or null");
  std::string type = json_get_or<std::string>(scaling, "rope_type", json_get_or<std::string>(scaling, "type", "default", sw), sw);
  if (type == "default") return;
  if (type == "linear") {
    r.type = type;
    r.factor = json_get<double>(scaling, "factor", sw);
  } else if (type == "llama3") {
    r.type = type;
    r.factor = json_get<double>(scaling, "factor", sw);
    r.low_freq_factor = json_get<double>(scaling, "low_freq_factor", sw);
    r.high_freq_factor = json_get<double>(scaling, "high_freq_factor", sw);
    r.original_max_position_embeddings = json_get<std::int64_t>(scaling, "original_max_position_embeddings", sw);
    if (r.high_freq_factor <= r.low_freq_factor) throw InputError(sw + ": high_freq_factor must exceed low_freq_factor");
  } else if (type == "longrope" || type == "su") {  // "su": the name older Phi-3 configs use
    r.type = "longrope";
    r.short_factor = json_get<std::vector<double>>(scaling, "short_factor", sw);
    r.long_factor = json_get<std::vector<double>>(scaling, "long_factor", sw);
    parse_pretraining_length(j, scaling, c, r, where, sw);
    // As transformers: attention_factor defaults to sqrt(1 + ln f / ln original).
    if (scaling.contains("attention_factor") && !scaling["attention_factor"].is_null()) {
      r.attention_factor = json_get<double>(scaling, "attention_factor", sw);
    } else {
      r.attention_factor =
          r.factor <= 1.0
              ? 1.0
              : std::sqrt(1.0 + std::log(r.factor) / std::log(static_cast<double>(r.original_max_position_embeddings)));
    }
    const auto half = static_cast<std::size_t>(c.rope_dim() / 2);
    for (const auto* f : {&r.short_factor, &r.long_factor}) {
      if (f->size() != half)
        throw InputError(sw + ": short_factor and long_factor need " + (c.rope_dim() == c.head_dim ? "head_dim" : "rotary dims") +
                         " / 2 = " + std::to_string(half) +
                         " entries, got " + std::to_string(f->size()));
      for (double x : *f)
        if (!(x > 0)) throw InputError(sw + ": short_factor and long_factor entries must be positive");
    }
    if (!(r.attention_factor > 0)) throw InputError(sw + ": attention_factor must be positive");
    return;
  } else if (type == "yarn") {
    r.type = type;
    parse_pretraining_length(j, scaling, c, r, where, sw);
    const auto mscale = [&](double m) { return r.factor <= 1 ? 1.0 : 0.1 * m * std::log(r.factor) + 1.0; };
    const double m = json_get_or<double>(scaling, "mscale", 0.0, sw), m_all = json_get_or<double>(scaling, "mscale_all_dim", 0.0, sw);
    r.attention_factor = json_get_or<double>(scaling, "attention_factor", m && m_all ? mscale(m) / mscale(m_all) : mscale(1.0), sw);
    // transformers reads these with `or`: 0 and null take the defaults.
    const double fast = json_get_or<double>(scaling, "beta_fast", 0.0, sw), slow = json_get_or<double>(scaling, "beta_slow", 0.0, sw);
    r.beta_fast = fast ? fast : 32.0;
    r.beta_slow = slow ? slow : 1.0;
    r.truncate = json_get_or<bool>(scaling, "truncate", true, sw);
    if (!(r.attention_factor > 0)) throw InputError(sw + ": attention_factor must be positive");
    if (!(r.beta_fast > 0 && r.beta_slow > 0)) throw InputError(sw + ": beta_fast and beta_slow must be positive");
  } else {
    throw InputError(sw + ": rope type '" + type + "' is not implemented (supported: default, linear, llama3, longrope, yarn)");
  }
  if (r.factor <= 0) throw InputError(sw + ": factor must be positive");
}

// partial_rotary_factor: in rope_parameters (transformers 5) or rope_scaling, else at the top level
// (the Hub's Phi-4-mini). Only transformers' Phi-3 rotates part of each head; the other families
// would fail there, so sppft refuses them.
std::int64_t parse_rotary_dim(const Json& j, const ModelConfig& c, const std::string& where) {
  double factor = json_get_or<double>(j, "partial_rotary_factor", 1.0, where);
  for (const char* key : {"rope_parameters", "rope_scaling"})
    if (j.contains(key) && j[key].is_object() && j[key].contains("partial_rotary_factor")) {
      factor = json_get<double>(j[key], "partial_rotary_factor", where + " " + key);
      break;
    }
  if (factor == 1.0) return c.head_dim;
  if (c.family != Family::Phi3)
    throw InputError(where + ": partial_rotary_factor " + std::to_string(factor) + " is implemented for phi3 only (expected 1.0)");
  const auto dim = static_cast<std::int64_t>(std::floor(static_cast<double>(c.head_dim) * factor + 1e-9));
  if (!(factor > 0 && factor < 1) || dim < 2 || dim % 2 != 0)
    throw InputError(where + ": partial_rotary_factor " + std::to_string(factor) + " gives " + std::to_string(dim) +
                     " rotary dimensions of head_dim " + std::to_string(c.head_dim) + ", expected an even number in [2, head_dim]");
  return dim;
}

void parse_rope(const Json& j, ModelConfig& c, const std::string& where) {
  // Newer transformers: rope_parameters {rope_type, rope_theta, factor, ...};
  // the Hub form: rope_theta + rope_scaling {type|rope_type, factor, ...}.
  const double theta_default = c.family == Family::Gemma3 ? 1e6 : 10000.0;
  const bool parameters = j.contains("rope_parameters") && j["rope_parameters"].is_object();
  if (c.family == Family::Gemma3) {
    // Gemma-3: the full-attention layers take rope_theta (1e6) and rope_scaling, the sliding ones
    // rope_local_base_freq (1e4) without scaling; transformers 5 writes rope_parameters by layer type.
    RopeConfig local;
    local.theta = json_get_or<double>(j, "rope_local_base_freq", 10000.0, where);
    const Json by_type = parameters ? j["rope_parameters"] : Json::object();
    const std::string pw = where + " rope_parameters";
    if (parameters && !by_type.contains("full_attention") && !by_type.contains("sliding_attention"))
      throw InputError(pw + ": expected entries full_attention and sliding_attention (gemma3 takes one RoPE per layer type)");
    Json full = by_type.contains("full_attention") ? by_type["full_attention"] : Json();
    if (!parameters && j.contains("rope_scaling")) full = j["rope_scaling"];
    if (full.is_object()) c.rope.theta = json_get_or<double>(full, "rope_theta", json_get_or<double>(j, "rope_theta", theta_default, where), pw);
    else c.rope.theta = json_get_or<double>(j, "rope_theta", theta_default, where);
    parse_rope_scaling(j, full, c, c.rope, where, parameters ? pw + ".full_attention" : where + " rope_scaling");
    const Json sliding = by_type.contains("sliding_attention") ? by_type["sliding_attention"] : Json();
    if (sliding.is_object()) local.theta = json_get_or<double>(sliding, "rope_theta", local.theta, pw + ".sliding_attention");
    parse_rope_scaling(j, sliding, c, local, where, pw + ".sliding_attention");
    c.local_rope = local;
    return;
  }
  Json scaling = Json();
  if (parameters) {
    scaling = j["rope_parameters"];
    c.rope.theta = json_get_or<double>(scaling, "rope_theta", json_get_or<double>(j, "rope_theta", theta_default, where), where + " rope_parameters");
  } else {
    c.rope.theta = json_get_or<double>(j, "rope_theta", theta_default, where);
    if (j.contains("rope_scaling")) scaling = j["rope_scaling"];
  }
  parse_rope_scaling(j, scaling, c, c.rope, where, where + " rope_scaling");
}

// A softcapping field: a positive number, or null / absent (`fallback` when absent).
float softcap_field(const Json& j, const char* key, double fallback, const std::string& where) {
  if (!j.contains(key)) return static_cast<float>(fallback);
  if (j[key].is_null()) return 0.0f;
  const double v = json_get<double>(j, key, where);
  if (!(v > 0)) throw InputError(where + ": " + key + " must be positive or null, got " + std::to_string(v));
  return static_cast<float>(v);
}

// c.sliding_layers from the config's layer_types (all false without it); whether it had them.
bool parse_layer_types(const Json& j, ModelConfig& c, const std::string& where) {
  c.sliding_layers.assign(static_cast<std::size_t>(c.num_layers), false);
  if (!j.contains("layer_types") || j["layer_types"].is_null()) return false;
  const auto types = json_get<std::vector<std::string>>(j, "layer_types", where);
  if (static_cast<std::int64_t>(types.size()) != c.num_layers)
    throw InputError(where + ": layer_types has " + std::to_string(types.size()) + " entries, expected num_hidden_layers = " +
                     std::to_string(c.num_layers));
  for (std::size_t l = 0; l < types.size(); ++l) {
    if (types[l] != "sliding_attention" && types[l] != "full_attention")
      throw InputError(where + ": layer_types[" + std::to_string(l) + "] is '" + types[l] +
                       "', expected sliding_attention or full_attention");
    c.sliding_layers[l] = types[l] == "sliding_attention";
  }
  return true;
}

// Qwen2 and Qwen3 (as transformers' configs): with use_sliding_window, sliding_window on the
// layers layer_types names, by default those from max_window_layers on; without it no window.
void parse_qwen_window(const Json& j, ModelConfig& c, const std::string& where) {
  if (!json_get_or<bool>(j, "use_sliding_window", false, where)) return;
  const auto window = json_get_or<std::int64_t>(j, "sliding_window", 4096, where);
  if (window < 0) throw InputError(where + ": sliding_window must be positive or null");
  if (window == 0 || (j.contains("sliding_window") && j["sliding_window"].is_null())) return;
  c.sliding_window = window;
  if (parse_layer_types(j, c, where)) return;
  const auto first = json_get_or<std::int64_t>(j, "max_window_layers", 28, where);
  if (first < 0) throw InputError(where + ": max_window_layers must be non-negative, got " + std::to_string(first));
  for (std::size_t l = 0; l < c.sliding_layers.size(); ++l) c.sliding_layers[l] = static_cast<std::int64_t>(l) >= first;
}

// Gemma-2 and Gemma-3 (defaults as transformers' Gemma2Config / Gemma3TextConfig): sandwich norms,
// a scale from query_pre_attn_scalar, sliding-window attention on the layers layer_types names
// (by default gemma2's even layers, gemma3's all but every sliding_window_pattern-th), and
// soft-capping (gemma2 by default; gemma3's final logits when its config asks).
void parse_gemma_sandwich(const Json& j, ModelConfig& c, const std::string& where) {
  const bool gemma3 = c.family == Family::Gemma3;
  c.sandwich_norms = true;
  c.query_pre_attn_scalar = json_get_or<double>(j, "query_pre_attn_scalar", 256.0, where);
  if (!(c.query_pre_attn_scalar > 0)) throw InputError(where + ": query_pre_attn_scalar must be positive");
  // transformers' Gemma3Attention reads attn_logit_softcapping but never applies it (Gemma-3 has
  // q/k norms instead); sppft computes what transformers does, so the field is validated only.
  c.attn_logit_softcap = softcap_field(j, "attn_logit_softcapping", gemma3 ? 0.0 : 50.0, where);
  if (gemma3) c.attn_logit_softcap = 0;
  c.final_logit_softcap = softcap_field(j, "final_logit_softcapping", gemma3 ? 0.0 : 30.0, where);
  if (json_get_or<bool>(j, "use_bidirectional_attention", false, where))
    throw InputError(where + ": use_bidirectional_attention true is not implemented (expected causal attention)");
  std::int64_t window = 4096;
  if (j.contains("sliding_window")) window = j["sliding_window"].is_null() ? 0 : json_get<std::int64_t>(j, "sliding_window", where);
  if (window < 0) throw InputError(where + ": sliding_window must be positive or null");
  if (window > 0) c.sliding_window = window;
  if (!parse_layer_types(j, c, where)) {
    if (gemma3) {
      const auto pattern = json_get_or<std::int64_t>(j, "sliding_window_pattern", 6, where);
      if (pattern <= 0) throw InputError(where + ": sliding_window_pattern must be positive, got " + std::to_string(pattern));
      for (std::size_t l = 0; l < c.sliding_layers.size(); ++l) c.sliding_layers[l] = (l + 1) % pattern != 0;
    } else {
      for (std::size_t l = 0; l < c.sliding_layers.size(); ++l) c.sliding_layers[l] = l % 2 == 0;
    }
  }
  // The scale comes from query_pre_attn_scalar alone: a RoPE attention factor (longrope, yarn)
  // would scale some layers' scores and not others.
  for (const RopeConfig* r : {&c.rope, c.local_rope ? &*c.local_rope : nullptr})
    if (r && (r->type == "longrope" || r->type == "yarn"))
      throw InputError(where + ": rope type '" + r->type + "' is not implemented for " + c.model_type +
                       " (supported: default, linear, llama3)");
}

}  // namespace

std::int64_t ModelConfig::attention_window(std::int64_t layer) const {
  if (!sliding_window) return 0;
  if (!sliding_layers.empty() && !sliding_layers.at(static_cast<std::size_t>(layer))) return 0;
  return *sliding_window;
}

float ModelConfig::rope_output_scale() const {
  return rope_dim() != head_dim ? static_cast<float>(rope.attention_factor) : 1.0f;
}

float ModelConfig::attention_scale() const {
  if (query_pre_attn_scalar > 0) return static_cast<float>(1.0 / std::sqrt(query_pre_attn_scalar));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  if (rope.attention_factor == 1.0 || rope_dim() != head_dim) return scale;  // bit for bit what every other model has always used
  return static_cast<float>(static_cast<double>(scale) * rope.attention_factor * rope.attention_factor);
}

std::int64_t ModelConfig::block_parameters() const {
  std::int64_t h = hidden_size, f = intermediate_size;
  std::int64_t attn = h * q_dim() + 2 * h * kv_dim() + q_dim() * h;
  if (qkv_bias) attn += q_dim() + 2 * kv_dim();
  if (o_bias) attn += h;
  std::int64_t mlp = 3 * h * f + (mlp_bias ? 2 * f + h : 0);
  return attn + mlp + block_norm_parameters();
}

std::int64_t ModelConfig::block_norm_parameters() const {
  return (sandwich_norms ? 4 : 2) * hidden_size + (qk_norm ? 2 * head_dim : 0);
}

std::int64_t ModelConfig::total_parameters() const {
  std::int64_t embed = vocab_size * hidden_size;
  return embed + (tie_word_embeddings ? 0 : embed) + num_layers * block_parameters() + hidden_size;
}

std::string ModelConfig::family_name() const { return model_type; }

namespace {

std::string_view causal_lm_architecture(Family f) {
  static constexpr std::string_view archs[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                               "GemmaForCausalLM", "Phi3ForCausalLM",    "Gemma2ForCausalLM",
                                               "Qwen3ForCausalLM", "Gemma3ForCausalLM"};
  return archs[static_cast<int>(f)];
}

// Vision-language checkpoints whose language model sppft runs: the text model's config under
// text_config, often left to the defaults of transformers' config class of that model type
// (gemma-3-4b-it's text_config names five fields, llava-1.5-7b-hf's six); token ids and dtype
// may sit at the top level only. Qwen2-VL's Hub configs are flat: the text model's fields at the
// top level beside vision_config.
struct MultimodalKind {
  std::string_view model_type;  // the checkpoint's
  std::string_view text_type;   // its text_config's model_type when that names none
  bool any_text_type;           // false: text_type only
  // Without a text_config, Mistral3Config takes Mistral Small's shape, not MistralConfig's
  // defaults: such a config is refused rather than read with the wrong ones.
  bool needs_text_config;
  bool flat_text;               // the text model's fields may sit at the top level instead
  std::string_view parse_as;    // the text model's family when text_type is a wrapper's own ("": itself)
  // transformers 5 ties lm_head to the embeddings by the top level's tie_word_embeddings (this
  // default when absent), or-ed with text_config's where the kind says so.
  bool top_tie_default;
  bool tie_or_text;
};
constexpr MultimodalKind kMultimodalKinds[] = {
    // Gemma3ForConditionalGeneration (Gemma-3 4B, 12B, 27B)
    {"gemma3", "gemma3_text", false, false, false, "", true, false},
    // LlavaForConditionalGeneration (LLaVA-1.5: Vicuna, i.e. Llama-2)
    {"llava", "llama", true, false, false, "", false, true},
    // Mistral3ForConditionalGeneration (Mistral Small 3.1 / 3.2)
    {"mistral3", "mistral", true, true, false, "", true, false},
    // Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration: a Qwen2 text model
    // whose multimodal RoPE is plain RoPE on text (all three position components equal)
    {"qwen2_vl", "qwen2_vl_text", false, false, true, "qwen2", false, true},
    {"qwen2_5_vl", "qwen2_5_vl_text", false, false, true, "qwen2", false, true},
};

// transformers' defaults for the fields a text_config may leave out, by text model_type.
const Json& text_config_defaults(const std::string& text_type) {
  static const Json defaults = [] {
    Json d = Json::parse(R"({
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 131072},
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2},
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
                "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2},
    "qwen2_vl_text": {"vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568, "num_hidden_layers": 80,
                      "num_attention_heads": 64, "num_key_value_heads": 8, "max_position_embeddings": 32768,
                      "rms_norm_eps": 1e-5, "rope_theta": 1e6, "max_window_layers": 80, "bos_token_id": 151643,
                      "eos_token_id": 151645}})");
    d["qwen2_5_vl_text"] = d["qwen2_vl_text"];  // the same class defaults
    return d;
  }();
  static const Json none = Json::object();
  return defaults.contains(text_type) ? defaults[text_type] : none;
}

const MultimodalKind* multimodal_kind(const std::string& model_type) {
  for (const auto& k : kMultimodalKinds)
    if (k.model_type == model_type) return &k;
  return nullptr;
}

// Qwen2-VL's multimodal RoPE: rope_scaling {type: mrope, mrope_section} on the Hub,
// rope_parameters {rope_type: default, mrope_section} from transformers 5. On text the three
// sections see the same position, so it is default RoPE; the sections must still split head_dim / 2.
std::vector<std::int64_t> strip_mrope(Json& text, const std::string& where) {
  std::vector<std::int64_t> sections;
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!text.contains(key) || !text[key].is_object()) continue;
    Json& r = text[key];
    const std::string rw = where + " " + key;
    const auto type = json_get_or<std::string>(r, "rope_type", json_get_or<std::string>(r, "type", "default", rw), rw);
    if (type != "mrope" && type != "default") throw InputError(rw + ": rope type '" + type + "', expected mrope or default");
    if (type == "mrope" && !r.contains("mrope_section")) throw InputError(rw + ": mrope without mrope_section");
    if (r.contains("mrope_section")) sections = json_get<std::vector<std::int64_t>>(r, "mrope_section", rw);
    r.erase("type");
    r["rope_type"] = "default";
  }
  return sections;
}

ModelConfig parse_multimodal(const MultimodalKind& kind, const Json& j, const std::string& where) {
  const bool has_text = j.contains("text_config") && !j["text_config"].is_null();
  const std::string tw = where + (has_text || !kind.flat_text ? " text_config" : "");  // flat: the top level's fields
  if (kind.needs_text_config && !has_text) throw InputError(tw + ": missing (expected the text model's config)");
  Json text = has_text ? j["text_config"] : Json::object();
  if (!has_text && kind.flat_text) {
    text = j;
    for (const char* k : {"model_type", "architectures", "vision_config", "text_config"}) text.erase(k);
  }
  if (!text.is_object()) throw InputError(tw + ": expected an object");
  const auto text_type = json_get_or<std::string>(text, "model_type", std::string(kind.text_type), tw);
  if (!kind.any_text_type && text_type != kind.text_type)
    throw InputError(tw + ": model_type '" + text_type + "', expected " + std::string(kind.text_type));
  if (multimodal_kind(text_type)) throw InputError(tw + ": model_type '" + text_type + "', expected a text model");
  for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype"})
    if (j.contains(k) && !text.contains(k)) text[k] = j[k];
  text["tie_word_embeddings"] = json_get_or<bool>(j, "tie_word_embeddings", kind.top_tie_default, where) ||
                                (kind.tie_or_text && json_get_or<bool>(text, "tie_word_embeddings", false, tw));
  const Json& defaults = text_config_defaults(text_type);
  for (auto it = defaults.begin(); it != defaults.end(); ++it)
    if (!text.contains(it.key())) text[it.key()] = it.value();
  const bool qwen_vl = kind.parse_as == "qwen2";
  const std::vector<std::int64_t> mrope = qwen_vl ? strip_mrope(text, tw) : std::vector<std::int64_t>();
  text["model_type"] = kind.parse_as.empty() ? text_type : std::string(kind.parse_as);
  ModelConfig c = parse_model_config(text, tw);
  if (!mrope.empty()) {
    std::int64_t sum = 0;
    for (auto s : mrope) {
      if (s <= 0) throw InputError(tw + ": mrope_section entries must be positive");
      sum += s;
    }
    if (sum != c.head_dim / 2)
      throw InputError(tw + ": mrope_section sums to " + std::to_string(sum) + ", expected head_dim / 2 = " + std::to_string(c.head_dim / 2));
  }
  c.source["architectures"] = Json::array({std::string(causal_lm_architecture(c.family))});
  c.multimodal = true;
  c.multimodal_source = j;
  return c;
}

}  // namespace

ModelConfig parse_model_config(const Json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": expected a JSON object");
  if (const MultimodalKind* kind = multimodal_kind(json_get<std::string>(j, "model_type", where)))
    return parse_multimodal(*kind, j, where);
  ModelConfig c;
  c.model_type = json_get<std::string>(j, "model_type", where);
  const std::string& t = c.model_type;
  if (t == "llama") c.family = Family::Llama;
  else if (t == "mistral") c.family = Family::Mistral;
  else if (t == "qwen2") c.family = Family::Qwen2;
  else if (t == "gemma") c.family = Family::Gemma;
  else if (t == "phi3") c.family = Family::Phi3;
  else if (t == "gemma2") c.family = Family::Gemma2;
  else if (t == "qwen3") c.family = Family::Qwen3;
  else if (t == "gemma3_text") c.family = Family::Gemma3;
  else throw InputError(where + ": model_type '" + t + "' is not supported (expected llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, gemma3_text or phi3)");
  const bool gemma = c.family == Family::Gemma || c.family == Family::Gemma2 || c.family == Family::Gemma3;

  c.hidden_size = positive(j, "hidden_size", where);
  c.intermediate_size = positive(j, "intermediate_size", where);
  c.num_layers = positive(j, "num_hidden_layers", where);
  c.num_heads = positive(j, "num_attention_heads", where);
  c.num_kv_heads = json_get_or<std::int64_t>(j, "num_key_value_heads", c.num_heads, where);
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0)
    throw InputError(where + ": num_attention_heads (" + std::to_string(c.num_heads) +
                     ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  // transformers' Qwen3Config and Gemma3TextConfig default head_dim to 128 and 256, not hidden / heads.
  c.head_dim = json_get_or<std::int64_t>(j, "head_dim", c.family == Family::Qwen3 ? 128 : c.family == Family::Gemma3 ? 256 : 0, where);
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_heads != 0) throw InputError(where + ": hidden_size is not a multiple of num_attention_heads and head_dim is not given");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) throw InputError(where + ": head_dim must be positive and even, got " + std::to_string(c.head_dim));
  c.vocab_size = positive(j, "vocab_size", where);
  c.max_position_embeddings = json_get_or<std::int64_t>(j, "max_position_embeddings", 2048, where);
  if (c.max_position_embeddings <= 0) throw InputError(where + ": max_position_embeddings must be positive");
  if (c.vocab_size > std::numeric_limits<std::int32_t>::max())
    throw InputError(where + ": vocab_size " + std::to_string(c.vocab_size) + " does not fit 32-bit token ids");
  {
    // Bytes of every planner and buffer stay inside 64 bits: no model near 2^44 parameters exists.
    const double h = static_cast<double>(c.hidden_size), attention = static_cast<double>(c.head_dim) * h *
        (2.0 * static_cast<double>(c.num_heads) + 2.0 * static_cast<double>(c.num_kv_heads));
    const double params = static_cast<double>(c.num_layers) * (attention + 3.0 * h * static_cast<double>(c.intermediate_size)) +
                          2.0 * static_cast<double>(c.vocab_size) * h;
    if (params > 0x1p44)
      throw InputError(where + ": these sizes make a model of about " + std::to_string(static_cast<long long>(params / 1e9)) +
                       "B parameters (at most 17592B supported): check hidden_size, intermediate_size, head_dim, "
                       "num_attention_heads, num_hidden_layers and vocab_size");
  }
  c.rms_norm_eps = json_get_or<double>(j, "rms_norm_eps", 1e-6, where);
  if (!(c.rms_norm_eps > 0)) throw InputError(where + ": rms_norm_eps must be positive");
  c.rotary_dim = parse_rotary_dim(j, c, where);
  parse_rope(j, c, where);

  bool tie_default = gemma;
  c.tie_word_embeddings = json_get_or<bool>(j, "tie_word_embeddings", tie_default, where);
  bool attention_bias = json_get_or<bool>(j, "attention_bias", false, where);
  c.qkv_bias = c.family == Family::Qwen2 || attention_bias;
  c.o_bias = c.family != Family::Qwen2 && attention_bias;
  c.mlp_bias = json_get_or<bool>(j, "mlp_bias", false, where);
  c.fused_qkv = c.fused_gate_up = c.family == Family::Phi3;
  c.qk_norm = c.family == Family::Qwen3 || c.family == Family::Gemma3;
  c.norm_unit_offset = c.scale_embeddings = gemma;

  std::string act = json_get_or<std::string>(j, "hidden_activation", "", where);
  if (act.empty() && (c.family == Family::Gemma2 || c.family == Family::Gemma3) && !j.contains("hidden_act"))
    act = "gelu_pytorch_tanh";
  if (act.empty()) act = json_get_or<std::string>(j, "hidden_act", "silu", where);
  // transformers runs gemma with the tanh approximation even when hidden_act says "gelu".
  if (c.family == Family::Gemma && act == "gelu" && !j.contains("hidden_activation")) act = "gelu_pytorch_tanh";
  if (act == "silu" || act == "swish") c.activation = Activation::SiLU;
  else if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") c.activation = Activation::GeluTanh;
  else if (act == "gelu") c.activation = Activation::GeluErf;
  else throw InputError(where + ": hidden activation '" + act + "' is not supported (expected silu, gelu or gelu_pytorch_tanh)");

  if (c.family == Family::Mistral || c.family == Family::Phi3) {
    auto w = json_get_or<std::int64_t>(j, "sliding_window", 0, where);
    if (w > 0) c.sliding_window = w;
  }
  if (c.family == Family::Qwen2 || c.family == Family::Qwen3) parse_qwen_window(j, c, where);
  if (c.family == Family::Gemma2 || c.family == Family::Gemma3) parse_gemma_sandwich(j, c, where);

  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"].get<std::int64_t>();
  if (j.contains("eos_token_id")) c.eos_token_ids = json_integer_list<std::int64_t>(j["eos_token_id"], where, "eos_token_id");
  std::string dtype = json_get_or<std::string>(j, "torch_dtype", "", where);
  if (dtype.empty()) dtype = json_get_or<std::string>(j, "dtype", "float32", where);
  c.torch_dtype = dtype;
  c.source = j;
  return c;
}

std::span<const TextModelNaming> multimodal_namings() {
  static constexpr TextModelNaming namings[] = {{"language_model.model.", "language_model.lm_head.weight"},
                                                {"model.language_model.", "lm_head.weight"},
                                                {"model.", "lm_head.weight"}};
  return namings;
}

namespace {

bool same_values(const TensorEntry& a, const TensorEntry& b) {
  if (a.shape != b.shape) return false;
  if (a.dtype == b.dtype) return std::memcmp(a.data, b.data, a.nbytes) == 0;
  const auto n = static_cast<std::size_t>(shape_numel(a.shape));
  std::vector<float> x(std::min<std::size_t>(n, 1 << 16)), y(x.size());
  for (std::size_t i = 0; i < n; i += x.size()) {
    const std::size_t k = std::min(x.size(), n - i);
    convert_to_f32(static_cast<const std::uint8_t*>(a.data) + i * dtype_size(a.dtype), a.dtype, x.data(), k);
    convert_to_f32(static_cast<const std::uint8_t*>(b.data) + i * dtype_size(b.dtype), b.dtype, y.data(), k);
    if (!std::equal(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(k), y.begin())) return false;
  }
  return true;
}

// A fine-tune saved untied under a tied config, or Mistral Small 3.1 (Mistral3Config ties by
// default, its checkpoint has its own lm_head): transformers 5 keeps both, so does sppft.
void untie_if_checkpoint_differs(ModelConfig& c, const fs::path& dir) {
  if (!fs::exists(dir / "model.safetensors") && !fs::exists(dir / "model.safetensors.index.json")) return;  // config only
  const Checkpoint ckpt(dir);
  for (const TextModelNaming& n : multimodal_namings()) {  // the last is a text model's own
    const std::string lm_head(n.lm_head), embed = std::string(n.text_prefix) + "embed_tokens.weight";
    if (!ckpt.has(lm_head) || !ckpt.has(embed)) continue;
    if (same_values(ckpt.entry(lm_head), ckpt.entry(embed))) return;
    std::fprintf(stderr,
                 "sppft: note: %s ties lm_head to the embeddings, but the checkpoint's %s differs from them; "
                 "running it untied, as transformers does\n",
                 (dir / "config.json").string().c_str(), lm_head.c_str());
    c.tie_word_embeddings = false;
    c.source["tie_word_embeddings"] = false;
    if (c.multimodal) {  // transformers 5 reads the top level's flag (llava, qwen: or-ed with text_config's)
      c.multimodal_source["tie_word_embeddings"] = false;
      if (auto text = c.multimodal_source.find("text_config");
          text != c.multimodal_source.end() && text->is_object() && text->contains("tie_word_embeddings"))
        (*text)["tie_word_embeddings"] = false;
    }
    return;
  }
}

}  // namespace

ModelConfig load_model_config(const fs::path& dir) {
  require_directory(dir, "model");
  fs::path p = dir / "config.json";
  ModelConfig c = parse_model_config(read_json_file(p), p.string());
  if (c.tie_word_embeddings) untie_if_checkpoint_differs(c, dir);
  return c;
}

namespace {

// The Hub's rope_scaling object of `r` (null for default RoPE).
Json rope_scaling_json(const RopeConfig& r) {
  if (r.type == "default") return Json();
  Json s = {{"rope_type", r.type}, {"factor", r.factor}};
  if (r.type == "linear") return s;
  s["original_max_position_embeddings"] = r.original_max_position_embeddings;  // llama3, yarn, longrope
  if (r.type == "llama3") {
    s["low_freq_factor"] = r.low_freq_factor;
    s["high_freq_factor"] = r.high_freq_factor;
    return s;
  }
  s["attention_factor"] = r.attention_factor;  // yarn, longrope
  if (r.type == "yarn") {
    s["beta_fast"] = r.beta_fast;
    s["beta_slow"] = r.beta_slow;
    s["truncate"] = r.truncate;
  } else {
    s["short_factor"] = r.short_factor;
    s["long_factor"] = r.long_factor;
  }
  return s;
}

}  // namespace

Json model_config_to_json(const ModelConfig& c) {
  Json j;
  j["architectures"] = {std::string(causal_lm_architecture(c.family))};
  j["model_type"] = c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  if (c.rope_dim() != c.head_dim) j["partial_rotary_factor"] = static_cast<double>(c.rope_dim()) / static_cast<double>(c.head_dim);
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope.theta;
  j["rope_scaling"] = rope_scaling_json(c.rope);
  if (c.local_rope) {
    if (c.local_rope->type != "default")  // parse_rope reads a local scaling from rope_parameters only
      throw std::logic_error("model_config_to_json: a scaled local RoPE has no Hub form");
    j["rope_local_base_freq"] = c.local_rope->theta;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.family == Family::Llama) {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.family == Family::Qwen3 || c.family == Family::Gemma3) j["attention_bias"] = c.qkv_bias;
  const char* act = c.activation == Activation::SiLU ? "silu" : c.activation == Activation::GeluTanh ? "gelu_pytorch_tanh" : "gelu";
  j[c.norm_unit_offset ? "hidden_activation" : "hidden_act"] = act;  // the gemma families
  if (c.sliding_window) j["sliding_window"] = *c.sliding_window;
  const auto layer_types = [&] {
    Json types = Json::array();
    for (bool s : c.sliding_layers) types.push_back(s ? "sliding_attention" : "full_attention");
    return types;
  };
  if ((c.family == Family::Qwen2 || c.family == Family::Qwen3) && c.sliding_window) {
    j["use_sliding_window"] = true;
    j["layer_types"] = layer_types();
  }
  if (c.sandwich_norms) {  // gemma2, gemma3
    if (!c.sliding_window) j["sliding_window"] = nullptr;
    j["query_pre_attn_scalar"] = c.query_pre_attn_scalar;
    const auto cap = [](float v) { return v > 0 ? Json(static_cast<double>(v)) : Json(nullptr); };
    j["attn_logit_softcapping"] = cap(c.attn_logit_softcap);
    j["final_logit_softcapping"] = cap(c.final_logit_softcap);
    j["layer_types"] = layer_types();
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  j["torch_dtype"] = c.torch_dtype;
  return j;
}

}  // namespace sppft

namespace sppft {

Json config_json_for_save(const ModelConfig& c, const std::string& torch_dtype, bool with_vision_tower) {
  const auto set_dtype = [&](Json& j) {
    if (j.contains("dtype")) j["dtype"] = torch_dtype;  // the transformers 5 spelling
    else j["torch_dtype"] = torch_dtype;
  };
  if (with_vision_tower) {
    if (!c.multimodal_source.is_object())
      throw std::logic_error("config_json_for_save: a vision tower needs the multimodal source config");
    // Every weight of the save has its dtype: the top level's, and the text and vision configs'
    // where the file names one.
    Json j = c.multimodal_source;
    set_dtype(j);
    for (const char* sub : {"text_config", "vision_config"})
      if (j.contains(sub) && j[sub].is_object() && (j[sub].contains("dtype") || j[sub].contains("torch_dtype")))
        set_dtype(j[sub]);
    return j;
  }
  Json j = c.source.is_object() ? c.source : model_config_to_json(c);
  set_dtype(j);
  return j;
}

}  // namespace sppft
