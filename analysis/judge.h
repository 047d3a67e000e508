// Refusal judges, kept as data files with their sources (data/judges/):
//   prefix  - the stripped response starts with one of the phrases (case-insensitive);
//   keyword - the response contains one of the phrases (case-sensitive, as the
//             AdvBench/GCG evaluation does).
// Curly apostrophes are normalised in both the phrases and the responses.
// Judges read a response's answer: the text after its reasoning block, if any
// (response_answer).
// Every reported count names its judge.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/fs.h"

namespace sppft {

struct Judge {
  enum class Mode { Prefix, Keyword };
  std::string name;  // e.g. "prefix-llama-3", or the file name
  Mode mode = Mode::Prefix;
  std::vector<std::string> phrases;
  fs::path file;

  bool refused(std::string_view response) const;
};

// The part of a response a judge reads: after its reasoning (the last "</think>", as Qwen3 and
// DeepSeek-R1 write it), else all of it. `unfinished` when the response opens "<think>" and
// never closes it (the token limit cut the reasoning): the text is then the reasoning itself.
struct ResponseAnswer {
  std::string_view text;
  bool unfinished = false;
};
ResponseAnswer response_answer(std::string_view response);

// One line about a set whose responses end inside their reasoning; "" when none do.
std::string unfinished_reasoning_note(const std::string& set, std::int64_t unfinished, std::int64_t n,
                                      std::int64_t max_new_tokens);

// Replaces U+2018 / U+2019 (and U+02BC) with an ASCII apostrophe.
std::string normalize_apostrophes(std::string_view s);

// Reads a judge file: one phrase per line, '#' comments; a comment line
// "# mode: keyword" selects substring matching (default prefix).
Judge read_judge_file(const fs::path& path);

// `spec`: "prefix" (the list of `family`: llama-2, llama-3, gemma, phi-3,
// sppft-demo), "keyword" (AdvBench substrings), "auto" (prefix when the family
// has a list, else keyword, with a note) or a path to a judge file.
// InputError for an unknown judge.
Judge load_judge(const std::string& spec, const std::string& family);

class Model;
// The prefix-list family of a model: llama-2, llama-3, gemma or phi-3 (from its
// chat format); "" when there is no list for it (use --judge keyword or a file).
std::string judge_family(const Model& model);

// The directory with the bundled data sets: $SPPFT_DATA, ./data, the source
// tree's data/ (compiled in), or <exe>/../../data.
fs::path bundled_data_dir();

}  // namespace sppft
