#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <map>
#include <optional>

#include "engine/allocator.h"
#include "engine/error.h"
#include "models/config.h"
#include "models/model.h"
#include "models/presets.h"

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
  // eos_token_id: one id, a list, null for none; anything else named.
  for (const auto& [value, ids] : std::vector<std::pair<Json, std::vector<std::int64_t>>>{
           {7, {7}}, {Json::array({2, 3.0}), {2, 3}}, {nullptr, {}}, {Json::array(), {}}}) {
    Json m = base();
    m["eos_token_id"] = value;
    CHECK(parse_model_config(m, "config.json").eos_token_ids == ids);
  }
  for (const Json& bad : {Json("2"), Json::array({1, 2.5}), Json::array({Json::array({1})}), Json(-1.5)}) {
    Json m = base();
    m["eos_token_id"] = bad;
    CHECK_THROWS_WITH_AS(parse_model_config(m, "config.json"),
                         "config.json: field 'eos_token_id' must be an integer or a list of integers", InputError);
  }
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

  // Sliding windows as transformers' Qwen2/Qwen3 configs: only with use_sliding_window, on the
  // layers from max_window_layers (default 28) on, or those layer_types names.
  q["num_hidden_layers"] = 4;
  q["sliding_window"] = 8;
  CHECK(!parse_model_config(q, "c").sliding_window);  // use_sliding_window false: the field is ignored
  q["use_sliding_window"] = true;
  q["max_window_layers"] = 2;
  auto w = parse_model_config(q, "c");
  CHECK(w.sliding_window == 8);
  CHECK((w.attention_window(0) == 0 && w.attention_window(1) == 0 && w.attention_window(2) == 8 && w.attention_window(3) == 8));
  CHECK(model_config_to_json(parse_model_config(model_config_to_json(w), "rt")) == model_config_to_json(w));
  CHECK(model_config_to_json(w)["layer_types"] == Json({"full_attention", "full_attention", "sliding_attention", "sliding_attention"}));
  q.erase("max_window_layers");
  for (std::int64_t l = 0; l < 4; ++l) CHECK(parse_model_config(q, "c").attention_window(l) == 0);  // 28 and on
  q["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "full_attention"};
  w = parse_model_config(q, "c");
  CHECK((w.attention_window(0) == 8 && w.attention_window(1) == 0 && w.attention_window(2) == 8));
  q["sliding_window"] = nullptr;
  CHECK(!parse_model_config(q, "c").sliding_window);
  q["sliding_window"] = 8;
  q["layer_types"] = {"sliding_attention"};
  CHECK_THROWS_WITH_AS(parse_model_config(q, "c"), doctest::Contains("layer_types has 1 entries, expected num_hidden_layers = 4"),
                       InputError);
  q.erase("layer_types");
  q["max_window_layers"] = -1;
  CHECK_THROWS_WITH_AS(parse_model_config(q, "c"), doctest::Contains("max_window_layers must be non-negative"), InputError);
}

TEST_CASE("gemma3_text: defaults as transformers, the sliding blocks' own RoPE in both config layouts") {
  Json g = base();  // hidden 64, 4 heads, 2 kv heads
  g["model_type"] = "gemma3_text";
  g["num_hidden_layers"] = 13;
  g.erase("rope_theta");
  auto c = parse_model_config(g, "c");
  // transformers' Gemma3TextConfig: head_dim 256, no caps, window 4096 on all but every 6th block,
  // full blocks at theta 1e6, sliding blocks at rope_local_base_freq 1e4, q/k norms as (1 + w).
  CHECK(c.family == Family::Gemma3);
  CHECK((c.qk_norm && c.sandwich_norms && c.norm_unit_offset && c.scale_embeddings && c.tie_word_embeddings));
  CHECK(c.head_dim == 256);
  CHECK(c.activation == Activation::GeluTanh);
  CHECK((c.attn_logit_softcap == 0.0f && c.final_logit_softcap == 0.0f));
  CHECK(c.attention_scale() == 1.0f / 16.0f);
  for (std::int64_t l = 0; l < 13; ++l) {
    const bool sliding = (l + 1) % 6 != 0;
    CHECK(c.attention_window(l) == (sliding ? 4096 : 0));
    CHECK(c.uses_local_rope(l) == sliding);
    CHECK(c.rope_of(l).theta == (sliding ? 1e4 : 1e6));
  }
  CHECK(c.block_norm_parameters() == 4 * 64 + 2 * 256);
  CHECK(Model::rope_table_bytes(c) == 2 * 128 * 4);
  // The Hub layout (Gemma-3 1B / 4B text): rope_theta and rope_scaling for the full blocks,
  // rope_local_base_freq for the sliding ones, sliding_window_pattern.
  g["head_dim"] = 16;
  g["rope_theta"] = 2000.0;
  g["rope_local_base_freq"] = 300.0;
  g["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  g["sliding_window_pattern"] = 3;
  g["sliding_window"] = 7;
  g["attn_logit_softcapping"] = 50.0;  // read by transformers' Gemma3Attention, never applied
  g["final_logit_softcapping"] = 30.0;
  auto hub = parse_model_config(g, "hub");
  CHECK(hub.attn_logit_softcap == 0.0f);
  CHECK(hub.final_logit_softcap == 30.0f);
  CHECK((hub.attention_window(1) == 7 && hub.attention_window(2) == 0 && hub.attention_window(5) == 0));
  CHECK((hub.rope.theta == 2000.0 && hub.rope.type == "linear" && hub.rope.factor == 8.0));
  CHECK((hub.local_rope->theta == 300.0 && hub.local_rope->type == "default"));
  const auto global = rope_inv_freq(hub.rope, 16), local = rope_inv_freq(*hub.local_rope, 16);
  CHECK(global[1] == doctest::Approx(std::pow(2000.0, -2.0 / 16) / 8));
  CHECK(local[1] == doctest::Approx(std::pow(300.0, -2.0 / 16)));
  // The transformers-5 layout of the same model parses to the same thing.
  Json t = g;
  for (const char* k : {"rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"}) t.erase(k);
  t["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 2000.0}}},
                          {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 300.0}}}};
  t["layer_types"] = Json::array();
  for (std::int64_t l = 0; l < 13; ++l) t["layer_types"].push_back((l + 1) % 3 ? "sliding_attention" : "full_attention");
  auto v5 = parse_model_config(t, "v5");
  CHECK(model_config_to_json(v5) == model_config_to_json(hub));
  CHECK(rope_inv_freq(v5.rope, 16) == global);
  CHECK(rope_inv_freq(*v5.local_rope, 16) == local);
  auto rt = parse_model_config(model_config_to_json(hub), "rt");
  CHECK(model_config_to_json(rt) == model_config_to_json(hub));
  CHECK(rt.local_rope->theta == 300.0);
  // A model holds both tables; rope_runs picks the sliding blocks' one.
  {
    auto m = Model::random(hub, 3);
    CHECK(m->rope_frequencies(0, true).data<float>()[1] == local[1]);
    CHECK(m->rope_frequencies(0).data<float>()[1] == global[1]);
    const std::vector<ops::AttentionSeq> seqs = {{0, 4, 0, 0}};
    CHECK(m->rope_runs(seqs, true)[0].table == &m->rope_frequencies(0, true));
  }
  // Refused: a flat rope_parameters, yarn (its attention factor would scale some blocks only),
  // a bad pattern.
  Json bad = t;
  bad["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("expected entries full_attention and sliding_attention"),
                       InputError);
  bad = g;
  bad["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("rope type 'yarn' is not implemented for gemma3_text"),
                       InputError);
  bad = g;
  bad["sliding_window_pattern"] = 0;
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("sliding_window_pattern must be positive"), InputError);
}

TEST_CASE("llava and mistral3: the text model's config, with the defaults of its model type") {
  // llava-hf/llava-1.5-7b-hf's config.json, less the vision_config: text_config names six fields.
  const Json llava = Json::parse(R"({"architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100,
    "image_token_index": 32000, "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
    "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
      "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05, "torch_dtype": "float16",
      "vocab_size": 32064},
    "tie_word_embeddings": false, "torch_dtype": "float16", "vision_config": {"model_type": "clip_vision_model"},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064})");
  auto c = parse_model_config(llava, "config.json");
  // As transformers 5.24's LlavaConfig(**j).text_config reads it.
  CHECK((c.multimodal && c.family == Family::Llama && c.model_type == "llama"));
  CHECK((c.hidden_size == 4096 && c.intermediate_size == 11008 && c.num_layers == 32 && c.vocab_size == 32064));
  CHECK((c.num_heads == 32 && c.num_kv_heads == 32 && c.head_dim == 128 && c.max_position_embeddings == 4096));
  CHECK((c.rms_norm_eps == doctest::Approx(1e-5) && c.rope.theta == 1e4 && !c.tie_word_embeddings));
  CHECK((c.bos_token_id == 1 && c.eos_token_ids == std::vector<std::int64_t>{2}));
  CHECK(c.total_parameters() == 6'738'939'904);  // Llama-2-7B's 6,738,415,616 with 64 more rows in each of embed and lm_head
  const Json saved = config_json_for_save(c, "float32");
  CHECK((saved["model_type"] == "llama" && saved["architectures"] == Json::array({"LlamaForCausalLM"})));
  CHECK(config_json_for_save(c, "bfloat16", true)["model_type"] == "llava");

  // A text_config naming only its type takes MistralConfig's defaults (sliding window 4096).
  Json mistral3 = Json::parse(R"({"model_type": "mistral3", "text_config": {"model_type": "mistral"},
    "vision_config": {"model_type": "pixtral"}})");
  auto m = parse_model_config(mistral3, "config.json");
  CHECK((m.multimodal && m.family == Family::Mistral && m.hidden_size == 4096 && m.intermediate_size == 14336));
  CHECK((m.num_kv_heads == 8 && m.max_position_embeddings == 131072 && m.attention_window(0) == 4096));
  CHECK(config_json_for_save(m, "float32")["architectures"] == Json::array({"MistralForCausalLM"}));
  mistral3.erase("text_config");
  CHECK_THROWS_WITH_AS(parse_model_config(mistral3, "c"), doctest::Contains("text_config: missing"), InputError);
  Json nested = llava;
  nested["text_config"]["model_type"] = "llava";
  CHECK_THROWS_WITH_AS(parse_model_config(nested, "c"), doctest::Contains("model_type 'llava', expected a text model"),
                       InputError);
  nested["text_config"]["model_type"] = "bert";
  CHECK_THROWS_AS(parse_model_config(nested, "c"), InputError);
}

TEST_CASE("qwen2_vl and qwen2_5_vl: a Qwen2 text model, flat on the Hub or under text_config; mrope is RoPE on text") {
  // Qwen/Qwen2.5-VL-7B-Instruct's config.json, less most of the vision_config: the text model's
  // fields at the top level. Expected values as transformers 5.24's Qwen2_5_VLConfig reads them.
  const Json flat = Json::parse(R"({"architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652, "image_token_id": 151655,
    "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944, "max_position_embeddings": 128000,
    "max_window_layers": 28, "model_type": "qwen2_5_vl", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
    "vision_config": {"depth": 32, "hidden_size": 1280, "out_hidden_size": 3584},
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "vocab_size": 152064})");
  auto c = parse_model_config(flat, "config.json");
  CHECK((c.multimodal && c.family == Family::Qwen2 && c.model_type == "qwen2" && c.multimodal_type() == "qwen2_5_vl"));
  CHECK((c.hidden_size == 3584 && c.intermediate_size == 18944 && c.num_layers == 28 && c.vocab_size == 152064));
  CHECK((c.num_heads == 28 && c.num_kv_heads == 4 && c.head_dim == 128 && c.max_position_embeddings == 128000));
  CHECK((c.rms_norm_eps == doctest::Approx(1e-6) && c.rope.type == "default" && c.rope.theta == 1e6));
  CHECK((c.qkv_bias && !c.tie_word_embeddings && !c.sliding_window && c.torch_dtype == "bfloat16"));
  CHECK((c.bos_token_id == 151643 && c.eos_token_ids == std::vector<std::int64_t>{151645}));
  CHECK(config_json_for_save(c, "bfloat16", true) == flat);
  CHECK(config_json_for_save(c, "float32")["architectures"] == Json::array({"Qwen2ForCausalLM"}));

  // As transformers 5 writes it: under text_config, mrope_section in rope_parameters; the fields
  // it leaves out take Qwen2VLTextConfig's defaults (Qwen2-VL-72B's shape, rms_norm_eps 1e-5).
  const Json nested = Json::parse(R"({"model_type": "qwen2_vl", "tie_word_embeddings": false,
    "text_config": {"model_type": "qwen2_vl_text", "hidden_size": 1536, "num_attention_heads": 12,
      "num_key_value_heads": 2, "tie_word_embeddings": true,
      "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 500000.0}},
    "vision_config": {"model_type": "qwen2_vl"}})");
  auto n = parse_model_config(nested, "config.json");
  CHECK((n.multimodal && n.family == Family::Qwen2 && n.multimodal_type() == "qwen2_vl"));
  CHECK((n.hidden_size == 1536 && n.intermediate_size == 29568 && n.num_layers == 80 && n.head_dim == 128));
  CHECK((n.vocab_size == 152064 && n.max_position_embeddings == 32768 && n.rms_norm_eps == doctest::Approx(1e-5)));
  CHECK((n.rope.theta == 500000.0 && n.eos_token_ids == std::vector<std::int64_t>{151645}));
  CHECK(n.tie_word_embeddings);  // the text config's flag counts too (Qwen2-VL-2B)

  Json bad = flat;
  bad["rope_scaling"]["mrope_section"] = Json::array({16, 24, 16});
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("c: mrope_section sums to 56, expected head_dim / 2 = 64"),
                       InputError);  // named where it is: at the top level of a flat config
  bad["rope_scaling"] = {{"type", "mrope"}};
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("mrope without mrope_section"), InputError);
  bad["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("rope type 'yarn', expected mrope or default"),
                       InputError);
  // Sliding windows from max_window_layers on: the Hub config's 28 leaves all 28 layers full; a
  // nested text_config without it takes Qwen2VLTextConfig's 80, not Qwen2Config's 28.
  Json windowed = flat;
  windowed["use_sliding_window"] = true;
  auto fw = parse_model_config(windowed, "c");
  CHECK(fw.sliding_window == 32768);
  CHECK(fw.attention_window(27) == 0);
  windowed["max_window_layers"] = 20;
  CHECK(parse_model_config(windowed, "c").attention_window(20) == 32768);
  windowed = nested;
  windowed["text_config"]["use_sliding_window"] = true;
  windowed["text_config"]["num_hidden_layers"] = 82;
  auto nw = parse_model_config(windowed, "c");
  CHECK((nw.attention_window(79) == 0 && nw.attention_window(80) == 4096));
  bad = nested;
  bad["text_config"]["rope_parameters"]["mrope_section"] = Json::array({1, 2, 3});
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("c text_config: mrope_section sums to 6"), InputError);
  bad = nested;
  bad["text_config"]["model_type"] = "qwen2";
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("model_type 'qwen2', expected qwen2_vl_text"),
                       InputError);
}

TEST_CASE("every preset has the parameters transformers counts for its model") {
  // transformers 5.24 building each preset's config.json on the meta device (ForCausalLM; for the
  // vision-language ones the parameters under model.language_model and lm_head).
  const std::map<std::string, std::int64_t> text = {
      {"llama-3-8b", 8'030'261'248}, {"llama-3.1-8b", 8'030'261'248}, {"llama-2-7b", 6'738'415'616},
      {"mistral-7b", 7'241'732'096}, {"qwen2.5-7b", 7'615'616'512},   {"qwen3-8b", 8'190'735'360},
      {"gemma-2b", 2'506'172'416},   {"gemma-2-2b", 2'614'341'888},   {"gemma-3-1b", 999'885'952},
      {"phi-3-mini", 3'821'079'552}, {"phi-4-mini", 3'836'021'760}};
  for (const auto& [name, params] : text) {
    CAPTURE(name);
    CHECK(preset_config(name).total_parameters() == params);
  }
  const ModelConfig phi4 = preset_config("phi-4-mini");
  CHECK(phi4.rope_dim() == 96);
  CHECK(phi4.tie_word_embeddings);
  CHECK(preset_config("llama-3.1-8b").rope.type == "llama3");
  CHECK(preset_config("gemma-3-4b").total_parameters() == 3'880'263'168);
  CHECK(preset_config("llava-1.5-7b").total_parameters() == 6'738'939'904);
  CHECK(preset_config("mistral-small-3.1-24b").total_parameters() == 23'572'403'200);  // lm_head its own
  CHECK(preset_config("qwen2.5-vl-7b").total_parameters() == 7'615'616'512);
  CHECK(preset_config("qwen2.5-vl-7b").multimodal_type() == "qwen2_5_vl");
}

TEST_CASE("vision-language kinds tie lm_head to the embeddings as transformers 5 does") {
  // transformers 5.24, config.tie_word_embeddings of each kind for every (top level, text_config)
  // pair of absent / false / true: gemma3 and mistral3 read the top level only (default true),
  // llava and the Qwen VLs or it with text_config's (default false).
  const std::map<std::string, std::pair<std::string, std::string>> kinds = {
      {"gemma3", {"gemma3_text", "TTT FFF TTT"}}, {"llava", {"llama", "FFT FFT TTT"}},
      {"mistral3", {"mistral", "TTT FFF TTT"}},   {"qwen2_5_vl", {"qwen2_5_vl_text", "FFT FFT TTT"}}};
  const std::array<std::optional<bool>, 3> flags = {std::nullopt, false, true};
  for (const auto& [kind, spec] : kinds) {
    for (int top = 0; top < 3; ++top)
      for (int text = 0; text < 3; ++text) {
        CAPTURE(kind);
        CAPTURE(top);
        CAPTURE(text);
        Json j = {{"model_type", kind},
                  {"text_config", {{"model_type", spec.first}, {"hidden_size", 64}, {"num_attention_heads", 4},
                                   {"num_key_value_heads", 4}, {"intermediate_size", 128}, {"num_hidden_layers", 1},
                                   {"vocab_size", 100}, {"head_dim", 16}}}};
        if (flags[top]) j["tie_word_embeddings"] = *flags[top];
        if (flags[text]) j["text_config"]["tie_word_embeddings"] = *flags[text];
        CHECK(parse_model_config(j, "c").tie_word_embeddings == (spec.second[4 * top + text] == 'T'));
      }
  }
}

TEST_CASE("gemma3 (multimodal): the text model's config from text_config and transformers' defaults") {
  // google/gemma-3-4b-it's config.json, less the vision_config: text_config names five fields.
  const Json j = Json::parse(R"({"architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02,
    "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
      "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
    "torch_dtype": "bfloat16", "vision_config": {"model_type": "siglip_vision_model"}})");
  auto c = parse_model_config(j, "config.json");
  CHECK((c.multimodal && c.family == Family::Gemma3 && c.model_type == "gemma3_text"));
  CHECK((c.hidden_size == 2560 && c.intermediate_size == 10240 && c.num_layers == 34));
  CHECK((c.num_heads == 8 && c.num_kv_heads == 4 && c.head_dim == 256 && c.vocab_size == 262208));
  CHECK(c.max_position_embeddings == 131072);
  CHECK((c.rope.type == "linear" && c.rope.factor == 8.0 && c.rope.theta == 1e6 && c.local_rope->theta == 1e4));
  CHECK((c.attention_window(0) == 1024 && c.attention_window(5) == 0 && c.attention_window(33) == 1024));
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{1, 106});
  CHECK((c.torch_dtype == "bfloat16" && c.tie_word_embeddings));
  // What a save that carries the vision tower writes: the whole config, its dtypes updated.
  Json with_tower = config_json_for_save(c, "float32", true);
  CHECK(with_tower["torch_dtype"] == "float32");
  with_tower["torch_dtype"] = "bfloat16";
  CHECK(with_tower == j);
  Json typed = j;
  typed["text_config"]["dtype"] = "bfloat16";
  typed["vision_config"]["dtype"] = "bfloat16";
  const Json typed_saved = config_json_for_save(parse_model_config(typed, "c"), "float16", true);
  CHECK((typed_saved["torch_dtype"] == "float16" && typed_saved["text_config"]["dtype"] == "float16" &&
         typed_saved["vision_config"]["dtype"] == "float16"));
  ModelConfig built = c;
  built.multimodal_source = Json();
  CHECK_THROWS_AS(config_json_for_save(built, "float32", true), std::logic_error);
  // What a save without the tower (a model not loaded from a checkpoint) writes: the text model's
  // config, every field kept.
  const Json saved = config_json_for_save(c, "float32");
  CHECK(saved["model_type"] == "gemma3_text");
  CHECK(saved["architectures"] == Json::array({"Gemma3ForCausalLM"}));
  CHECK(saved["torch_dtype"] == "float32");
  CHECK(saved["eos_token_id"] == Json::array({1, 106}));
  CHECK(!saved.contains("vision_config"));
  Json back = model_config_to_json(parse_model_config(saved, "saved")), text = model_config_to_json(c);
  CHECK(!parse_model_config(saved, "saved").multimodal);
  back.erase("torch_dtype");
  text.erase("torch_dtype");
  CHECK(back == text);
  Json bad = j;
  bad["text_config"]["model_type"] = "llama";
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("text_config: model_type 'llama', expected gemma3_text"),
                       InputError);
  bad["text_config"] = 5;
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("text_config: expected an object"), InputError);
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
  j["partial_rotary_factor"] = 0.5;  // transformers' Llama would fail on it: only phi3 rotates part of a head
  CHECK_THROWS_WITH_AS(parse_model_config(j, "c"), doctest::Contains("partial_rotary_factor 0.500000 is implemented for phi3 only"),
                       InputError);
}

TEST_CASE("phi3 partial_rotary_factor (Phi-4-mini): RoPE on int(head_dim * factor) dims, LongRoPE factors that long") {
  // microsoft/Phi-4-mini-instruct's shape: head_dim 128, factor 0.75, LongRoPE with 48 factors each.
  Json j = {{"model_type", "phi3"}, {"hidden_size", 3072}, {"intermediate_size", 8192}, {"num_hidden_layers", 32},
            {"num_attention_heads", 24}, {"num_key_value_heads", 8}, {"vocab_size", 200064},
            {"max_position_embeddings", 131072}, {"original_max_position_embeddings", 4096},
            {"partial_rotary_factor", 0.75}, {"tie_word_embeddings", true}, {"rope_theta", 10000.0},
            {"rope_scaling", {{"type", "longrope"}, {"short_factor", std::vector<double>(48, 1.0)},
                              {"long_factor", std::vector<double>(48, 2.0)}}}};
  auto c = parse_model_config(j, "c");
  CHECK((c.head_dim == 128 && c.rope_dim() == 96 && c.rope.type == "longrope" && c.tie_word_embeddings));
  CHECK(rope_inv_freq(c).size() == 48);
  CHECK(rope_inv_freq(c)[1] == doctest::Approx(std::pow(10000.0, -2.0 / 96)));  // short factor 1: base^(-2i/R)
  CHECK(model_config_to_json(c)["partial_rotary_factor"] == 0.75);
  CHECK(parse_model_config(model_config_to_json(c), "back").rope_dim() == 96);
  CHECK(Model::rope_table_bytes(c) == 2 * 48 * 4);
  // transformers 5's form: the factor inside rope_parameters.
  Json t5 = j;
  t5.erase("partial_rotary_factor");
  t5.erase("rope_scaling");
  t5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"partial_rotary_factor", 0.5}};
  CHECK(parse_model_config(t5, "c").rope_dim() == 64);
  Json bad = j;
  bad["rope_scaling"]["short_factor"] = std::vector<double>(64, 1.0);
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("need rotary dims / 2 = 48 entries, got 64"), InputError);
  bad = j;
  bad["partial_rotary_factor"] = 0.01;  // int(1.28) = 1 dimension: no pair
  CHECK_THROWS_WITH_AS(parse_model_config(bad, "c"), doctest::Contains("expected an even number in [2, head_dim]"), InputError);
  bad["partial_rotary_factor"] = 1.5;
  CHECK_THROWS_AS(parse_model_config(bad, "c"), InputError);
}
