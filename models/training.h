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
//
// With ActivationPolicy::recompute() (activation checkpointing) a recomputed block
// keeps only its input; the rest of what its backward needs lives in one shared set
// of buffers, which the forward leaves holding the highest recomputed block's
// activations and which each lower one refills by rerunning its forward just before
// its backward. The same ops on the same inputs: gradients are bitwise those of
// saving everything.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/model.h"

namespace sppft {

enum class BlockMode {
  NoBackward,     // below every trainable parameter: forward only
  InputGradOnly,  // attention + MLP weights frozen: dX flows, no weight grads (norm grads allowed)
  Full,           // weights train
};

// How blocks' activations wait for their backward: the `recompute_blocks` lowest blocks that
// run backward (all of them with kAll) keep only their input and rerun their forward before
// their backward; the others keep everything (the default: none recomputed).
struct ActivationPolicy {
  static constexpr std::int64_t kAll = INT64_MAX;
  std::int64_t recompute_blocks = 0;
  static ActivationPolicy save() { return {}; }
  static ActivationPolicy recompute(std::int64_t blocks = kAll) { return {blocks}; }
  bool recomputes() const { return recompute_blocks > 0; }
  bool operator==(const ActivationPolicy&) const = default;
};
// "save", "recompute" (every block), "recompute 4 blocks"
std::string activation_policy_name(ActivationPolicy p);
// For titles: "" (nothing recomputed), ", activations recomputed", ", activations of 4 blocks recomputed".
std::string activation_policy_note(ActivationPolicy p);
// Per block: whether it is recomputed (the lowest p.recompute_blocks of those that run backward).
std::vector<bool> recomputed_blocks(const std::vector<BlockMode>& modes, ActivationPolicy p);
// Per block: whether its forward reruns before its backward - every recomputed block but the
// highest, whose activations are still in the shared set when its backward comes.
std::vector<bool> rerun_blocks(const std::vector<BlockMode>& modes, ActivationPolicy p);

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

// Profiling hooks (sppft profile, trainer/profile.h). A step is cut into
// contiguous phases of parts of the model; a PhaseTimer set on the graph gets
// begin/end around each one, in order, never nested. Names as NVTX ranges /
// trace events: "block.<k>.forward", "block.<k>.backward_dx",
// "block.<k>.backward_dw", "embeddings.forward", "lm_head.backward_dw", ...
//   forward      the part's forward (the loss part: cross-entropy and its gradient)
//   backward_dx  activation gradients: every linear_backward_input, attention,
//                RoPE, GLU and RMSNorm backward; the norm weights' gradients come
//                out of rmsnorm_backward and so count here
//   backward_dw  weight gradients: every linear_backward_weight (with the GLU
//                recomputation that only dW_down needs) and the embedding
//                scatter-add; none in frozen blocks
//   optimizer    zeroing gradients and AdamW (the profile loop's, not the graph's)
//   recompute    a block's forward rerun before its backward (ActivationPolicy::recompute)
// On the CPU the ops are synchronous, so a host clock times them; a CUDA timer
// would record events on the stream in begin/end and resolve them after a sync.
// Recompute comes last so that the first four keep their indices.
enum class StepPhase : std::uint8_t { Forward, BackwardDX, BackwardDW, Optimizer, Recompute };
inline constexpr int kStepPhases = 5;
// "forward", "backward_dx", "backward_dw", "optimizer", "recompute"
const char* step_phase_name(StepPhase p);

struct StepPart {
  enum Kind : std::uint8_t { Embeddings, Block, FinalNorm, LmHead, Loss };
  Kind kind;
  std::int64_t block = -1;  // for Block
  std::string name() const;  // "embeddings", "block.3", "final_norm", "lm_head", "loss"
};

class PhaseTimer {
 public:
  virtual ~PhaseTimer() = default;
  virtual void begin(const StepPart& part, StepPhase phase) = 0;
  virtual void end(const StepPart& part, StepPhase phase) = 0;
};

class TrainingGraph {
 public:
  // `max_tokens`: the most tokens one micro-batch packs; `loss_chunk`: rows of
  // logits materialised at once.
  TrainingGraph(Model& model, std::vector<BlockMode> modes, std::int64_t max_tokens, std::int64_t loss_chunk = 256,
                ActivationPolicy policy = ActivationPolicy::save());

  // `activations`: the dtype of every float buffer except the log-sum-exp (F32 on the
  // CPU; BF16 for bf16 weights on a GPU). The graph allocates on the model's device in
  // its weights' dtype.
  static std::vector<BufferSpec> buffer_specs(const ModelConfig& c, const std::vector<BlockMode>& modes,
                                              std::int64_t max_tokens, std::int64_t loss_chunk,
                                              DType activations = DType::F32,
                                              ActivationPolicy policy = ActivationPolicy::save());

  // Device scratch (kernels/device_scratch.h) the graph reserves on a GPU at
  // construction: the largest request any op of a step or evaluation can make (every
  // weight gradient counted as possible), so the scratch never grows mid-run and the
  // planner predicts it exactly.
  static std::size_t device_scratch_bytes(const ModelConfig& c, const std::vector<BlockMode>& modes,
                                          std::int64_t max_tokens, std::int64_t loss_chunk);

  // Forward, loss, backward on one micro-batch. Gradients are ACCUMULATED into
  // `grads` (shaped like the model's weights; an undefined tensor = frozen,
  // nothing computed for it), scaled by `grad_scale` (1 / tokens of the global
  // batch). Returns the unscaled loss sum.
  LossSum step(const std::vector<TrainSequence>& batch, ModelWeights& grads, float grad_scale);
  // Forward and loss only.
  LossSum evaluate(const std::vector<TrainSequence>& batch);

  std::int64_t max_tokens() const { return max_tokens_; }
  ActivationPolicy activation_policy() const { return policy_; }

  // Reports the phases of every later step/evaluate to `timer` (null = off; then
  // the hooks cost one null check each). Numerics are unchanged either way.
  void set_phase_timer(PhaseTimer* timer) { timer_ = timer; }
  // Called during step() as soon as a part's weight gradients are final for
  // this micro-batch (lm_head, final_norm, block.<L-1> ... block.0, embeddings,
  // in that order; parts that train nothing are skipped), so data parallel can
  // reduce them while backward goes on. Null = off.
  using GradsReadyHook = std::function<void(const StepPart&)>;
  void set_grads_ready_hook(GradsReadyHook hook) { grads_ready_ = std::move(hook); }

 private:
  struct Saved {  // per block; undefined tensors are not kept in this mode
    Tensor x_in, normed1, q, k, v, attn, lse, x_mid, normed2, gate, up;
    Tensor o_out, down_out;  // gemma2: the inputs of the output norms
    Tensor q_raw, k_raw;     // qwen3: the projections before the q/k norms
  };
  // Under Recompute every block's Saved views these (all but x_in), shared by the blocks.
  Saved shared_;
  LossSum run(const std::vector<TrainSequence>& batch, ModelWeights* grads, float grad_scale);
  // `recomputing`: the rerun before backward (x_ already holds the block's saved input).
  void block_forward(std::int64_t l, std::int64_t n, bool recomputing = false);
  void block_backward(std::int64_t l, std::int64_t n, BlockWeights& g);
  // Ends the open phase (if any) and begins this one; no-op without a timer.
  void mark(StepPart::Kind kind, std::int64_t block, StepPhase phase) {
    if (timer_) switch_phase({kind, block}, phase);
  }
  void mark_end() {
    if (timer_) switch_phase({StepPart::Embeddings, -1}, StepPhase::Forward, /*open_next=*/false);
  }
  void switch_phase(const StepPart& part, StepPhase phase, bool open_next = true);

  Model& model_;
  std::vector<BlockMode> modes_;
  std::int64_t max_tokens_, loss_chunk_;
  ActivationPolicy policy_;
  std::vector<bool> recomputed_, rerun_;  // per block (recomputed_blocks, rerun_blocks)
  std::vector<Saved> saved_;
  std::vector<ops::AttentionSeq> seqs_;
  // This step's RoPE tables by rows (Model::rope_runs); gemma3's sliding layers take rope_local_.
  std::vector<Model::RopeRun> rope_, rope_local_;
  std::vector<Tensor> owned_;  // every buffer, allocated from buffer_specs
  PhaseTimer* timer_ = nullptr;
  GradsReadyHook grads_ready_;
  bool phase_open_ = false;
  StepPart open_part_{StepPart::Embeddings, -1};
  StepPhase open_phase_ = StepPhase::Forward;
  // Host copies of ids, positions and targets (the buffers themselves on the CPU).
  Tensor ids_host_, pos_host_, targets_host_;
  // Workspace
  Tensor ids_, pos_, targets_, x_, final_x_, final_normed_, logits_, d_final_;
  Tensor w_normed_, w_q_, w_k_, w_v_, w_attn_, w_lse_, w_gate_, w_up_, w_proj_, w_out_normed_, w_q_raw_, w_k_raw_;
  Tensor dx_, d_tmp_, d_q_, d_k_, d_v_, d_attn_, d_gate_, d_up_, act_;
};

// Binds row views of fused gradient tensors and the tied lm_head (as
// Model does for weights). Call after allocating the defined tensors.
void bind_fused_views(const ModelConfig& c, ModelWeights& w);

}  // namespace sppft
