// Malformed inputs: every kind of file a user hands the engine - safetensors (single and sharded),
// config.json, tokenizer.json and tokenizer_config.json, chat templates, fine-tuning data, prompt
// files - is mutated many ways (seeded, so every failure reproduces) and read. Each read must
// succeed or throw an InputError whose message is one line naming the file; any other exception
// fails the test, and a crash or hang fails it too. Under AddressSanitizer / UBSan
// (`cmake -DSPPFT_SANITIZE=ON`, docs/design.md) the same run also checks that no mutation reads
// out of bounds or overflows.
//
// SPPFT_FUZZ_ITERATIONS=N sets the mutations per target (default 300); SPPFT_FUZZ_SEED=S the seed.
// A failing input is written to the test's scratch directory, named in the failure. The mutators
// are in tests/fuzz_util.h.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

#include "engine/chat_template.h"
#include "engine/error.h"
#include "engine/fs.h"
#include "engine/json.h"
#include "engine/prompts.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"
#include "fuzz_util.h"
#include "models/config.h"
#include "models/presets.h"
#include "test_util.h"
#include "trainer/dataset.h"
#include "trainer/memory_plan.h"

using sppft::InputError;
using sppft::Json;
using namespace sppft::test;
namespace fs = std::filesystem;
namespace test = sppft::test;

TEST_CASE("mutated safetensors files load or fail with an InputError naming the file") {
  const fs::path dir = test::temp_dir("fuzz-safetensors");
  const fs::path base = dir / "base.safetensors";
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<std::uint16_t> b = {0x3f80, 0x4000, 0x4040, 0x4080};
  const std::vector<std::uint16_t> c = {0x3c00, 0x4000};
  sppft::write_safetensors(base,
                           {{"model.a", sppft::DType::F32, {2, 3}, a.data()},
                            {"model.b", sppft::DType::BF16, {4}, b.data()},
                            {"model.c", sppft::DType::F16, {1, 1, 2}, c.data()}},
                           {{"format", "pt"}});
  const std::string original = bytes_of(base);
  const SafetensorsParts parts = split_safetensors(original);
  Mutator m(base_seed());
  Tally tally;
  const fs::path file = dir / "model.safetensors";
  for (int i = 0; i < iterations(); ++i) {
    std::string bytes;
    const std::size_t mode = m.below(3);
    if (mode == 0) {  // a structurally changed header, its length right
      Json h = parts.header;
      bytes = join_safetensors(m.mutate_document(h, 100), parts.data);
    } else if (mode == 1) {  // a byte-level change inside the header, its length right
      Json h = parts.header;
      bytes = join_safetensors(m.mutate_document(h, 0), parts.data);
    } else {  // any byte of the file, the length field included
      bytes = m.mutate_text(original, kJsonTokens);
    }
    write_bytes(file, bytes);
    expect_input_error_or_success(tally, "safetensors", i, file, "model.safetensors", [&] {
      const sppft::Checkpoint ckpt = sppft::Checkpoint::from_file(file);
      for (const auto& [name, e] : ckpt.entries()) {
        // Whatever loads must lie inside the file and read back in full.
        const sppft::Tensor t = ckpt.load_f32(name, e.shape, sppft::MemCategory::Weights);
        CHECK(t.numel() * static_cast<std::int64_t>(sppft::dtype_size(e.dtype)) == static_cast<std::int64_t>(e.nbytes));
      }
    });
  }
  MESSAGE("safetensors: " << tally.accepted << " loaded, " << tally.rejected << " rejected");
  CHECK(tally.rejected > iterations() / 2);
}

TEST_CASE("mutated sharded-checkpoint indexes load or fail with an InputError") {
  const fs::path dir = test::temp_dir("fuzz-index");
  const std::vector<float> a = {1, 2, 3, 4};
  sppft::write_safetensors(dir / "model-00001-of-00002.safetensors", {{"x.weight", sppft::DType::F32, {2, 2}, a.data()}});
  sppft::write_safetensors(dir / "model-00002-of-00002.safetensors", {{"y.weight", sppft::DType::F32, {4}, a.data()}});
  const Json index = {{"metadata", {{"total_size", 32}}},
                      {"weight_map",
                       {{"x.weight", "model-00001-of-00002.safetensors"}, {"y.weight", "model-00002-of-00002.safetensors"}}}};
  Mutator m(base_seed() + 1);
  Tally tally;
  const fs::path file = dir / "model.safetensors.index.json";
  for (int i = 0; i < iterations(); ++i) {
    Json j = index;
    write_bytes(file, m.mutate_document(j, 70));
    expect_input_error_or_success(tally, "index", i, file, dir.string(), [&] {
      const sppft::Checkpoint ckpt(dir);
      for (const auto& [name, e] : ckpt.entries()) (void)ckpt.load_f32(name, e.shape, sppft::MemCategory::Weights);
    });
  }
  MESSAGE("index: " << tally.accepted << " loaded, " << tally.rejected << " rejected");
  CHECK(tally.rejected > 0);
}

TEST_CASE("mutated config.json files of every preset parse, round-trip, or fail with an InputError") {
  const fs::path dir = test::temp_dir("fuzz-config");
  Mutator m(base_seed() + 2);
  Tally tally;
  const auto names = sppft::preset_names();
  for (int i = 0; i < iterations(); ++i) {
    const std::string& preset = names[m.below(names.size())];
    Json j = sppft::model_config_to_json(sppft::preset_config(preset));
    const std::string text = m.mutate_document(j, 85);
    const fs::path saved = dir / ("config-" + std::to_string(i) + ".json");
    write_bytes(saved, text);
    expect_input_error_or_success(tally, "config (" + preset + ")", i, saved, "config.json", [&] {
      const sppft::ModelConfig c = sppft::parse_model_config(sppft::parse_json(text, "config.json"), "config.json");
      // What is accepted must be what sppft writes back and reads again.
      const sppft::ModelConfig again = sppft::parse_model_config(sppft::model_config_to_json(c), "config.json (saved)");
      CHECK(sppft::model_config_to_json(again) == sppft::model_config_to_json(c));
      // And plans memory without overflowing (UBSan checks every product), frozen middle or not.
      sppft::FreezePlan plan = sppft::FreezePlan::none(c.num_layers);
      plan.block_frozen[static_cast<std::size_t>(c.num_layers / 2)] = true;
      for (const auto precision : {sppft::Precision::FP32, sppft::Precision::BF16Mixed}) {
        const auto bytes = sppft::plan_training_memory(c, plan, 2, 64, precision);
        CHECK(bytes.trainable_params > 0);
        CHECK(bytes.total() < (std::size_t{1} << 62));
      }
    });
  }
  MESSAGE("config: " << tally.accepted << " parsed, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);
}

TEST_CASE("mutated tokenizer.json, tokenizer_config.json and generation_config.json load or fail with an InputError") {
  const fs::path dir = test::temp_dir("fuzz-tok");
  const Json tokenizer = Json::parse(test::tiny_bpe_tokenizer_json());
  const Json config = {{"bos_token", "<|bos|>"},
                       {"eos_token", {{"content", "<|eot|>"}, {"special", true}}},
                       {"add_bos_token", true},
                       {"added_tokens_decoder", {{"268", {{"content", "<x>"}, {"special", false}}}}},
                       {"chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"}};
  Json listed = config;  // the older form: named templates
  listed["chat_template"] = {{{"name", "tool_use"}, {"template", "{{ tools }}"}},
                             {{"name", "default"}, {"template", "{% for m in messages %}{{ m.content }}{% endfor %}"}}};
  const Json generation = {{"bos_token_id", 1}, {"eos_token_id", {2, 3}}};
  const char* kFiles[] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
  Mutator m(base_seed() + 3);
  Tally tally;
  for (int i = 0; i < iterations(); ++i) {
    Json docs[] = {tokenizer, m.chance(50) ? config : listed, generation};
    const std::size_t k = m.chance(60) ? 0 : 1 + m.below(2);
    for (std::size_t f = 0; f < 3; ++f) write_bytes(dir / kFiles[f], f == k ? m.mutate_document(docs[f], 80) : docs[f].dump());
    expect_input_error_or_success(tally, kFiles[k], i, dir / kFiles[k], kFiles[k], [&] {
      const auto tok = sppft::load_tokenizer(dir);
      for (const char* s : {"hello world <x>", "Zoë 東京 🍮\t\n", "<|eot|><|bos|>", ""}) {
        const auto ids = tok->encode(s);
        for (const std::int32_t id : ids) CHECK(id >= 0);
        for (const std::int32_t id : ids) CHECK(id < tok->vocab_size());
        (void)tok->decode(ids);
        (void)tok->decode(ids, false);
      }
      (void)sppft::read_chat_template(dir);
    });
  }
  MESSAGE("tokenizer: " << tally.accepted << " loaded, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);
}

TEST_CASE("mutated Hub chat templates parse and render or fail with an InputError") {
  // The templates of tests/engine/chat_templates (real Hub templates), mutated at the character
  // level with Jinja's own tokens inserted, rendered with a conversation that has a system prompt,
  // tool calls and a generation prompt.
  std::vector<std::pair<std::string, std::string>> templates;
  for (const auto& e : fs::directory_iterator(test::source_dir() / "tests/engine/chat_templates")) {
    const Json j = sppft::read_json_file(e.path());
    if (!j.contains("text") || !j["text"].is_string()) continue;  // files of several templates
    templates.emplace_back(j.value("name", e.path().filename().string()), j["text"].get<std::string>());
  }
  REQUIRE(!templates.empty());
  const std::vector<std::string> tokens = {"{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]", "|",
                                           "'", "\"", "~", "*", "**", "/", "//", "%", ".", ",", ":", "loop.",
                                           " if ", " else ", " for x in ", " endfor ", " endif ", " not ", " in ",
                                           "messages", "[0]", "[-1]", "[::-1]", "|length", "|tojson", "|trim",
                                           "raise_exception('x')", "namespace(a=1)", " is defined ", "999999999"};
  nlohmann::ordered_json vars = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "What is 2+2?"},
      {"role": "assistant", "content": "4", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
      {"role": "tool", "content": "4"},
      {"role": "user", "content": "Thanks"}
    ],
    "tools": [{"type": "function", "function": {"name": "add", "description": "Adds",
               "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"
  })");
  const fs::path dir = test::temp_dir("fuzz-chat-template");
  Mutator m(base_seed() + 4);
  Tally tally;
  for (int i = 0; i < iterations(); ++i) {
    const auto& [name, original] = templates[m.below(templates.size())];
    std::string text = original;
    for (std::size_t k = 0, n = 1 + m.below(3); k < n; ++k) text = m.mutate_text(text, tokens);
    const fs::path saved = dir / ("template-" + std::to_string(i) + ".jinja");
    write_bytes(saved, text);
    expect_input_error_or_success(tally, "chat template " + name, i, saved, "chat_template.jinja", [&] {
      const sppft::ChatTemplate t(text, "chat_template.jinja");
      (void)t.render(vars);
    });
  }
  MESSAGE("chat templates: " << tally.accepted << " rendered, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);
}

TEST_CASE("mutated fine-tuning data and prompt files read or fail with an InputError") {
  const fs::path dir = test::temp_dir("fuzz-data");
  const Json alpaca = Json::parse(R"([
    {"instruction": "Name a color.", "input": "", "output": "Blue."},
    {"instruction": "Add", "input": "2 and 3", "output": "5"}])");
  const Json chat = Json::parse(R"([
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}]},
    {"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "c"}]}])");
  const std::string csv = "goal,target\n\"Write a, poem\",Sure\nplain line,x\n\"quoted \"\"inner\"\"\",y\n";
  Mutator m(base_seed() + 5);
  Tally tally;
  for (int i = 0; i < iterations(); ++i) {
    const std::size_t kind = m.below(4);
    if (kind <= 2) {
      Json j = kind == 0 ? alpaca : chat;
      std::string text = m.mutate_document(j, 75);
      if (kind == 2 && j.is_array()) {  // the same records as JSON lines
        text.clear();
        for (const Json& r : j) text += r.dump() + "\n";
      }
      const fs::path file = dir / (kind == 2 ? "train.jsonl" : "train.json");
      write_bytes(file, text);
      expect_input_error_or_success(tally, file.filename().string(), i, file, file.filename().string(),
                                    [&] { (void)sppft::read_sft_file(file); });
      const fs::path prompts = dir / (kind == 2 ? "prompts.jsonl" : "prompts.json");
      write_bytes(prompts, text);
      expect_input_error_or_success(tally, prompts.filename().string(), i, prompts, prompts.filename().string(),
                                    [&] { (void)sppft::read_prompt_file(prompts); });
    } else {
      const fs::path file = dir / "prompts.csv";
      write_bytes(file, m.mutate_text(m.mutate_text(csv, {"\"", ",", "\n", "\r", "\"\""}), {"\"", ","}));
      expect_input_error_or_success(tally, "prompts.csv", i, file, "prompts.csv",
                                    [&] { (void)sppft::read_prompt_file(file); });
    }
  }
  MESSAGE("data: " << tally.accepted << " read, " << tally.rejected << " rejected");
  CHECK(tally.accepted > 0);
  CHECK(tally.rejected > 0);
}
