// One whole training step on the GPU against the CPU: the same random model (llama with
// GQA, gemma with tied embeddings and (1 + w) norms, mistral with a sliding window), the
// same packed micro-batch, TrainingGraph::step on both, then the loss and EVERY weight
// gradient compared; frozen blocks (SPPFT) must get no gradient on either side.
//
// Tolerances (max |gpu - cpu| / max |cpu| per gradient tensor, test::rel_error):
//   F32 weights on the GPU:   1e-4 (fp32 on both sides; summation orders differ through
//                             ~20 ops, attention and GEMMs included); loss 1e-5 relative
//   BF16 weights (mixed):     6e-2 per tensor, loss 2e-2 relative: the GPU stores weights,
//                             activations and gradients in bf16 (8 bits of mantissa); the
//                             CPU reference gets the same bf16-rounded weights in fp32
// Without a GPU it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <random>

#include "gpu_test_util.h"
#include "models/model.h"
#include "models/training.h"
#include "trainer/freeze.h"
#include "trainer/memory_plan.h"

using namespace sppft;
using namespace sppft::test::gpu;

#ifndef SPPFT_HAVE_CUDA
TEST_CASE("training step GPU vs CPU (this build has no CUDA)") { CHECK_FALSE(have_gpu()); }
#else

namespace {

ModelConfig config(const std::string& extra) {
  Json j = Json::parse(R"({"model_type": "llama", "hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 3,
    "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512})");
  j.update(Json::parse(extra));
  return parse_model_config(j, "test config");
}

// Gradient slots for the trainable tensors of `model` on its device, zero-filled, in its dtype.
ModelWeights gradients(Model& model, const FreezePlan& plan) {
  const ModelConfig& c = model.config();
  ModelWeights g;
  g.blocks.resize(c.num_layers);
  auto weights = model.parameters();
  auto slots = named_parameters(c, g);
  for (std::size_t i = 0; i < weights.size(); ++i) {
    if (!plan.trains(weights[i].name, weights[i].block, c)) continue;
    *slots[i].tensor = Tensor::empty(weights[i].tensor->shape(), weights[i].tensor->dtype(), MemCategory::Grads,
                                     weights[i].tensor->device());
    ops::fill_zero(*slots[i].tensor);
  }
  bind_fused_views(c, g);
  return g;
}

}  // namespace

TEST_CASE("one training step on the GPU equals the CPU's: loss and every gradient") {
  if (!have_gpu()) return;
  struct Case {
    const char* name;
    const char* extra;
    const char* freeze;  // "" = full fine-tuning
  };
  for (const Case& k : {Case{"llama", "{}", ""}, Case{"llama sppft", "{}", "1-1"},
                        Case{"gemma", R"({"model_type": "gemma", "head_dim": 32, "hidden_activation": "gelu_pytorch_tanh"})", ""},
                        Case{"mistral window", R"({"model_type": "mistral", "sliding_window": 7})", "0-0"},
                        // sandwich norms, capped scores and logits, a window on the even blocks
                        Case{"gemma2 sppft", R"({"model_type": "gemma2", "head_dim": 32, "query_pre_attn_scalar": 24,
    "attn_logit_softcapping": 2.0, "final_logit_softcapping": 4.0, "sliding_window": 7})", "1-1"},
                        Case{"qwen3 sppft", R"({"model_type": "qwen3", "head_dim": 32})", "1-1"},
                        Case{"gemma3 sppft", R"({"model_type": "gemma3_text", "head_dim": 32, "sliding_window": 7,
    "sliding_window_pattern": 2, "rope_local_base_freq": 100.0, "rope_theta": 10000.0})", "1-1"},
                        // LongRoPE past 16 positions: the sequences of 37 and 20 tokens take the long table
                        Case{"phi3 longrope", R"({"model_type": "phi3", "original_max_position_embeddings": 16, "rope_scaling": {"type": "longrope",
    "short_factor": [1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7], "long_factor": [1, 2, 4, 6, 8, 10, 12, 14]}})", "1-1"}}) {
    for (DType dt : kFloatTypes) {
      CAPTURE(k.name);
      CAPTURE(name(dt));
      const ModelConfig c = config(k.extra);
      auto cpu_model = Model::random(c, 7), gpu_model = Model::random(c, 7);
      if (dt == DType::BF16)  // the CPU reference gets exactly the weights the GPU stores
        for (auto& p : cpu_model->parameters()) round_for(*p.tensor, DType::BF16);
      gpu_model->to_device(Device::CUDA, dt);
      const FreezePlan plan = *k.freeze ? FreezePlan::from_ranges(parse_layer_ranges(k.freeze, c.num_layers, "test"), c.num_layers)
                                        : FreezePlan::none(c.num_layers);
      const auto modes = block_modes(plan, c.num_layers);
      std::mt19937 rng(5);
      std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(c.vocab_size - 1));
      std::vector<std::vector<std::int32_t>> ids = {std::vector<std::int32_t>(37), std::vector<std::int32_t>(1),
                                                    std::vector<std::int32_t>(20)};
      std::vector<std::vector<std::int32_t>> labels;
      for (auto& s : ids) {
        for (auto& x : s) x = tok(rng);
        labels.push_back(s);
        labels.back()[0] = -100;
      }
      labels[2][5] = -100;  // an ignored target inside a sequence
      std::vector<TrainSequence> batch;
      for (std::size_t i = 0; i < ids.size(); ++i) batch.push_back({&ids[i], &labels[i]});

      TrainingGraph cpu_graph(*cpu_model, modes, 64), gpu_graph(*gpu_model, modes, 64);
      ModelWeights cpu_grads = gradients(*cpu_model, plan), gpu_grads = gradients(*gpu_model, plan);
      const LossSum lc = cpu_graph.step(batch, cpu_grads, 1.0f / 54), lg = gpu_graph.step(batch, gpu_grads, 1.0f / 54);
      cuda::synchronize();
      CHECK(lg.tokens == lc.tokens);
      CHECK(std::abs(lg.sum - lc.sum) / std::abs(lc.sum) < (dt == DType::F32 ? 1e-5 : 2e-2));

      auto gc = named_parameters(c, cpu_grads), gg = named_parameters(c, gpu_grads);
      int compared = 0;
      for (std::size_t i = 0; i < gc.size(); ++i) {
        CAPTURE(gc[i].name);
        REQUIRE(gc[i].tensor->defined() == gg[i].tensor->defined());
        CHECK(gc[i].tensor->defined() == plan.trains(gc[i].name, gc[i].block, c));
        if (!gc[i].tensor->defined()) continue;
        Tensor got = download(*gg[i].tensor);
        CHECK(test::rel_error(got.data<float>(), gc[i].tensor->data<float>(), got.numel()) < (dt == DType::F32 ? 1e-4 : 6e-2));
        ++compared;
      }
      CHECK(compared > 0);
    }
  }
}

TEST_CASE("recomputed activations on the GPU: bitwise the same loss and gradients, the planned bytes") {
  if (!have_gpu()) return;
  const ModelConfig c = config(R"({"model_type": "mistral", "sliding_window": 9})");
  auto model = Model::random(c, 9);
  model->to_device(Device::CUDA, DType::BF16);
  const FreezePlan plan = FreezePlan::from_ranges({{1, 1}}, c.num_layers);
  const auto modes = block_modes(plan, c.num_layers);
  std::vector<std::vector<std::int32_t>> ids = {std::vector<std::int32_t>(41), std::vector<std::int32_t>(23)};
  for (std::size_t s = 0; s < ids.size(); ++s)
    for (std::size_t i = 0; i < ids[s].size(); ++i) ids[s][i] = static_cast<std::int32_t>((i * 31 + s * 7 + 3) % c.vocab_size);
  const std::vector<TrainSequence> batch = {{&ids[0], &ids[0]}, {&ids[1], &ids[1]}};
  Allocator& gpu = Allocator::for_device(Device::CUDA);
  const auto act = static_cast<std::size_t>(MemCategory::Activations);
  std::vector<std::vector<Tensor>> host_grads;
  std::vector<double> losses;
  for (ActivationPolicy policy : {ActivationPolicy::save(), ActivationPolicy::recompute(), ActivationPolicy::recompute(2)}) {
    const std::size_t before = gpu.stats().current[act];
    TrainingGraph graph(*model, modes, 64, 256, policy);
    CHECK(gpu.stats().current[act] - before ==
          plan_training_memory(c, plan, 1, 64, Precision::BF16Mixed, 256, {}, policy).bytes[act]);
    ModelWeights g = gradients(*model, plan);
    losses.push_back(graph.step(batch, g, 1.0f / 62).sum);
    cuda::synchronize();
    host_grads.emplace_back();
    for (const auto& p : named_parameters(c, g))
      if (p.tensor->defined()) host_grads.back().push_back(download(*p.tensor));
  }
  for (std::size_t r = 1; r < losses.size(); ++r) {  // every policy against saving everything
    CAPTURE(r);
    CHECK(losses[0] == losses[r]);
    REQUIRE(host_grads[0].size() == host_grads[r].size());
    for (std::size_t i = 0; i < host_grads[0].size(); ++i)
      CHECK(std::memcmp(host_grads[0][i].data<float>(), host_grads[r][i].data<float>(), host_grads[0][i].nbytes()) == 0);
  }
}

TEST_CASE("a GPU model's bytes per category equal the bf16-mixed plan's weights and graph buffers") {
  if (!have_gpu()) return;
  const ModelConfig c = config("{}");
  auto model = Model::random(c, 1);
  Allocator& gpu = Allocator::for_device(Device::CUDA);
  const MemoryStats before = gpu.stats();
  model->to_device(Device::CUDA, DType::BF16);
  const FreezePlan plan = FreezePlan::from_ranges({{1, 1}}, c.num_layers);
  {
    TrainingGraph graph(*model, block_modes(plan, c.num_layers), 2 * 48);
    const MemoryStats now = gpu.stats();
    const MemoryBreakdown want = plan_training_memory(c, plan, 2, 48, Precision::BF16Mixed);
    CHECK(now.current[size_t(MemCategory::Weights)] - before.current[size_t(MemCategory::Weights)] ==
          want.bytes[size_t(MemCategory::Weights)]);
    CHECK(now.current[size_t(MemCategory::Activations)] - before.current[size_t(MemCategory::Activations)] ==
          want.bytes[size_t(MemCategory::Activations)]);
  }
}

#endif
