#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "engine/json.h"
#include "engine/prompts.h"
#include "engine/tokenizer_impl.h"
#include "engine/tokenizer_train.h"
#include "models/model.h"

namespace sppft::test {

namespace {
std::vector<std::filesystem::path>& temp_dirs() {
  static std::vector<std::filesystem::path> dirs;
  return dirs;
}
}  // namespace

std::filesystem::path temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() / ("sppft-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  if (std::find(temp_dirs().begin(), temp_dirs().end(), p) == temp_dirs().end()) temp_dirs().push_back(p);
  return p;
}

void finish_temp_dirs(bool all_passed) {
  const char* keep = std::getenv("SPPFT_KEEP_TEST_DIRS");
  if (all_passed && !(keep && *keep && std::string(keep) != "0")) {
    std::error_code ec;
    for (const auto& d : temp_dirs()) std::filesystem::remove_all(d, ec);
    return;
  }
  for (const auto& d : temp_dirs()) std::printf("test files kept in %s\n", d.c_str());
}

CommandResult run_command(const std::string& cmd) {
  // stderr joins stdout unless the command redirects it itself.
  const bool own = cmd.find("2>") != std::string::npos;
  std::FILE* p = ::popen((own ? cmd : cmd + " 2>&1").c_str(), "r");
  CommandResult r{-1, ""};
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

void write_turn_rewriting_chat_template(const std::filesystem::path& dir) {
  atomic_write_text(dir / "chat_template.jinja",
                    "{% for m in messages %}{% if m.role == 'assistant' and not loop.last %}<a>{{ m.content | length }}</a>"
                    "{% else %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endif %}{% endfor %}"
                    "{% if add_generation_prompt %}<assistant>{% endif %}");
}

void make_tiny_checkpoint(const std::filesystem::path& dir, const std::string& config_json) {
  std::vector<std::string> lines;
  for (auto& r : read_prompt_file(source_dir() / "data/normal.csv")) lines.push_back(r.instruction);
  for (auto& r : read_prompt_file(source_dir() / "data/malicious.csv")) lines.push_back(r.instruction);
  SentencePieceTrainOptions o;
  o.vocab_size = 400;
  train_sentencepiece(lines, dir, o);
  auto tok = load_tokenizer(dir);
  Json j = Json::parse(R"({"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, "eos_token_id": 2, "bos_token_id": 1})");
  j["vocab_size"] = tok->vocab_size();
  j.update(Json::parse(config_json));
  Model::random(parse_model_config(j, "tiny checkpoint"), 1, 0.1f)->save(dir);
}

std::string tiny_bpe_tokenizer_json(const std::string& merges_json) {
  Json vocab = Json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    sppft::tok::append_utf8(s, sppft::tok::byte_to_unicode(static_cast<unsigned char>(b)));
    vocab[s] = id++;
  }
  for (const char* t : {"he", "ll", "hell", "hello", "Ġw", "Ġwo", "or", "Ġwor", "ld", "Ġworld"}) vocab[t] = id++;
  Json j = {
      {"version", "1.0"},
      {"added_tokens",
       Json::array({{{"id", 266}, {"content", "<|bos|>"}, {"special", true}, {"normalized", false}},
                    {{"id", 267}, {"content", "<|eot|>"}, {"special", true}, {"normalized", false}},
                    {{"id", 268}, {"content", "<x>"}, {"special", false}, {"normalized", false}, {"lstrip", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         Json::array({{{"type", "Split"},
                       {"pattern", {{"Regex", R"( ?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"}}},
                       {"behavior", "Isolated"},
                       {"invert", false}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", Json::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", Json::array()},
        {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {266}}, {"tokens", {"<|bos|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::parse(merges_json)}}},
  };
  return j.dump();
}

}  // namespace sppft::test
