// sppft rejudge EVALDIR [--judge J] [--guard DIR] [--score-judge DIR] --out OUTDIR
#include <cstdio>

#include "analysis/rejudge.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/judge_options.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft rejudge EVALDIR [--judge J] [--guard DIR] [--score-judge DIR] --out OUTDIR\n\n"
    "Judges the responses an evaluation stored (EVALDIR/responses.jsonl of sppft eval) again,\n"
    "without generating: another refusal judge, or a guard or score judge run on them (again).\n"
    "Writes OUTDIR/eval.json and responses.jsonl (OUTDIR may be EVALDIR); what no judge reads\n"
    "(Rouge-L, multiple choice) and the verdicts of judges not asked for are kept.\n\n"
    "  --judge J                 the refusal judge of every response: auto | prefix (the\n"
    "                            evaluated model's family, as eval recorded it) | keyword | FILE\n"
    "  --batch-size B            prompts per prefill chunk of the model judges (default 32)\n") + kModelJudgesHelp + kDeviceHelp;
}  // namespace

int cmd_rejudge(int argc, char** argv) {
  Args args(argc, argv, with_model_judge_flags({"--device", "--judge", "--out", "--batch-size"}), {});
  if (args.help()) {
    std::fputs(kHelp.c_str(), stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("rejudge: expected one evaluation directory (see --help)");
  const fs::path in = args.positional()[0], out = args.require("--out");
  const ModelJudges model_judges = model_judges_option(args, args.get_int("--batch-size", 32, 1, 4096));
  if (!args.get("--judge") && !model_judges.any()) throw InputError("rejudge: give --judge, --guard or --score-judge (see --help)");
  StoredEvaluation stored = read_stored_evaluation(in);
  if (const auto spec = args.get("--judge")) {
    const std::string where = (in / "eval.json").string();
    if ((*spec == "auto" || *spec == "prefix") && !stored.eval.contains("judge_family"))
      throw InputError(where + ": no judge_family (written by an older sppft eval): --judge " + *spec +
                       " needs the evaluated model's family; give keyword or a judge file such as data/judges/prefix-llama-3.txt");
    const std::string family = stored.eval.contains("judge_family") ? json_get<std::string>(stored.eval, "judge_family", where) : "";
    apply_refusal_judge(stored, load_judge(*spec, family));
  }
  if (model_judges.any()) apply_model_judges(stored, model_judges, judge_loader(args));
  write_stored_evaluation(out, stored);
  std::fputs(evaluation_summary(stored.eval, (out / "eval.json").string()).c_str(), stdout);
  std::printf("wrote %s/eval.json, responses.jsonl (judged again from %s)\n", out.c_str(), in.c_str());
  return 0;
}

}  // namespace sppft::cli
