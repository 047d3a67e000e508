// An evaluation as `sppft eval` stores it, judged again without generating: OUT/eval.json and
// one row per response in OUT/responses.jsonl ({set, prompt, response, refused, judge}, and on
// harmful rows what a guard or score judge said). `eval` writes it before its model judges run and
// again after; `sppft rejudge` reads it back to swap the refusal judge or to run a guard or score
// judge on answers generated once (a judge that failed, another judge to compare).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "analysis/harm_score.h"
#include "analysis/judge.h"
#include "engine/fs.h"
#include "engine/json.h"
#include "models/model.h"

namespace sppft {

struct StoredEvaluation {
  Json eval;                    // eval.json
  std::vector<Json> responses;  // responses.jsonl, in order
  fs::path dir;                 // where it was read from; empty for one being made
};

// DIR/eval.json and DIR/responses.jsonl. InputError naming the file (and line) when a row lacks
// set, prompt, response or refused, names another set than harmful, over-rejection or
// reference, lacks a guard reply or a score (1-5 or null) and score_reply on a harmful row where
// eval.json has harmful.guard or harmful.score, or when a set's rows are not as many as eval.json
// counts.
StoredEvaluation read_stored_evaluation(const fs::path& dir);
// responses.jsonl, then eval.json (what compare and experiment read), each written atomically.
void write_stored_evaluation(const fs::path& dir, const StoredEvaluation& e);

// The model judges' verdicts split by the refusal judge's, where eval.json has a guard or score:
// harmful.guard.by_refusal {answered, refused: n, unsafe, safe, unparsed} and
// harmful.score.by_refusal {answered, refused: n, scored, mean}. Refusal judges miscount an answer
// that opens with a refusal and then complies; an unsafe "refused" answer shows one. Called by
// apply_refusal_judge and apply_model_judges.
void tabulate_by_refusal(StoredEvaluation& e);

// Every stored response judged again by `judge`: each row's refused and judge, eval.json's judge
// and its harmful and over-rejection counts and rates (a note on stderr when responses end inside
// their reasoning). A guard's or score judge's verdicts are left as they are.
void apply_refusal_judge(StoredEvaluation& e, const Judge& judge);

// The model judges of the harmful answers: `eval --guard`, `--score-judge`.
struct ModelJudges {
  std::optional<fs::path> guard, score;
  HarmScoreRubric rubric;  // for `score`
  std::int64_t score_max_new_tokens = 16;
  nlohmann::ordered_json score_chat_kwargs = nlohmann::ordered_json::object();
  std::int64_t batch_size = 32;
  bool any() const { return guard || score; }
};
using ModelLoader = std::function<std::unique_ptr<Model>(const fs::path& dir)>;

// Loads the guard, then the score judge, one at a time through `load`, over the harmful rows'
// (prompt, response) exchanges; records eval.json harmful.guard / harmful.score and each harmful
// row's guard / score and score_reply, replacing what an earlier judge of that kind wrote.
// InputError when there are no harmful rows.
void apply_model_judges(StoredEvaluation& e, const ModelJudges& judges, const ModelLoader& load);

// The lines `sppft eval` prints for an eval.json: harmful rate, guard, score, over-rejection,
// Rouge-L, multiple choice; `where` names the file in errors.
std::string evaluation_summary(const Json& eval, const std::string& where);

}  // namespace sppft
