// The decoder forward: packing, KV-cache decoding and capture must not change
// the numbers; save/load round trips; checkpoints that do not match the config
// are refused.
#include <doctest/doctest.h>

#include <limits>

#include "engine/error.h"
#include "engine/json.h"
#include "models/generate.h"
#include "models/model.h"
#include "test_util.h"

using namespace sppft;

namespace {

ModelConfig tiny(const std::string& type) {
  Json j = Json::parse(R"({"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50, "max_position_embeddings": 64})");
  j["model_type"] = type;
  if (type == "gemma" || type == "gemma2" || type == "gemma3_text") j["head_dim"] = 16;
  if (type == "qwen3") j["head_dim"] = 12;  // not hidden / heads
  if (type == "mistral" || type == "gemma2" || type == "gemma3_text") j["sliding_window"] = 4;  // gemma2/3: layers 0 and 2
  if (type == "gemma3_text") {  // the sliding layers 0 and 2 at theta 100, layer 1 at 10000 scaled by 2
    j["sliding_window_pattern"] = 2;
    j["rope_local_base_freq"] = 100.0;
    j["rope_theta"] = 10000.0;
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  }
  if (type == "gemma2") {
    j["attn_logit_softcapping"] = 2.0;
    j["final_logit_softcapping"] = 3.0;
  }
  return parse_model_config(j, type);
}

std::vector<float> row(const Tensor& t, std::int64_t r) {
  const auto w = t.dim(1);
  return std::vector<float>(t.data<float>() + r * w, t.data<float>() + (r + 1) * w);
}

double diff(const std::vector<float>& a, const std::vector<float>& b) { return test::rel_error(a.data(), b.data(), a.size()); }

}  // namespace

TEST_CASE("packed batches and KV-cache decoding give the logits of one full pass") {
  for (const char* type : {"llama", "mistral", "qwen2", "gemma", "phi3", "gemma2", "qwen3", "gemma3_text"}) {
    CAPTURE(type);
    auto m = Model::random(tiny(type), 42, 0.1f);
    std::vector<std::int32_t> a = {1, 5, 9, 13, 2, 7, 7, 30}, b = {4, 8, 15, 16, 23, 42};
    // Reference: each sequence alone, all positions in one pass.
    KVCache ca(m->config(), 1, 16), cb(m->config(), 1, 16);
    Tensor la = m->forward({{a}, {0}}, ca, true);
    Tensor lb = m->forward({{b}, {0}}, cb, true);
    // Packed: both at once, prefix first, then the rest token by token.
    KVCache c(m->config(), 2, 16);
    StepInput first{{{a.begin(), a.begin() + 3}, {b.begin(), b.begin() + 5}}, {1, 0}};
    Tensor l0 = m->forward(first, c);
    CHECK(diff(row(l0, 0), row(la, 2)) < 1e-5);
    CHECK(diff(row(l0, 1), row(lb, 4)) < 1e-5);
    for (std::size_t t = 3; t < a.size(); ++t) {
      StepInput step{{{a[t]}}, {1}};
      if (t + 2 < b.size() + 0 && t + 2 >= 5) step = StepInput{{{a[t]}, {b[t + 2]}}, {1, 0}};
      Tensor l = m->forward(step, c);
      CHECK(diff(row(l, 0), row(la, t)) < 1e-5);
      if (step.tokens.size() == 2) CHECK(diff(row(l, 1), row(lb, t + 2)) < 1e-5);
    }
  }
}

TEST_CASE("hidden-state capture: embeddings first, raw block outputs, final norm separate") {
  auto m = Model::random(tiny("llama"), 3, 0.1f);
  KVCache c(m->config(), 2, 8);
  HiddenCapture cap;
  m->forward({{{3, 4, 5}, {6, 7}}, {0, 1}}, c, false, &cap);
  const auto L = m->config().num_layers, h = m->config().hidden_size;
  CHECK(cap.states.shape() == Shape{2, L + 1, h});
  // Layer 0 of sequence 1 is the embedding row of its last token (7).
  for (int j = 0; j < h; ++j) CHECK(cap.states.data<float>()[(1 * (L + 1)) * h + j] == m->weights().embed_tokens.data<float>()[7 * h + j]);
  // final_normed = rmsnorm(last layer's raw state).
  const float* last = cap.states.data<float>() + (0 * (L + 1) + L) * h;
  double ss = 0;
  for (int j = 0; j < h; ++j) ss += double(last[j]) * last[j];
  const double inv = 1 / std::sqrt(ss / h + m->config().rms_norm_eps);
  for (int j = 0; j < h; ++j)
    CHECK(cap.final_normed.data<float>()[j] == doctest::Approx(last[j] * inv * m->weights().final_norm.data<float>()[j]).epsilon(1e-5));
}

TEST_CASE("save then load gives the same model; mismatching checkpoints are refused") {
  auto dir = test::temp_dir("model");
  auto m = Model::random(tiny("phi3"), 9, 0.1f);
  m->save(dir);
  auto back = Model::load(dir, /*with_tokenizer=*/false);
  KVCache c1(m->config(), 1, 8), c2(m->config(), 1, 8);
  Tensor l1 = m->forward({{{1, 2, 3}}, {0}}, c1);
  Tensor l2 = back->forward({{{1, 2, 3}}, {0}}, c2);
  CHECK(diff(row(l1, 0), row(l2, 0)) == 0.0);
  m->save(dir / "sharded", DType::F32, 20000);
  CHECK(fs::exists(dir / "sharded/model.safetensors.index.json"));
  CHECK(!fs::exists(dir / "sharded/model.safetensors"));
  CHECK(Checkpoint(dir / "sharded").shard_count() > 2);
  auto sharded = Model::load(dir / "sharded", false);
  KVCache c3(m->config(), 1, 8);
  CHECK(diff(row(l1, 0), row(sharded->forward({{{1, 2, 3}}, {0}}, c3), 0)) == 0.0);
  m->save(dir / "sharded");  // back to one file: the index must go
  CHECK(!fs::exists(dir / "sharded/model.safetensors.index.json"));
  m->save(dir / "bf16", DType::BF16);
  CHECK(Checkpoint(dir / "bf16").entry("model.norm.weight").dtype == DType::BF16);
  Model::load(dir / "bf16", false);

  // A config that no longer matches the weights.
  Json cfg = read_json_file(dir / "config.json");
  cfg["intermediate_size"] = 40;
  atomic_write_text(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH_AS(Model::load(dir, false), doctest::Contains("expected [80, 32]"), InputError);
  cfg["intermediate_size"] = 48;
  cfg["num_hidden_layers"] = 2;
  atomic_write_text(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH_AS(Model::load(dir, false), doctest::Contains("unexpected tensor 'model.layers.2"), InputError);
  cfg["num_hidden_layers"] = 4;
  atomic_write_text(dir / "config.json", cfg.dump());
  CHECK_THROWS_WITH_AS(Model::load(dir, false), doctest::Contains("'model.layers.3.input_layernorm.weight' missing"), InputError);
  fs::remove_all(dir);
}

TEST_CASE("weights that are not finite are refused on load, naming file, tensor and element") {
  auto dir = test::temp_dir("model-nonfinite");
  auto m = Model::random(tiny("llama"), 3, 0.1f);
  m->save(dir / "good");
  m->weights().blocks[1].up.data<float>()[5] = std::numeric_limits<float>::quiet_NaN();
  m->save(dir / "nan");
  m->save(dir / "nan-bf16", DType::BF16);
  m->weights().blocks[1].up.data<float>()[5] = 1.0f;
  m->weights().final_norm.data<float>()[0] = -std::numeric_limits<float>::infinity();
  m->save(dir / "inf");
  Model::load(dir / "good", false);
  for (const char* d : {"nan", "nan-bf16"})
    CHECK_THROWS_WITH_AS(Model::load(dir / d, false),
                         ((dir / d / "model.safetensors").string() +
                          ": tensor 'model.layers.1.mlp.up_proj.weight' holds a non-finite value (nan) at element 5 (a damaged or diverged checkpoint)")
                             .c_str(),
                         InputError);
  CHECK_THROWS_WITH_AS(Model::load(dir / "inf", false), doctest::Contains("tensor 'model.norm.weight' holds a non-finite value (-inf) at element 0"),
                       InputError);
  // The same check when a run's own checkpoint is read back into a model (train --resume).
  auto back = Model::load(dir / "good", false);
  CHECK_THROWS_WITH_AS(back->load_weights_from(dir / "inf"), doctest::Contains("'model.norm.weight' holds a non-finite value"), InputError);
  fs::remove_all(dir);
}

TEST_CASE("positions past max_position_embeddings or the cache are refused") {
  auto m = Model::random(tiny("llama"), 1, 0.1f);
  KVCache c(m->config(), 1, 100);
  std::vector<std::int32_t> longp(65, 3);
  CHECK_THROWS_WITH_AS(m->forward({{longp}, {0}}, c), doctest::Contains("max_position_embeddings"), InputError);
  KVCache small(m->config(), 1, 4);
  CHECK_THROWS_WITH_AS(m->forward({{{1, 2, 3, 4, 5}}, {0}}, small), doctest::Contains("KV cache"), InputError);
  CHECK_THROWS_WITH_AS(generate(*m, {longp}, SamplingOptions{}), doctest::Contains("more than max_position_embeddings"), InputError);
  CHECK_THROWS_WITH_AS(generate(*m, {{}}, SamplingOptions{}), doctest::Contains("empty"), InputError);
  CHECK_THROWS_WITH_AS(m->forward({{{1, 50}}, {0}}, c), doctest::Contains("outside the vocabulary"), InputError);
}

TEST_CASE("token picking: greedy, top-k, top-p, seeded sampling") {
  std::vector<float> logits = {0.5f, 3.0f, 3.0f, -1.0f, 2.9f};
  SamplingOptions greedy;
  CHECK(pick_token(logits.data(), 5, greedy, 0.0) == 1);  // first maximum, as torch.argmax
  SamplingOptions s;
  s.temperature = 1.0f;
  s.top_k = 1;
  CHECK(pick_token(logits.data(), 5, s, 0.99) == 1);
  s.top_k = 0;
  s.top_p = 1e-6f;
  CHECK(pick_token(logits.data(), 5, s, 0.99) == 1);
  s.top_p = 1.0f;
  // u walks the cumulative distribution in (logit desc, id asc) order: 1, 2, 4, 0, 3.
  CHECK(pick_token(logits.data(), 5, s, 0.0) == 1);
  CHECK(pick_token(logits.data(), 5, s, 0.999999) == 3);
  s.top_k = 3;
  CHECK(pick_token(logits.data(), 5, s, 0.999999) == 4);

  auto m = Model::random(tiny("llama"), 5, 0.3f);
  SamplingOptions opts;
  opts.temperature = 0.8f;
  opts.top_p = 0.9f;
  opts.seed = 11;
  opts.max_new_tokens = 10;
  auto g1 = generate(*m, {{1, 2, 3}, {4, 5}}, opts);
  auto g2 = generate(*m, {{1, 2, 3}, {4, 5}}, opts);
  CHECK(g1[0].new_ids == g2[0].new_ids);
  CHECK(g1[1].new_ids == g2[1].new_ids);
  // Batching does not change greedy results.
  SamplingOptions gopt;
  gopt.max_new_tokens = 12;
  gopt.batch_size = 1;
  auto one = generate(*m, {{1, 2, 3}, {4, 5}}, gopt);
  gopt.batch_size = 8;
  auto many = generate(*m, {{1, 2, 3}, {4, 5}}, gopt);
  CHECK(one[0].new_ids == many[0].new_ids);
  CHECK(one[1].new_ids == many[1].new_ids);
}
