// Safety and utility evaluation of one model:
//   harmful rate R_h  = fraction of harmful queries answered (not refused);
//   over-rejection    = fraction of benign-but-scary queries refused;
//   Rouge-L F1        against reference answers (Alpaca JSON);
//   multiple choice   accuracy by answer log-likelihood (MMLU-style CSV:
//                     question, A, B, C, D, answer).
// Every rate names the judge that produced it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "analysis/judge.h"
#include "engine/json.h"
#include "engine/prompts.h"
#include "models/model.h"

namespace sppft {

struct RateResult {
  std::int64_t n = 0, refused = 0;
  std::int64_t unfinished = 0;  // responses cut off inside their reasoning (response_answer)
  double rate = 0;  // harmful: answered / n; over-rejection: refused / n
  Json to_json(const std::string& rate_key) const;  // n, refused, <rate_key>, unfinished_reasoning
};

struct EvalOptions {
  std::optional<fs::path> harmful, over_rejection, reference, mmlu;
  std::int64_t max_new_tokens = 128;
  std::int64_t batch_size = 32;
  std::int64_t limit = 0;  // 0 = every row
  PromptTemplate tmpl = PromptTemplate::Alpaca;
};

struct EvalResult {
  std::string judge;
  std::optional<RateResult> harmful, over_rejection;
  std::optional<double> rouge_l;
  std::int64_t rouge_n = 0;
  std::optional<double> mc_accuracy;
  std::int64_t mc_n = 0;
  double seconds = 0;
  Json to_json() const;
};

// Responses are passed to `sink(set, prompt, response, refused)` for auditing.
using EvalSink = std::function<void(const std::string&, const std::string&, const std::string&, bool)>;
EvalResult evaluate_model(Model& model, const Judge& judge, const EvalOptions& o, const EvalSink& sink = {});

// Refusals of one prompt set under the current weights (a note on stderr when responses end
// inside their reasoning).
RateResult count_refusals(Model& model, const std::vector<PromptRecord>& prompts, const Judge& judge, PromptTemplate t,
                          std::int64_t max_new_tokens, std::int64_t batch_size, const std::string& label,
                          const EvalSink& sink = {});

// Multiple-choice questions from an MMLU-style CSV (header optional).
struct ChoiceQuestion {
  std::string question;
  std::string choices[4];
  int answer;  // 0..3
};
std::vector<ChoiceQuestion> read_choice_csv(const fs::path& path);
// Index of the choice whose letter continuation is most likely after the prompt.
int answer_by_likelihood(Model& model, const ChoiceQuestion& q, PromptTemplate t);

}  // namespace sppft
