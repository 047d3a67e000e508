// sppft profile: where a training step's time, FLOPs and bytes go, per part of
// the model (embeddings, each block, final norm, lm_head, loss) and per phase
// (forward, backward-dX, backward-dW, optimizer), and what freezing a block
// range saves against what the FLOP and memory models predict.
//
// The step profiled is the trainer's minus clipping: zero the gradients, one
// micro-batch through TrainingGraph::step (random tokens, loss on every token),
// AdamW on every trainable tensor. The graph reports its phases through a
// PhaseTimer (models/training.h); the loop times the optimizer per part itself.
// The whole step is also timed around it, so the phases can be checked to add
// up to it.
//
// FLOPs are closed-form model FLOPs: 2 per multiply-add of the matrix products
// (linear layers and attention's QK^T and PV), nothing for elementwise work
// (norms, RoPE, GLU, softmax, cross-entropy, AdamW) or biases. Per step of n
// tokens in sequences of lengths T_s, with P = the weight entries of a block's
// linear layers (q, k, v, o, gate, up, down) and A = 4 * Hq * D * pairs, where
// pairs = sum over s and query positions t < T_s of the keys it attends to,
// min(t + 1, window) (exact causal count; T(T+1)/2 per sequence without a window):
//   block forward       2 n P + A
//   block backward-dX   2 n P + 2 A   (dQ, dK, dV, dP: the algorithmic count; the
//                                      CPU kernel also recomputes the scores, so it
//                                      executes more than this)
//   block backward-dW   2 n P         (0 for a frozen block)
//   block recompute     2 n (P - H F) + A   (each recomputed block but the highest one:
//                                      ActivationPolicy; its forward up to gate and up,
//                                      without the down projection)
//   lm_head             2 n V H each for forward, dX and dW (dW 0 when frozen)
//   embeddings, final norm, loss: 0
// A block that runs no backward at all (below every trainable parameter) has 0
// dX and 0 dW.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/json.h"
#include "models/model.h"
#include "models/training.h"
#include "trainer/freeze.h"

namespace sppft {

using PhaseValues = std::array<double, kStepPhases>;  // indexed by StepPhase

// Weight entries of one block's linear layers (biases not counted).
std::int64_t block_linear_params(const ModelConfig& c);
// Query-key pairs one query head of block `layer` attends over, summed over the sequences.
double attention_pairs(const ModelConfig& c, std::int64_t layer, const std::vector<std::int64_t>& seq_lens);
// Closed-form FLOPs of each phase of `part` for one step (optimizer: 0).
// `mode` matters for blocks; `weight_trains` for the lm_head (its dW); `recomputed`
// for a block whose forward reruns before its backward.
PhaseValues part_flops(const ModelConfig& c, const StepPart& part, BlockMode mode, bool weight_trains,
                       const std::vector<std::int64_t>& seq_lens, bool recomputed = false);

// Bytes a part holds, by category (fp32, as allocated on the CPU).
struct PartBytes {
  std::size_t weights = 0, grads = 0, optimizer = 0, activations = 0;
  std::size_t total() const { return weights + grads + optimizer + activations; }
};

struct PartProfile {
  StepPart part;
  std::string name;  // "embeddings", "block.3", "final_norm", "lm_head", "loss"
  std::string mode;  // blocks: "full", "frozen" (dX only), "no-bwd"; others: "train", "frozen", "tied", "-"
  PhaseValues flops{};
  std::array<std::vector<double>, kStepPhases> seconds;  // per measured step, per phase
  PartBytes bytes;

  double median(StepPhase p) const;
  double min(StepPhase p) const;
  double max(StepPhase p) const;
  std::vector<double> totals() const;  // per measured step, all phases
  double median_total() const;
  // (max - min) / median of the per-step totals; 0 for one step.
  double spread() const;
};

// One op of kernels/ops.h in one phase, over the measured steps (ProfileOptions::ops).
struct OpProfile {
  std::string name;             // "linear_forward", "attention_backward", "adamw_multi_tensor", ...
  StepPhase phase;              // the phase its calls ran in
  std::vector<double> seconds;  // per measured step, summed over its calls
  std::int64_t calls = 0;       // calls per step (the last measured one)
  double median() const;
};

// One interval of the timeline (measured steps only), for the Chrome trace.
struct TraceEvent {
  std::string name;  // "block.3.backward_dw", "block.3.zero_grad", "step", "linear_forward"
  int track;         // 0 = whole steps, 1 + StepPhase, kOpsTrack = ops
  std::int64_t step;
  double start_us, dur_us;  // from the start of the run
};

inline constexpr int kOpsTrack = 1 + kStepPhases;

struct ProfileOptions {
  std::int64_t micro_batch = 1, seq = 64, steps = 3, warmup = 1;
  bool train = true;               // false: forward and loss only (TrainingGraph::evaluate), nothing trains
  ActivationPolicy activations = ActivationPolicy::save();  // Recompute: activation checkpointing
  std::uint64_t seed = 0;          // the random tokens
  std::string label = "profile";  // names the run in the trace and the tables
  bool progress = false;          // a progress bar on stderr
  bool ops = false;               // also time every op (two timestamps per op call)
};

struct ProfileRun {
  std::string label;
  bool train = true;
  FreezePlan plan;
  std::vector<BlockMode> modes;
  ActivationPolicy activations = ActivationPolicy::save();
  std::int64_t micro_batch = 0, seq = 0, tokens = 0, steps = 0, warmup = 0;
  std::vector<PartProfile> parts;    // embeddings, block.0 .. block.L-1, final_norm, lm_head, loss
  std::vector<double> step_seconds;  // each measured step, timed around it
  std::vector<TraceEvent> trace;
  std::vector<OpProfile> ops;  // with ProfileOptions::ops, in order of first call
  std::size_t workspace_bytes = 0;       // shared scratch (graph workspace + RoPE table + the
                                         // activation set the blocks share under Recompute)
  std::size_t planned_total_bytes = 0;  // plan_training_memory(fp32) for the same run

  const PartProfile& block(std::int64_t k) const { return parts.at(1 + k); }
  // Sum over parts and phases of measured step i.
  double phase_sum(std::size_t i) const;
  double median_step() const;
  // |sum of phases - step| / step, worst over the measured steps.
  double max_sum_error() const;
  PartBytes total_bytes() const;  // over the parts (workspace not included)
  PhaseValues total_flops() const;
  bool recomputes() const { return activations.recomputes(); }
};

// Runs opts.warmup + opts.steps training steps on `model` with `plan` and
// measures the last opts.steps. Updates the model's weights (AdamW, lr 1e-5).
// With opts.train false the plan is ignored: forward passes only.
ProfileRun profile_training(Model& model, const FreezePlan& plan, const ProfileOptions& opts);

// What a frozen range saved: SPPFT run against the full run of the same model
// and batch, per part, measured and predicted.
struct PartSaving {
  std::string name, mode;              // mode in the SPPFT run
  double full_s = 0, sppft_s = 0;      // median per-step totals
  double predicted_s = 0;              // the full run's dW + optimizer time of what SPPFT freezes
  double flops = 0, predicted_flops = 0;  // saved FLOPs: counted difference; frozen weights' dW FLOPs
  std::int64_t bytes = 0;                 // measured difference of the part's bytes
  std::int64_t predicted_bytes = 0;       // grads + optimizer of the frozen weights + activations not saved (fp32)
  std::int64_t predicted_bytes_bf16 = 0;  // the CUDA plan: grads 2 + master 4 + optimizer 8 B per frozen parameter
};

struct FreezeComparison {
  std::vector<PartSaving> parts;
  PartSaving total;  // total.full_s / sppft_s: median step wall times; predicted_s: sum over parts
};

FreezeComparison compare_freeze(const ModelConfig& c, const ProfileRun& full, const ProfileRun& sppft);

// Terminal tables.
std::string format_profile_table(const ProfileRun& run);  // time and FLOPs, then bytes, per part; then the ops
std::string format_ops_table(const ProfileRun& run);      // per op and phase, slowest first
std::string format_comparison_table(const FreezeComparison& cmp, const ProfileRun& full, const ProfileRun& sppft);
// Machine-readable forms.
Json profile_to_json(const ProfileRun& run);
Json comparison_to_json(const FreezeComparison& cmp);
// Chrome trace JSON (chrome://tracing, ui.perfetto.dev): one process per run,
// one track per phase plus one for whole steps; events named as the phases.
std::string chrome_trace(const std::vector<const ProfileRun*>& runs);

}  // namespace sppft
