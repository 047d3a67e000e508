// The fine-tuning loop: data, freeze plan, AdamW state for trainable tensors
// only, LR schedule, gradient accumulation and clipping, validation, metrics,
// checkpoints (Hugging Face format out, resumable state) and the memory report.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/prompts.h"
#include "models/model.h"
#include "trainer/data_parallel.h"
#include "trainer/dataset.h"
#include "trainer/freeze.h"
#include "trainer/memory_plan.h"
#include "trainer/schedule.h"

namespace sppft {

struct TrainOptions {
  fs::path model_dir, data, out;
  std::string freeze;  // "6-12" or "" (full fine-tuning)
  bool freeze_norms = false, freeze_embeddings = false, freeze_lm_head = false;
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decay_norms_and_biases = false;
  double clip = 1.0;  // 0 = no clipping
  std::int64_t epochs = 3, max_steps = 0;  // max_steps > 0 overrides epochs
  std::int64_t micro_batch = 4, grad_accum = 1, cutoff = 256, warmup = 0;
  Schedule schedule = Schedule::Linear;
  std::uint64_t seed = 42;
  std::int64_t val_size = 0, eval_every = 0, save_every = 0;
  PromptTemplate tmpl = PromptTemplate::Alpaca;
  // Extra chat-template variables (Model::chat_template_kwargs) for chat records and --template chat.
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  bool train_on_inputs = false;
  // Recompute: each block keeps only its input and reruns its forward before its
  // backward (activation checkpointing; same gradients, about one more forward of time).
  ActivationPolicy activations = ActivationPolicy::save();
  bool resume = false;
  bool quiet = false;  // no progress bar (tests)
  // Data parallel (trainer/data_parallel.h): ranks come from the launcher's
  // environment (trainer/comm.h). Each optimizer step takes micro_batch x
  // grad_accum examples per rank.
  // "cpu" (fp32) or "cuda" (bf16 weights, activations and gradients; fp32 master
  // weights and Adam moments for the trainable tensors; one process, one GPU).
  std::string device = "cpu";
  std::string dist = "auto";  // auto | none | mpi | tcp
  bool zero1 = false;
  std::int64_t dist_timeout_s = 300;
};

struct StepRecord {
  std::int64_t step;  // 1-based optimizer step
  double loss, lr, grad_norm, tokens_per_s;
  double val_loss = -1;  // < 0: not computed at this step
  std::optional<double> probe_gap_deg;  // set by a safety probe hook
};

struct TrainResult {
  std::vector<StepRecord> steps;
  MemoryBreakdown predicted, measured;  // this rank's
  int rank = 0, world = 1;
  std::vector<MemoryBreakdown> measured_per_rank;  // on rank 0: every rank's measured peaks
  CommBytes comm_per_step, comm_planned;
  double seconds = 0;
  std::int64_t trained_tokens = 0;
  std::size_t train_examples = 0, val_examples = 0;  // after the split (a record may give several)
};

// Optional hook after each optimizer step (e.g. a safety probe); gets the model and the record.
using StepHook = std::function<void(Model&, StepRecord&)>;

TrainResult train(const TrainOptions& opts, const StepHook& hook = {});

}  // namespace sppft
