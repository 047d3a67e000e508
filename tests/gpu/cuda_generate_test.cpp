// Inference on the GPU against the CPU: the same random models (llama with GQA, gemma,
// mistral with a sliding window shorter than the prompts, phi3 with fused projections, gemma2),
// packed prefill of several prompts, then KV-cache decoding.
//   F32 weights on the GPU: greedy generations identical to the CPU's (ids), logits of
//     the prefill within 1e-4 relative, hidden states within 1e-4 (test::rel_error).
//   BF16 weights: logits within 5e-2 relative of the CPU run on the same bf16-rounded
//     weights, and the first greedy token equal.
// Without a GPU it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <random>

#include "gpu_test_util.h"
#include "models/generate.h"
#include "models/hidden.h"
#include "models/model.h"

using namespace sppft;
using namespace sppft::test::gpu;

#ifndef SPPFT_HAVE_CUDA
TEST_CASE("generation GPU vs CPU (this build has no CUDA)") { CHECK_FALSE(have_gpu()); }
#else

TEST_CASE("greedy generation, logits and hidden states on the GPU equal the CPU's") {
  if (!have_gpu()) return;
  for (const char* extra : {"{}", R"({"model_type": "gemma", "head_dim": 32})", R"({"model_type": "mistral", "sliding_window": 6})",
                            R"({"model_type": "phi3"})",
                            R"({"model_type": "gemma2", "head_dim": 32, "attn_logit_softcapping": 2.0,
    "final_logit_softcapping": 4.0, "sliding_window": 6})",
                            R"({"model_type": "qwen3", "head_dim": 32})",
                            // q/k norms as (1 + w); the sliding blocks take their own RoPE table
                            R"({"model_type": "gemma3_text", "head_dim": 32, "sliding_window": 6, "sliding_window_pattern": 2,
    "rope_local_base_freq": 100.0, "rope_theta": 10000.0})",
                            // LongRoPE past 16 positions: the 13-token prompt crosses while generating
                            R"({"model_type": "phi3", "original_max_position_embeddings": 16, "rope_scaling": {"type": "longrope",
    "short_factor": [1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7], "long_factor": [1, 2, 4, 6, 8, 10, 12, 14]}})"}) {
    for (DType dt : kFloatTypes) {
      CAPTURE(extra);
      CAPTURE(name(dt));
      Json j = Json::parse(R"({"model_type": "llama", "hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 3,
        "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 500, "max_position_embeddings": 256})");
      j.update(Json::parse(extra));
      const ModelConfig c = parse_model_config(j, "test config");
      auto cpu = Model::random(c, 3, 0.08f), gpu = Model::random(c, 3, 0.08f);
      if (dt == DType::BF16)
        for (auto& p : cpu->parameters()) round_for(*p.tensor, DType::BF16);
      gpu->to_device(Device::CUDA, dt);
      std::mt19937 rng(9);
      std::uniform_int_distribution<std::int32_t> tok(3, 499);
      std::vector<std::vector<std::int32_t>> prompts = {std::vector<std::int32_t>(13), std::vector<std::int32_t>(1),
                                                        std::vector<std::int32_t>(40)};
      for (auto& p : prompts)
        for (auto& x : p) x = tok(rng);

      // Prefill logits of every position.
      StepInput in{prompts, {0, 1, 2}};
      KVCache kc = cpu->make_cache(3, 64), kg = gpu->make_cache(3, 64);
      Tensor lc = cpu->forward(in, kc, true), lg = gpu->forward(in, kg, true);
      REQUIRE(lg.device() == Device::CPU);
      REQUIRE(lg.shape() == lc.shape());
      CHECK(test::rel_error(lg.data<float>(), lc.data<float>(), lc.numel()) < (dt == DType::F32 ? 1e-4 : 5e-2));

      SamplingOptions greedy;
      greedy.max_new_tokens = 12;
      auto gc = generate(*cpu, prompts, greedy), gg = generate(*gpu, prompts, greedy);
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        CAPTURE(i);
        if (dt == DType::F32) CHECK(gg[i].new_ids == gc[i].new_ids);
        else CHECK(gg[i].new_ids.front() == gc[i].new_ids.front());
      }
      if (dt == DType::F32) {
        HiddenStates hc = capture_hidden_states(*cpu, prompts), hg = capture_hidden_states(*gpu, prompts);
        CHECK(test::rel_error(hg.states.data<float>(), hc.states.data<float>(), hc.states.numel()) < 1e-4);
        CHECK(test::rel_error(hg.final_normed.data<float>(), hc.final_normed.data<float>(), hc.final_normed.numel()) < 1e-4);
      }
    }
  }
}

#endif
