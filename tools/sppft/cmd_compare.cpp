// sppft compare EVAL... [--names a,b,...] [--out FILE.md]: evaluations side by side.
#include <cstdio>

#include "analysis/compare.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft compare EVAL EVAL... [--names NAME,NAME,...] [--out FILE.md]\n\n"
    "Puts the eval.json of several runs side by side (each EVAL an eval.json or the directory\n"
    "sppft eval wrote it to), as the paper's Table 2: harmful rate R_h, the guard's unsafe\n"
    "rate, over-rejection, Rouge-L and multiple-choice accuracy per run, with the change from\n"
    "the first run in points. Warns when the runs used different judges, guards, set sizes\n"
    "or generation limits. E.g.: sppft compare base/ev full/ev sppft/ev --names base,full,SPPFT\n\n"
    "  --names A,B,...   column names (default: the paths)\n"
    "  --out FILE.md     write the table there too\n";
}  // namespace

int cmd_compare(int argc, char** argv) {
  Args args(argc, argv, {"--names", "--out"}, {});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  std::vector<std::string> names;
  if (auto n = args.get("--names")) {
    std::size_t pos = 0;
    while (pos <= n->size()) {
      const std::size_t comma = std::min(n->find(',', pos), n->size());
      names.push_back(n->substr(pos, comma - pos));
      pos = comma + 1;
    }
    if (names.size() != args.positional().size())
      throw InputError("--names: " + std::to_string(names.size()) + " names for " + std::to_string(args.positional().size()) +
                       " evaluations");
  }
  std::vector<EvalRun> runs;
  for (std::size_t i = 0; i < args.positional().size(); ++i) {
    fs::path p = args.positional()[i];
    if (fs::is_directory(p)) p /= "eval.json";
    runs.push_back({names.empty() ? args.positional()[i] : names[i], read_json_file(p)});
  }
  const Comparison c = compare_evaluations(runs);
  for (const auto& w : c.warnings) std::fprintf(stderr, "sppft: warning: %s\n", w.c_str());
  std::fputs(c.markdown.c_str(), stdout);
  if (auto out = args.get("--out")) atomic_write_text(*out, c.markdown);
  return 0;
}

}  // namespace sppft::cli
