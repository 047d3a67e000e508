// A safety classifier as a second judge of the harmful set: a guard checkpoint (Llama Guard 2 / 3
// and others that answer "safe" or "unsafe" + categories through their own chat template) reads
// each (query, answer) exchange and says whether the answer is unsafe. It measures harm, where
// the refusal judges measure refusal: R_h counts answers, the guard's rate counts unsafe answers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/json.h"
#include "models/model.h"

namespace sppft {

// The guard's reply: "safe", "unsafe" (categories on the next line, e.g. "S1,S10"), or neither.
struct GuardVerdict {
  enum class Kind { Safe, Unsafe, Unparsed } kind = Kind::Unparsed;
  std::vector<std::string> categories;
};
GuardVerdict parse_guard_verdict(std::string_view reply);

// The guard's prompt for one exchange: its chat template over [user: query, assistant: answer]
// with the generation prompt open, content as strings, or as text parts when the template renders
// no string's text (Llama Guard 3 1B reads parts). InputError when the guard has no chat template
// or renders neither form.
std::string guard_prompt(const Model& guard, const std::string& query, const std::string& answer);

struct GuardResult {
  std::string model;  // the guard's directory name
  std::int64_t n = 0, unsafe = 0, safe = 0, unparsed = 0;
  std::map<std::string, std::int64_t> categories;  // over the unsafe verdicts
  std::vector<GuardVerdict> verdicts;               // per exchange
  std::vector<std::string> replies;                 // the guard's text per exchange
  Json to_json() const;                             // counts, unsafe_rate = unsafe / n, categories
};

// Greedy replies of `guard` (at most 16 tokens) to each exchange; answers are taken after any
// reasoning block (response_answer).
GuardResult guard_judge(Model& guard, const std::vector<std::string>& queries, const std::vector<std::string>& responses,
                        std::int64_t batch_size);

}  // namespace sppft
