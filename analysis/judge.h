// Refusal judges, kept as data files with their sources (data/judges/):
//   prefix  - the stripped response starts with one of the phrases (case-insensitive);
//   keyword - the response contains one of the phrases (case-sensitive, as the
//             AdvBench/GCG evaluation does).
// Curly apostrophes are normalised in both the phrases and the responses.
// Every reported count names its judge.
#pragma once

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

// Replaces U+2018 / U+2019 (and U+02BC) with an ASCII apostrophe.
std::string normalize_apostrophes(std::string_view s);

// Reads a judge file: one phrase per line, '#' comments; a comment line
// "# mode: keyword" selects substring matching (default prefix).
Judge read_judge_file(const fs::path& path);

// `spec`: "prefix" (the list of `family`: llama-2, llama-3, gemma, phi-3,
// sppft-demo), "keyword" (AdvBench substrings) or a path to a judge file.
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
