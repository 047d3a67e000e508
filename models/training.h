// The training graph of a Model: forward with saved activations, chunked
// cross-entropy fused with the lm_head, and backward - written once against
// kernels/ops.h. Every buffer is allocated up front from one list of specs
// (buffer_specs), so the memory planner's prediction and the allocator's
// measurement are the same arithmetic, and a step allocates nothing.
//
// Freezing is structural: a block in InputGradOnly mode keeps only what the
// activation gradient needs (no linear-layer inputs saved, no weight-gradient
// GEMMs); blocks below the lowest one that needs backward keep nothing and
// run no backward at all.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model.h"

namespace sppft {

enum class BlockMode {
  NoBackward,     // below every trainable parameter: forward only
  InputGradOnly,  // attention + MLP weights frozen: dX flows, no weight grads (norm grads allowed)
  Full,           // weights train
};

struct BufferSpec {
  std::string name;
  MemCategory category;
  Shape shape;
  DType dtype = DType::F32;
  std::size_t bytes() const { return static_cast<std::size_t>(shape_numel(shape)) * dtype_size(dtype); }
};

// One sequence of a micro-batch: token ids and labels aligned with them
// (-100 = no loss); the loss at position t predicts labels[t + 1].
struct TrainSequence {
  const std::vector<std::int32_t>* ids;
  const std::vector<std::int32_t>* labels;
};

struct LossSum {
  double sum = 0;          // sum of token cross-entropies
  std::int64_t tokens = 0;  // tokens that carried a loss
};

class TrainingGraph {
 public:
  // `max_tokens`: the most tokens one micro-batch packs; `loss_chunk`: rows of
  // logits materialised at once.
  TrainingGraph(Model& model, std::vector<BlockMode> modes, std::int64_t max_tokens, std::int64_t loss_chunk = 256);

  static std::vector<BufferSpec> buffer_specs(const ModelConfig& c, const std::vector<BlockMode>& modes,
                                              std::int64_t max_tokens, std::int64_t loss_chunk);

  // Forward, loss, backward on one micro-batch. Gradients are ACCUMULATED into
  // `grads` (shaped like the model's weights; an undefined tensor = frozen,
  // nothing computed for it), scaled by `grad_scale` (1 / tokens of the global
  // batch). Returns the unscaled loss sum.
  LossSum step(const std::vector<TrainSequence>& batch, ModelWeights& grads, float grad_scale);
  // Forward and loss only.
  LossSum evaluate(const std::vector<TrainSequence>& batch);

  std::int64_t max_tokens() const { return max_tokens_; }

 private:
  struct Saved {  // per block; undefined tensors are not kept in this mode
    Tensor x_in, normed1, q, k, v, attn, lse, x_mid, normed2, gate, up;
  };
  LossSum run(const std::vector<TrainSequence>& batch, ModelWeights* grads, float grad_scale);
  void block_forward(std::int64_t l, std::int64_t n);
  void block_backward(std::int64_t l, std::int64_t n, BlockWeights& g);

  Model& model_;
  std::vector<BlockMode> modes_;
  std::int64_t max_tokens_, loss_chunk_;
  std::vector<Saved> saved_;
  std::vector<ops::AttentionSeq> seqs_;
  std::vector<Tensor> owned_;  // every buffer, allocated from buffer_specs
  // Workspace
  Tensor ids_, pos_, targets_, x_, final_x_, final_normed_, logits_, d_final_;
  Tensor w_normed_, w_q_, w_k_, w_v_, w_attn_, w_lse_, w_gate_, w_up_, w_proj_;
  Tensor dx_, d_tmp_, d_q_, d_k_, d_v_, d_attn_, d_gate_, d_up_, act_;
};

// Binds row views of fused gradient tensors and the tied lm_head (as
// Model does for weights). Call after allocating the defined tensors.
void bind_fused_views(const ModelConfig& c, ModelWeights& w);

}  // namespace sppft
