// Evaluations side by side: the eval.json of several runs of one evaluation (e.g. the base model,
// full fine-tuning, SPPFT), as the paper's Table 2 - each metric per run, and its change from
// the first run in points.
#pragma once

#include <string>
#include <vector>

#include "engine/json.h"

namespace sppft {

struct EvalRun {
  std::string name;
  Json eval;          // an eval.json
  std::string file = {};  // where it was read, for errors (else `name`)
};

struct Comparison {
  std::string markdown;
  std::vector<std::string> warnings;  // what makes runs not comparable (judge, set sizes, limits)
  // The same table for machines: {"runs": [names], "metrics": [{"metric", "percent": [value or
  // null per run], "change_points": [...]}], "judge", "warnings"}; the score S_h has "score" and
  // "change" (on its 1-5 scale) where the rates have "percent" and "change_points".
  Json json;
};

// InputError when fewer than two runs, or a run is not an eval.json.
Comparison compare_evaluations(const std::vector<EvalRun>& runs);

}  // namespace sppft
