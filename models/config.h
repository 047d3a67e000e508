// ModelConfig: what sppft needs of a Hugging Face config.json, for model_type
// llama (Llama-2, Llama-3/3.1, TinyLlama), mistral, qwen2, qwen3, gemma, gemma2, gemma3_text
// (Gemma-3 1B, 270M), the text model of gemma3 (Gemma-3 4B, 12B, 27B) and phi3.
// Both the Hub form (rope_theta, rope_scaling) and the newer transformers form
// (rope_parameters) are read.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/fs.h"
#include "engine/json.h"

namespace sppft {

enum class Family { Llama, Mistral, Qwen2, Gemma, Phi3, Gemma2, Qwen3, Gemma3 };
enum class Activation { SiLU, GeluTanh, GeluErf };

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // "default", "linear", "llama3", "longrope", "yarn"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 0;
  // longrope (Phi-3-128k, Phi-3.5): frequency i is divided by short_factor[i] while a sequence's
  // positions stay within original_max_position_embeddings, by long_factor[i] once they pass it
  // (each sequence by its own largest position, as transformers computes it alone); cos and sin
  // are multiplied by attention_factor, which sppft folds into the attention scale as
  // attention_factor^2.
  std::vector<double> short_factor, long_factor;
  double attention_factor = 1.0;  // longrope and yarn
  // yarn (Qwen2.5/Qwen3 long context): frequencies whose wavelength fits original_max_position_
  // embeddings fewer than beta_slow times are divided by factor, those that fit it more than
  // beta_fast times are kept, with a linear ramp between (in rotary dimensions, floored/ceiled
  // unless truncate is false); cos and sin are multiplied by attention_factor (default
  // 0.1 ln(factor) + 1), folded into the attention scale as for longrope.
  double beta_fast = 32.0, beta_slow = 1.0;
  bool truncate = true;
};

struct ModelConfig {
  std::string model_type;
  Family family = Family::Llama;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  // The leading dimensions of each head that RoPE rotates, int(head_dim * partial_rotary_factor)
  // (Phi-4-mini: 0.75); 0 = head_dim. Read it through rope_dim().
  std::int64_t rotary_dim = 0;
  std::int64_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  // gemma3: the sliding-window layers' own RoPE (rope_local_base_freq, or rope_parameters'
  // sliding_attention entry); `rope` is then that of the full-attention layers.
  std::optional<RopeConfig> local_rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;        // qwen2; llama attention_bias
  bool o_bias = false;          // llama attention_bias
  bool mlp_bias = false;        // llama mlp_bias
  bool fused_qkv = false;       // phi3 qkv_proj
  bool fused_gate_up = false;   // phi3 gate_up_proj
  bool qk_norm = false;         // qwen3, gemma3: RMSNorm of each query and key head before RoPE
  bool norm_unit_offset = false;     // gemma: x_hat * (1 + w)
  bool scale_embeddings = false;     // gemma: embeddings * sqrt(hidden)
  Activation activation = Activation::SiLU;
  std::optional<std::int64_t> sliding_window;
  std::vector<bool> sliding_layers;  // gemma2/3, qwen2/3 layer_types: which layers take sliding_window; empty = all
  // Gemma-2/3: the attention scale is 1 / sqrt(query_pre_attn_scalar) (0: head_dim); attention
  // scores (gemma2) and final logits are soft-capped, cap * tanh(x / cap) (0: not capped); every
  // block also normalises the outputs of attention and MLP before their residual adds.
  double query_pre_attn_scalar = 0;
  float attn_logit_softcap = 0;
  float final_logit_softcap = 0;
  bool sandwich_norms = false;
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;
  std::string torch_dtype = "float32";
  // Read from a vision-language checkpoint (model_type gemma3, llava, mistral3, qwen2_vl or
  // qwen2_5_vl: Gemma3/Llava/Mistral3/Qwen2VL/Qwen2_5_VLForConditionalGeneration):
  // the text model's config, its tensors under the text model's names (open_checkpoint). The
  // vision tower is not loaded; Model::save writes it again, unchanged, from the source checkpoint.
  bool multimodal = false;
  Json source;  // the config.json object it was parsed from (multimodal: the text model's; null for built configs)
  Json multimodal_source;  // multimodal: the whole config.json (text_config, vision_config, ...)
  // The vision-language checkpoint's own model_type (gemma3, llava, ...); "" when not multimodal.
  std::string multimodal_type() const {
    return multimodal ? multimodal_source.value("model_type", std::string()) : std::string();
  }

  std::int64_t q_dim() const { return num_heads * head_dim; }
  std::int64_t rope_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  // The sliding window of layer `layer`'s attention (0: it sees every earlier position).
  std::int64_t attention_window(std::int64_t layer) const;
  // The RoPE layer `layer` takes: local_rope on gemma3's sliding layers, `rope` otherwise.
  bool uses_local_rope(std::int64_t layer) const {
    return local_rope && sliding_layers.at(static_cast<std::size_t>(layer));
  }
  const RopeConfig& rope_of(std::int64_t layer) const { return uses_local_rope(layer) ? *local_rope : rope; }
  // The softmax scale of attention scores: 1 / sqrt(head_dim) (gemma2: query_pre_attn_scalar),
  // times longrope's attention_factor^2 when RoPE rotates whole heads. transformers multiplies
  // cos and sin by it, so under a partial rotary only the rotated dimensions' products carry it:
  // then RoPE applies it (rope_output_scale) and the attention scale does not.
  float attention_scale() const;
  float rope_output_scale() const;
  // Whether a sequence whose largest position is `max_position` takes longrope's long factors.
  bool rope_long(std::int64_t max_position) const {
    return rope.type == "longrope" && max_position + 1 > rope.original_max_position_embeddings;
  }
  std::int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // Parameters of one decoder block / of the whole model (tied embeddings counted once).
  std::int64_t block_parameters() const;
  // The norm weights among them (input and MLP norms; gemma2/3's output norms; qwen3/gemma3's q/k norms).
  std::int64_t block_norm_parameters() const;
  std::int64_t total_parameters() const;
  std::string family_name() const;
};

// How a checkpoint names its text model's tensors (model.* and lm_head.weight in a text model's).
struct TextModelNaming {
  std::string_view text_prefix, lm_head;
};
// A vision-language checkpoint's, to be matched in this order: the Hub's (language_model.model.*,
// language_model.lm_head.weight), transformers 5's modules (model.language_model.*,
// lm_head.weight), and a text model's (Qwen2-VL on the Hub).
std::span<const TextModelNaming> multimodal_namings();

// Parses and validates a config.json object; `where` names the file in errors.
ModelConfig parse_model_config(const Json& j, const std::string& where);
// dir/config.json, as transformers would run the checkpoint beside it: a config that ties
// lm_head to the embeddings is untied (with a note on stderr) when the checkpoint holds both
// with different values, as transformers 5 does.
ModelConfig load_model_config(const fs::path& dir);
// The fields sppft reads, as a config.json object (round-trips through
// parse_model_config; used to compare architectures).
Json model_config_to_json(const ModelConfig& c);
// What a saved checkpoint gets: the source config.json with every field kept
// (pad ids, architectures, ...) and only the dtype updated; for built configs,
// model_config_to_json. `with_vision_tower` (a multimodal config whose tower the save carries):
// the whole multimodal config.json, its dtypes updated.
Json config_json_for_save(const ModelConfig& c, const std::string& torch_dtype, bool with_vision_tower = false);

}  // namespace sppft
