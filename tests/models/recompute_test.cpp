// Activation recomputation (ActivationPolicy::recompute(), models/training.h): every block
// keeps only its input and reruns its forward just before its backward. It must give the
// same loss and bitwise the same gradients as keeping everything (the same ops on the same
// inputs), for each architecture variant (GQA, biases, tied embeddings with (1 + w) norms,
// a sliding window, fused qkv / gate_up) and each freeze layout (full, a frozen middle,
// a frozen top, a frozen bottom with no backward below it, nothing trained in the blocks);
// allocate exactly the planner's bytes; and label its reruns "recompute".
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/json.h"
#include "models/model.h"
#include "models/training.h"
#include "trainer/freeze.h"
#include "trainer/memory_plan.h"

using namespace sppft;

namespace {

ModelConfig config(const std::string& extra) {
  Json j = Json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 256})");
  j.update(Json::parse(extra));
  return parse_model_config(j, "test config");
}

// Zeroed gradient slots for what `plan` trains; `out` lists them in parameter order.
ModelWeights gradients(Model& m, const FreezePlan& plan, std::vector<Tensor>& out) {
  const ModelConfig& c = m.config();
  ModelWeights g;
  g.blocks.resize(c.num_layers);
  auto w = m.parameters();
  auto slots = named_parameters(c, g);
  for (std::size_t i = 0; i < w.size(); ++i)
    if (plan.trains(w[i].name, w[i].block, c)) {
      *slots[i].tensor = Tensor::zeros(w[i].tensor->shape(), DType::F32, MemCategory::Grads);
      out.push_back(*slots[i].tensor);
    }
  bind_fused_views(c, g);
  return g;
}

struct Outcome {
  std::vector<double> losses;  // two steps, then an evaluation
  std::vector<Tensor> grads;   // accumulated over both steps
};

// Two steps accumulating into the same gradients (different batches), then an evaluation.
Outcome run(Model& m, const FreezePlan& plan, ActivationPolicy policy, PhaseTimer* timer = nullptr) {
  const ModelConfig& c = m.config();
  Outcome o;
  ModelWeights g = gradients(m, plan, o.grads);
  std::vector<std::vector<std::int32_t>> seqs = {std::vector<std::int32_t>(29), std::vector<std::int32_t>(1),
                                                 std::vector<std::int32_t>(17), std::vector<std::int32_t>(40)};
  for (std::size_t s = 0; s < seqs.size(); ++s)
    for (std::size_t i = 0; i < seqs[s].size(); ++i)
      seqs[s][i] = static_cast<std::int32_t>((i * 7919 + s * 104729 + 11) % c.vocab_size);
  std::vector<std::int32_t> labels = seqs[0];
  labels[3] = labels[4] = -100;  // ignored targets inside a sequence
  TrainingGraph graph(m, block_modes(plan, c.num_layers), 64, /*loss_chunk=*/24, policy);
  graph.set_phase_timer(timer);
  CHECK(graph.activation_policy() == policy);
  o.losses.push_back(graph.step({{&seqs[0], &labels}, {&seqs[1], &seqs[1]}, {&seqs[2], &seqs[2]}}, g, 1.0f / 40).sum);
  o.losses.push_back(graph.step({{&seqs[3], &seqs[3]}, {&seqs[2], &seqs[2]}}, g, 1.0f / 55).sum);
  o.losses.push_back(graph.evaluate({{&seqs[3], &seqs[3]}}).sum);
  return o;
}

struct Recorder : PhaseTimer {
  std::vector<std::string> names;
  void begin(const StepPart&, StepPhase) override {}
  void end(const StepPart& p, StepPhase ph) override { names.push_back(p.name() + "." + step_phase_name(ph)); }
  std::size_t count(const std::string& n) const { return std::count(names.begin(), names.end(), n); }
};

}  // namespace

TEST_CASE("recomputed activations give the same loss and bitwise the same gradients") {
  struct Layout {
    const char* name;
    std::vector<LayerRange> frozen;
    bool embeddings = false, norms = false, lm_head = false;
  };
  const std::vector<Layout> layouts = {
      {"full", {}},
      {"frozen middle", {{1, 2}}},
      {"frozen top", {{3, 3}}},
      {"frozen bottom, nothing below trains", {{0, 1}}, true, true},  // blocks 0-1 run no backward
      {"only the head trains", {{0, 3}}, true, true},                  // no block runs backward
  };
  for (const std::string extra :
       {R"({})", R"({"attention_bias": true, "mlp_bias": true})", R"({"model_type": "qwen2"})",
        R"({"model_type": "gemma", "head_dim": 32, "hidden_activation": "gelu_pytorch_tanh"})",
        R"({"model_type": "mistral", "sliding_window": 7})", R"({"model_type": "phi3"})",
        R"({"model_type": "gemma2", "head_dim": 32, "query_pre_attn_scalar": 24, "attn_logit_softcapping": 3.0,
            "final_logit_softcapping": 5.0, "sliding_window": 7})",
        R"({"model_type": "qwen3", "head_dim": 24, "attention_bias": true})",
        R"({"model_type": "gemma3_text", "head_dim": 24, "query_pre_attn_scalar": 20, "sliding_window": 7,
            "sliding_window_pattern": 2, "rope_local_base_freq": 100.0, "rope_theta": 10000.0})"}) {
    const ModelConfig c = config(extra);
    auto m = Model::random(c, 21);
    for (const Layout& k : layouts) {
      CAPTURE(extra);
      const std::string layout = k.name;
      CAPTURE(layout);
      FreezePlan plan = FreezePlan::from_ranges(k.frozen, c.num_layers);
      plan.embeddings = k.embeddings;
      plan.norms = k.norms;
      plan.lm_head = k.lm_head || (c.tie_word_embeddings && k.embeddings);
      const Outcome saved = run(*m, plan, ActivationPolicy::save());
      // Every block, and the lowest one, two or three of those that run backward.
      for (std::int64_t blocks : {ActivationPolicy::kAll, std::int64_t{1}, std::int64_t{2}, std::int64_t{3}}) {
        CAPTURE(blocks);
        const Outcome again = run(*m, plan, ActivationPolicy::recompute(blocks));
        CHECK(saved.losses == again.losses);
        REQUIRE(saved.grads.size() == again.grads.size());
        for (std::size_t i = 0; i < saved.grads.size(); ++i)
          CHECK(std::memcmp(saved.grads[i].data<float>(), again.grads[i].data<float>(), saved.grads[i].nbytes()) == 0);
      }
    }
  }
}

TEST_CASE("recompute allocates the planner's bytes: one input per block and one shared set") {
  const ModelConfig c = config("{}");
  auto m = Model::random(c, 3);
  Allocator& host = Allocator::for_device(Device::CPU);
  const auto act = static_cast<std::size_t>(MemCategory::Activations);
  for (const FreezePlan& plan : {FreezePlan::none(c.num_layers), FreezePlan::from_ranges({{1, 2}}, c.num_layers)}) {
    CAPTURE(plan.describe());
    std::size_t bytes[2] = {0, 0};
    for (ActivationPolicy policy : {ActivationPolicy::save(), ActivationPolicy::recompute()}) {
      const std::string policy_name = activation_policy_name(policy);
      CAPTURE(policy_name);
      const std::size_t before = host.stats().current[act];
      TrainingGraph graph(*m, block_modes(plan, c.num_layers), 2 * 48, 256, policy);
      const std::size_t got = host.stats().current[act] - before;
      const MemoryBreakdown want = plan_training_memory(c, plan, 2, 48, Precision::FP32, 256, {}, policy);
      CHECK(got == want.bytes[act]);
      bytes[policy == ActivationPolicy::recompute()] = got;
    }
    // Worked out by hand (fp32, n = 96 tokens): per block x_in (n x 64); one shared set of
    // normed1, q (n x 64), k, v (n x 32), attn, lse (n x 4), x_mid, normed2, gate, up
    // (n x 160); final_x and final_normed.
    const std::size_t n = 96, shared = n * (64 + 64 + 32 + 32 + 64 + 4 + 64 + 64 + 160 + 160) * 4;
    CHECK(bytes[1] == c.num_layers * n * 64 * 4 + shared + 2 * n * 64 * 4);
    CHECK(bytes[1] < bytes[0]);
    // Recomputing k blocks: never more bytes than k - 1; one block only moves its saves into the
    // shared set (the same bytes when block 0 trains); all blocks is the same as every block.
    std::size_t prev = bytes[0];
    for (std::int64_t k = 1; k <= c.num_layers; ++k) {
      CAPTURE(k);
      const std::size_t before = host.stats().current[act];
      TrainingGraph graph(*m, block_modes(plan, c.num_layers), 2 * 48, 256, ActivationPolicy::recompute(k));
      const std::size_t got = host.stats().current[act] - before;
      CHECK(got == plan_training_memory(c, plan, 2, 48, Precision::FP32, 256, {}, ActivationPolicy::recompute(k)).bytes[act]);
      CHECK(got <= prev);
      if (k == 1) CHECK(got == bytes[0]);
      if (k == c.num_layers) CHECK(got == bytes[1]);
      prev = got;
    }
  }
}

TEST_CASE("the reruns are their own phase: every block with a backward but the top one") {
  const ModelConfig c = config("{}");
  auto m = Model::random(c, 5);
  FreezePlan plan = FreezePlan::from_ranges({{0, 0}}, c.num_layers);
  plan.embeddings = plan.norms = true;  // block 0 runs no backward
  Recorder rec;
  run(*m, plan, ActivationPolicy::recompute(), &rec);
  CHECK(rec.count("block.0.recompute") == 0);
  CHECK(rec.count("block.1.recompute") == 2);  // once per step, none in the evaluation
  CHECK(rec.count("block.2.recompute") == 2);
  CHECK(rec.count("block.3.recompute") == 0);  // its activations are still there from the forward
  CHECK(rec.count("block.1.forward") == 3);
  Recorder plain;
  run(*m, plan, ActivationPolicy::save(), &plain);
  for (const auto& n : plain.names) CHECK(n.find("recompute") == std::string::npos);
  // The two lowest blocks that run backward (1 and 2): only block 1 reruns, block 2's
  // activations are still in the shared set when its backward comes.
  Recorder two;
  run(*m, plan, ActivationPolicy::recompute(2), &two);
  CHECK(two.count("block.1.recompute") == 2);
  CHECK(two.count("block.2.recompute") == 0);
  CHECK(two.count("block.3.recompute") == 0);
  CHECK(recomputed_blocks(block_modes(plan, c.num_layers), ActivationPolicy::recompute(2)) ==
        std::vector<bool>{false, true, true, false});
  CHECK(activation_policy_name(ActivationPolicy::recompute(2)) == "recompute 2 blocks");
  CHECK(activation_policy_name(ActivationPolicy::recompute()) == "recompute");
  CHECK(activation_policy_name(ActivationPolicy::save()) == "save");
}
