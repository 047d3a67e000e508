// Parity with Hugging Face transformers: tiny random models of every family made
// by transformers itself (tests/parity/make_fixtures.py) against sppft.
// Tolerances: fp32 logits and hidden states within 1e-4 of the reference's scale
// (max |a-b| / max |b|); token ids identical; greedy generations identical over
// 32 new tokens except after a step where transformers' top-2 margin was below
// 1e-4 (a near-tie that fp32 rounding may flip; reported, never silently passed).
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "models/generate.h"
#include "models/hidden.h"
#include "models/model.h"
#include "models/prompting.h"
#include "test_util.h"

using namespace sppft;

namespace {

struct CaseReport {
  double logits = 0, hidden = 0, final_normed = 0;
  int prompts = 0, greedy_equal = 0, greedy_total = 0;
  bool ids_equal = true, multilingual_equal = true;
};

std::vector<fs::path> parity_cases() {
  fs::path root = test::env_path("SPPFT_PARITY_DIR");
  std::vector<fs::path> out;
  if (root.empty() || !fs::exists(root)) return out;
  for (auto& e : fs::directory_iterator(root))
    if (fs::exists(e.path() / "parity" / "reference.json")) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

Tensor ref_tensor(const Checkpoint& ref, const std::string& name) {
  const auto& e = ref.entry(name);
  return ref.load_f32(name, e.shape, MemCategory::Workspace);
}

}  // namespace

TEST_CASE("transformers parity for every family") {
  auto cases = parity_cases();
  REQUIRE_MESSAGE(cases.size() >= 13, "fixtures missing: run tests/parity/make_fixtures.py $SPPFT_PARITY_DIR (ctest does)");
  std::map<std::string, CaseReport> reports;
  for (const auto& dir : cases) {
    const std::string name = dir.filename().string();
    CAPTURE(name);
    Json ref = read_json_file(dir / "parity" / "reference.json");
    Checkpoint tensors = Checkpoint::from_file(dir / "parity" / "reference.safetensors");
    auto model = Model::load(dir);
    const auto& c = model->config();
    CaseReport& rep = reports[name];

    auto ml = model->tokenizer().encode(read_file(test::source_dir() / "tests/parity/multilingual.txt"));
    rep.multilingual_equal = ml == ref["multilingual_ids"].get<std::vector<std::int32_t>>();
    CHECK_MESSAGE(rep.multilingual_equal, "multilingual token ids differ");

    const auto& prompts = ref["prompts"];
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      CAPTURE(i);
      const auto& p = prompts[i];
      auto expected_ids = p["input_ids"].get<std::vector<std::int32_t>>();
      auto ids = model->tokenizer().encode(p["text"].get<std::string>());
      rep.ids_equal = rep.ids_equal && ids == expected_ids;
      CHECK_MESSAGE(ids == expected_ids, "prompt token ids differ");
      // Logits at every position, from the reference ids so the check is independent of the tokenizer.
      KVCache cache(c, 1, static_cast<std::int64_t>(expected_ids.size()));
      StepInput in{{expected_ids}, {0}};
      HiddenCapture cap;
      Tensor logits = model->forward(in, cache, /*all_logits=*/true, &cap);
      Tensor rl = ref_tensor(tensors, "logits." + std::to_string(i));
      REQUIRE(rl.shape() == logits.shape());
      Tensor rh = ref_tensor(tensors, "hidden." + std::to_string(i));
      Tensor rf = ref_tensor(tensors, "final_normed." + std::to_string(i));
      REQUIRE(rh.numel() == cap.states.numel());
      const double el = test::rel_error(logits.data<float>(), rl.data<float>(), rl.numel());
      double eh = 0;
      for (std::int64_t l = 0; l <= c.num_layers; ++l)  // per layer: each has its own scale
        eh = std::max(eh, test::rel_error(cap.states.data<float>() + l * c.hidden_size,
                                          rh.data<float>() + l * c.hidden_size, c.hidden_size));
      const double ef = test::rel_error(cap.final_normed.data<float>(), rf.data<float>(), rf.numel());
      rep.logits = std::max(rep.logits, el);
      rep.hidden = std::max(rep.hidden, eh);
      rep.final_normed = std::max(rep.final_normed, ef);
      CHECK(el < 1e-4);
      CHECK(eh < 1e-4);
      CHECK(ef < 1e-4);
      ++rep.prompts;
    }

    // Greedy generation, all prompts in one packed batch.
    std::vector<std::vector<std::int32_t>> all;
    for (const auto& p : prompts) all.push_back(p["input_ids"].get<std::vector<std::int32_t>>());
    SamplingOptions opts;
    opts.max_new_tokens = 32;
    auto gens = generate(*model, all, opts);
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      CAPTURE(i);
      auto expected = prompts[i]["greedy_ids"].get<std::vector<std::int32_t>>();
      auto margins = prompts[i]["greedy_margins"].get<std::vector<double>>();
      const auto& got = gens[i].new_ids;
      std::size_t same = 0;
      while (same < got.size() && same < expected.size() && got[same] == expected[same]) ++same;
      ++rep.greedy_total;
      if (same == expected.size() && got.size() == expected.size()) {
        ++rep.greedy_equal;
        continue;
      }
      // A divergence is acceptable only at a step where transformers itself saw a near-tie.
      const bool near_tie = same < margins.size() && margins[same] < 1e-4;
      CHECK_MESSAGE(near_tie, "greedy ids diverge at new token " << same << " (margin "
                                                                 << (same < margins.size() ? margins[same] : -1) << ")");
    }
  }
  std::printf("\n%-16s %8s %12s %12s %12s %10s %8s %8s\n", "case", "prompts", "logits_err", "hidden_err", "final_err",
              "greedy==", "ids==", "multi==");
  for (const auto& [name, r] : reports)
    std::printf("%-16s %8d %12.2e %12.2e %12.2e %7d/%-2d %8s %8s\n", name.c_str(), r.prompts, r.logits, r.hidden,
                r.final_normed, r.greedy_equal, r.greedy_total, r.ids_equal ? "yes" : "NO",
                r.multilingual_equal ? "yes" : "NO");
}

TEST_CASE("the text model of a vision-language checkpoint, in both tensor namings, is its text case's model") {
  const fs::path root = test::env_path("SPPFT_PARITY_DIR");
  // gemma3 (SigLIP tower), llava (CLIP tower, untied lm_head), mistral3 (Pixtral tower, sliding window),
  // qwen2-vl and qwen2.5-vl (their own towers; the Hub config flat, with multimodal RoPE)
  for (const char* kind : {"gemma3-multimodal", "llava", "mistral3", "qwen2-vl", "qwen2.5-vl"}) {
    CAPTURE(kind);
    REQUIRE_MESSAGE(fs::exists(root / kind / "multimodal.json"), "fixtures missing (make_fixtures.py)");
    const Json fixture = read_json_file(root / kind / "multimodal.json");
    const std::string text_case = fixture["text_case"];
    auto text = Model::load(root / text_case);
    // sppft info counts the tower as transformers does (the parameters outside its language model).
    const auto info = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " info --json " +
                                        (root / kind / "hub").string());
    REQUIRE(info.exit_code == 0);
    const Json j = Json::parse(info.out);
    CHECK(j["vision_tower"]["parameters"] == fixture["vision_parameters"]);
    CHECK(j["multimodal_model_type"] == fixture["model_type"]);
    Json ref = read_json_file(root / text_case / "parity" / "reference.json");
    for (const char* variant : {"hub", "module-names"}) {
      CAPTURE(variant);
      const fs::path dir = root / kind / variant;
      auto mm = Model::load(dir);
      const ModelConfig& c = mm->config();
      CHECK((c.multimodal && c.family == text->config().family && c.model_type == text->config().model_type));
      CHECK(model_config_to_json(c) == model_config_to_json(text->config()));
      CHECK(mm->weight_bytes() == text->weight_bytes());  // the vision tower is not loaded
      // --template chat: llava-hf's USER/ASSISTANT format for llava, the text family's otherwise.
      CHECK(chat_format_for(*mm) == (std::string(kind) == "llava" ? ChatFormat::Llava : chat_format_for(*text)));
      for (const auto& p : ref["prompts"]) {
        const auto ids = p["input_ids"].get<std::vector<std::int32_t>>();
        CHECK(mm->tokenizer().encode(p["text"].get<std::string>()) == ids);
        KVCache ca(c, 1, static_cast<std::int64_t>(ids.size())), cb(c, 1, static_cast<std::int64_t>(ids.size()));
        const Tensor a = mm->forward({{ids}, {0}}, ca, true), b = text->forward({{ids}, {0}}, cb, true);
        REQUIRE(a.shape() == b.shape());
        CHECK(std::equal(a.data<float>(), a.data<float>() + a.numel(), b.data<float>()));  // the same weights, bit for bit
      }
      // A save writes the whole multimodal checkpoint in the source's naming: the text model's
      // weights, and the vision tower and projector unchanged, byte for byte; it loads back to the
      // same logits, and into this model (load_weights_from compares architectures).
      const fs::path out = test::temp_dir(std::string("mm-saved-") + kind + "-" + variant);
      mm->save(out);
      CHECK(read_json_file(out / "config.json") == read_json_file(dir / "config.json"));  // float32 as the fixture
      const Checkpoint source(dir), written(out);
      CHECK(written.entries().size() == source.entries().size());
      std::size_t tower = 0;
      for (const auto& [name, e] : source.entries()) {
        CAPTURE(name);
        REQUIRE(written.has(name));
        const TensorEntry& w = written.entry(name);
        CHECK((w.dtype == e.dtype && w.shape == e.shape && w.nbytes == e.nbytes));
        CHECK(std::memcmp(w.data, e.data, e.nbytes) == 0);
        tower += is_vision_tower_tensor(name);
      }
      CHECK(tower > 0);
      auto back = Model::load(out, false);
      for (const auto& p : ref["prompts"]) {
        const auto ids = p["input_ids"].get<std::vector<std::int32_t>>();
        KVCache ca(c, 1, static_cast<std::int64_t>(ids.size())), cb(c, 1, static_cast<std::int64_t>(ids.size()));
        const Tensor a = back->forward({{ids}, {0}}, ca, true), b = text->forward({{ids}, {0}}, cb, true);
        CHECK(std::equal(a.data<float>(), a.data<float>() + a.numel(), b.data<float>()));
      }
      mm->load_weights_from(out);
      // In bf16, sharded: the tower converted like the text model, every dtype in the config updated.
      const fs::path bf16 = test::temp_dir(std::string("mm-saved-bf16-") + kind + "-" + variant);
      mm->save(bf16, DType::BF16, 4096);
      const Json config = read_json_file(bf16 / "config.json");
      CHECK(config.value("torch_dtype", config.value("dtype", "")) == "bfloat16");
      const Checkpoint sharded(bf16);
      CHECK(sharded.shard_count() > 1);
      CHECK(sharded.entries().size() == source.entries().size());
      for (const auto& [name, e] : sharded.entries()) {
        CAPTURE(name);
        CHECK(e.dtype == DType::BF16);
        const TensorEntry& s = source.entry(name);
        std::vector<float> a(shape_numel(e.shape)), b(a.size());
        convert_to_f32(e.data, e.dtype, a.data(), a.size());
        convert_to_f32(s.data, s.dtype, b.data(), b.size());
        for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == bf16_to_f32(f32_to_bf16(b[i])));
      }
      fs::remove_all(out);
      fs::remove_all(bf16);
    }
  }
}

TEST_CASE("sppft info names a partial rotary (phi3-longrope: Phi-4-mini's 0.75)") {
  const fs::path dir = test::env_path("SPPFT_PARITY_DIR") / "phi3-longrope";
  REQUIRE_MESSAGE(fs::exists(dir / "config.json"), "fixtures missing (make_fixtures.py)");
  const std::string info = test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " info " + dir.string();
  const auto text = test::run_command(info);
  REQUIRE(text.exit_code == 0);
  CHECK(text.out.find("on the first 12 of 16 dimensions of each head") != std::string::npos);
  const auto json = test::run_command(info + " --json");
  REQUIRE(json.exit_code == 0);
  CHECK(Json::parse(json.out)["partial_rotary_factor"] == 0.75);
  const auto full = test::run_command(test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " info " +
                                      (dir.parent_path() / "phi3").string());
  CHECK(full.out.find("dimensions of each head") == std::string::npos);
}

TEST_CASE("a multimodal Gemma-3 whose source checkpoint is gone saves its text model, with a warning") {
  const fs::path root = test::env_path("SPPFT_PARITY_DIR");
  REQUIRE_MESSAGE(fs::exists(root / "gemma3-multimodal" / "multimodal.json"), "fixtures missing (make_fixtures.py)");
  const fs::path src = test::temp_dir("mm-moved"), out = test::temp_dir("mm-moved-out");
  fs::copy(root / "gemma3-multimodal" / "hub", src, fs::copy_options::recursive);
  auto mm = Model::load(src);
  fs::remove(src / "model.safetensors");
  mm->save(out);
  const Json saved = read_json_file(out / "config.json");
  CHECK(saved["model_type"] == "gemma3_text");
  CHECK(saved["architectures"] == Json::array({"Gemma3ForCausalLM"}));
  const Checkpoint written(out);
  for (const auto& [name, e] : written.entries()) CHECK_MESSAGE(name.rfind("model.", 0) == 0, name);
  mm->load_weights_from(out);
  fs::remove_all(src);
  fs::remove_all(out);
}
