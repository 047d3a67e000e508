#include <doctest/doctest.h>

#include <cmath>

#include "engine/allocator.h"
#include "engine/error.h"
#include "models/config.h"
#include "models/model.h"

using namespace sppft;

namespace {
Json base() {
  return Json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "eos_token_id": [5, 6], "bos_token_id": 1})");
}
}  // namespace

TEST_CASE("llama config, Hub form and the rope_parameters form") {
  auto c = parse_model_config(base(), "config.json");
  CHECK(c.family == Family::Llama);
  CHECK(c.head_dim == 16);
  CHECK(c.rope.theta == 500000.0);
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{5, 6});
  CHECK(!c.tie_word_embeddings);
  Json j = base();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 10000.0}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto d = parse_model_config(j, "config.json");
  CHECK(d.rope.type == "llama3");
  CHECK(d.rope.theta == 10000.0);
  CHECK(d.rope.original_max_position_embeddings == 64);
  Json k = base();
  k["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  CHECK(parse_model_config(k, "c").rope.type == "linear");
  // Round trip through the writer.
  auto e = parse_model_config(model_config_to_json(d), "rt");
  CHECK(e.rope.type == "llama3");
  CHECK(e.rope.factor == 8.0);
  CHECK(e.eos_token_ids == d.eos_token_ids);
}

TEST_CASE("llama3 RoPE scaling leaves high frequencies, divides low ones, smooths between") {
  Json j = base();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 64}};
  auto c = parse_model_config(j, "c");
  auto scaled = rope_inv_freq(c);
  c.rope.type = "default";
  auto plain = rope_inv_freq(c);
  CHECK(scaled[0] == plain[0]);                                       // wavelength 2*pi < 16
  CHECK(scaled.back() == doctest::Approx(plain.back() / 8).epsilon(1e-6));  // long wavelengths
  bool smoothed = false;
  for (std::size_t i = 0; i < plain.size(); ++i)
    if (scaled[i] < plain[i] && scaled[i] > plain[i] / 8 * 1.0001) smoothed = true;
  CHECK(smoothed);
}

TEST_CASE("longrope (Phi-3-128k, Phi-3.5): two tables, switched past the pretraining length, scaled attention") {
  Json j = base();  // the Hub form of Phi-3-mini-128k: "type": "su" or "longrope", the pretraining length on top
  j["model_type"] = "phi3";
  j["max_position_embeddings"] = 131072;
  j["original_max_position_embeddings"] = 4096;
  std::vector<double> shorts, longs;
  for (int i = 0; i < 8; ++i) shorts.push_back(1.0 + 0.1 * i), longs.push_back(2.0 + 3.0 * i);
  j["rope_scaling"] = {{"type", "su"}, {"short_factor", shorts}, {"long_factor", longs}};
  auto c = parse_model_config(j, "c");
  CHECK(c.rope.type == "longrope");
  CHECK(c.rope.original_max_position_embeddings == 4096);
  CHECK(c.rope.factor == 32.0);
  // transformers' default: sqrt(1 + ln(factor) / ln(original)) = sqrt(1 + ln 32 / ln 4096) = sqrt(1 + 5/12).
  CHECK(c.rope.attention_factor == doctest::Approx(std::sqrt(17.0 / 12.0)).epsilon(1e-12));
  CHECK(c.attention_scale() == doctest::Approx(17.0 / 12.0 / 4.0).epsilon(1e-6));  // head_dim 16
  CHECK_FALSE(c.rope_long(4095));  // positions 0 .. 4095: 4096 tokens, the pretraining length
  CHECK(c.rope_long(4096));
  auto plain_cfg = c;
  plain_cfg.rope.type = "default";
  const auto plain = rope_inv_freq(plain_cfg), s = rope_inv_freq(c, false), l = rope_inv_freq(c, true);
  for (std::size_t i = 0; i < 8; ++i) {
    CHECK(s[i] == doctest::Approx(plain[i] / shorts[i]).epsilon(1e-6));
    CHECK(l[i] == doctest::Approx(plain[i] / longs[i]).epsilon(1e-6));
  }
  // A model holds both tables, and the planner counts both.
  Allocator& host = Allocator::for_device(Device::CPU);
  const auto ws = static_cast<std::size_t>(MemCategory::Workspace);
  const std::size_t before = host.stats().current[ws];
  {
    auto m = Model::random(c, 1);
    CHECK(host.stats().current[ws] - before == Model::rope_table_bytes(c));
    CHECK(Model::rope_table_bytes(c) == 2 * 8 * 4);
    CHECK(m->rope_frequencies(4095).data<float>()[3] == s[3]);
    CHECK(m->rope_frequencies(4096).data<float>()[3] == l[3]);
    // A packed batch: runs of consecutive sequences sharing a table, each judged by its own length.
    const std::vector<ops::AttentionSeq> seqs = {{0, 10, 0, 0}, {10, 5000, 1, 0}, {5010, 1, 2, 4200}, {5011, 3, 3, 0}};
    const auto runs = m->rope_runs(seqs);
    REQUIRE(runs.size() == 3);
    CHECK((runs[0].begin == 0 && runs[0].end == 10 && runs[0].table == &m->rope_frequencies(0)));
    CHECK((runs[1].begin == 10 && runs[1].end == 5011 && runs[1].table == &m->rope_frequencies(5000)));
    CHECK((runs[2].begin == 5011 && runs[2].end == 5014 && runs[2].table == &m->rope_frequencies(0)));
  }
  // An explicit attention_factor wins; the rope_parameters form carries the pretraining length itself.
  Json k = base();
  k["model_type"] = "phi3";
  k.erase("rope_theta");
  k["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 10000.0}, {"short_factor", shorts},
                          {"long_factor", longs}, {"original_max_position_embeddings", 64}, {"attention_factor", 1.5}};
  auto d = parse_model_config(k, "c");
  CHECK(d.rope.original_max_position_embeddings == 64);
  CHECK(d.rope.attention_factor == 1.5);
  auto e = parse_model_config(model_config_to_json(d), "round trip");
  CHECK(e.rope.short_factor == d.rope.short_factor);
  CHECK(e.rope.long_factor == d.rope.long_factor);
  CHECK(e.rope.attention_factor == 1.5);
  CHECK(e.rope.original_max_position_embeddings == 64);
  // Other models keep exactly the scale they always had.
  CHECK(parse_model_config(base(), "c").attention_scale() == 1.0f / std::sqrt(16.0f));
  k["rope_parameters"]["short_factor"] = std::vector<double>{1, 1, 1, 1, 1, 1, 1, 0};
  CHECK_THROWS_WITH_AS(parse_model_config(k, "c"), doctest::Contains("entries must be positive"), InputError);
}

TEST_CASE("family specifics: qwen2 biases, gemma, phi3") {
  Json q = base();
  q["model_type"] = "qwen2";
  auto cq = parse_model_config(q, "c");
  CHECK(cq.qkv_bias);
  CHECK(!cq.o_bias);
  Json g = base();
  g["model_type"] = "gemma";
  g["head_dim"] = 32;
  g["hidden_act"] = "gelu";
  auto cg = parse_model_config(g, "c");
  CHECK(cg.tie_word_embeddings);
  CHECK(cg.norm_unit_offset);
  CHECK(cg.scale_embeddings);
  CHECK(cg.head_dim == 32);
  CHECK(cg.activation == Activation::GeluTanh);
  Json p = base();
  p["model_type"] = "phi3";
  p["sliding_window"] = 2047;
  auto cp = parse_model_config(p, "c");
  CHECK(cp.fused_qkv);
  CHECK(*cp.sliding_window == 2047);
  auto shapes = parameter_shapes(cp);
  CHECK(std::any_of(shapes.begin(), shapes.end(), [](auto& s) { return s.name == "model.layers.1.self_attn.qkv_proj.weight"; }));
}

TEST_CASE("gemma2: defaults as transformers, layer types, soft-capping, sandwich norms, round trip") {
  Json g = base();
  g["model_type"] = "gemma2";
  g["num_hidden_layers"] = 5;
  g["head_dim"] = 32;
  auto c = parse_model_config(g, "c");
  // transformers' Gemma2Config defaults: caps 50 and 30, window 4096 on the even layers, scale 256^-1/2.
  CHECK(c.family == Family::Gemma2);
  CHECK((c.tie_word_embeddings && c.norm_unit_offset && c.scale_embeddings && c.sandwich_norms));
  CHECK(c.activation == Activation::GeluTanh);
  CHECK(c.attn_logit_softcap == 50.0f);
  CHECK(c.final_logit_softcap == 30.0f);
  CHECK(c.attention_scale() == 1.0f / 16.0f);
  for (std::int64_t l = 0; l < 5; ++l) CHECK(c.attention_window(l) == (l % 2 == 0 ? 4096 : 0));
  // q, k, v, o (q_dim 128, kv_dim 64), gate, up, down, four norms.
  CHECK(c.block_parameters() == 64 * 128 * 2 + 2 * 64 * 64 + 3 * 64 * 128 + 4 * 64);
  auto shapes = parameter_shapes(c);
  for (const char* n : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                        "post_feedforward_layernorm"})
    CHECK(std::any_of(shapes.begin(), shapes.end(),
                      [&](auto& s) { return s.name == std::string("model.layers.4.") + n + ".weight"; }));
  // Explicit fields: null caps and window, layer_types, query_pre_attn_scalar.
  g["attn_logit_softcapping"] = nullptr;
  g["final_logit_softcapping"] = 12.5;
  g["query_pre_attn_scalar"] = 144;
  g["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention", "full_attention", "full_attention"};
  g["sliding_window"] = 9;
  auto d = parse_model_config(g, "c");
  CHECK(d.attn_logit_softcap == 0.0f);
  CHECK(d.final_logit_softcap == 12.5f);
  CHECK(d.attention_scale() == static_cast<float>(1.0 / 12.0));
  CHECK(d.attention_window(0) == 0);
  CHECK(d.attention_window(1) == 9);
  CHECK(d.attention_window(2) == 9);
  CHECK(d.attention_window(4) == 0);
  auto e = parse_model_config(model_config_to_json(d), "round trip");
  CHECK(model_config_to_json(e) == model_config_to_json(d));
  CHECK(e.sliding_layers == d.sliding_layers);
  g["sliding_window"] = nullptr;
  CHECK(parse_model_config(g, "c").attention_window(1) == 0);
  // Other families: the one window on every layer, as before.
  Json m = base();
  m["model_type"] = "mistral";
  m["sliding_window"] = 5;
  auto cm = parse_model_config(m, "c");
  CHECK((cm.attention_window(0) == 5 && cm.attention_window(3) == 5 && !cm.sandwich_norms));
  // Refused: layer_types of the wrong length or kind, non-positive caps, bidirectional attention.
  Json bad = g;
  bad["layer_types"] = {"full_attention"};
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("layer_types has 1 entries, expected"), InputError);
  bad = g;
  bad["layer_types"][2] = "chunked_attention";
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("layer_types[2] is 'chunked_attention'"),
                       InputError);
  bad = g;
  bad["final_logit_softcapping"] = 0.0;
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("final_logit_softcapping must be positive or null"),
                       InputError);
  bad = g;
  bad["use_bidirectional_attention"] = true;
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("use_bidirectional_attention"), InputError);
}

TEST_CASE("qwen3: per-head q/k norms, head_dim 128 by default, attention_bias on all four projections") {
  Json q = base();
  q["model_type"] = "qwen3";
  auto c = parse_model_config(q, "c");
  CHECK(c.family == Family::Qwen3);
  CHECK(c.qk_norm);
  CHECK(c.head_dim == 128);  // transformers' default, not hidden / heads
  CHECK((!c.qkv_bias && !c.o_bias && !c.tie_word_embeddings));
  CHECK(c.block_norm_parameters() == 2 * 64 + 2 * 128);
  auto shapes = parameter_shapes(c);
  for (const char* n : {"self_attn.q_norm.weight", "self_attn.k_norm.weight"})
    CHECK(std::any_of(shapes.begin(), shapes.end(), [&](auto& s) {
      return s.name == std::string("model.layers.1.") + n && s.shape == Shape{128};
    }));
  q["attention_bias"] = true;
  q["head_dim"] = 16;
  auto b = parse_model_config(q, "c");
  CHECK((b.qkv_bias && b.o_bias));
  CHECK(model_config_to_json(parse_model_config(model_config_to_json(b), "rt")) == model_config_to_json(b));
  q["use_sliding_window"] = true;
  CHECK_THROWS_WITH_AS(parse_model_config(q, "c"), doctest::Contains("use_sliding_window true is not implemented for qwen3"),
                       InputError);
}

TEST_CASE("yarn: defaults as transformers, the ramp between kept and interpolated frequencies") {
  Json j = base();  // head_dim 16, rope_theta 500000
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto c = parse_model_config(j, "c");
  CHECK(c.rope.type == "yarn");
  CHECK(c.rope.attention_factor == doctest::Approx(0.1 * std::log(4.0) + 1));
  CHECK(c.attention_scale() == doctest::Approx(0.25 * std::pow(0.1 * std::log(4.0) + 1, 2)));
  // Correction range: low = floor(16 ln(64 / (32 2pi)) / (2 ln 500000)) -> 0, high = ceil(16 ln(64 / 2pi) / ...) = 2.
  const auto plain = [&] {
    Json p = base();
    return rope_inv_freq(parse_model_config(p, "c"));
  }();
  const auto yarn = rope_inv_freq(c);
  CHECK(yarn[0] == doctest::Approx(plain[0]));             // ramp 0: kept
  CHECK(yarn[1] == doctest::Approx(plain[1] * (0.5 / 4 + 0.5)));  // halfway
  for (std::size_t i = 2; i < yarn.size(); ++i) CHECK(yarn[i] == doctest::Approx(plain[i] / 4));  // interpolated
  // mscale / mscale_all_dim (DeepSeek form) and an explicit attention_factor; round trip.
  j["rope_scaling"]["mscale"] = 1.0;
  j["rope_scaling"]["mscale_all_dim"] = 0.5;
  CHECK(parse_model_config(j, "c").rope.attention_factor ==
        doctest::Approx((0.1 * std::log(4.0) + 1) / (0.05 * std::log(4.0) + 1)));
  j["rope_scaling"]["attention_factor"] = 1.25;
  auto e = parse_model_config(model_config_to_json(parse_model_config(j, "c")), "rt");
  CHECK(e.rope.attention_factor == 1.25);
  CHECK(e.rope.original_max_position_embeddings == 64);
  CHECK(rope_inv_freq(e) == yarn);
  j["rope_scaling"]["beta_fast"] = -1;
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("beta_fast and beta_slow must be positive"), InputError);
}

TEST_CASE("bad configs are refused with the field named") {
  Json j = base();
  j["model_type"] = "gpt2";
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("model_type 'gpt2' is not supported"), InputError);
  j = base();
  j["model_type"] = "phi3";
  j["rope_scaling"] = {{"type", "longrope"}, {"long_factor", {1.0}}, {"short_factor", {1.0}}};
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("need head_dim / 2 = 8 entries, got 1"), InputError);
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 4.0}};
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("'dynamic' is not implemented"), InputError);
  j = base();
  j.erase("hidden_size");
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("missing field 'hidden_size'"), InputError);
  j = base();
  j["num_key_value_heads"] = 3;
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("multiple of num_key_value_heads"), InputError);
  j = base();
  j["hidden_size"] = "64";
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("wrong type"), InputError);
  j = base();
  j["partial_rotary_factor"] = 0.5;
  CHECK_THROWS_AS(parse_model_config(j, "c"), InputError);
}
