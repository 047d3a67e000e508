// CPU training-step time of sppft on a checkpoint: B random sequences of T tokens,
// loss on every token, forward + backward + AdamW, full fine-tuning or with
// frozen blocks. Prints the median step time, tokens/s and bytes per category.
//   bench_train DIR [--batch B] [--seq T] [--steps N] [--freeze a-b] [--json]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "engine/json.h"
#include "kernels/ops.h"
#include "models/model.h"
#include "models/training.h"
#include "trainer/freeze.h"
#include "trainer/memory_plan.h"

using namespace sppft;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_train DIR [--batch B] [--seq T] [--steps N] [--freeze a-b] [--json]\n");
    return 2;
  }
  std::int64_t batch = 4, seq = 128, steps = 5;
  std::string freeze;
  bool json = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--batch") batch = std::stoll(argv[++i]);
    else if (a == "--seq") seq = std::stoll(argv[++i]);
    else if (a == "--steps") steps = std::stoll(argv[++i]);
    else if (a == "--freeze") freeze = argv[++i];
    else if (a == "--json") json = true;
  }
  try {
    auto model = Model::load(argv[1], false);
    const auto& c = model->config();
    FreezePlan plan = freeze.empty() ? FreezePlan::none(c.num_layers)
                                     : FreezePlan::from_ranges(parse_layer_ranges(freeze, c.num_layers, "--freeze"), c.num_layers);
    ModelWeights grads;
    grads.blocks.resize(c.num_layers);
    auto weights = model->parameters();
    auto slots = named_parameters(c, grads);
    std::vector<std::pair<Tensor*, std::array<Tensor, 3>>> trainable;  // weight, {grad, m, v}
    for (std::size_t i = 0; i < weights.size(); ++i)
      if (plan.trains(weights[i].name, weights[i].block, c)) {
        *slots[i].tensor = Tensor::zeros(weights[i].tensor->shape(), DType::F32, MemCategory::Grads);
        trainable.push_back({weights[i].tensor, {*slots[i].tensor, Tensor::zeros(weights[i].tensor->shape(), DType::F32, MemCategory::Optimizer),
                                                 Tensor::zeros(weights[i].tensor->shape(), DType::F32, MemCategory::Optimizer)}});
      }
    bind_fused_views(c, grads);
    TrainingGraph graph(*model, block_modes(plan, c.num_layers), batch * seq);
    std::mt19937 rng(0);
    std::uniform_int_distribution<std::int32_t> tok(3, static_cast<std::int32_t>(c.vocab_size - 1));
    std::vector<std::vector<std::int32_t>> ids(batch, std::vector<std::int32_t>(seq));
    for (auto& s : ids) for (auto& x : s) x = tok(rng);
    std::vector<TrainSequence> b;
    for (auto& s : ids) b.push_back({&s, &s});
    std::vector<double> times;
    for (std::int64_t s = 0; s < steps + 1; ++s) {
      auto t0 = std::chrono::steady_clock::now();
      for (auto& [w, st] : trainable) std::fill_n(st[0].data<float>(), st[0].numel(), 0.0f);
      graph.step(b, grads, 1.0f / static_cast<float>(batch * (seq - 1)));
      ops::AdamWParams hp{1e-5, 0.9, 0.999, 1e-8, 0.0};
      for (auto& [w, st] : trainable) ops::adamw_step(*w, st[0], st[1], st[2], hp, s + 1);
      auto t1 = std::chrono::steady_clock::now();
      if (s > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double med = times[times.size() / 2];
    MemoryBreakdown mem = plan_training_memory(c, plan, batch, seq, Precision::FP32);
    if (json) {
      Json j = {{"engine", "sppft"}, {"freeze", freeze}, {"threads", omp_get_max_threads()}, {"batch", batch}, {"seq", seq},
                {"step_seconds_median", med}, {"tokens_per_s", batch * seq / med}, {"memory", mem.to_json()}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("sppft train step (%s): %.3f s median, %.1f tokens/s; %s total (%s)\n",
                  freeze.empty() ? "full" : ("freeze " + freeze).c_str(), med, batch * seq / med,
                  human_bytes(mem.total()).c_str(), plan.describe().c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
