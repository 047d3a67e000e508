#include "models/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string_view>

#include "engine/error.h"
#include "engine/json.h"
#include "models/training.h"

namespace sppft {

namespace {

struct ParamSpec {
  std::string name;
  Tensor* tensor;
  int block;
  Shape shape;
};

std::vector<ParamSpec> param_specs(const ModelConfig& c, ModelWeights& w) {
  const std::int64_t h = c.hidden_size, f = c.intermediate_size, qd = c.q_dim(), kd = c.kv_dim();
  std::vector<ParamSpec> specs;
  specs.push_back({"model.embed_tokens.weight", &w.embed_tokens, -1, {c.vocab_size, h}});
  for (int i = 0; i < static_cast<int>(c.num_layers); ++i) {
    BlockWeights& b = w.blocks[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    specs.push_back({p + "input_layernorm.weight", &b.input_norm, i, {h}});
    if (c.fused_qkv) {
      specs.push_back({p + "self_attn.qkv_proj.weight", &b.qkv_fused, i, {qd + 2 * kd, h}});
    } else {
      specs.push_back({p + "self_attn.q_proj.weight", &b.q, i, {qd, h}});
      specs.push_back({p + "self_attn.k_proj.weight", &b.k, i, {kd, h}});
      specs.push_back({p + "self_attn.v_proj.weight", &b.v, i, {kd, h}});
    }
    if (c.qkv_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", &b.q_bias, i, {qd}});
      specs.push_back({p + "self_attn.k_proj.bias", &b.k_bias, i, {kd}});
      specs.push_back({p + "self_attn.v_proj.bias", &b.v_bias, i, {kd}});
    }
    if (c.qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", &b.q_norm, i, {c.head_dim}});
      specs.push_back({p + "self_attn.k_norm.weight", &b.k_norm, i, {c.head_dim}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", &b.o, i, {h, qd}});
    if (c.o_bias) specs.push_back({p + "self_attn.o_proj.bias", &b.o_bias, i, {h}});
    if (c.sandwich_norms) {
      specs.push_back({p + "post_attention_layernorm.weight", &b.attn_out_norm, i, {h}});
      specs.push_back({p + "pre_feedforward_layernorm.weight", &b.mlp_norm, i, {h}});
    } else {
      specs.push_back({p + "post_attention_layernorm.weight", &b.mlp_norm, i, {h}});
    }
    if (c.fused_gate_up) {
      specs.push_back({p + "mlp.gate_up_proj.weight", &b.gate_up_fused, i, {2 * f, h}});
    } else {
      specs.push_back({p + "mlp.gate_proj.weight", &b.gate, i, {f, h}});
      specs.push_back({p + "mlp.up_proj.weight", &b.up, i, {f, h}});
    }
    specs.push_back({p + "mlp.down_proj.weight", &b.down, i, {h, f}});
    if (c.mlp_bias) {
      specs.push_back({p + "mlp.gate_proj.bias", &b.gate_bias, i, {f}});
      specs.push_back({p + "mlp.up_proj.bias", &b.up_bias, i, {f}});
      specs.push_back({p + "mlp.down_proj.bias", &b.down_bias, i, {h}});
    }
    if (c.sandwich_norms) specs.push_back({p + "post_feedforward_layernorm.weight", &b.mlp_out_norm, i, {h}});
  }
  specs.push_back({"model.norm.weight", &w.final_norm, -1, {h}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", &w.lm_head, -1, {c.vocab_size, h}});
  return specs;
}

bool ignorable_extra(const std::string& name, const ModelConfig& c) {
  // Older checkpoints store RoPE buffers; tied checkpoints sometimes store lm_head too.
  if (name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0) return true;
  return c.tie_word_embeddings && name == "lm_head.weight";
}

ops::GluActivation glu_of(Activation a) {
  switch (a) {
    case Activation::SiLU: return ops::GluActivation::SiLU;
    case Activation::GeluTanh: return ops::GluActivation::GeluTanh;
    case Activation::GeluErf: return ops::GluActivation::GeluErf;
  }
  return ops::GluActivation::SiLU;
}

}  // namespace

std::vector<ParamShape> parameter_shapes(const ModelConfig& c) {
  ModelWeights dummy;
  dummy.blocks.resize(c.num_layers);
  std::vector<ParamShape> out;
  for (auto& s : param_specs(c, dummy)) out.push_back({s.name, s.block, s.shape});
  return out;
}

std::int64_t PackedPart::numel() const {
  std::int64_t n = 0;
  for (auto& m : members) n += shape_numel(m.shape);
  return n;
}

std::vector<PackedPart> packed_layout(const ModelConfig& c, ModelWeights& w,
                                      const std::function<bool(const NamedParam&)>& include) {
  w.blocks.resize(c.num_layers);
  std::vector<PackedPart> out;
  std::vector<std::vector<ParamSpec>> specs_of;
  for (auto& s : param_specs(c, w)) {
    if (!include({s.name, s.tensor, s.block})) continue;
    const std::string part = s.block >= 0 ? "block." + std::to_string(s.block)
                             : s.name == "model.embed_tokens.weight" ? "embeddings"
                             : s.name == "model.norm.weight" ? "final_norm" : "lm_head";
    if (out.empty() || out.back().name != part) {
      out.push_back({part, s.block, {}, {}});
      specs_of.emplace_back();
    }
    specs_of.back().push_back(s);
  }
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto& specs = specs_of[i];
    std::stable_partition(specs.begin(), specs.end(), [](const ParamSpec& s) { return s.name.find("layernorm") != std::string::npos; });
    std::int64_t off = 0;
    for (auto& s : specs) {
      out[i].members.push_back({{s.name, s.tensor, s.block}, s.shape, off});
      off += shape_numel(s.shape);
    }
  }
  return out;
}

std::vector<float> host_values_f32(const Tensor& t) {
  std::vector<float> out(static_cast<std::size_t>(t.numel()));
  if (t.device() == Device::CPU) {
    convert_to_f32(t.raw(), t.dtype(), out.data(), out.size());
    return out;
  }
  Tensor host = Tensor::empty(t.shape(), t.dtype(), MemCategory::Workspace);
  ops::copy(t, host);
  convert_to_f32(host.raw(), host.dtype(), out.data(), out.size());
  return out;
}

void assign_from_f32(const float* values, Tensor& t) {
  const auto n = static_cast<std::size_t>(t.numel());
  if (t.device() == Device::CPU) {
    convert_from_f32(values, t.dtype(), t.raw(), n);
    return;
  }
  Tensor host = Tensor::empty(t.shape(), t.dtype(), MemCategory::Workspace);
  convert_from_f32(values, t.dtype(), host.raw(), n);
  ops::copy(host, t);
}

Tensor to_host_f32(const Tensor& t) {
  if (t.device() == Device::CPU && t.dtype() == DType::F32) return t;
  Tensor out = Tensor::empty(t.shape(), DType::F32, MemCategory::Activations);
  const std::vector<float> v = host_values_f32(t);
  std::copy(v.begin(), v.end(), out.data<float>());
  return out;
}

Tensor f32_copy(const Tensor& t, MemCategory cat) {
  Tensor out = Tensor::empty(t.shape(), DType::F32, cat, t.device());
  ops::convert(t, out);  // on the tensor's device
  return out;
}

std::vector<PackedPart> allocate_packed(const ModelConfig& c, ModelWeights& w, DType dtype, MemCategory cat,
                                        const std::function<bool(const NamedParam&)>& include, Device device) {
  std::vector<PackedPart> parts = packed_layout(c, w, include);
  for (auto& p : parts) {
    p.flat = Tensor::empty({p.numel()}, dtype, cat, device);
    ops::fill_zero(p.flat);
    for (auto& m : p.members) *m.param.tensor = p.flat.view(m.offset, m.shape);
  }
  bind_fused_views(c, w);
  return parts;
}

namespace {

// Beside the text model of a vision-language checkpoint (multimodal_namings), its vision tower
// and projector.
constexpr std::string_view kVisionTowerPrefixes[] = {"vision_tower.",       "multi_modal_projector.", "visual.",
                                                     "model.vision_tower.", "model.multi_modal_projector.",
                                                     "model.visual."};

bool starts_with(const std::string& s, std::string_view prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// The text model's tensor `name` (model.*, lm_head.weight) as `naming` writes it.
std::string multimodal_name(const std::string& name, const TextModelNaming& naming) {
  if (name == "lm_head.weight") return std::string(naming.lm_head);
  return std::string(naming.text_prefix) + name.substr(std::string_view("model.").size());
}

// What a save of a multimodal model writes beside its text model: the vision tower and projector
// of the checkpoint it was loaded from, unchanged, in that checkpoint's naming.
struct CarriedVisionTower {
  std::optional<Checkpoint> source;
  const TextModelNaming* naming = nullptr;
  std::vector<const TensorEntry*> tensors;
};

// Empty when the model is not multimodal or was not loaded from a checkpoint (a preset, a random
// model); a warning and empty when the source no longer holds a tower, so that the fine-tuned
// text model is still written.
CarriedVisionTower find_vision_tower(const ModelConfig& c, const fs::path& source_dir) {
  CarriedVisionTower t;
  if (!c.multimodal || source_dir.empty()) return t;
  try {
    t.source.emplace(source_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sppft: warning: cannot reopen %s for its vision tower (%s); saving the text model only\n",
                 source_dir.string().c_str(), e.what());
    return t;
  }
  for (const auto& [name, e] : t.source->entries()) {
    if (is_vision_tower_tensor(name)) {
      t.tensors.push_back(&e);
      continue;
    }
    for (const auto& n : multimodal_namings())
      if (!t.naming && starts_with(name, n.text_prefix)) t.naming = &n;
  }
  if (t.tensors.empty() || !t.naming) {
    std::fprintf(stderr, "sppft: warning: %s no longer holds a vision tower; saving the text model only\n",
                 source_dir.string().c_str());
    return CarriedVisionTower{};
  }
  return t;
}

}  // namespace

bool is_vision_tower_tensor(const std::string& name) {
  return std::any_of(std::begin(kVisionTowerPrefixes), std::end(kVisionTowerPrefixes),
                     [&](std::string_view p) { return starts_with(name, p); });
}

Checkpoint open_checkpoint(const ModelConfig& c, const fs::path& dir) {
  Checkpoint ckpt(dir);
  if (!c.multimodal) return ckpt;
  const auto text_name = [](const std::string& name) -> std::string {
    if (is_vision_tower_tensor(name)) return "";
    for (const auto& n : multimodal_namings()) {
      if (starts_with(name, n.text_prefix)) return "model." + name.substr(n.text_prefix.size());
      if (name == n.lm_head) return "lm_head.weight";
    }
    return name;  // validate_checkpoint names anything else
  };
  ckpt.rename(text_name, dir.string());
  return ckpt;
}

void validate_checkpoint(const ModelConfig& c, const Checkpoint& ckpt, const fs::path& dir) {
  auto shapes = parameter_shapes(c);
  std::map<std::string, const ParamShape*> expected;
  for (auto& s : shapes) expected[s.name] = &s;
  for (const auto& [name, e] : ckpt.entries())
    if (!expected.count(name) && !ignorable_extra(name, c))
      throw InputError((dir / e.file).string() + ": unexpected tensor '" + name + "' for model_type " + c.model_type);
  for (auto& s : shapes) {
    if (!ckpt.has(s.name)) throw InputError(dir.string() + ": tensor '" + s.name + "' missing from the checkpoint");
    const TensorEntry& e = ckpt.entry(s.name);
    if (e.shape != s.shape)
      throw InputError((dir / e.file).string() + ": tensor '" + s.name + "' has shape " + shape_str(e.shape) +
                       ", expected " + shape_str(s.shape));
    if (e.dtype == DType::I32)
      throw InputError((dir / e.file).string() + ": tensor '" + s.name + "' has dtype I32, expected F32, F16 or BF16");
  }
}

namespace {

const Tensor* opt(const Tensor& t) { return t.defined() ? &t : nullptr; }


}  // namespace

std::vector<float> rope_inv_freq(const RopeConfig& r, std::int64_t rotary_dim, bool long_factors) {
  const std::int64_t d = rotary_dim;
  std::vector<float> out(d / 2);
  // yarn: the rotary dimensions [low, high] between the frequencies kept and those interpolated
  // (transformers' find_correction_range, in double).
  double yarn_low = 0, yarn_high = 0;
  if (r.type == "yarn") {
    const auto dim_of = [&](double rotations) {
      return static_cast<double>(d) *
             std::log(static_cast<double>(r.original_max_position_embeddings) / (rotations * 2 * M_PI)) /
             (2 * std::log(r.theta));
    };
    yarn_low = dim_of(r.beta_fast), yarn_high = dim_of(r.beta_slow);
    if (r.truncate) yarn_low = std::floor(yarn_low), yarn_high = std::ceil(yarn_high);
    yarn_low = std::max(yarn_low, 0.0), yarn_high = std::min(yarn_high, static_cast<double>(d - 1));
    if (yarn_low == yarn_high) yarn_high += 0.001;
  }
  for (std::int64_t i = 0; i < d / 2; ++i) {
    // transformers: 1 / base^(arange(0, d, 2) / d) in float32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(d);
    double inv = 1.0 / std::pow(r.theta, static_cast<double>(exponent));
    if (r.type == "linear") inv /= r.factor;
    if (r.type == "longrope") {  // transformers: 1 / (ext_factors * base^(...)), the factors in float32
      const auto& ext = long_factors ? r.long_factor : r.short_factor;
      inv /= static_cast<double>(static_cast<float>(ext[static_cast<std::size_t>(i)]));
    }
    if (r.type == "yarn") {  // extrapolated below low, interpolated above high, a ramp between
      const double ramp = std::clamp((static_cast<double>(i) - yarn_low) / (yarn_high - yarn_low), 0.0, 1.0);
      inv = inv / r.factor * ramp + inv * (1 - ramp);
    }
    if (r.type == "llama3") {
      const double old_len = static_cast<double>(r.original_max_position_embeddings);
      const double low_wavelen = old_len / r.low_freq_factor;
      const double high_wavelen = old_len / r.high_freq_factor;
      const double wavelen = 2 * M_PI / inv;
      if (wavelen > low_wavelen) {
        inv /= r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        inv = (1 - smooth) * inv / r.factor + smooth * inv;
      }
    }
    out[i] = static_cast<float>(inv);
  }
  return out;
}

KVCache::KVCache(const ModelConfig& c, std::int64_t slots, std::int64_t max_len, Device device, DType dtype)
    : max_len_(max_len), length_(slots, 0) {
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    k_.push_back(Tensor::empty({slots, c.num_kv_heads, max_len, c.head_dim}, dtype, MemCategory::Activations, device));
    v_.push_back(Tensor::empty({slots, c.num_kv_heads, max_len, c.head_dim}, dtype, MemCategory::Activations, device));
  }
}

namespace {

// A NaN or infinity in a weight would turn every output into NaN far from its cause (a damaged
// file, or a checkpoint saved by a diverged run): refused on load, naming the tensor.
void check_finite(const float* v, std::size_t n, const TensorEntry& e, const fs::path& dir) {
  std::size_t first = n;
#pragma omp parallel for reduction(min : first) schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, v + i, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u && i < first) first = i;
  }
  if (first < n)
    throw InputError((dir / e.file).string() + ": tensor '" + e.name + "' holds a non-finite value (" + std::to_string(v[first]) + ") at element " +
                     std::to_string(first) + " (a damaged or diverged checkpoint)");
}

// Converts a validated checkpoint's tensors (in `dir`) into the allocated weights.
void read_weights(const Checkpoint& ckpt, const fs::path& dir, const ModelConfig& c, ModelWeights& w) {
  for (auto& s : param_specs(c, w)) {
    const TensorEntry& e = ckpt.entry(s.name);
    const auto n = static_cast<std::size_t>(s.tensor->numel());
    if (s.tensor->device() == Device::CPU && s.tensor->dtype() == DType::F32) {
      convert_to_f32(e.data, e.dtype, s.tensor->data<float>(), n);
      check_finite(s.tensor->data<float>(), n, e, dir);
      continue;
    }
    std::vector<float> v(n);  // a model moved to a GPU / to bf16
    convert_to_f32(e.data, e.dtype, v.data(), v.size());
    check_finite(v.data(), n, e, dir);
    assign_from_f32(v.data(), *s.tensor);
  }
}

}  // namespace

void Model::allocate_weights() {
  w_.blocks.assign(config_.num_layers, BlockWeights{});
  packed_ = allocate_packed(config_, w_, DType::F32, MemCategory::Weights, [](const NamedParam&) { return true; });
  const auto table = [&](const RopeConfig& r, bool long_factors) {
    auto f = rope_inv_freq(r, config_.rope_dim(), long_factors);
    Tensor t = Tensor::empty({static_cast<std::int64_t>(f.size())}, DType::F32, MemCategory::Workspace);
    std::copy(f.begin(), f.end(), t.data<float>());
    return t;
  };
  inv_freq_ = table(config_.rope, false);
  if (config_.rope.type == "longrope") inv_freq_long_ = table(config_.rope, true);
  if (config_.local_rope) inv_freq_local_ = table(*config_.local_rope, false);
}

void Model::to_device(Device device, DType dtype, bool keep_host_f32) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw InputError("model weights: F32 or BF16 expected");
  for (auto& part : packed_) {
    const Tensor& src = part.flat;
    if (src.device() == device && src.dtype() == dtype) continue;
    if (src.device() != Device::CPU || src.dtype() != DType::F32)
      throw InputError("Model::to_device: weights already moved to a device");
    Tensor moved = Tensor::empty(src.shape(), dtype, MemCategory::Weights, device);
    assign_from_f32(src.data<float>(), moved);
    for (auto& m : part.members) *m.param.tensor = moved.view(m.offset, m.shape);
    if (keep_host_f32) host_f32_[part.name] = src;
    part.flat = moved;  // otherwise the host buffer goes with its last view
  }
  bind_fused_views(config_, w_);
  for (Tensor* table : {&inv_freq_, &inv_freq_long_, &inv_freq_local_}) {
    if (!table->defined() || table->device() == device) continue;
    Tensor f = Tensor::empty(table->shape(), DType::F32, MemCategory::Workspace, device);
    ops::copy(*table, f);
    *table = f;
  }
}

std::vector<Model::RopeRun> Model::rope_runs(std::span<const ops::AttentionSeq> seqs, bool local) const {
  std::vector<RopeRun> runs;
  for (const auto& s : seqs) {
    const Tensor* table = &rope_frequencies(s.past_len + s.q_len - 1, local);
    if (!runs.empty() && runs.back().table == table && runs.back().end == s.q_begin)
      runs.back().end = s.q_begin + s.q_len;
    else
      runs.push_back({s.q_begin, s.q_begin + s.q_len, table});
  }
  return runs;
}

void apply_rope(std::span<const Model::RopeRun> runs, Tensor& q, Tensor& k, const Tensor& pos, const ModelConfig& c,
                bool backward) {
  const float scale = c.rope_output_scale();
  for (const auto& r : runs) {
    Tensor qr = q.rows(r.begin, r.end), kr = k.rows(r.begin, r.end);
    const Tensor pr = pos.rows(r.begin, r.end);
    if (backward) {
      ops::rope_backward(qr, pr, *r.table, c.head_dim, scale);
      ops::rope_backward(kr, pr, *r.table, c.head_dim, scale);
    } else {
      ops::rope_forward(qr, pr, *r.table, c.head_dim, scale);
      ops::rope_forward(kr, pr, *r.table, c.head_dim, scale);
    }
  }
}

const Tensor* Model::host_f32(const std::string& part) const {
  auto it = host_f32_.find(part);
  return it == host_f32_.end() ? nullptr : &it->second;
}

namespace {

std::unique_ptr<Tokenizer> load_checked_tokenizer(const fs::path& dir, const ModelConfig& c) {
  auto tok = load_tokenizer(dir);
  if (tok->vocab_size() > c.vocab_size)
    throw InputError(dir.string() + ": tokenizer has " + std::to_string(tok->vocab_size()) + " tokens but config vocab_size is " +
                     std::to_string(c.vocab_size));
  return tok;
}

}  // namespace

void check_checkpoint(const fs::path& dir, bool with_tokenizer) {
  const ModelConfig c = load_model_config(dir);
  validate_checkpoint(c, open_checkpoint(c, dir), dir);
  if (with_tokenizer) load_checked_tokenizer(dir, c);
}

std::unique_ptr<Model> Model::load(const fs::path& dir, bool with_tokenizer) {
  std::unique_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->config_ = load_model_config(dir);
  m->allocate_weights();
  const Checkpoint ckpt = open_checkpoint(m->config_, dir);
  validate_checkpoint(m->config_, ckpt, dir);
  read_weights(ckpt, dir, m->config_, m->w_);
  if (with_tokenizer) m->tokenizer_ = load_checked_tokenizer(dir, m->config_);
  return m;
}

std::unique_ptr<Model> Model::random(const ModelConfig& config, std::uint64_t seed, float std, bool chunked) {
  std::unique_ptr<Model> m(new Model());
  m->config_ = config;
  m->allocate_weights();
  const auto specs = param_specs(m->config_, m->w_);
  if (!chunked) {  // one stream over every tensor in checkpoint order (the demo's models depend on it)
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, std);
    for (const auto& s : specs) {
      float* p = s.tensor->data<float>();
      const float base = s.name.find("norm") != std::string::npos && !config.norm_unit_offset ? 1.0f : 0.0f;
      for (std::int64_t i = 0; i < s.tensor->numel(); ++i) p[i] = base + normal(rng);
    }
    return m;
  }
  // Chunks of 2^20 values with their own generator (seeded by seed, tensor and chunk):
  // the same weights for any thread count, and an 8B-shaped preset in seconds.
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  for (std::size_t t = 0; t < specs.size(); ++t) {
    float* p = specs[t].tensor->data<float>();
    const std::int64_t n = specs[t].tensor->numel();
    const bool is_norm = specs[t].name.find("norm") != std::string::npos;
    const float base = is_norm && !config.norm_unit_offset ? 1.0f : 0.0f;
#pragma omp parallel for schedule(dynamic)
    for (std::int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
      std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + t * 1000003ull + static_cast<std::uint64_t>(c));
      std::normal_distribution<float> normal(0.0f, std);
      for (std::int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) p[i] = base + normal(rng);
    }
  }
  return m;
}

const Tokenizer& Model::tokenizer() const {
  if (!tokenizer_) throw InputError(dir_.string() + ": model loaded without a tokenizer");
  return *tokenizer_;
}

std::vector<NamedParam> named_parameters(const ModelConfig& c, ModelWeights& w) {
  std::vector<NamedParam> out;
  for (auto& s : param_specs(c, w)) out.push_back({s.name, s.tensor, s.block});
  return out;
}

std::vector<NamedParam> Model::parameters() { return named_parameters(config_, w_); }

void Model::load_weights_from(const fs::path& dir) {
  Json mine = model_config_to_json(config_), theirs = model_config_to_json(load_model_config(dir));
  mine.erase("torch_dtype");
  theirs.erase("torch_dtype");
  if (mine != theirs)
    throw InputError((dir / "config.json").string() + ": checkpoint of another model (config differs from " +
                     (dir_.empty() ? std::string("this model") : (dir_ / "config.json").string()) + ")");
  const Checkpoint ckpt = open_checkpoint(config_, dir);
  validate_checkpoint(config_, ckpt, dir);
  read_weights(ckpt, dir, config_, w_);
}

std::int64_t Model::weight_bytes() const {
  std::int64_t n = 0;
  for (auto& s : param_specs(config_, const_cast<ModelWeights&>(w_))) n += static_cast<std::int64_t>(s.tensor->nbytes());
  return n;
}

Tensor Model::forward(const StepInput& in, KVCache& cache, bool all_logits, HiddenCapture* capture) {
  const ModelConfig& c = config_;
  const auto nseq = static_cast<std::int64_t>(in.tokens.size());
  if (static_cast<std::int64_t>(in.slots.size()) != nseq) throw std::invalid_argument("forward: one slot per sequence");
  std::vector<ops::AttentionSeq> seqs;
  std::int64_t n = 0;
  for (std::int64_t s = 0; s < nseq; ++s) {
    const auto len = static_cast<std::int64_t>(in.tokens[s].size());
    if (len == 0) throw InputError("forward: sequence " + std::to_string(s) + " has no tokens");
    const std::int64_t past = cache.length(in.slots[s]);
    if (past + len > c.max_position_embeddings)
      throw InputError("sequence of " + std::to_string(past + len) + " tokens exceeds max_position_embeddings (" +
                       std::to_string(c.max_position_embeddings) + ")");
    if (past + len > cache.max_len())
      throw InputError("sequence of " + std::to_string(past + len) + " tokens exceeds the KV cache (" +
                       std::to_string(cache.max_len()) + ")");
    seqs.push_back({n, len, in.slots[s], past});
    n += len;
  }
  const Device dev = device();
  const DType act_dtype = weight_dtype();
  // Activations live with the weights, in their dtype.
  auto activation = [&](Shape shape) { return Tensor::empty(std::move(shape), act_dtype, MemCategory::Activations, dev); };
  Tensor ids_host = Tensor::empty({n}, DType::I32, MemCategory::Activations);
  Tensor pos_host = Tensor::empty({n}, DType::I32, MemCategory::Activations);
  for (std::int64_t s = 0; s < nseq; ++s)
    for (std::int64_t t = 0; t < seqs[s].q_len; ++t) {
      ids_host.data<std::int32_t>()[seqs[s].q_begin + t] = in.tokens[s][t];
      pos_host.data<std::int32_t>()[seqs[s].q_begin + t] = static_cast<std::int32_t>(seqs[s].past_len + t);
    }
  Tensor ids = ids_host, pos = pos_host;
  if (dev != Device::CPU) {
    ids = Tensor::empty({n}, DType::I32, MemCategory::Activations, dev);
    pos = Tensor::empty({n}, DType::I32, MemCategory::Activations, dev);
    ops::copy(ids_host, ids);
    ops::copy(pos_host, pos);
  }
  const std::int64_t h = c.hidden_size, f = c.intermediate_size, L = c.num_layers;
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Captured states gather on the model's device (async copies of one row each) and come
  // back to the host once, at the end.
  Tensor states, finals;
  if (capture) {
    states = activation({nseq, L + 1, h});
    finals = activation({nseq, h});
  }
  auto capture_row = [&](const Tensor& x, std::int64_t r, Tensor& into, std::int64_t slot) {
    Tensor dst = into.view(slot * h, {1, h});
    ops::copy(x.rows(r, r + 1), dst);
  };
  auto capture_layer = [&](const Tensor& x, std::int64_t layer) {
    if (!capture) return;
    for (std::int64_t s = 0; s < nseq; ++s) capture_row(x, seqs[s].q_begin + seqs[s].q_len - 1, states, s * (L + 1) + layer);
  };

  Tensor x = activation({n, h});
  const float embed_scale = c.scale_embeddings ? static_cast<float>(std::sqrt(static_cast<double>(h))) : 1.0f;
  ops::embedding_forward(ids, w_.embed_tokens, embed_scale, x);
  capture_layer(x, 0);

  Tensor normed = activation({n, h});
  Tensor q = activation({n, c.q_dim()}), k = activation({n, c.kv_dim()}), v = activation({n, c.kv_dim()});
  Tensor attn = activation({n, c.q_dim()}), proj = activation({n, h});
  Tensor gate = activation({n, f}), up = activation({n, f});
  Tensor out_normed = c.sandwich_norms ? activation({n, h}) : Tensor();
  // qwen3: the projections land here, then each head is normalised into q and k.
  Tensor q_raw = c.qk_norm ? activation({n, c.q_dim()}) : q, k_raw = c.qk_norm ? activation({n, c.kv_dim()}) : k;
  Tensor q_heads = head_rows(q, c.head_dim), k_heads = head_rows(k, c.head_dim);
  // The residual branch's output as added to x: itself, or normalised first (gemma2).
  auto branch = [&](const Tensor& out, const Tensor& norm) -> const Tensor& {
    if (!c.sandwich_norms) return out;
    ops::rmsnorm_forward(out, norm, eps, c.norm_unit_offset, out_normed);
    return out_normed;
  };
  const float scale = c.attention_scale();
  const std::vector<RopeRun> rope = rope_runs(seqs), rope_local = c.local_rope ? rope_runs(seqs, true) : rope;
  for (std::int64_t l = 0; l < L; ++l) {
    const BlockWeights& b = w_.blocks[l];
    if (l == 0) ops::rmsnorm_forward(x, b.input_norm, eps, c.norm_unit_offset, normed);  // later: fused below
    ops::linear_forward(normed, b.q, opt(b.q_bias), q_raw);
    ops::linear_forward(normed, b.k, opt(b.k_bias), k_raw);
    ops::linear_forward(normed, b.v, opt(b.v_bias), v);
    if (c.qk_norm) {
      ops::rmsnorm_forward(head_rows(q_raw, c.head_dim), b.q_norm, eps, c.norm_unit_offset, q_heads);
      ops::rmsnorm_forward(head_rows(k_raw, c.head_dim), b.k_norm, eps, c.norm_unit_offset, k_heads);
    }
    apply_rope(c.uses_local_rope(l) ? rope_local : rope, q, k, pos, c, /*backward=*/false);
    ops::kv_cache_write(k, v, seqs, cache.k(l), cache.v(l));
    ops::attention_forward(q, cache.k(l), cache.v(l), seqs, scale, c.attention_window(l), attn, c.attn_logit_softcap);
    ops::linear_forward(attn, b.o, opt(b.o_bias), proj);
    ops::add_rmsnorm_forward(x, branch(proj, b.attn_out_norm), b.mlp_norm, eps, c.norm_unit_offset, normed);
    ops::linear_forward(normed, b.gate, opt(b.gate_bias), gate);
    ops::linear_forward(normed, b.up, opt(b.up_bias), up);
    ops::glu_forward(gate, up, glu_of(c.activation), gate);
    ops::linear_forward(gate, b.down, opt(b.down_bias), proj);
    const Tensor& delta = branch(proj, b.mlp_out_norm);
    if (l + 1 < L)  // the residual add with the next block's input norm
      ops::add_rmsnorm_forward(x, delta, w_.blocks[l + 1].input_norm, eps, c.norm_unit_offset, normed);
    else
      ops::add_inplace(x, delta);
    capture_layer(x, l + 1);
  }
  for (std::int64_t s = 0; s < nseq; ++s) cache.set_length(in.slots[s], seqs[s].past_len + seqs[s].q_len);

  // Final norm and lm_head only on the rows whose logits are wanted.
  Tensor rows = x;
  if (!all_logits) {
    rows = activation({nseq, h});
    for (std::int64_t s = 0; s < nseq; ++s) {
      const std::int64_t r = seqs[s].q_begin + seqs[s].q_len - 1;
      Tensor dst = rows.rows(s, s + 1);
      ops::copy(x.rows(r, r + 1), dst);
    }
  }
  Tensor final_rows = activation({rows.dim(0), h});
  ops::rmsnorm_forward(rows, w_.final_norm, eps, c.norm_unit_offset, final_rows);
  if (capture) {
    for (std::int64_t s = 0; s < nseq; ++s) capture_row(final_rows, all_logits ? seqs[s].q_begin + seqs[s].q_len - 1 : s, finals, s);
    capture->states = to_host_f32(states);
    capture->final_normed = to_host_f32(finals);
  }
  // The logits in fp32 (on a GPU, the GEMM writes fp32 from bf16 inputs), returned on the host.
  Tensor logits = Tensor::empty({rows.dim(0), c.vocab_size}, DType::F32, MemCategory::Activations, dev);
  ops::linear_forward(final_rows, w_.lm_head, nullptr, logits);
  Tensor host = to_host_f32(logits);
  if (c.final_logit_softcap > 0) {  // gemma2, on the fp32 logits that come back
    float* p = host.data<float>();
    for (std::int64_t i = 0; i < host.numel(); ++i) p[i] = ops::soft_cap(p[i], c.final_logit_softcap);
  }
  return host;
}

void Model::save(const fs::path& dir, DType dtype, std::size_t max_shard_bytes) {
  // Opened before anything is written, so that saving over the source directory still reads the
  // old files (their mappings outlive the renames).
  const CarriedVisionTower tower = find_vision_tower(config_, dir_);
  ensure_directory(dir);
  const std::string torch_dtype = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  // Every tensor to write: a parameter of this model, or a carried tensor of the source checkpoint.
  struct Saved {
    std::string name;
    Shape shape;
    const Tensor* param;
    const TensorEntry* carried;
  };
  std::vector<Saved> saved;
  for (const auto& s : param_specs(config_, w_))
    saved.push_back({tower.naming ? multimodal_name(s.name, *tower.naming) : s.name, s.shape, s.tensor, nullptr});
  for (const TensorEntry* e : tower.tensors) {
    if (e->dtype == DType::I32) throw InputError(e->file + ": vision tower tensor '" + e->name + "' has dtype I32, expected a float");
    saved.push_back({e->name, e->shape, nullptr, e});
  }
  // Group tensors into shards in checkpoint order.
  std::vector<std::vector<const Saved*>> shards(1);
  std::size_t in_shard = 0, total = 0;
  for (const auto& s : saved) {
    const std::size_t bytes = static_cast<std::size_t>(shape_numel(s.shape)) * dtype_size(dtype);
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&s);
    in_shard += bytes;
    total += bytes;
  }
  auto shard_name = [&](std::size_t i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    return shards.size() == 1 ? std::string("model.safetensors") : std::string(buf);
  };
  Json weight_map = Json::object();
  for (std::size_t i = 0; i < shards.size(); ++i) {
    std::vector<std::vector<std::uint8_t>> converted;
    std::vector<TensorToWrite> tensors;
    converted.reserve(shards[i].size());
    for (const Saved* s : shards[i]) {
      const auto n = static_cast<std::size_t>(shape_numel(s->shape));
      std::vector<std::uint8_t> bytes(n * dtype_size(dtype));
      if (s->carried && s->carried->dtype == dtype) {
        std::memcpy(bytes.data(), s->carried->data, bytes.size());
      } else if (s->carried) {
        std::vector<float> values(n);
        convert_to_f32(s->carried->data, s->carried->dtype, values.data(), n);
        convert_from_f32(values.data(), dtype, bytes.data(), n);
      } else {
        const bool host_f32 = s->param->device() == Device::CPU && s->param->dtype() == DType::F32;
        const std::vector<float> moved = host_f32 ? std::vector<float>() : host_values_f32(*s->param);
        convert_from_f32(host_f32 ? s->param->data<float>() : moved.data(), dtype, bytes.data(), n);
      }
      converted.push_back(std::move(bytes));
      tensors.push_back({s->name, dtype, s->shape, converted.back().data()});
      weight_map[s->name] = shard_name(i);
    }
    write_safetensors(dir / shard_name(i), tensors, {{"format", "pt"}});
  }
  // Leave exactly one layout behind: a stale index or single file would shadow the new one.
  std::error_code ec;
  if (shards.size() > 1) {
    atomic_write_text(dir / "model.safetensors.index.json",
                      Json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2) + "\n");
    fs::remove(dir / "model.safetensors", ec);
  } else {
    fs::remove(dir / "model.safetensors.index.json", ec);
  }
  atomic_write_text(dir / "config.json", config_json_for_save(config_, torch_dtype, tower.naming != nullptr).dump(2) + "\n");
}

}  // namespace sppft
