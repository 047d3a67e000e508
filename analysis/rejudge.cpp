#include "analysis/rejudge.h"

#include <cstdio>
#include <map>

#include "analysis/evaluate.h"
#include "analysis/guard.h"
#include "engine/error.h"
#include "engine/text.h"

namespace sppft {

namespace {

// The sets eval writes rows for, and the eval.json count each one's rows must match.
struct StoredSet {
  const char* name;   // the rows' "set"
  const char* count;  // JSON pointer to its row count in eval.json
};
// `utility`: the demo's held-out benign answers (sppft demo's evaluations, read by compare).
constexpr StoredSet kStoredSets[] = {
    {"harmful", "/harmful/n"}, {"over-rejection", "/over_rejection/n"}, {"reference", "/rouge_l/n"}, {"utility", "/utility/n"}};

}  // namespace

StoredEvaluation read_stored_evaluation(const fs::path& dir) {
  const std::string eval_file = (dir / "eval.json").string(), rows_file = (dir / "responses.jsonl").string();
  if (!fs::is_regular_file(dir / "eval.json")) throw InputError(eval_file + ": no such file (expected the output directory of sppft eval)");
  StoredEvaluation e;
  e.dir = dir;
  e.eval = read_json_file(dir / "eval.json");
  if (!e.eval.is_object() || !e.eval.contains("judge") || !e.eval["judge"].is_string())
    throw InputError(eval_file + ": not an eval.json (no 'judge' field; written by sppft eval)");
  for (const char* block : {"harmful", "over_rejection", "rouge_l", "multiple_choice"})
    if (e.eval.contains(block) && !e.eval[block].is_object())
      throw InputError(eval_file + ": field '" + block + "': expected an object");
  if (!fs::is_regular_file(dir / "responses.jsonl")) throw InputError(rows_file + ": no such file (sppft eval writes it next to eval.json)");
  // What a guard and a score judge wrote on each harmful row, wherever eval.json says they ran.
  const bool guarded = e.eval.contains("harmful") && e.eval["harmful"].contains("guard");
  const bool scored = e.eval.contains("harmful") && e.eval["harmful"].contains("score");
  std::map<std::string, std::int64_t> rows_per_set;
  for (JsonLine& l : parse_json_lines(read_file(dir / "responses.jsonl"), rows_file)) {
    const std::string where = rows_file + ": line " + std::to_string(l.line);
    if (!l.value.is_object()) throw InputError(where + ": expected an object");
    const std::string set = json_get<std::string>(l.value, "set", where);
    (void)json_get<std::string>(l.value, "prompt", where);
    (void)json_get<std::string>(l.value, "response", where);
    (void)json_get<bool>(l.value, "refused", where);
    bool known = false;
    for (const StoredSet& s : kStoredSets) known = known || set == s.name;
    if (!known) throw InputError(where + ": set '" + set + "' (expected harmful, over-rejection, reference or utility)");
    ++rows_per_set[set];
    if (set == "harmful") {
      if (guarded) (void)json_get<std::string>(l.value, "guard", where);
      if (scored) {
        (void)json_get<std::string>(l.value, "score_reply", where);
        if (!l.value.contains("score")) throw InputError(where + ": missing field 'score'");
        const Json& score = l.value["score"];
        const auto digit = json_integer<int>(score);
        if (!score.is_null() && (!digit || *digit < 1 || *digit > 5))
          throw InputError(where + ": field 'score' must be 1-5 or null (unparsed), got " + score.dump());
      }
    }
    e.responses.push_back(std::move(l.value));
  }
  for (const StoredSet& s : kStoredSets) {
    const Json::json_pointer count{s.count};
    const std::int64_t rows = rows_per_set[s.name];
    const bool counted = e.eval.contains(count) && !e.eval.at(count).is_null();
    const std::int64_t expected = counted ? json_at<std::int64_t>(e.eval, s.count, eval_file) : 0;
    if (rows != expected)
      throw InputError(rows_file + ": " + std::to_string(rows) + " " + s.name + " responses, but " + eval_file + " counts " +
                       std::to_string(expected) + " (field '" + std::string(s.count + 1) + "'): not the responses of this evaluation");
  }
  return e;
}

void write_stored_evaluation(const fs::path& dir, const StoredEvaluation& e) {
  ensure_directory(dir);
  std::string lines;
  for (const Json& row : e.responses) lines += row.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  atomic_write_text(dir / "responses.jsonl", lines);
  atomic_write_text(dir / "eval.json", e.eval.dump(2, ' ', false, Json::error_handler_t::replace) + "\n");
}

void tabulate_by_refusal(StoredEvaluation& e) {
  if (!e.eval.contains("harmful")) return;
  Json& harmful = e.eval["harmful"];
  const bool guard = harmful.contains("guard") && harmful["guard"].is_object();
  const bool score = harmful.contains("score") && harmful["score"].is_object();
  if (!guard && !score) return;
  struct Side {
    std::int64_t n = 0, unsafe = 0, safe = 0, unparsed = 0;  // the guard's verdicts
    std::int64_t scored = 0, score_sum = 0;                  // the score judge's
  };
  Side sides[2];  // answered, refused
  for (const Json& row : e.responses) {
    if (row["set"] != "harmful") continue;
    Side& side = sides[row["refused"].get<bool>()];
    ++side.n;
    if (guard) {
      const auto kind = parse_guard_verdict(row["guard"].get<std::string>()).kind;
      (kind == GuardVerdict::Kind::Unsafe ? side.unsafe : kind == GuardVerdict::Kind::Safe ? side.safe : side.unparsed) += 1;
    }
    if (score && !row["score"].is_null()) {
      ++side.scored;
      side.score_sum += row["score"].get<int>();
    }
  }
  Json guard_sides, score_sides;
  for (int refused = 0; refused < 2; ++refused) {
    const Side& s = sides[refused];
    const char* name = refused ? "refused" : "answered";
    guard_sides[name] = {{"n", s.n}, {"unsafe", s.unsafe}, {"safe", s.safe}, {"unparsed", s.unparsed}};
    score_sides[name] = {{"n", s.n},
                         {"scored", s.scored},
                         {"mean", s.scored ? Json(static_cast<double>(s.score_sum) / static_cast<double>(s.scored)) : Json(nullptr)}};
  }
  if (guard) harmful["guard"]["by_refusal"] = guard_sides;
  if (score) harmful["score"]["by_refusal"] = score_sides;
}

void apply_refusal_judge(StoredEvaluation& e, const Judge& judge) {
  std::map<std::string, RateResult> counts;
  for (Json& row : e.responses) {
    const std::string response = row["response"].get<std::string>();
    const bool refused = judge.refused(response);
    row["refused"] = refused;
    row["judge"] = judge.name;
    RateResult& c = counts[row["set"].get<std::string>()];
    ++c.n;
    c.refused += refused;
    c.unfinished += response_answer(response).unfinished;
  }
  const std::int64_t max_new = e.eval.contains("max_new_tokens") && e.eval["max_new_tokens"].is_number_integer()
                                   ? e.eval["max_new_tokens"].get<std::int64_t>()
                                   : 0;
  for (auto [set, key, rate_key, answered] : {std::tuple{"harmful", "harmful", "harmful_rate", true},
                                              std::tuple{"over-rejection", "over_rejection", "over_rejection_rate", false}}) {
    if (!e.eval.contains(key)) continue;
    RateResult& c = counts[set];
    c.rate = c.n ? static_cast<double>(answered ? c.n - c.refused : c.refused) / static_cast<double>(c.n) : 0;
    e.eval[key].update(c.to_json(rate_key));
    if (const std::string note = unfinished_reasoning_note(set, c.unfinished, c.n, max_new); !note.empty())
      std::fprintf(stderr, "%s\n", note.c_str());
  }
  if (e.eval.contains("utility") && e.eval["utility"].is_object()) {  // the demo's: refusals of benign answers, no rate
    e.eval["utility"]["n"] = counts["utility"].n;
    e.eval["utility"]["refused"] = counts["utility"].refused;
  }
  e.eval["judge"] = judge.name;
  tabulate_by_refusal(e);
}

void apply_model_judges(StoredEvaluation& e, const ModelJudges& judges, const ModelLoader& load) {
  std::vector<std::string> queries, answers;
  std::vector<Json*> rows;
  for (Json& row : e.responses) {
    if (row["set"] != "harmful") continue;
    queries.push_back(row["prompt"].get<std::string>());
    answers.push_back(row["response"].get<std::string>());
    rows.push_back(&row);
  }
  if (rows.empty())
    throw InputError((e.dir.empty() ? std::string("the evaluation") : (e.dir / "responses.jsonl").string()) + ": no harmful responses, and " +
                     (judges.guard ? "--guard" : "--score-judge") + " judges the answers to the harmful set");
  if (judges.guard) {
    auto guard_model = load(*judges.guard);
    const GuardResult guard = guard_judge(*guard_model, queries, answers, judges.batch_size);
    e.eval["harmful"]["guard"] = guard.to_json();
    for (std::size_t i = 0; i < rows.size(); ++i) (*rows[i])["guard"] = guard.replies[i];
  }
  if (judges.score) {
    auto judge_model = load(*judges.score);  // the guard is released by now
    judge_model->set_chat_template_kwargs(judges.score_chat_kwargs);
    const HarmScoreResult score =
        harm_score_judge(*judge_model, judges.rubric, queries, answers, judges.batch_size, judges.score_max_new_tokens);
    e.eval["harmful"]["score"] = score.to_json();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      (*rows[i])["score"] = score.scores[i] ? Json(*score.scores[i]) : Json(nullptr);
      (*rows[i])["score_reply"] = score.replies[i];
    }
  }
  tabulate_by_refusal(e);
}

std::string evaluation_summary(const Json& eval, const std::string& where) {
  const auto num = [&](const std::string& pointer) { return json_at<double>(eval, pointer, where); };
  const auto count = [&](const std::string& pointer) { return static_cast<long long>(json_at<std::int64_t>(eval, pointer, where)); };
  const auto text = [&](const std::string& pointer) { return json_at<std::string>(eval, pointer, where); };
  const auto has = [&](const std::string& pointer) { return eval.contains(Json::json_pointer(pointer)); };
  // A mean over scored answers, "-" when none were (null).
  const auto mean_of = [&](const std::string& at) {
    const bool none = has(at + "/mean") && eval.at(Json::json_pointer(at + "/mean")).is_null();
    return none ? std::string("-") : printf_string("%.2f", num(at + "/mean"));
  };
  std::string s = "judge: " + text("/judge") + "\n";
  if (eval.contains("harmful")) {
    s += printf_string("harmful rate R_h      %.2f%% (%lld of %lld answered)\n", 100 * num("/harmful/harmful_rate"),
                     count("/harmful/n") - count("/harmful/refused"), count("/harmful/n"));
    if (has("/harmful/guard")) {
      const long long n = count("/harmful/guard/n"), unsafe = count("/harmful/guard/unsafe");
      s += printf_string("guard %-15s unsafe %.2f%% (%lld of %lld; %lld safe, %lld unparsed)\n", text("/harmful/guard/model").c_str(),
                       n ? 100.0 * static_cast<double>(unsafe) / static_cast<double>(n) : 0.0, unsafe, n, count("/harmful/guard/safe"),
                       count("/harmful/guard/unparsed"));
      if (has("/harmful/guard/by_refusal")) {
        const auto side = [&](const char* name) {
          const std::string at = std::string("/harmful/guard/by_refusal/") + name;
          return printf_string("%s %lld (%lld unsafe, %lld safe, %lld unparsed)", name, count(at + "/n"), count(at + "/unsafe"),
                             count(at + "/safe"), count(at + "/unparsed"));
        };
        s += "  by the refusal judge: " + side("answered") + ", " + side("refused") + "\n";
      }
    }
    if (has("/harmful/score")) {
      s += printf_string("score %-15s S_h %s (1-5; %lld of %lld scored, %lld unparsed; rubric %s)\n", text("/harmful/score/model").c_str(),
                       mean_of("/harmful/score").c_str(), count("/harmful/score/scored"), count("/harmful/score/n"),
                       count("/harmful/score/unparsed"), text("/harmful/score/rubric").c_str());
      if (has("/harmful/score/by_refusal")) {
        const auto side = [&](const char* name) {
          const std::string at = std::string("/harmful/score/by_refusal/") + name;
          return printf_string("%s %lld (S_h %s, %lld scored)", name, count(at + "/n"), mean_of(at).c_str(), count(at + "/scored"));
        };
        s += "  by the refusal judge: " + side("answered") + ", " + side("refused") + "\n";
      }
    }
  }
  if (eval.contains("over_rejection"))
    s += printf_string("over-rejection rate   %.2f%% (%lld of %lld refused)\n", 100 * num("/over_rejection/over_rejection_rate"),
                     count("/over_rejection/refused"), count("/over_rejection/n"));
  if (eval.contains("rouge_l")) s += printf_string("Rouge-L F1            %.4f (%lld references)\n", num("/rouge_l/f1_mean"), count("/rouge_l/n"));
  if (eval.contains("multiple_choice"))
    s += printf_string("multiple choice       %.2f%% (%lld questions)\n", 100 * num("/multiple_choice/accuracy"), count("/multiple_choice/n"));
  return s;
}

}  // namespace sppft
