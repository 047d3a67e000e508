// The memory planner: the bytes a training run holds, per category, predicted
// from the config, the freeze plan and the batch shape without allocating. On
// the CPU the trainer allocates exactly these buffers, so prediction and the
// allocator's measurement agree to the byte.
//
// fp32 (CPU): weights 4 B/param; per trainable param a 4 B gradient and 8 B of
// Adam moments, no master copy. bf16-mixed (the CUDA plan): weights 2 B/param;
// per trainable param a 2 B gradient, a 4 B fp32 master copy and 8 B of
// moments; activations stored in bf16 (log-sum-exp and ids stay 4 B); the workspace adds
// the CUDA backend's cuBLASLt workspace, error flag and the scratch the TrainingGraph
// reserves (kernels/device_scratch.h).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "engine/allocator.h"
#include "engine/json.h"
#include "models/config.h"
#include "models/training.h"
#include "trainer/freeze.h"

namespace sppft {

enum class Precision { FP32, BF16Mixed };
Precision parse_precision(const std::string& name);
std::string precision_name(Precision p);

struct MemoryBreakdown {
  std::array<std::size_t, kMemCategories> bytes{};
  std::int64_t trainable_params = 0;
  std::int64_t frozen_params = 0;
  std::size_t total() const;
  Json to_json() const;  // {"weights": ..., ..., "total_bytes": ...}
};

// Which blocks need which backward, from the freeze plan.
std::vector<BlockMode> block_modes(const FreezePlan& plan, std::int64_t num_layers);

// One rank of a data-parallel run (trainer/data_parallel.h). With ZeRO-1 the
// rank holds the optimizer moments (and fp32 master weights) of its slice of
// every trainable part only.
struct DataParallelShape {
  int world = 1, rank = 0;
  bool zero1 = false;
};

// Bytes of a training run (on one rank): weights + grads + master + optimizer +
// the TrainingGraph's activation and workspace buffers for micro_batch * seq tokens,
// with its activations saved or recomputed (models/training.h).
MemoryBreakdown plan_training_memory(const ModelConfig& c, const FreezePlan& plan, std::int64_t micro_batch,
                                     std::int64_t seq, Precision p, std::int64_t loss_chunk = 256,
                                     DataParallelShape dp = {}, ActivationPolicy policy = ActivationPolicy::save());

// The largest micro-batch of `seq`-token sequences whose plan fits in `budget` bytes (the
// plan grows with the micro-batch); 0 when not even one sequence fits.
std::int64_t max_micro_batch(const ModelConfig& c, const FreezePlan& plan, std::int64_t seq, Precision p,
                             std::size_t budget, DataParallelShape dp = {},
                             ActivationPolicy policy = ActivationPolicy::save());

// The fewest blocks to recompute (ActivationPolicy::recompute(k), the lowest k that run
// backward) for the plan at this micro-batch to fit in `budget`: 0 when it fits as it is, -1
// when it does not fit even with every block recomputed.
std::int64_t min_recompute_blocks(const ModelConfig& c, const FreezePlan& plan, std::int64_t micro_batch,
                                  std::int64_t seq, Precision p, std::size_t budget, DataParallelShape dp = {});

// Elements of every trainable part's gradient buffer, forward order
// (embeddings, block.<k>..., final_norm, lm_head): the units of reduction.
std::vector<std::int64_t> trainable_part_numels(const ModelConfig& c, const FreezePlan& plan);

// A measured breakdown from the allocator's per-category peaks.
MemoryBreakdown measured_memory(const MemoryStats& s);

// Rows of "category  predicted  measured" (measured optional) for the terminal.
std::string format_memory_table(const MemoryBreakdown& predicted, const MemoryBreakdown* measured);

}  // namespace sppft
