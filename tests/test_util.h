// Shared helpers for the tests: paths from the environment, tensor comparison,
// running the CLI.
#pragma once

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/fs.h"
#include "engine/json.h"
#include "engine/tensor.h"

namespace sppft::test {

inline std::filesystem::path env_path(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}
inline std::filesystem::path source_dir() { return env_path("SPPFT_SOURCE_DIR", "."); }
inline std::filesystem::path build_dir() { return env_path("SPPFT_BUILD_DIR", "build"); }
// A fresh scratch directory for this process, /tmp/sppft-test-NAME-PID. The test
// main removes every one when all tests pass and keeps them (and says where) when
// one fails or SPPFT_KEEP_TEST_DIRS=1.
std::filesystem::path temp_dir(const std::string& name);
// Called once by the test main with whether every test passed.
void finish_temp_dirs(bool all_passed);

// max |a - b| / max |b|: error relative to the reference's scale.
inline double rel_error(const float* a, const float* b, std::int64_t n) {
  double diff = 0, scale = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// One Json per line of a JSON-lines file (metrics.jsonl).
inline std::vector<Json> read_jsonl(const std::filesystem::path& file) {
  std::vector<Json> rows;
  const std::string text = read_file(file);
  for (std::size_t pos = 0; pos < text.size();) {
    const auto end = text.find('\n', pos);
    rows.push_back(Json::parse(text.substr(pos, end - pos)));
    pos = end == std::string::npos ? text.size() : end + 1;
  }
  return rows;
}

// Writes the first `lines` lines of `src` to `dst` (a smaller prompt set where the whole one is slow).
inline void write_head(const std::filesystem::path& src, const std::filesystem::path& dst, int lines) {
  const std::string text = read_file(src);
  std::size_t end = 0;
  for (int i = 0; i < lines && end < text.size(); ++i) {
    const std::size_t nl = text.find('\n', end);
    end = nl == std::string::npos ? text.size() : nl + 1;
  }
  atomic_write_text(dst, text.substr(0, end));
}

struct CommandResult {
  int exit_code;
  std::string out;  // stdout and stderr together
};

// A small llama checkpoint (random weights, sentencepiece tokenizer trained on
// data/normal.csv + data/malicious.csv) written once per process into `dir`.
// `config_json` overrides config fields.
void make_tiny_checkpoint(const std::filesystem::path& dir, const std::string& config_json = "{}");

// Writes a chat_template.jinja into checkpoint `dir` that renders an assistant turn as
// "<assistant>content</assistant>" only as the last message and earlier ones shortened to
// "<a>length</a>" (as Qwen3's drops earlier turns' reasoning); other turns "<role>content</role>",
// the generation prompt "<assistant>".
void write_turn_rewriting_chat_template(const std::filesystem::path& dir);

// A hand-written byte-level BPE tokenizer.json (Llama-3 layout, tiny vocabulary: the 256 bytes,
// "he" "ll" "hell" "hello" "Ġw" "Ġwo" "or" "Ġwor" "ld" "Ġworld", then <|bos|> 266, <|eot|> 267 and
// <x> 268); `merges_json` is the model's merges list.
std::string tiny_bpe_tokenizer_json(
    const std::string& merges_json =
        R"(["h e", "l l", "he ll", "hell o", ["Ġ", "w"], ["Ġw", "o"], "o r", "Ġwo r", "l d", "Ġwor ld"])");

// Runs a shell command and captures stdout and (unless it redirects 2> itself) stderr.
CommandResult run_command(const std::string& cmd);

}  // namespace sppft::test
