// Rouge-L (sentence-level LCS) exactly as Google's `rouge_score` package computes it
// for RougeScorer(["rougeL"]) with its defaults (no stemmer, DefaultTokenizer):
//
//   tokens(text): Python `text.lower()`, every run of characters outside [a-z0-9]
//   becomes a space, split, drop empty tokens. So only ASCII letters and digits
//   survive: "café" -> ["caf"], "naïve" -> ["na", "ve"], CJK / Cyrillic / emoji
//   vanish. Two non-ASCII characters lowercase INTO ASCII in Python and are kept
//   the same way here: U+0130 'İ' -> "i" + U+0307 (so "İstanbul" -> ["i", "stanbul"])
//   and U+212A KELVIN SIGN -> "k" (so "\u212Aelvin" -> ["kelvin"]).
//   Input is UTF-8; bytes that are not valid UTF-8 act as separators.
//
//   LCS = longest common subsequence of the token lists,
//   precision = LCS / |candidate|, recall = LCS / |reference|,
//   f1 = 2PR / (P + R); all three are 0 when either side has no tokens or P + R = 0.
//
// `candidate` is rouge_score's `prediction`, `reference` its `target`
// (scorer.score(target=reference, prediction=candidate)).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sppft {

struct RougeL {
  double precision = 0, recall = 0, f1 = 0;
};

std::vector<std::string> rouge_tokenize(std::string_view text);

// O(|c| * |r|) time, O(min(|c|, |r|)) memory.
RougeL rouge_l(std::string_view candidate, std::string_view reference);

// Length of the longest common subsequence of two token lists (exposed for tests).
std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b);

}  // namespace sppft
