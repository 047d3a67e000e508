#include "models/training.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"
#include "kernels/device_scratch.h"

namespace sppft {

namespace {

ops::GluActivation glu_act(Activation a) {
  return a == Activation::SiLU ? ops::GluActivation::SiLU
         : a == Activation::GeluTanh ? ops::GluActivation::GeluTanh : ops::GluActivation::GeluErf;
}

const Tensor* opt(const Tensor& t) { return t.defined() ? &t : nullptr; }
Tensor* opt_mut(Tensor& t) { return t.defined() ? &t : nullptr; }

// First n rows of a max-sized buffer.
Tensor first(const Tensor& t, std::int64_t n) { return t.rows(0, n); }

}  // namespace

const char* step_phase_name(StepPhase p) {
  switch (p) {
    case StepPhase::Forward: return "forward";
    case StepPhase::BackwardDX: return "backward_dx";
    case StepPhase::BackwardDW: return "backward_dw";
    case StepPhase::Optimizer: return "optimizer";
    case StepPhase::Recompute: return "recompute";
  }
  return "?";
}

std::string activation_policy_name(ActivationPolicy p) {
  if (!p.recomputes()) return "save";
  if (p.recompute_blocks == ActivationPolicy::kAll) return "recompute";
  return "recompute " + std::to_string(p.recompute_blocks) + (p.recompute_blocks == 1 ? " block" : " blocks");
}

std::string activation_policy_note(ActivationPolicy p) {
  if (!p.recomputes()) return "";
  if (p.recompute_blocks == ActivationPolicy::kAll) return ", activations recomputed";
  return ", activations of " + std::to_string(p.recompute_blocks) + (p.recompute_blocks == 1 ? " block" : " blocks") +
         " recomputed";
}

std::vector<bool> recomputed_blocks(const std::vector<BlockMode>& modes, ActivationPolicy p) {
  std::vector<bool> out(modes.size(), false);
  std::int64_t left = p.recompute_blocks;
  for (std::size_t l = 0; l < modes.size() && left > 0; ++l)
    if (modes[l] != BlockMode::NoBackward) out[l] = true, --left;
  return out;
}

std::vector<bool> rerun_blocks(const std::vector<BlockMode>& modes, ActivationPolicy p) {
  std::vector<bool> out = recomputed_blocks(modes, p);
  const auto top = std::find(out.rbegin(), out.rend(), true);
  if (top != out.rend()) *top = false;
  return out;
}

std::string StepPart::name() const {
  switch (kind) {
    case Embeddings: return "embeddings";
    case Block: return "block." + std::to_string(block);
    case FinalNorm: return "final_norm";
    case LmHead: return "lm_head";
    case Loss: return "loss";
  }
  return "?";
}

void TrainingGraph::switch_phase(const StepPart& part, StepPhase phase, bool open_next) {
  if (phase_open_) timer_->end(open_part_, open_phase_);
  phase_open_ = open_next;
  if (!open_next) return;
  open_part_ = part;
  open_phase_ = phase;
  timer_->begin(part, phase);
}

void bind_fused_views(const ModelConfig& c, ModelWeights& w) {
  const std::int64_t qd = c.q_dim(), kd = c.kv_dim(), f = c.intermediate_size;
  for (auto& b : w.blocks) {
    if (c.fused_qkv && b.qkv_fused.defined()) {
      b.q = b.qkv_fused.rows(0, qd);
      b.k = b.qkv_fused.rows(qd, qd + kd);
      b.v = b.qkv_fused.rows(qd + kd, qd + 2 * kd);
    }
    if (c.fused_gate_up && b.gate_up_fused.defined()) {
      b.gate = b.gate_up_fused.rows(0, f);
      b.up = b.gate_up_fused.rows(f, 2 * f);
    }
  }
  if (c.tie_word_embeddings) w.lm_head = w.embed_tokens;
}

std::vector<BufferSpec> TrainingGraph::buffer_specs(const ModelConfig& c, const std::vector<BlockMode>& modes,
                                                    std::int64_t n, std::int64_t loss_chunk, DType activations,
                                                    ActivationPolicy policy) {
  const std::int64_t h = c.hidden_size, f = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim(), hq = c.num_heads;
  const auto act = MemCategory::Activations, ws = MemCategory::Workspace;
  const std::vector<bool> recomputed = recomputed_blocks(modes, policy);
  std::vector<BufferSpec> s;
  // What one block keeps for its backward, under `prefix`; the norm outputs only for weight gradients.
  const auto block_saves = [&](const std::string& p, bool full) {
    if (full) s.push_back({p + "normed1", act, {n, h}});
    s.push_back({p + "q", act, {n, q}});
    s.push_back({p + "k", act, {n, kv}});
    s.push_back({p + "v", act, {n, kv}});
    s.push_back({p + "attn", act, {n, q}});
    s.push_back({p + "lse", act, {n, hq}});
    s.push_back({p + "x_mid", act, {n, h}});
    if (full) s.push_back({p + "normed2", act, {n, h}});
    s.push_back({p + "gate", act, {n, f}});
    s.push_back({p + "up", act, {n, f}});
    if (c.sandwich_norms) {
      s.push_back({p + "o_out", act, {n, h}});
      s.push_back({p + "down_out", act, {n, h}});
    }
    if (c.qk_norm) {
      s.push_back({p + "q_raw", act, {n, q}});
      s.push_back({p + "k_raw", act, {n, kv}});
    }
  };
  bool any_recomputed = false, any_full_recomputed = false;  // the shared set fits the largest of them
  for (std::size_t l = 0; l < modes.size(); ++l) {
    if (modes[l] == BlockMode::NoBackward) continue;
    const std::string p = "block." + std::to_string(l) + ".";
    s.push_back({p + "x_in", act, {n, h}});
    if (recomputed[l]) {
      any_recomputed = true;
      any_full_recomputed = any_full_recomputed || modes[l] == BlockMode::Full;
    } else {
      block_saves(p, modes[l] == BlockMode::Full);
    }
  }
  if (any_recomputed) block_saves("recompute.", any_full_recomputed);
  s.push_back({"final_x", act, {n, h}});
  s.push_back({"final_normed", act, {n, h}});
  const std::int64_t chunk = std::min(loss_chunk, n);
  for (auto [name, shape, dt] : std::vector<std::tuple<const char*, Shape, DType>>{
           {"ids", {n}, DType::I32}, {"positions", {n}, DType::I32}, {"targets", {n}, DType::I32},
           {"x", {n, h}, DType::F32}, {"logits", {chunk, c.vocab_size}, DType::F32}, {"d_final", {n, h}, DType::F32},
           {"w_normed", {n, h}, DType::F32}, {"w_q", {n, q}, DType::F32}, {"w_k", {n, kv}, DType::F32},
           {"w_v", {n, kv}, DType::F32}, {"w_attn", {n, q}, DType::F32}, {"w_lse", {n, hq}, DType::F32},
           {"w_gate", {n, f}, DType::F32}, {"w_up", {n, f}, DType::F32}, {"w_proj", {n, h}, DType::F32},
           {"dx", {n, h}, DType::F32}, {"d_tmp", {n, h}, DType::F32}, {"d_q", {n, q}, DType::F32},
           {"d_k", {n, kv}, DType::F32}, {"d_v", {n, kv}, DType::F32}, {"d_attn", {n, q}, DType::F32},
           {"d_gate", {n, f}, DType::F32}, {"d_up", {n, f}, DType::F32}, {"act", {n, f}, DType::F32}})
    s.push_back({name, ws, shape, dt});
  if (c.sandwich_norms) s.push_back({"w_out_normed", ws, {n, h}, DType::F32});
  if (c.qk_norm) {
    s.push_back({"w_q_raw", ws, {n, q}, DType::F32});
    s.push_back({"w_k_raw", ws, {n, kv}, DType::F32});
  }
  for (auto& spec : s)  // the log-sum-exp stays fp32: it carries the softmax's scale
    if (spec.dtype == DType::F32 && spec.name.find("lse") == std::string::npos) spec.dtype = activations;
  return s;
}

std::size_t TrainingGraph::device_scratch_bytes(const ModelConfig& c, const std::vector<BlockMode>& modes,
                                                std::int64_t n, std::int64_t loss_chunk) {
  namespace ds = device_scratch;
  std::size_t need = std::max({ds::cross_entropy(std::min(loss_chunk, n)), ds::sum_squares(),
                               ds::rmsnorm_backward(n, c.hidden_size, true), ds::embedding_backward(n)});
  if (std::any_of(modes.begin(), modes.end(), [](BlockMode m) { return m != BlockMode::NoBackward; })) {
    need = std::max(need, ds::attention_backward(n, c.num_heads));
    std::int64_t bias_cols = 0;
    if (c.qkv_bias) bias_cols = std::max(c.q_dim(), c.kv_dim());
    if (c.o_bias) bias_cols = std::max(bias_cols, c.hidden_size);
    if (c.mlp_bias) bias_cols = std::max({bias_cols, c.hidden_size, c.intermediate_size});
    if (bias_cols) need = std::max(need, ds::bias_backward(n, bias_cols));
    if (c.qk_norm) need = std::max(need, ds::rmsnorm_backward(n * c.num_heads, c.head_dim, true));
  }
  return need;
}

TrainingGraph::TrainingGraph(Model& model, std::vector<BlockMode> modes, std::int64_t max_tokens, std::int64_t loss_chunk,
                             ActivationPolicy policy)
    : model_(model),
      modes_(std::move(modes)),
      max_tokens_(max_tokens),
      loss_chunk_(loss_chunk),
      policy_(policy),
      recomputed_(recomputed_blocks(modes_, policy)),
      rerun_(rerun_blocks(modes_, policy)) {
  const ModelConfig& c = model.config();
  if (static_cast<std::int64_t>(modes_.size()) != c.num_layers) throw std::invalid_argument("TrainingGraph: one mode per block");
  saved_.resize(c.num_layers);
  std::map<std::string, Tensor*> slot = {
      {"ids", &ids_}, {"positions", &pos_}, {"targets", &targets_}, {"x", &x_}, {"final_x", &final_x_},
      {"final_normed", &final_normed_}, {"logits", &logits_}, {"d_final", &d_final_}, {"w_normed", &w_normed_},
      {"w_q", &w_q_}, {"w_k", &w_k_}, {"w_v", &w_v_}, {"w_attn", &w_attn_}, {"w_lse", &w_lse_}, {"w_gate", &w_gate_},
      {"w_up", &w_up_}, {"w_proj", &w_proj_}, {"dx", &dx_}, {"d_tmp", &d_tmp_}, {"d_q", &d_q_}, {"d_k", &d_k_},
      {"d_v", &d_v_}, {"d_attn", &d_attn_}, {"d_gate", &d_gate_}, {"d_up", &d_up_}, {"act", &act_},
      {"w_out_normed", &w_out_normed_}, {"w_q_raw", &w_q_raw_}, {"w_k_raw", &w_k_raw_}};
  const auto saved_slots = [&](const std::string& p, Saved& s) {
    for (auto [name, t] : std::vector<std::pair<const char*, Tensor*>>{
             {"x_in", &s.x_in}, {"normed1", &s.normed1}, {"q", &s.q}, {"k", &s.k}, {"v", &s.v}, {"attn", &s.attn},
             {"lse", &s.lse}, {"x_mid", &s.x_mid}, {"normed2", &s.normed2}, {"gate", &s.gate}, {"up", &s.up},
             {"o_out", &s.o_out}, {"down_out", &s.down_out}, {"q_raw", &s.q_raw}, {"k_raw", &s.k_raw}})
      slot[p + name] = t;
  };
  for (std::int64_t l = 0; l < c.num_layers; ++l) saved_slots("block." + std::to_string(l) + ".", saved_[l]);
  saved_slots("recompute.", shared_);
  const Tensor& embed = model.weights().embed_tokens;
  const Device device = embed.device();
  for (const auto& spec : buffer_specs(c, modes_, max_tokens_, loss_chunk_, embed.dtype(), policy_)) {
    owned_.push_back(Tensor::empty(spec.shape, spec.dtype, spec.category, device));
    *slot.at(spec.name) = owned_.back();
  }
  for (std::int64_t l = 0; l < c.num_layers; ++l) {  // a recomputed block's saves are views of the shared set
    if (!recomputed_[l]) continue;
    Saved& s = saved_[l];
    const bool full = modes_[l] == BlockMode::Full;
    s.normed1 = full ? shared_.normed1 : Tensor();
    s.normed2 = full ? shared_.normed2 : Tensor();
    s.q = shared_.q, s.k = shared_.k, s.v = shared_.v, s.attn = shared_.attn, s.lse = shared_.lse;
    s.x_mid = shared_.x_mid, s.gate = shared_.gate, s.up = shared_.up;
    s.o_out = shared_.o_out, s.down_out = shared_.down_out;
    s.q_raw = shared_.q_raw, s.k_raw = shared_.k_raw;
  }
  if (device != Device::CPU) ops::reserve_scratch(device, device_scratch_bytes(c, modes_, max_tokens_, loss_chunk_));
  for (auto [dev, host] : {std::pair{&ids_, &ids_host_}, std::pair{&pos_, &pos_host_}, std::pair{&targets_, &targets_host_}})
    *host = device == Device::CPU ? *dev : Tensor::empty(dev->shape(), DType::I32, MemCategory::Workspace);
}

void TrainingGraph::block_forward(std::int64_t l, std::int64_t n, bool recomputing) {
  mark(StepPart::Block, l, recomputing ? StepPhase::Recompute : StepPhase::Forward);
  const ModelConfig& c = model_.config();
  const BlockWeights& b = model_.weights().blocks[l];
  Saved& s = saved_[l];
  const bool keep = modes_[l] != BlockMode::NoBackward;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor x = first(x_, n);
  if (recomputing) {
    ops::copy(first(s.x_in, n), x);  // x_ is free in backward: the final norm has its own copy
  } else if (keep) {
    Tensor x_in = first(s.x_in, n);
    ops::copy(x, x_in);
  }
  Tensor normed1 = first(s.normed1.defined() ? s.normed1 : w_normed_, n);
  Tensor q = first(keep ? s.q : w_q_, n), k = first(keep ? s.k : w_k_, n), v = first(keep ? s.v : w_v_, n);
  Tensor attn = first(keep ? s.attn : w_attn_, n), lse = first(keep ? s.lse : w_lse_, n);
  ops::rmsnorm_forward(x, b.input_norm, eps, c.norm_unit_offset, normed1);
  // qwen3: the projections are kept, and each head normalised into q and k.
  Tensor q_raw = c.qk_norm ? first(keep ? s.q_raw : w_q_raw_, n) : q;
  Tensor k_raw = c.qk_norm ? first(keep ? s.k_raw : w_k_raw_, n) : k;
  ops::linear_forward(normed1, b.q, opt(b.q_bias), q_raw);
  ops::linear_forward(normed1, b.k, opt(b.k_bias), k_raw);
  ops::linear_forward(normed1, b.v, opt(b.v_bias), v);
  if (c.qk_norm) {
    Tensor q_heads = head_rows(q, c.head_dim), k_heads = head_rows(k, c.head_dim);
    ops::rmsnorm_forward(head_rows(q_raw, c.head_dim), b.q_norm, eps, c.norm_unit_offset, q_heads);
    ops::rmsnorm_forward(head_rows(k_raw, c.head_dim), b.k_norm, eps, c.norm_unit_offset, k_heads);
  }
  Tensor pos = first(pos_, n);
  apply_rope(c.uses_local_rope(l) ? rope_local_ : rope_, q, k, pos, c, /*backward=*/false);
  ops::attention_forward_train(q, k, v, seqs_, c.attention_scale(), c.attention_window(l), attn, lse,
                               c.attn_logit_softcap);
  // A branch's output before its residual add: itself, or (gemma2) normalised, its input kept.
  const bool sandwich = c.sandwich_norms;
  const auto branch = [&](const Tensor& out, const Tensor& norm) {
    if (!sandwich) return out;
    Tensor normed = first(w_out_normed_, n);
    ops::rmsnorm_forward(out, norm, eps, c.norm_unit_offset, normed);
    return normed;
  };
  Tensor proj = first(keep && sandwich ? s.o_out : w_proj_, n);
  ops::linear_forward(attn, b.o, opt(b.o_bias), proj);
  Tensor normed2 = first(s.normed2.defined() ? s.normed2 : w_normed_, n);
  ops::add_rmsnorm_forward(x, branch(proj, b.attn_out_norm), b.mlp_norm, eps, c.norm_unit_offset, normed2);  // x = x_mid
  if (keep) {
    Tensor x_mid = first(s.x_mid, n);
    ops::copy(x, x_mid);
  }
  Tensor gate = first(keep ? s.gate : w_gate_, n), up = first(keep ? s.up : w_up_, n);
  ops::linear_forward(normed2, b.gate, opt(b.gate_bias), gate);
  ops::linear_forward(normed2, b.up, opt(b.up_bias), up);
  // Backward needs no block output (it recomputes glu(gate, up) itself), except gemma2's
  // down projection, the input of its output norm.
  if (recomputing && !sandwich) return;
  Tensor act = first(act_, n), down = first(keep && sandwich ? s.down_out : w_proj_, n);
  ops::glu_forward(gate, up, glu_act(c.activation), act);
  ops::linear_forward(act, b.down, opt(b.down_bias), down);
  if (recomputing) return;
  ops::add_inplace(x, branch(down, b.mlp_out_norm));
}

void TrainingGraph::block_backward(std::int64_t l, std::int64_t n, BlockWeights& g) {
  // dx_ holds dL/d(block output); on return, dL/d(block input). The order of
  // the ops is the same with or without a timer; marks only label them.
  const auto dX = [&] { mark(StepPart::Block, l, StepPhase::BackwardDX); };
  const auto dW = [&] { mark(StepPart::Block, l, StepPhase::BackwardDW); };
  dX();
  const ModelConfig& c = model_.config();
  const BlockWeights& b = model_.weights().blocks[l];
  const Saved& s = saved_[l];
  const bool full = modes_[l] == BlockMode::Full;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor dx = first(dx_, n), dtmp = first(d_tmp_, n);
  // MLP: out = x_mid + down(glu(gate(n2), up(n2))), n2 = norm(x_mid).
  Tensor act = first(act_, n), dgate = first(d_gate_, n), dup = first(d_up_, n);
  Tensor gate = first(s.gate, n), up = first(s.up, n);
  // Gemma-2 normalises each branch's output: the gradient reaching the branch goes back
  // through that norm first (into d_tmp, free until the branch's own dX overwrites it).
  const auto through_out_norm = [&](const Tensor& saved, const Tensor& norm, Tensor& norm_grad) {
    if (!c.sandwich_norms) return dx;
    ops::rmsnorm_backward(first(saved, n), norm, dx, eps, c.norm_unit_offset, dtmp, opt_mut(norm_grad));
    return dtmp;
  };
  const Tensor dmlp = through_out_norm(s.down_out, b.mlp_out_norm, g.mlp_out_norm);  // dL/d(down output)
  ops::linear_backward_input(dmlp, b.down, act, /*accumulate=*/false);  // act now holds d(act)
  if (full) {
    dW();
    Tensor a = first(d_up_, n);  // recompute glu(gate, up) for dW_down, using d_up as scratch
    ops::glu_forward(gate, up, glu_act(c.activation), a);
    ops::linear_backward_weight(dmlp, a, g.down, opt_mut(g.down_bias));
    dX();
  }
  ops::glu_backward(gate, up, act, glu_act(c.activation), dgate, dup);
  ops::linear_backward_input(dgate, b.gate, dtmp, false);
  ops::linear_backward_input(dup, b.up, dtmp, true);
  if (full) {
    dW();
    Tensor n2 = first(s.normed2, n);
    ops::linear_backward_weight(dgate, n2, g.gate, opt_mut(g.gate_bias));
    ops::linear_backward_weight(dup, n2, g.up, opt_mut(g.up_bias));
    dX();
  }
  ops::rmsnorm_backward(first(s.x_mid, n), b.mlp_norm, dtmp, eps, c.norm_unit_offset, dx,
                        opt_mut(g.mlp_norm), /*accumulate_dx=*/true);  // dx = dL/d(x_mid)
  // Attention: x_mid = x_in + o(attn(rope(q(n1)), rope(k(n1)), v(n1))), n1 = norm(x_in).
  Tensor dattn = first(d_attn_, n);
  const Tensor dproj = through_out_norm(s.o_out, b.attn_out_norm, g.attn_out_norm);  // dL/d(o output)
  ops::linear_backward_input(dproj, b.o, dattn, false);
  if (full) {
    dW();
    ops::linear_backward_weight(dproj, first(s.attn, n), g.o, opt_mut(g.o_bias));
    dX();
  }
  Tensor dq = first(d_q_, n), dk = first(d_k_, n), dv = first(d_v_, n);
  ops::attention_backward(first(s.q, n), first(s.k, n), first(s.v, n), first(s.attn, n), first(s.lse, n), dattn, seqs_,
                          c.attention_scale(), c.attention_window(l), dq, dk, dv, c.attn_logit_softcap);
  Tensor pos = first(pos_, n);
  apply_rope(c.uses_local_rope(l) ? rope_local_ : rope_, dq, dk, pos, c, /*backward=*/true);
  if (c.qk_norm) {  // back through each head's norm, in place on dq and dk
    Tensor dq_heads = head_rows(dq, c.head_dim), dk_heads = head_rows(dk, c.head_dim);
    ops::rmsnorm_backward(head_rows(first(s.q_raw, n), c.head_dim), b.q_norm, dq_heads, eps, c.norm_unit_offset, dq_heads,
                          opt_mut(g.q_norm));
    ops::rmsnorm_backward(head_rows(first(s.k_raw, n), c.head_dim), b.k_norm, dk_heads, eps, c.norm_unit_offset, dk_heads,
                          opt_mut(g.k_norm));
  }
  ops::linear_backward_input(dq, b.q, dtmp, false);
  ops::linear_backward_input(dk, b.k, dtmp, true);
  ops::linear_backward_input(dv, b.v, dtmp, true);
  if (full) {
    dW();
    Tensor n1 = first(s.normed1, n);
    ops::linear_backward_weight(dq, n1, g.q, opt_mut(g.q_bias));
    ops::linear_backward_weight(dk, n1, g.k, opt_mut(g.k_bias));
    ops::linear_backward_weight(dv, n1, g.v, opt_mut(g.v_bias));
    dX();
  }
  ops::rmsnorm_backward(first(s.x_in, n), b.input_norm, dtmp, eps, c.norm_unit_offset, dx, opt_mut(g.input_norm),
                        /*accumulate_dx=*/true);
}

LossSum TrainingGraph::run(const std::vector<TrainSequence>& batch, ModelWeights* grads, float grad_scale) {
  phase_open_ = false;  // a step that threw may have left one open
  mark(StepPart::Embeddings, -1, StepPhase::Forward);  // packing the batch counts as the embeddings' forward
  const ModelConfig& c = model_.config();
  seqs_.clear();
  std::int64_t n = 0;
  for (const auto& s : batch) {
    const auto len = static_cast<std::int64_t>(s.ids->size());
    if (len > c.max_position_embeddings)
      throw InputError("training sequence of " + std::to_string(len) + " tokens exceeds max_position_embeddings");
    seqs_.push_back({n, len, 0, 0});
    n += len;
  }
  if (n > max_tokens_) throw std::invalid_argument("TrainingGraph: micro-batch larger than planned");
  rope_ = model_.rope_runs(seqs_);
  if (c.local_rope) rope_local_ = model_.rope_runs(seqs_, true);
  if (n == 0) {
    mark_end();
    return {};
  }
  auto* ids = ids_host_.data<std::int32_t>();
  auto* pos = pos_host_.data<std::int32_t>();
  auto* tgt = targets_host_.data<std::int32_t>();
  for (std::size_t s = 0; s < batch.size(); ++s) {
    const auto& sq = seqs_[s];
    for (std::int64_t t = 0; t < sq.q_len; ++t) {
      ids[sq.q_begin + t] = (*batch[s].ids)[t];
      pos[sq.q_begin + t] = static_cast<std::int32_t>(t);
      tgt[sq.q_begin + t] = t + 1 < sq.q_len ? (*batch[s].labels)[t + 1] : -100;
    }
  }
  if (ids_host_.raw() != ids_.raw())  // buffers on a GPU
    for (auto [host, dev] : {std::pair{&ids_host_, &ids_}, std::pair{&pos_host_, &pos_}, std::pair{&targets_host_, &targets_}}) {
      Tensor d = first(*dev, n);
      ops::copy(first(*host, n), d);
    }
  const std::int64_t h = c.hidden_size, L = c.num_layers;
  const float embed_scale = c.scale_embeddings ? static_cast<float>(std::sqrt(static_cast<double>(h))) : 1.0f;
  Tensor x = first(x_, n);
  ops::embedding_forward(first(ids_, n), model_.weights().embed_tokens, embed_scale, x);
  for (std::int64_t l = 0; l < L; ++l) block_forward(l, n);
  mark(StepPart::FinalNorm, -1, StepPhase::Forward);
  Tensor fx = first(final_x_, n), fn = first(final_normed_, n);
  ops::copy(x, fx);
  const float eps = static_cast<float>(c.rms_norm_eps);
  ops::rmsnorm_forward(fx, model_.weights().final_norm, eps, c.norm_unit_offset, fn);

  // Loss in chunks of rows, fused with the lm_head's backward.
  LossSum loss;
  Tensor dfinal = first(d_final_, n);
  for (std::int64_t r0 = 0; r0 < n; r0 += loss_chunk_) {
    const std::int64_t r1 = std::min(n, r0 + loss_chunk_);
    Tensor rows = fn.rows(r0, r1), logits = logits_.rows(0, r1 - r0), targets = targets_.rows(r0, r1);
    mark(StepPart::LmHead, -1, StepPhase::Forward);
    ops::linear_forward(rows, model_.weights().lm_head, nullptr, logits);
    mark(StepPart::Loss, -1, StepPhase::Forward);
    loss.sum += ops::cross_entropy(logits, targets, grad_scale, grads ? &logits : nullptr, c.final_logit_softcap);
    for (std::int64_t i = r0; i < r1; ++i) loss.tokens += tgt[i] != -100;
    if (!grads) continue;
    Tensor drows = dfinal.rows(r0, r1);
    mark(StepPart::LmHead, -1, StepPhase::BackwardDX);
    ops::linear_backward_input(logits, model_.weights().lm_head, drows, false);
    if (grads->lm_head.defined()) {
      mark(StepPart::LmHead, -1, StepPhase::BackwardDW);
      ops::linear_backward_weight(logits, rows, grads->lm_head, nullptr);
    }
  }
  if (!grads) {
    mark_end();
    return loss;
  }
  if (grads_ready_ && grads->lm_head.defined() && !c.tie_word_embeddings) grads_ready_({StepPart::LmHead, -1});

  mark(StepPart::FinalNorm, -1, StepPhase::BackwardDX);
  Tensor dx = first(dx_, n);
  ops::rmsnorm_backward(fx, model_.weights().final_norm, dfinal, eps, c.norm_unit_offset, dx, opt_mut(grads->final_norm));
  if (grads_ready_ && grads->final_norm.defined()) grads_ready_({StepPart::FinalNorm, -1});
  for (std::int64_t l = L - 1; l >= 0 && modes_[l] != BlockMode::NoBackward; --l) {
    // The forward left the highest recomputed block's activations in the shared set; the
    // other recomputed blocks rerun theirs.
    if (rerun_[l]) block_forward(l, n, /*recomputing=*/true);
    block_backward(l, n, grads->blocks[l]);
    if (grads_ready_) grads_ready_({StepPart::Block, l});
  }
  if (grads->embed_tokens.defined() && (L == 0 || modes_[0] != BlockMode::NoBackward)) {
    mark(StepPart::Embeddings, -1, StepPhase::BackwardDW);
    ops::embedding_backward(first(ids_, n), dx, embed_scale, grads->embed_tokens);
  }
  if (grads_ready_ && grads->embed_tokens.defined()) grads_ready_({StepPart::Embeddings, -1});
  mark_end();
  return loss;
}

LossSum TrainingGraph::step(const std::vector<TrainSequence>& batch, ModelWeights& grads, float grad_scale) {
  return run(batch, &grads, grad_scale);
}

LossSum TrainingGraph::evaluate(const std::vector<TrainSequence>& batch) { return run(batch, nullptr, 0.0f); }

}  // namespace sppft
