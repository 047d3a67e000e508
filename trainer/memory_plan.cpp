#include "trainer/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "engine/error.h"
#include "kernels/device_scratch.h"
#include "models/model.h"
#include "trainer/data_parallel.h"

namespace sppft {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "bf16-mixed") return Precision::BF16Mixed;
  throw InputError("--precision: unknown precision '" + name + "' (expected fp32 or bf16-mixed)");
}

std::string precision_name(Precision p) { return p == Precision::FP32 ? "fp32" : "bf16-mixed"; }

std::size_t MemoryBreakdown::total() const {
  std::size_t t = 0;
  for (auto b : bytes) t += b;
  return t;
}

Json MemoryBreakdown::to_json() const {
  Json j = Json::object();
  for (std::size_t i = 0; i < kMemCategories; ++i) j[std::string(mem_category_name(static_cast<MemCategory>(i)))] = bytes[i];
  j["total_bytes"] = total();
  j["trainable_params"] = trainable_params;
  j["frozen_params"] = frozen_params;
  return j;
}

std::vector<BlockMode> block_modes(const FreezePlan& plan, std::int64_t num_layers) {
  std::vector<BlockMode> modes(num_layers);
  const std::int64_t lowest = plan.lowest_backward_block(num_layers);
  for (std::int64_t k = 0; k < num_layers; ++k)
    modes[k] = k < lowest ? BlockMode::NoBackward : plan.block_frozen[k] ? BlockMode::InputGradOnly : BlockMode::Full;
  return modes;
}

std::vector<std::int64_t> trainable_part_numels(const ModelConfig& c, const FreezePlan& plan) {
  ModelWeights slots;
  std::vector<std::int64_t> out;
  for (const auto& part : packed_layout(c, slots, [&](const NamedParam& p) { return plan.trains(p.name, p.block, c); }))
    out.push_back(part.numel());
  return out;
}

MemoryBreakdown plan_training_memory(const ModelConfig& c, const FreezePlan& plan, std::int64_t micro_batch,
                                     std::int64_t seq, Precision p, std::int64_t loss_chunk, DataParallelShape dp,
                                     ActivationPolicy policy) {
  MemoryBreakdown m;
  auto add = [&](MemCategory cat, std::size_t b) { m.bytes[static_cast<std::size_t>(cat)] += b; };
  const std::size_t wbytes = p == Precision::FP32 ? 4 : 2;
  for (const auto& ps : parameter_shapes(c)) {
    const auto n = static_cast<std::size_t>(shape_numel(ps.shape));
    add(MemCategory::Weights, n * wbytes);
    if (plan.trains(ps.name, ps.block, c)) {
      m.trainable_params += static_cast<std::int64_t>(n);
      add(MemCategory::Grads, n * wbytes);
    } else {
      m.frozen_params += static_cast<std::int64_t>(n);
    }
  }
  // Optimizer state per part: the whole part, or this rank's ZeRO-1 slice of it.
  for (auto n : trainable_part_numels(c, plan)) {
    const std::size_t own = dp.zero1 ? shard_counts(n, dp.world)[dp.rank] : static_cast<std::size_t>(n);
    if (p == Precision::BF16Mixed) add(MemCategory::Master, own * 4);
    add(MemCategory::Optimizer, own * 8);
  }
  add(MemCategory::Workspace, Model::rope_table_bytes(c));  // RoPE frequencies
  const auto modes = block_modes(plan, c.num_layers);
  for (const auto& spec : TrainingGraph::buffer_specs(c, modes, micro_batch * seq, loss_chunk,
                                                     p == Precision::BF16Mixed ? DType::BF16 : DType::F32, policy))
    add(spec.category, spec.bytes());
  if (p == Precision::BF16Mixed)  // the CUDA backend's own buffers (kernels/device_scratch.h)
    add(MemCategory::Workspace,
        device_scratch::backend_bytes(TrainingGraph::device_scratch_bytes(c, modes, micro_batch * seq, loss_chunk)));
  return m;
}

namespace {
// The smallest x in (lo, hi] with pred(x), given !pred(lo) and pred(hi), for a predicate that
// stays true once true.
template <typename Pred>
std::int64_t first_true(std::int64_t lo, std::int64_t hi, Pred&& pred) {
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    (pred(mid) ? hi : lo) = mid;
  }
  return hi;
}
}  // namespace

std::int64_t max_micro_batch(const ModelConfig& c, const FreezePlan& plan, std::int64_t seq, Precision p,
                             std::size_t budget, DataParallelShape dp, ActivationPolicy policy) {
  const auto fits = [&](std::int64_t mb) { return plan_training_memory(c, plan, mb, seq, p, 256, dp, policy).total() <= budget; };
  if (!fits(1)) return 0;
  std::int64_t lo = 1, hi = 2;  // fits(lo); find a hi that does not, then bisect
  // Searched up to 2^31 tokens per micro-batch (terabytes of activations; byte counts stay far from overflow).
  const std::int64_t kMax = std::max<std::int64_t>(1, (std::int64_t{1} << 31) / std::max<std::int64_t>(seq, 1));
  while (hi < kMax && fits(hi)) lo = hi, hi *= 2;
  if (hi >= kMax && fits(kMax)) return kMax;
  return first_true(lo, hi, [&](std::int64_t mb) { return !fits(mb); }) - 1;
}

std::int64_t min_recompute_blocks(const ModelConfig& c, const FreezePlan& plan, std::int64_t micro_batch,
                                  std::int64_t seq, Precision p, std::size_t budget, DataParallelShape dp) {
  const auto fits = [&](std::int64_t k) {
    return plan_training_memory(c, plan, micro_batch, seq, p, 256, dp, ActivationPolicy::recompute(k)).total() <= budget;
  };
  const auto modes = block_modes(plan, c.num_layers);
  const auto blocks = static_cast<std::int64_t>(std::count_if(modes.begin(), modes.end(), [](BlockMode m) {
    return m != BlockMode::NoBackward;
  }));
  if (fits(0)) return 0;
  if (!fits(blocks)) return -1;
  return first_true(0, blocks, fits);  // the bytes never grow with k
}

MemoryBreakdown measured_memory(const MemoryStats& s) {
  MemoryBreakdown m;
  for (std::size_t i = 0; i < kMemCategories; ++i) m.bytes[i] = s.peak[i];
  return m;
}

std::string format_memory_table(const MemoryBreakdown& predicted, const MemoryBreakdown* measured) {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "  %-12s %18s %12s%s\n", "category", "predicted bytes", "", measured ? "      measured bytes  match" : "");
  out += line;
  for (std::size_t i = 0; i <= kMemCategories; ++i) {
    const bool total = i == kMemCategories;
    const std::size_t p = total ? predicted.total() : predicted.bytes[i];
    const std::string name = total ? "total" : std::string(mem_category_name(static_cast<MemCategory>(i)));
    if (measured) {
      const std::size_t m = total ? measured->total() : measured->bytes[i];
      std::snprintf(line, sizeof line, "  %-12s %18zu %12s  %18zu  %s\n", name.c_str(), p, human_bytes(p).c_str(), m,
                    p == m ? "yes" : "NO");
    } else {
      std::snprintf(line, sizeof line, "  %-12s %18zu %12s\n", name.c_str(), p, human_bytes(p).c_str());
    }
    out += line;
  }
  return out;
}

}  // namespace sppft
