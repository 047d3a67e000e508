// Whole-model backward against PyTorch autograd on the transformers-made models
// (tests/parity/make_fixtures.py writes the loss and every gradient), the freeze
// plan's exactness, and a saved checkpoint read back by transformers itself.
// Tolerance: every gradient within 1e-4 of its own scale (max |a-b| / max |b|).
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <map>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "models/model.h"
#include "models/prompting.h"
#include "models/training.h"
#include "test_util.h"
#include "trainer/dataset.h"
#include "trainer/freeze.h"
#include "trainer/memory_plan.h"

using namespace sppft;

namespace {

std::vector<fs::path> cases() {
  fs::path root = test::env_path("SPPFT_PARITY_DIR");
  std::vector<fs::path> out;
  if (!root.empty() && fs::exists(root))
    for (auto& e : fs::directory_iterator(root))
      if (fs::exists(e.path() / "parity" / "grads.safetensors")) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

struct GradRun {
  double loss;
  std::map<std::string, Tensor> grads;  // trainable parameters only
};

GradRun run_grads(Model& m, const Json& train, const FreezePlan& plan) {
  const auto& c = m.config();
  auto ids = train["input_ids"].get<std::vector<std::vector<std::int32_t>>>();
  auto labels = train["labels"].get<std::vector<std::vector<std::int32_t>>>();
  std::int64_t total = 0;
  for (auto& s : ids) total += static_cast<std::int64_t>(s.size());
  ModelWeights grads;
  grads.blocks.resize(c.num_layers);
  auto weights = m.parameters();
  auto slots = named_parameters(c, grads);
  GradRun r;
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (plan.trains(weights[i].name, weights[i].block, c)) {
      *slots[i].tensor = Tensor::zeros(weights[i].tensor->shape(), DType::F32, MemCategory::Grads);
      r.grads[weights[i].name] = *slots[i].tensor;
    }
  bind_fused_views(c, grads);
  TrainingGraph g(m, block_modes(plan, c.num_layers), total, /*loss_chunk=*/7);  // odd chunk: several chunks
  std::vector<TrainSequence> batch;
  for (std::size_t s = 0; s < ids.size(); ++s) batch.push_back({&ids[s], &labels[s]});
  const auto tokens = train["loss_tokens"].get<std::int64_t>();
  LossSum l = g.step(batch, grads, 1.0f / static_cast<float>(tokens));
  CHECK(l.tokens == tokens);
  r.loss = l.sum / static_cast<double>(l.tokens);
  return r;
}

// Loads `dir` in transformers (check_saved.py) and compares its logits with m's on the reference
// prompts; check_saved.py's JSON line.
Json transformers_check(Model& m, const fs::path& dir, const Json& ref) {
  const fs::path py = test::build_dir() / "pyenv/bin/python";
  REQUIRE_MESSAGE(fs::exists(py), "the Python test references are missing: scripts/install-deps.sh --python");
  Json ids = Json::object();
  ids["input_ids"] = Json::array();
  std::vector<Tensor> logits;
  std::vector<TensorToWrite> tensors;
  std::vector<std::string> names;
  for (std::size_t i = 0; i < ref["prompts"].size(); ++i) {
    auto p = ref["prompts"][i]["input_ids"].get<std::vector<std::int32_t>>();
    ids["input_ids"].push_back(p);
    KVCache cache(m.config(), 1, static_cast<std::int64_t>(p.size()));
    logits.push_back(m.forward({{p}, {0}}, cache, true));
    names.push_back("logits." + std::to_string(i));
  }
  for (std::size_t i = 0; i < logits.size(); ++i) tensors.push_back({names[i], DType::F32, logits[i].shape(), logits[i].raw()});
  const fs::path logits_file = dir.parent_path() / (dir.filename().string() + ".logits.safetensors"),
                 ids_file = dir.parent_path() / (dir.filename().string() + ".ids.json");
  write_safetensors(logits_file, tensors);
  atomic_write_text(ids_file, ids.dump());
  auto r = test::run_command(py.string() + " " + (test::source_dir() / "tests/parity/check_saved.py").string() + " " +
                             dir.string() + " --ids-json " + ids_file.string() + " --logits-safetensors " +
                             logits_file.string() + " 2>/dev/null");
  fs::remove(logits_file);
  fs::remove(ids_file);
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  return Json::parse(r.out.substr(r.out.rfind('{')));
}

}  // namespace

TEST_CASE("every gradient matches PyTorch autograd; frozen blocks change nothing else") {
  auto all = cases();
  REQUIRE_MESSAGE(all.size() >= 8, "fixtures missing: run tests/parity/make_fixtures.py $SPPFT_PARITY_DIR (ctest does)");
  std::printf("\n%-16s %12s %14s %10s\n", "case", "loss_err", "max_grad_err", "grads");
  for (const auto& dir : all) {
    const std::string name = dir.filename().string();
    CAPTURE(name);
    Json ref = read_json_file(dir / "parity" / "reference.json");
    const Json& train = ref["train"];
    Checkpoint want = Checkpoint::from_file(dir / "parity" / "grads.safetensors");
    auto m = Model::load(dir, false);
    const auto& c = m->config();
    GradRun full = run_grads(*m, train, FreezePlan::none(c.num_layers));
    const double loss_err = std::abs(full.loss - train["loss"].get<double>()) / std::abs(train["loss"].get<double>());
    CHECK(loss_err < 1e-5);
    double worst = 0;
    CHECK(full.grads.size() == want.entries().size());
    for (const auto& [pname, e] : want.entries()) {
      CAPTURE(pname);
      REQUIRE(full.grads.count(pname));
      Tensor w = want.load_f32(pname, e.shape, MemCategory::Workspace);
      const double err = test::rel_error(full.grads[pname].data<float>(), w.data<float>(), w.numel());
      worst = std::max(worst, err);
      CHECK(err < 1e-4);
    }
    std::printf("%-16s %12.2e %14.2e %10zu\n", name.c_str(), loss_err, worst, full.grads.size());

    // Freeze block 1: its attention/MLP weights get no gradient buffer at all, every other
    // gradient is unchanged (the frozen block still passes activation gradients through).
    FreezePlan plan = FreezePlan::from_ranges({{1, 1}}, c.num_layers);
    GradRun frozen = run_grads(*m, train, plan);
    CHECK(frozen.loss == full.loss);
    std::size_t expected_frozen = train["frozen_params"].size();
    CHECK(frozen.grads.size() + expected_frozen == full.grads.size());
    for (const auto& fp : train["frozen_params"]) CHECK(frozen.grads.count(fp.get<std::string>()) == 0);
    for (auto& [pname, g] : frozen.grads)
      CHECK(test::rel_error(g.data<float>(), full.grads[pname].data<float>(), g.numel()) < 1e-6);
  }
}

TEST_CASE("a checkpoint sppft saves loads in transformers with the same logits") {
  auto all = cases();
  REQUIRE(!all.empty());
  // fused, tied, GQA+rope scaling, sandwich norms, q/k norms, the Hub's gemma3 layout, and the
  // vision-language checkpoints in both namings (saved with their vision towers as
  // Gemma3/Llava/Mistral3/Qwen2_5_VLForConditionalGeneration; prompts of their text cases)
  const std::map<std::string, std::string> multimodal_of = {
      {"gemma3", "gemma3-multimodal"}, {"llama2", "llava"}, {"mistral", "mistral3"}, {"qwen2", "qwen2.5-vl"}};
  std::vector<std::pair<std::string, fs::path>> saved;  // name, checkpoint
  std::map<std::string, fs::path> ref_dirs;              // name -> the case whose reference applies
  for (const auto& dir : all) {
    const std::string name = dir.filename().string();
    if (name == "phi3" || name == "gemma" || name == "llama3" || name == "gemma2" || name == "qwen3" || name == "gemma3")
      saved.emplace_back(name, dir);
    ref_dirs[name] = dir;
    if (auto it = multimodal_of.find(name); it != multimodal_of.end())
      for (const char* variant : {"hub", "module-names"}) {
        const std::string mm = it->second + "-" + variant;
        saved.emplace_back(mm, dir.parent_path() / it->second / variant);
        ref_dirs[mm] = dir;
      }
  }
  REQUIRE(saved.size() == 14);
  for (const auto& [name, dir] : saved) {
    CAPTURE(name);
    const bool multimodal = ref_dirs.at(name) != dir;
    const fs::path ref_dir = ref_dirs.at(name);
    auto m = Model::load(dir, false);
    // Perturb the weights so the check is not satisfied by the original files.
    for (auto& p : m->parameters()) p.tensor->data<float>()[0] += 0.125f;
    fs::path out = test::temp_dir("saved-" + name);
    m->save(out, DType::F32, name == "llama3" ? 60000 : std::size_t{5} << 30);  // llama3: sharded
    for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "generation_config.json"})
      if (fs::exists(dir / f)) fs::copy_file(dir / f, out / f);
    const Json j = transformers_check(*m, out, read_json_file(ref_dir / "parity" / "reference.json"));
    CHECK(j["max_rel_logit_err"].get<double>() < 1e-4);
    if (multimodal)  // the tower came along
      CHECK(j["model_class"].get<std::string>().find("ForConditionalGeneration") != std::string::npos);
    std::printf("%-16s saved checkpoint -> transformers: max rel logit error %.2e\n", name.c_str(),
                j["max_rel_logit_err"].get<double>());
    fs::remove_all(out);
  }
}

TEST_CASE("a tied config over a checkpoint with its own lm_head runs untied, as transformers does") {
  // gemma's config ties; a checkpoint beside it that holds an lm_head of other values is run with
  // it (transformers 5 warns and keeps both), one whose lm_head equals the embeddings stays tied.
  const fs::path root = test::env_path("SPPFT_PARITY_DIR");
  REQUIRE_MESSAGE(fs::exists(root / "gemma" / "parity" / "reference.json"), "fixtures missing (make_fixtures.py)");
  const Json ref = read_json_file(root / "gemma" / "parity" / "reference.json");
  for (const bool differs : {true, false}) {
    CAPTURE(differs);
    const fs::path dir = test::temp_dir(differs ? "untied" : "tied-copy");
    fs::copy(root / "gemma", dir, fs::copy_options::recursive);
    fs::remove_all(dir / "parity");
    std::vector<float> lm_head;
    {
      const Checkpoint ckpt(dir);
      REQUIRE(!ckpt.has("lm_head.weight"));
      const Tensor embed = ckpt.load_f32("model.embed_tokens.weight", ckpt.entry("model.embed_tokens.weight").shape,
                                         MemCategory::Weights);
      lm_head.assign(embed.data<float>(), embed.data<float>() + embed.numel());
      if (differs)
        for (std::size_t i = 0; i < lm_head.size(); ++i) lm_head[i] = lm_head[i] * 0.5f + 0.01f * static_cast<float>(i % 7);
      std::vector<TensorToWrite> tensors;
      for (const auto& [name, e] : ckpt.entries()) tensors.push_back({name, e.dtype, e.shape, e.data});
      tensors.push_back({"lm_head.weight", DType::F32, embed.shape(), lm_head.data()});
      write_safetensors(dir / "model.safetensors.new", tensors);
    }
    fs::rename(dir / "model.safetensors.new", dir / "model.safetensors");
    CHECK(load_model_config(dir).tie_word_embeddings == !differs);  // what the planner and `sppft memory DIR` see
    auto m = Model::load(dir, false);
    CHECK(m->config().tie_word_embeddings == !differs);
    const Json j = transformers_check(*m, dir, ref);
    CHECK(j["tied_effective"] == !differs);
    CHECK(j["max_rel_logit_err"].get<double>() < 1e-4);
    std::printf("gemma + its own lm_head (%s): sppft runs it %s, max rel logit error vs transformers %.2e\n",
                differs ? "other values" : "the embeddings' values", differs ? "untied" : "tied",
                j["max_rel_logit_err"].get<double>());
    // A save writes what it ran: untied, with its lm_head, and says so in config.json.
    const fs::path out = test::temp_dir(differs ? "untied-saved" : "tied-saved");
    m->save(out);
    CHECK(read_json_file(out / "config.json")["tie_word_embeddings"] == !differs);
    CHECK(Checkpoint(out).has("lm_head.weight") == differs);
    fs::remove_all(out);
    fs::remove_all(dir);
  }
}

TEST_CASE("sppft train on a multimodal Gemma-3 checkpoint writes it back whole, frozen block and tower unchanged") {
  const fs::path root = test::env_path("SPPFT_PARITY_DIR");
  REQUIRE_MESSAGE(fs::exists(root / "gemma3-multimodal" / "multimodal.json"), "fixtures missing (make_fixtures.py)");
  const fs::path src = test::temp_dir("mm-train-src"), out = test::temp_dir("mm-train-out");
  fs::copy(root / "gemma3-multimodal" / "module-names", src, fs::copy_options::recursive);
  atomic_write_text(src / "preprocessor_config.json", "{\"image_processor_type\": \"Gemma3ImageProcessor\"}\n");
  const std::string train = test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " train " + src.string() + " --data " +
                            (test::source_dir() / "data/finetune_normal.json").string() + " --out " + out.string() +
                            " --freeze 1-2 --micro-batch 2 --cutoff 512 --val-size 4 --lr 1e-3";
  auto r = test::run_command(train + " --max-steps 1 2>&1");
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  // Resumed from its checkpoint (a multimodal one: load_weights_from reads either naming).
  r = test::run_command(train + " --max-steps 2 --resume 2>&1");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("resumed from") != std::string::npos);
  CHECK(read_json_file(out / "config.json") == read_json_file(src / "config.json"));  // fp32 on the CPU, as the source
  CHECK(read_file(out / "preprocessor_config.json") == read_file(src / "preprocessor_config.json"));
  const Checkpoint source(src);
  for (const fs::path& dir : {out, out / "checkpoint"}) {  // the final model and the resumable state
    CAPTURE(dir);
    const Checkpoint trained(dir);
    CHECK(trained.entries().size() == source.entries().size());
    std::size_t same = 0, changed = 0;
    for (const auto& [name, e] : source.entries()) {
      CAPTURE(name);
      REQUIRE(trained.has(name));
      const TensorEntry& t = trained.entry(name);
      REQUIRE(t.nbytes == e.nbytes);
      const bool equal = std::memcmp(t.data, e.data, e.nbytes) == 0;
      const bool tower = name.find("vision_tower.") != std::string::npos || name.find("multi_modal_projector.") != std::string::npos;
      const bool in_frozen_block = name.find(".layers.1.") != std::string::npos || name.find(".layers.2.") != std::string::npos;
      const bool frozen = in_frozen_block && name.find("_proj.") != std::string::npos;  // attention and MLP weights
      if (tower || frozen) CHECK(equal);
      same += tower || frozen;
      changed += name.find(".layers.0.self_attn.q_proj.") != std::string::npos && !equal;
    }
    CHECK(same > 0);
    CHECK(changed == 1);  // a trainable block moved
  }
  auto back = Model::load(out);
  CHECK(back->config().multimodal);
  fs::remove_all(src);
  fs::remove_all(out);
}

TEST_CASE("llava: chat records render as LLaVA-1.5's vicuna_v1 conversation") {
  const fs::path root = test::env_path("SPPFT_PARITY_DIR");
  REQUIRE_MESSAGE(fs::exists(root / "llava" / "multimodal.json"), "fixtures missing (make_fixtures.py)");
  auto m = Model::load(root / "llava" / "hub");
  REQUIRE(chat_format_for(*m) == ChatFormat::Llava);
  SftRecord r;
  r.messages = {{"system", "Be brief."}, {"user", "Name a color"}, {"assistant", "Blue."}, {"user", "Another"}, {"assistant", "Red."}};
  DataOptions o;
  o.tmpl = PromptTemplate::Chat;
  o.cutoff = 4096;
  const std::vector<SftExample> exs = tokenize_record(*m, r, o, "t");
  REQUIRE(exs.size() == 1);
  const SftExample& ex = exs[0];
  const auto expected =
      m->tokenizer().encode("<s>Be brief. USER: Name a color ASSISTANT: Blue.</s>USER: Another ASSISTANT: Red.</s>", false);
  CHECK(ex.ids == expected);
  std::vector<std::int32_t> trained;
  for (std::size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.labels[i] != kIgnoreLabel) trained.push_back(ex.ids[i]);
  const std::string text = m->tokenizer().decode(trained);
  CHECK((text.find("Blue.") != std::string::npos && text.find("Red.") != std::string::npos));
  CHECK((text.find("USER") == std::string::npos && text.find("brief") == std::string::npos));
  CHECK(chat_prompt({"hi", ""}, chat_format_for(*m)) == "<s>USER: hi ASSISTANT:");  // one turn, as --template chat
}
