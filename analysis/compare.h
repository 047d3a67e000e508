// Evaluations side by side: the eval.json of several runs of one evaluation (e.g. the base model,
// full fine-tuning, SPPFT), as the paper's Table 2 - each metric per run, and its change from
// the first run in points - with what chance alone could do to them: each rate's 95% Wilson
// interval, and for pairs of runs judged on the same queries the exact McNemar test of their
// per-query verdicts (responses.jsonl).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "engine/fs.h"
#include "engine/json.h"

namespace sppft {

struct EvalRun {
  std::string name;
  Json eval;          // an eval.json
  std::string file = {};  // where it was read, for errors (else `name`)
  std::vector<Json> responses = {};  // its responses.jsonl rows; none: no paired test
};

// The eval.json at `path` (the file, or the directory sppft eval wrote), with the responses.jsonl
// next to it when there is one (checked as rejudge reads it: InputError naming the file).
EvalRun read_eval_run(const std::string& name, const fs::path& path);
// The rows of the responses.jsonl next to `eval_json`, checked against it; none when absent, when
// `eval_json` names no directory (a stand-in name, not a file read) or is not named eval.json.
std::vector<Json> responses_next_to(const fs::path& eval_json);

// Two runs to test against each other: `b` against the reference `a` (indices into the runs).
struct RunPair {
  std::size_t a, b;
};

struct Comparison {
  std::string markdown;        // the table, its note, then stats_markdown
  std::string stats_markdown;  // the intervals' table and the paired tests
  std::vector<std::string> warnings;  // what makes runs not comparable (judge, set sizes, limits)
  // The same table for machines: {"runs": [names], "metrics": [{"metric", "percent": [value or
  // null per run], "change_points": [...], "ci95_percent": [[lo, hi] or null per run]}],
  // "paired": [{"a", "b", "metric", "queries", "b_only", "a_only", "p"}], "judge", "warnings"};
  // the score S_h has "score" and "change" (on its 1-5 scale) where the rates have "percent" and
  // "change_points", and no interval (nor has Rouge-L, a mean of scores).
  Json json;
};

// `sppft compare --pairs`: "first" (every run against the first), "all" (every two runs, each
// against the one listed before it) or "A:B,C:D" by run name (B tested against A). InputError
// naming the option for an unknown name, a run paired with itself or another form.
std::vector<RunPair> parse_run_pairs(const std::string& spec, const std::vector<std::string>& names);

// InputError when fewer than two runs, or a run is not an eval.json. `pairs`: the runs to test
// against each other on their shared queries; none given: every run against the first. A pair
// whose runs lack responses, or asked different queries, gets no test (a note says which).
Comparison compare_evaluations(const std::vector<EvalRun>& runs, const std::vector<RunPair>& pairs = {});

}  // namespace sppft
