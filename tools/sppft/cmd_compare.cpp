// sppft compare EVAL... [--names a,b,...] [--out FILE.md]: evaluations side by side.
#include <cstdio>

#include "analysis/compare.h"
#include "engine/error.h"
#include "engine/text.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft compare EVAL EVAL... [--names NAME,NAME,...] [--pairs first|all|A:B,...] [--out FILE.md] [--json]\n\n"
    "Puts the eval.json of several runs side by side (each EVAL an eval.json or the directory\n"
    "sppft eval wrote it to), as the paper's Table 2: harmful rate R_h, the guard's unsafe\n"
    "rate, over-rejection, Rouge-L and multiple-choice accuracy per run, with the change from\n"
    "the first run in points. Below it, what chance alone allows: each rate's 95% interval\n"
    "(Wilson score), and each run tested against the first on the queries both were asked\n"
    "(two-sided exact McNemar test on the queries one run answered, or refused, and the other\n"
    "did not; from the responses.jsonl next to each eval.json). Warns when the runs used\n"
    "different judges, guards, set sizes, queries or generation limits.\n"
    "E.g.: sppft compare base/ev full/ev sppft/ev --names base,full,SPPFT\n\n"
    "  --names A,B,...   column names (default: the paths)\n"
    "  --pairs P         the runs tested against each other: first (default: each run against\n"
    "                    the first), all (every two), or A:B,... by name (B against A), e.g.\n"
    "                    --pairs base:full,full:SPPFT\n"
    "  --out FILE.md     write the table there too\n"
    "  --json            print the table as JSON (runs, percent, change in points and interval per\n"
    "                    metric, paired tests, judge, warnings) instead\n";
}  // namespace

int cmd_compare(int argc, char** argv) {
  Args args(argc, argv, {"--names", "--pairs", "--out"}, {"--json"});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  std::vector<std::string> names;
  if (auto n = args.get("--names")) {
    for (std::string_view name : split(*n, ',')) names.emplace_back(name);
    if (names.size() != args.positional().size())
      throw InputError("--names: " + std::to_string(names.size()) + " names for " + std::to_string(args.positional().size()) +
                       " evaluations");
  }
  std::vector<EvalRun> runs;
  for (std::size_t i = 0; i < args.positional().size(); ++i)
    runs.push_back(read_eval_run(names.empty() ? args.positional()[i] : names[i], args.positional()[i]));
  std::vector<std::string> run_names;
  for (const auto& r : runs) run_names.push_back(r.name);
  const Comparison c = compare_evaluations(runs, parse_run_pairs(args.get_or("--pairs", "first"), run_names));
  for (const auto& w : c.warnings) std::fprintf(stderr, "sppft: warning: %s\n", w.c_str());
  std::fputs(args.has("--json") ? (c.json.dump(2) + "\n").c_str() : c.markdown.c_str(), stdout);
  if (auto out = args.get("--out")) atomic_write_text(*out, c.markdown);
  return 0;
}

}  // namespace sppft::cli
