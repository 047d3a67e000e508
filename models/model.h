// Model: config + weights + tokenizer of one checkpoint, and the decoder forward
// written once against kernels/ops.h. Weight names are Hugging Face's, so the
// checkpoints users have load as they are.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "engine/tensor.h"
#include "engine/tokenizer.h"
#include "kernels/ops.h"
#include "models/config.h"

namespace sppft {

// One decoder block. Phi-3's fused qkv_proj / gate_up_proj are kept as loaded;
// q/k/v and gate/up are row views into them.
// Norms by role: input_norm before attention, mlp_norm before the MLP (Hugging Face's
// post_attention_layernorm, Gemma-2's pre_feedforward_layernorm); Gemma-2 also normalises
// the attention and MLP outputs (attn_out_norm = its post_attention_layernorm, mlp_out_norm =
// post_feedforward_layernorm; undefined elsewhere). Qwen3 normalises each query and key head
// (q_norm, k_norm: [head_dim]).
struct BlockWeights {
  Tensor input_norm, mlp_norm, attn_out_norm, mlp_out_norm, q_norm, k_norm;
  Tensor q, k, v, o, gate, up, down;
  Tensor q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;  // undefined when absent
  Tensor qkv_fused, gate_up_fused;                                      // phi3 only
};

struct ModelWeights {
  Tensor embed_tokens;  // [V, H]
  Tensor final_norm;    // [H]
  Tensor lm_head;       // [V, H]; the same storage as embed_tokens when tied
  std::vector<BlockWeights> blocks;
};

// A named parameter as it appears in the checkpoint, pointing at the tensor
// that holds it (for loading, saving, scaling and freezing).
struct NamedParam {
  std::string name;
  Tensor* tensor;
  int block;  // -1 for embeddings, final norm, lm_head
};

// Parameters packed by part: every tensor of a part ("embeddings", "block.<k>",
// "final_norm", "lm_head") that `include` accepts lives in one buffer, in
// packed order (a block's RMSNorm weights first, then checkpoint order), so a
// part's trainable tensors are one contiguous range of weights and gradients
// alike: the unit of gradient reduction and optimizer sharding (data parallel).
struct PackedMember {
  NamedParam param;
  Shape shape;
  std::int64_t offset;  // elements into the part's buffer
};
struct PackedPart {
  std::string name;
  int block;    // -1 outside the blocks
  Tensor flat;  // [numel] over every member; undefined in a layout
  std::vector<PackedMember> members;
  std::int64_t numel() const;
};
// The values of a float tensor (F32/F16/BF16, on any device) as host fp32.
std::vector<float> host_values_f32(const Tensor& t);
// Writes host fp32 values into a float tensor of any dtype on any device (converted).
void assign_from_f32(const float* values, Tensor& t);
// `t` as a host fp32 tensor (itself when it already is one).
Tensor to_host_f32(const Tensor& t);
// An fp32 copy of a float tensor, on its device, under `cat` (e.g. master weights).
Tensor f32_copy(const Tensor& t, MemCategory cat);

// Per-sequence K/V storage for every layer: [slots, Hkv, max_len, D] each.
class KVCache {
 public:
  // On `device` in `dtype`: a model's forward() needs its own (Model::device(), weight_dtype()).
  KVCache(const ModelConfig& c, std::int64_t slots, std::int64_t max_len, Device device = Device::CPU,
          DType dtype = DType::F32);
  std::int64_t slots() const { return static_cast<std::int64_t>(length_.size()); }
  std::int64_t max_len() const { return max_len_; }
  std::int64_t length(std::int64_t slot) const { return length_.at(slot); }
  void set_length(std::int64_t slot, std::int64_t n) { length_.at(slot) = n; }
  Tensor& k(std::int64_t layer) { return k_[layer]; }
  Tensor& v(std::int64_t layer) { return v_[layer]; }

 private:
  std::int64_t max_len_;
  std::vector<std::int64_t> length_;
  std::vector<Tensor> k_, v_;
};

// Residual stream at the last new token of each sequence, Hugging Face
// indexing: layer 0 = embeddings, k + 1 = raw output of block k.
struct HiddenCapture {
  Tensor states;        // [sequences, L + 1, H]
  Tensor final_normed;  // [sequences, H]
};

// One step of a packed batch: new tokens of each sequence, appended to its cache slot.
struct StepInput {
  std::vector<std::vector<std::int32_t>> tokens;  // per sequence
  std::vector<std::int64_t> slots;                // cache slot of each sequence
};

// What Model::load checks before it reads a weight - config.json, the safetensors headers against
// the config (every tensor present, none extra, shapes and dtypes), the tokenizer - without
// allocating the weights: a model needed only later in a long run is refused at its start.
void check_checkpoint(const fs::path& dir, bool with_tokenizer = true);

class Model {
 public:
  // Loads config.json, the safetensors weights (validated against the config:
  // every tensor present, none extra, shapes and dtypes right) and the tokenizer.
  static std::unique_ptr<Model> load(const fs::path& dir, bool with_tokenizer = true);
  // A model with the given config and weights drawn from N(0, std) (norms near 1),
  // for tests, presets and the demo.
  // `chunked`: draw 2^20-value chunks in parallel, each from its own generator (same
  // weights for any thread count; other values than the default single stream) - for
  // large preset shapes, where only the shapes matter.
  static std::unique_ptr<Model> random(const ModelConfig& config, std::uint64_t seed, float std = 0.02f,
                                       bool chunked = false);

  const ModelConfig& config() const { return config_; }
  const Tokenizer& tokenizer() const;
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const fs::path& directory() const { return dir_; }
  // Extra variables of the checkpoint's chat template, as transformers' apply_chat_template
  // kwargs (e.g. Qwen3's enable_thinking); models/prompting.h renders with them.
  const nlohmann::ordered_json& chat_template_kwargs() const { return chat_template_kwargs_; }
  void set_chat_template_kwargs(nlohmann::ordered_json kwargs) { chat_template_kwargs_ = std::move(kwargs); }
  ModelWeights& weights() { return w_; }
  const ModelWeights& weights() const { return w_; }
  // Every parameter under its Hugging Face name (tied lm_head omitted).
  std::vector<NamedParam> parameters();
  // The weights' buffers, one per part (allocate_packed).
  const std::vector<PackedPart>& packed_weights() const { return packed_; }
  std::int64_t weight_bytes() const;
  // RoPE inverse frequencies after scaling, [rope_dim / 2], for a sequence whose largest
  // position is `max_position` (only longrope's tables depend on it: ModelConfig::rope_long),
  // or with `local` gemma3's sliding layers' own table.
  const Tensor& rope_frequencies(std::int64_t max_position = 0, bool local = false) const {
    if (local) return inv_freq_local_;
    return config_.rope_long(max_position) ? inv_freq_long_ : inv_freq_;
  }
  // The rows of a packed batch cut into runs of consecutive sequences that share a RoPE table
  // (with `local`, gemma3's sliding layers' table: ModelConfig::uses_local_rope): one run of all
  // rows, except under longrope, where each sequence takes the table of its own largest position,
  // as it would alone in transformers (a batch never changes a sequence).
  struct RopeRun {
    std::int64_t begin, end;  // rows
    const Tensor* table;
  };
  std::vector<RopeRun> rope_runs(std::span<const ops::AttentionSeq> seqs, bool local = false) const;
  // Bytes of the RoPE tables the model holds (two under longrope, two for gemma3).
  static std::size_t rope_table_bytes(const ModelConfig& c) {
    const std::size_t tables = 1 + (c.rope.type == "longrope" ? 1 : 0) + (c.local_rope ? 1 : 0);
    return static_cast<std::size_t>(c.rope_dim() / 2) * 4 * tables;
  }

  // Runs the new tokens of every sequence through the decoder, appending their
  // keys/values to the cache. Returns logits [sequences, V] at each sequence's
  // last new token, or [total new tokens, V] (packed in order) with all_logits.
  // With `capture`, fills the hidden states at each sequence's last new token.
  // On a GPU the work runs there; the logits and captured states come back as host fp32.
  Tensor forward(const StepInput& in, KVCache& cache, bool all_logits = false, HiddenCapture* capture = nullptr);

  // Moves the weights (part by part, so at most one part exists twice) and the RoPE
  // table to `device`, the weights stored as `dtype` (F32, or BF16 for mixed precision).
  // Everything then runs there: forward() with its KV cache, training (TrainingGraph)
  // and profiling; save() and load_weights_from convert through the host.
  // With keep_host_f32, each part's fp32 host values stay (host_f32) until
  // release_host_f32(): fp32 master weights are then made from the checkpoint's own
  // values instead of their bf16 rounding.
  void to_device(Device device, DType dtype, bool keep_host_f32 = false);
  // The fp32 host values of packed part `part` kept by to_device; null when none.
  const Tensor* host_f32(const std::string& part) const;
  void release_host_f32() { host_f32_.clear(); }
  Device device() const { return w_.embed_tokens.device(); }
  DType weight_dtype() const { return w_.embed_tokens.dtype(); }
  // A KV cache for this model's forward (its device and dtype).
  KVCache make_cache(std::int64_t slots, std::int64_t max_len) const {
    return KVCache(config_, slots, max_len, device(), weight_dtype());
  }

  // Copies the weights of another checkpoint of the same architecture into this
  // model's tensors (validated as in load; nothing new is allocated).
  void load_weights_from(const fs::path& dir);

  // Saves config.json + model.safetensors (fp32, bf16 or f16) into `dir`, atomically
  // per file; above `max_shard_bytes` as shards model-0000i-of-0000n.safetensors with
  // model.safetensors.index.json, as transformers writes them. A vision-language model loaded
  // from a checkpoint is saved whole: its vision tower and projector, read again from that
  // checkpoint, unchanged, and its multimodal config, in that checkpoint's naming.
  void save(const fs::path& dir, DType dtype = DType::F32, std::size_t max_shard_bytes = std::size_t{5} << 30);

 private:
  Model() = default;
  void allocate_weights();  // packed per part (allocate_packed), zero-filled
  ModelConfig config_;
  ModelWeights w_;
  std::vector<PackedPart> packed_;
  std::map<std::string, Tensor> host_f32_;  // part name -> fp32 host values (to_device)
  Tensor inv_freq_;       // [rope_dim / 2], RoPE frequencies after scaling
  Tensor inv_freq_long_;  // longrope only: with the long factors
  Tensor inv_freq_local_;  // gemma3 only: the sliding layers' table
  std::unique_ptr<Tokenizer> tokenizer_;
  fs::path dir_;
  nlohmann::ordered_json chat_template_kwargs_ = nlohmann::ordered_json::object();
};

// Every parameter slot of a weights-shaped struct under its Hugging Face name
// (checkpoint order; tied lm_head and fused views omitted).
std::vector<NamedParam> named_parameters(const ModelConfig& c, ModelWeights& w);

// The packing without allocating (member tensors point into `w`).
std::vector<PackedPart> packed_layout(const ModelConfig& c, ModelWeights& w,
                                      const std::function<bool(const NamedParam&)>& include);
// Allocates the included slots of `w` (shaped as `c` implies) packed as above,
// zero-filled on the CPU, and binds fused views. Parts with no member are omitted.
std::vector<PackedPart> allocate_packed(const ModelConfig& c, ModelWeights& w, DType dtype, MemCategory cat,
                                        const std::function<bool(const NamedParam&)>& include,
                                        Device device = Device::CPU);

// Names, shapes and blocks of every parameter a config implies (checkpoint order).
struct ParamShape {
  std::string name;
  int block;
  Shape shape;
};
std::vector<ParamShape> parameter_shapes(const ModelConfig& c);

// The checkpoint in `dir` under the names parameter_shapes uses: for a vision-language model
// (ModelConfig::multimodal) the Hub's language_model.model.* and transformers 5's
// model.language_model.* become model.* (multimodal_namings), and the vision tower and projector are
// left out (Model::save writes them again from the checkpoint the model was loaded from).
Checkpoint open_checkpoint(const ModelConfig& c, const fs::path& dir);
// Whether a vision-language checkpoint's tensor `name` belongs to its vision tower or projector.
bool is_vision_tower_tensor(const std::string& name);

// Checks that a checkpoint holds exactly the tensors `c` implies, with the right
// shapes and float dtypes; InputError naming the file and tensor otherwise.
void validate_checkpoint(const ModelConfig& c, const Checkpoint& ckpt, const fs::path& dir);

// The heads of q or k [N, heads * head_dim] as rows [N * heads, head_dim]: what Qwen3's q_norm
// and k_norm normalise, one RMSNorm per head.
inline Tensor head_rows(const Tensor& t, std::int64_t head_dim) { return t.reshape({t.numel() / head_dim, head_dim}); }

// RoPE (forward, or its backward) on q and k [N, heads * head_dim], run by run (Model::rope_runs).
// cos and sin times c.rope_output_scale().
void apply_rope(std::span<const Model::RopeRun> runs, Tensor& q, Tensor& k, const Tensor& pos, const ModelConfig& c,
                bool backward);

// RoPE inverse frequencies [rotary_dim / 2] after `r`'s scaling (default, linear, llama3, yarn,
// longrope with its short factors, or with `long_factors` its long ones); rotary_dim is the
// head_dim of transformers' formulas (ModelConfig::rope_dim).
std::vector<float> rope_inv_freq(const RopeConfig& r, std::int64_t rotary_dim, bool long_factors = false);
inline std::vector<float> rope_inv_freq(const ModelConfig& c, bool long_factors = false) {
  return rope_inv_freq(c.rope, c.rope_dim(), long_factors);
}

}  // namespace sppft
