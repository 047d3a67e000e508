#include "analysis/compare.h"

#include <algorithm>
#include <cstdio>
#include <optional>

#include "analysis/guard.h"
#include "analysis/rejudge.h"
#include "analysis/stats.h"
#include "engine/error.h"
#include "engine/text.h"

namespace sppft {

namespace {

struct Metric {
  const char* label;
  const char* value;  // JSON pointer to the value in eval.json
  const char* n;      // JSON pointer to its set's size
  const char* size;   // what the size counts
  bool rate = true;   // a fraction shown in percent; else a score shown as is
  bool proportion = true;  // a share of n yes/no verdicts: it has a Wilson interval
};

// Rates are fractions; the table shows percent (Rouge-L as F1 x 100). S_h is a mean score 1-5.
constexpr Metric kMetrics[] = {
    {"harmful rate R_h", "/harmful/harmful_rate", "/harmful/n", "harmful queries"},
    {"guard unsafe rate", "/harmful/guard/unsafe_rate", "/harmful/n", "harmful queries"},
    {"harmfulness score S_h (1-5)", "/harmful/score/mean", "/harmful/score/scored", "scored answers", false, false},
    {"over-rejection", "/over_rejection/over_rejection_rate", "/over_rejection/n", "over-rejection queries"},
    {"Rouge-L F1 x 100", "/rouge_l/f1_mean", "/rouge_l/n", "references", true, false},
    {"multiple choice", "/multiple_choice/accuracy", "/multiple_choice/n", "questions"},
};

// The verdicts responses.jsonl holds per query, for the paired tests: a yes/no verdict as 1 / 0,
// or the score judge's 1-5 (none where it did not parse). A query counts for B when B's value is
// above A's, for A when below: McNemar's test for verdicts, the sign test for scores.
struct PairedMetric {
  const char* label;
  const char* set;    // the rows' "set"
  const char* event;  // what puts a query on a run's side
  const char* field;  // the row field the verdict is read from
  const char* value;  // JSON pointer to the rate in eval.json: both runs must have it
  std::optional<int> (*of)(const Json& row);
};
constexpr PairedMetric kPairedMetrics[] = {
    {"harmful rate R_h", "harmful", "answered", "refused", "/harmful/harmful_rate",
     [](const Json& row) -> std::optional<int> { return !row["refused"].get<bool>(); }},
    {"guard unsafe rate", "harmful", "unsafe", "guard", "/harmful/guard/unsafe_rate",
     [](const Json& row) -> std::optional<int> {
       return parse_guard_verdict(row["guard"].get<std::string>()).kind == GuardVerdict::Kind::Unsafe;
     }},
    {"harmfulness score S_h (1-5)", "harmful", "scored higher", "score", "/harmful/score/mean",
     [](const Json& row) -> std::optional<int> {
       if (!row["score"].is_number_integer()) return std::nullopt;
       return row["score"].get<int>();
     }},
    {"over-rejection", "over-rejection", "refused", "refused", "/over_rejection/over_rejection_rate",
     [](const Json& row) -> std::optional<int> { return row["refused"].get<bool>(); }},
};

std::optional<Json> field(const Json& eval, const char* pointer) {
  const Json::json_pointer p(pointer);
  if (!eval.contains(p)) return std::nullopt;
  return eval[p];
}

std::optional<double> shown_value(const Json& eval, const Metric& m) {
  const auto v = field(eval, m.value);
  if (!v || !v->is_number()) return std::nullopt;
  return (m.rate ? 100 : 1) * v->get<double>();
}

// The field at `pointer` in every run that has it, if they are not all equal: a warning.
void check_same(const std::vector<EvalRun>& runs, const std::string& what, const char* pointer, std::vector<std::string>& warnings) {
  std::optional<Json> first;
  std::string listing;
  bool differ = false;
  for (const auto& r : runs) {
    const auto v = field(r.eval, pointer);
    if (!v) continue;
    listing += (listing.empty() ? "" : ", ") + r.name + " " + (v->is_string() ? v->get<std::string>() : v->dump());
    if (!first) first = v;
    else if (*v != *first) differ = true;
  }
  if (differ) warnings.push_back(what + " differ (" + listing + "): the rates are not comparable");
}

// The rows of one set whose verdict field every row has; none when some row lacks it.
std::vector<const Json*> rows_of(const EvalRun& r, const PairedMetric& m) {
  std::vector<const Json*> rows;
  for (const Json& row : r.responses) {
    if (!row.is_object() || row.value("set", "") != m.set) continue;
    const std::string f = m.field;
    const bool has = row.contains(f) && (f == "guard"   ? row[f].is_string()
                                         : f == "score" ? row[f].is_number_integer() || row[f].is_null()
                                                        : row[f].is_boolean());
    if (!has || !row.contains("prompt")) return {};
    rows.push_back(&row);
  }
  return rows;
}

// The exact test of each pair (McNemar's on verdicts, the sign test on scores) on the queries both
// runs were asked, for each verdict both stored; markdown rows, JSON and warnings appended.
void paired_tests(const std::vector<EvalRun>& runs, const std::vector<RunPair>& pairs, Comparison& c, std::string& rows_md,
                  std::vector<std::string>& without_responses) {
  c.json["paired"] = Json::array();
  for (const RunPair& pair : pairs) {
    const EvalRun &a = runs.at(pair.a), &b = runs.at(pair.b);
    for (const EvalRun* r : {&a, &b})
      if (r->responses.empty() && std::find(without_responses.begin(), without_responses.end(), r->name) == without_responses.end())
        without_responses.push_back(r->name);
    if (a.responses.empty() || b.responses.empty()) continue;
    for (const PairedMetric& m : kPairedMetrics) {
      if (!field(a.eval, m.value) || !field(b.eval, m.value)) continue;
      const auto ra = rows_of(a, m), rb = rows_of(b, m);
      if (ra.empty() || rb.empty()) continue;
      bool same = ra.size() == rb.size();
      for (std::size_t i = 0; same && i < ra.size(); ++i) same = (*ra[i])["prompt"] == (*rb[i])["prompt"];
      if (!same) {
        c.warnings.push_back(a.name + " and " + b.name + " were asked different " + m.set + " queries: no paired test");
        continue;
      }
      std::int64_t b_only = 0, a_only = 0, queries = 0;
      for (std::size_t i = 0; i < ra.size(); ++i) {
        const auto va = m.of(*ra[i]), vb = m.of(*rb[i]);
        if (!va || !vb) continue;  // a score that did not parse: no comparison
        ++queries;
        b_only += *vb > *va;
        a_only += *va > *vb;
      }
      const double p = mcnemar_exact_p(b_only, a_only);
      rows_md += "| " + a.name + " -> " + b.name + " | " + m.label + " (" + m.event + ") | " + std::to_string(queries) + " | " +
                 std::to_string(b_only) + " | " + std::to_string(a_only) + " | " + p_value_text(p) + " |\n";
      c.json["paired"].push_back({{"a", a.name}, {"b", b.name}, {"metric", m.label}, {"event", m.event}, {"queries", queries},
                                  {"b_only", b_only}, {"a_only", a_only}, {"p", p}});
    }
  }
}

}  // namespace

std::vector<Json> responses_next_to(const fs::path& eval_json) {
  // Another name than eval.json is a copy taken out of its directory: what lies beside it is not its.
  if (!eval_json.has_parent_path() || eval_json.filename() != "eval.json") return {};
  const fs::path dir = eval_json.parent_path();
  if (!fs::exists(dir / "responses.jsonl")) return {};
  return read_stored_evaluation(dir).responses;
}

std::vector<RunPair> parse_run_pairs(const std::string& spec, const std::vector<std::string>& names) {
  std::vector<RunPair> pairs;
  if (spec == "first" || spec == "all") {
    for (std::size_t b = 1; b < names.size(); ++b)
      for (std::size_t a = 0; a < (spec == "all" ? b : 1); ++a) pairs.push_back({a, b});
    return pairs;
  }
  std::string listing;
  for (const auto& n : names) listing += (listing.empty() ? "" : ", ") + n;
  const auto index = [&](std::string_view name) {
    const auto at = std::find(names.begin(), names.end(), name);
    if (at == names.end()) throw InputError("--pairs: no run named '" + std::string(name) + "' (the runs: " + listing + ")");
    return static_cast<std::size_t>(at - names.begin());
  };
  for (std::string_view item : split(spec, ',')) {
    const auto colon = item.find(':');
    if (colon == std::string_view::npos || item.find(':', colon + 1) != std::string_view::npos)
      throw InputError("--pairs: '" + std::string(item) + "' (expected first, all, or NAME:NAME,... with the runs' names)");
    const RunPair pair{index(item.substr(0, colon)), index(item.substr(colon + 1))};
    if (pair.a == pair.b) throw InputError("--pairs: '" + std::string(item) + "' pairs a run with itself");
    pairs.push_back(pair);
  }
  return pairs;
}

EvalRun read_eval_run(const std::string& name, const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / "eval.json" : path;
  EvalRun r{name, read_json_file(file), file.string()};
  r.responses = responses_next_to(file.has_parent_path() ? file : fs::path(".") / file);
  return r;
}

Comparison compare_evaluations(const std::vector<EvalRun>& runs, const std::vector<RunPair>& pairs) {
  if (runs.size() < 2) throw InputError("compare: expected two or more evaluations (eval.json files or their directories)");
  for (const auto& r : runs) {
    const std::string& where = r.file.empty() ? r.name : r.file;
    if (!r.eval.is_object() || !r.eval.contains("judge"))
      throw InputError(where + ": not an eval.json (no 'judge' field; written by sppft eval)");
    (void)json_get<std::string>(r.eval, "judge", where);
  }
  Comparison c;
  std::string& md = c.markdown;
  md = "| metric |";
  for (const auto& r : runs) md += " " + r.name + " |";
  md += "\n|---|";
  for (std::size_t i = 0; i < runs.size(); ++i) md += "---|";
  md += "\n";
  Json names = Json::array(), metrics = Json::array();
  for (const auto& r : runs) names.push_back(r.name);
  std::string intervals_md;  // the Wilson intervals' table rows
  for (const Metric& m : kMetrics) {
    std::vector<std::optional<double>> v;
    for (const auto& r : runs) v.push_back(shown_value(r.eval, m));
    if (std::none_of(v.begin(), v.end(), [](auto& x) { return x.has_value(); })) continue;
    md += std::string("| ") + m.label + " |";
    Json values = Json::array(), changes = Json::array(), intervals = Json::array();
    if (m.proportion) intervals_md += std::string("| ") + m.label + " |";
    for (std::size_t i = 0; m.proportion && i < v.size(); ++i) {
      const auto n = field(runs[i].eval, m.n);
      const bool known = v[i] && n && n->is_number_integer() && n->get<std::int64_t>() > 0 && *v[i] >= 0 && *v[i] <= 100;
      if (!known) {
        intervals_md += " - |";
        intervals.push_back(nullptr);
        continue;
      }
      const Interval ci = wilson_interval(*v[i] / 100, n->get<std::int64_t>());
      intervals_md += " " + printf_string("%.2f", 100 * ci.lo) + "-" + printf_string("%.2f", 100 * ci.hi) + " |";
      intervals.push_back({100 * ci.lo, 100 * ci.hi});
    }
    if (m.proportion) intervals_md += "\n";
    for (std::size_t i = 0; i < v.size(); ++i) {
      char cell[64] = "-";
      const bool change = v[i] && i > 0 && v[0];
      if (v[i] && !change) std::snprintf(cell, sizeof cell, "%.2f", *v[i]);
      else if (v[i]) std::snprintf(cell, sizeof cell, "%.2f (%+.2f)", *v[i], *v[i] - *v[0]);
      md.append(" ").append(cell).append(" |");
      values.push_back(v[i] ? Json(*v[i]) : Json(nullptr));
      changes.push_back(change ? Json(*v[i] - *v[0]) : Json(nullptr));
    }
    if (m.proportion) metrics.push_back({{"metric", m.label}, {"percent", values}, {"change_points", changes}, {"ci95_percent", intervals}});
    else if (m.rate) metrics.push_back({{"metric", m.label}, {"percent", values}, {"change_points", changes}});
    else metrics.push_back({{"metric", m.label}, {"score", values}, {"change", changes}});
    md += "\n";
    check_same(runs, std::string("the numbers of ") + m.size, m.n, c.warnings);
  }
  md += "\nPercent; in parentheses the change from " + runs[0].name + " in points";
  if (std::any_of(metrics.begin(), metrics.end(), [](const Json& x) { return x.contains("score"); }))
    md += " (S_h: the mean score of the scored answers and its change)";
  md += ". Judge: " + runs[0].eval["judge"].get<std::string>() + ".\n";
  std::string& stats = c.stats_markdown;
  if (!intervals_md.empty()) {
    std::string header = "| metric |", rule = "|---|";
    for (const auto& r : runs) header += " " + r.name + " |", rule += "---|";
    stats += "\nWhat chance alone allows: each rate's 95% interval (Wilson score, percent):\n\n" + header + "\n" + rule + "\n" + intervals_md;
  }
  std::vector<RunPair> tested = pairs;
  if (tested.empty())
    for (std::size_t i = 1; i < runs.size(); ++i) tested.push_back({0, i});
  std::string paired_md;
  std::vector<std::string> without_responses;
  paired_tests(runs, tested, c, paired_md, without_responses);
  if (!paired_md.empty())
    stats += "\nPaired on the same queries: B only and A only count the queries that only B, or only A, answered (refused, "
          "for over-rejection; called unsafe, for the guard; scored higher, for S_h, over the answers both scores parsed); "
          "p is the two-sided exact McNemar test on them (the sign test, for S_h; below 0.05: a difference chance alone "
          "seldom makes):\n\n| A -> B | metric | queries | B only | A only | p |\n|---|---|---|---|---|---|\n" +
          paired_md;
  if (!without_responses.empty()) {
    std::string listing;
    for (const auto& n : without_responses) listing += (listing.empty() ? "" : ", ") + n;
    stats += "\nNo paired test for " + listing + ": no responses.jsonl beside an eval.json (sppft eval writes one).\n";
  }
  md += stats;
  check_same(runs, "the judges", "/judge", c.warnings);
  check_same(runs, "the guard models", "/harmful/guard/model", c.warnings);
  check_same(runs, "the score judges", "/harmful/score/model", c.warnings);
  check_same(runs, "the score rubrics", "/harmful/score/rubric", c.warnings);
  check_same(runs, "the generation limits (max_new_tokens)", "/max_new_tokens", c.warnings);
  // Sorted; metrics of one set (R_h and the guard's rate) warn about its size once.
  std::sort(c.warnings.begin(), c.warnings.end());
  c.warnings.erase(std::unique(c.warnings.begin(), c.warnings.end()), c.warnings.end());
  c.json["runs"] = names;
  c.json["metrics"] = metrics;
  c.json["judge"] = runs[0].eval["judge"];
  c.json["warnings"] = c.warnings;
  return c;
}

}  // namespace sppft
