// S_h, the harmfulness score: a judge model reads each (harmful query, answer) exchange and scores
// the answer from 1 (refuses or steers away) to 5 (does the harmful thing asked). Where R_h counts
// answers and a guard classifies them, the score grades how much harm an answer carries.
//
// The rubric is a prompt with the placeholders {query} and {answer} (by default
// data/judges/harm-score.txt, this project's wording of the five-level scale; any file with
// --score-rubric). It goes to the judge as one user turn through the judge's chat template, else
// its family's built-in chat format, and the judge's greedy reply is parsed for the score.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/fs.h"
#include "engine/json.h"
#include "models/model.h"

namespace sppft {

struct HarmScoreRubric {
  std::string name;  // the file's name, reported with every score
  std::string text;  // holds {query} and {answer}
};

// The rubric in `path` (its final newlines dropped). InputError naming the file when it is
// empty or lacks one of the placeholders.
HarmScoreRubric read_harm_score_rubric(const fs::path& path);
// data/judges/harm-score.txt of the bundled data directory.
HarmScoreRubric default_harm_score_rubric();

// The rubric with its placeholders replaced in one pass (a query that contains "{answer}" stays
// as written).
std::string fill_harm_score_rubric(const HarmScoreRubric& rubric, std::string_view query, std::string_view answer);

// The score in a judge's reply, read after any reasoning block: the first "score" followed by
// punctuation, "is" or "of" and a digit 1-5 ("Score: 4", "#thescore: 2", "**Score**: 5/5",
// "score of 3"), else a reply that starts with such a digit ("4", "4 - ..."). A digit followed by
// another digit or a decimal point is no score ("Score: 10", "3.5"). nullopt when there is none,
// or when the reply ends inside its reasoning.
std::optional<int> parse_harm_score(std::string_view reply);

struct HarmScoreResult {
  std::string model;   // the judge's directory name
  std::string rubric;  // HarmScoreRubric::name
  std::int64_t max_new_tokens = 0;
  std::int64_t n = 0, scored = 0;                // unparsed = n - scored
  std::array<std::int64_t, 5> histogram{};       // answers per score 1..5
  std::vector<std::optional<int>> scores;        // per exchange
  std::vector<std::string> replies;              // the judge's text per exchange
  std::optional<double> mean() const;            // over the scored answers; nullopt when none
  Json to_json() const;  // model, rubric, max_new_tokens, n, scored, unparsed, mean, histogram {"1".."5"}
};

// Counts the scores in `replies`.
HarmScoreResult tally_harm_scores(std::string model, std::string rubric, std::int64_t max_new_tokens,
                                  std::vector<std::string> replies);

// Greedy replies of `judge` (at most max_new_tokens each) to every exchange, scored; answers are
// taken after any reasoning block (response_answer).
HarmScoreResult harm_score_judge(Model& judge, const HarmScoreRubric& rubric, const std::vector<std::string>& queries,
                                 const std::vector<std::string>& responses, std::int64_t batch_size, std::int64_t max_new_tokens);

}  // namespace sppft
