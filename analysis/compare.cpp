#include "analysis/compare.h"

#include <algorithm>
#include <cstdio>
#include <optional>

#include "engine/error.h"

namespace sppft {

namespace {

struct Metric {
  const char* label;
  const char* value;  // JSON pointer to the value in eval.json
  const char* n;      // JSON pointer to its set's size
  const char* size;   // what the size counts
  bool rate = true;   // a fraction shown in percent; else a score shown as is
};

// Rates are fractions; the table shows percent (Rouge-L as F1 x 100). S_h is a mean score 1-5.
constexpr Metric kMetrics[] = {
    {"harmful rate R_h", "/harmful/harmful_rate", "/harmful/n", "harmful queries"},
    {"guard unsafe rate", "/harmful/guard/unsafe_rate", "/harmful/n", "harmful queries"},
    {"harmfulness score S_h (1-5)", "/harmful/score/mean", "/harmful/score/scored", "scored answers", false},
    {"over-rejection", "/over_rejection/over_rejection_rate", "/over_rejection/n", "over-rejection queries"},
    {"Rouge-L F1 x 100", "/rouge_l/f1_mean", "/rouge_l/n", "references"},
    {"multiple choice", "/multiple_choice/accuracy", "/multiple_choice/n", "questions"},
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

}  // namespace

Comparison compare_evaluations(const std::vector<EvalRun>& runs) {
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
  for (const Metric& m : kMetrics) {
    std::vector<std::optional<double>> v;
    for (const auto& r : runs) v.push_back(shown_value(r.eval, m));
    if (std::none_of(v.begin(), v.end(), [](auto& x) { return x.has_value(); })) continue;
    md += std::string("| ") + m.label + " |";
    Json values = Json::array(), changes = Json::array();
    for (std::size_t i = 0; i < v.size(); ++i) {
      char cell[64] = "-";
      const bool change = v[i] && i > 0 && v[0];
      if (v[i] && !change) std::snprintf(cell, sizeof cell, "%.2f", *v[i]);
      else if (v[i]) std::snprintf(cell, sizeof cell, "%.2f (%+.2f)", *v[i], *v[i] - *v[0]);
      md.append(" ").append(cell).append(" |");
      values.push_back(v[i] ? Json(*v[i]) : Json(nullptr));
      changes.push_back(change ? Json(*v[i] - *v[0]) : Json(nullptr));
    }
    if (m.rate) metrics.push_back({{"metric", m.label}, {"percent", values}, {"change_points", changes}});
    else metrics.push_back({{"metric", m.label}, {"score", values}, {"change", changes}});
    md += "\n";
    check_same(runs, std::string("the numbers of ") + m.size, m.n, c.warnings);
  }
  md += "\nPercent; in parentheses the change from " + runs[0].name + " in points";
  if (std::any_of(metrics.begin(), metrics.end(), [](const Json& x) { return x.contains("score"); }))
    md += " (S_h: the mean score of the scored answers and its change)";
  md += ". Judge: " + runs[0].eval["judge"].get<std::string>() + ".\n";
  check_same(runs, "the judges", "/judge", c.warnings);
  check_same(runs, "the guard models", "/harmful/guard/model", c.warnings);
  check_same(runs, "the score judges", "/harmful/score/model", c.warnings);
  check_same(runs, "the score rubrics", "/harmful/score/rubric", c.warnings);
  check_same(runs, "the generation limits (max_new_tokens)", "/max_new_tokens", c.warnings);
  // Sorted; metrics of one set (R_h and the guard's rate) warn about its size once.
  std::sort(c.warnings.begin(), c.warnings.end());
  c.warnings.erase(std::unique(c.warnings.begin(), c.warnings.end()), c.warnings.end());
  c.json = {{"runs", names}, {"metrics", metrics}, {"judge", runs[0].eval["judge"]}, {"warnings", c.warnings}};
  return c;
}

}  // namespace sppft
