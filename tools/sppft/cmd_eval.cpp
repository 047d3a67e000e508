// sppft eval DIR [--harmful FILE] [--over-rejection FILE] [--reference FILE] [--mmlu FILE] --out OUTDIR
#include <cstdio>

#include "analysis/evaluate.h"
#include "analysis/rejudge.h"
#include "engine/error.h"
#include "models/prompting.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/judge_options.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft eval DIR [--harmful FILE] [--over-rejection FILE] [--reference FILE.json]\n"
    "                  [--mmlu FILE.csv] [--max-new-tokens 128] [--judge J] [--guard DIR]\n"
    "                  [--score-judge DIR] --out OUTDIR\n\n"
    "Harmful rate R_h (fraction of harmful queries answered), over-rejection rate,\n"
    "Rouge-L F1 against reference answers (Alpaca JSON), and multiple-choice accuracy by\n"
    "answer log-likelihood (CSV: question, A, B, C, D, answer). Greedy decoding. Writes\n"
    "OUTDIR/eval.json and every response to OUTDIR/responses.jsonl.\n\n"
    "  --judge J                 auto (default: the family's prefix list, else keyword) |\n"
    "                            prefix | keyword (AdvBench substrings) | FILE\n"
    "  --template T              alpaca (default) | chat | none\n"
    "  --limit N                 only the first N rows of each set\n"
    "  --batch-size B            prompts per prefill chunk (default 32)\n") + kModelJudgesHelp + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_eval(int argc, char** argv) {
  Args args(argc, argv,
            with_model_judge_flags({"--device", "--harmful", "--over-rejection", "--reference", "--mmlu", "--max-new-tokens", "--judge",
                                    "--out", "--template", "--chat-template-kwargs", "--limit", "--batch-size"}),
            {});
  if (args.help()) {
    std::fputs(kHelp.c_str(), stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("eval: expected one checkpoint directory (see --help)");
  EvalOptions o;
  if (auto v = args.get("--harmful")) o.harmful = *v;
  if (auto v = args.get("--over-rejection")) o.over_rejection = *v;
  if (auto v = args.get("--reference")) o.reference = *v;
  if (auto v = args.get("--mmlu")) o.mmlu = *v;
  if (!o.harmful && !o.over_rejection && !o.reference && !o.mmlu)
    throw InputError("eval: give at least one of --harmful, --over-rejection, --reference, --mmlu");
  o.max_new_tokens = args.get_int("--max-new-tokens", 128, 1, 1 << 20);
  o.limit = args.get_int("--limit", 0, 0, INT64_MAX);
  o.batch_size = args.get_int("--batch-size", 32, 1, 4096);
  o.tmpl = parse_template(args.get_or("--template", "alpaca"));
  const auto chat_kwargs = chat_template_kwargs_option(args, o.tmpl);
  const fs::path out = args.require("--out");
  for (const char* flag : {"--guard", "--score-judge"})
    if (args.get(flag) && !o.harmful) throw InputError(std::string(flag) + " judges the answers to the harmful set: give --harmful too");
  const ModelJudges model_judges = model_judges_option(args, o.batch_size);
  auto model = Model::load(args.positional()[0]);
  place_model(*model, args);
  model->set_chat_template_kwargs(chat_kwargs);
  const std::string family = judge_family(*model);
  const Judge judge = load_judge(args.get_or("--judge", "auto"), family);
  ensure_directory(out);
  StoredEvaluation stored;
  EvalResult r = evaluate_model(*model, judge, o, [&](const std::string& set, const std::string& prompt, const std::string& text, bool refused) {
    stored.responses.push_back({{"set", set}, {"prompt", prompt}, {"response", text}, {"refused", refused}, {"judge", judge.name}});
  });
  model.reset();  // the evaluated model makes way for the judges, one at a time
  stored.eval = r.to_json();
  stored.eval["judge_family"] = family;  // for `rejudge --judge auto|prefix`
  stored.eval["model"] = args.positional()[0];
  stored.eval["max_new_tokens"] = o.max_new_tokens;
  // Written before the model judges run, so that a judge that fails leaves the generations.
  write_stored_evaluation(out, stored);
  if (model_judges.any()) {
    try {
      apply_model_judges(stored, model_judges, judge_loader(args));
    } catch (...) {
      // A guard that finished before the score judge failed keeps its verdicts.
      tabulate_by_refusal(stored);
      write_stored_evaluation(out, stored);
      std::fprintf(stderr,
                   "note: the responses, and the verdicts of any judge that finished, are saved in %s; `sppft rejudge %s --out %s` "
                   "with the failed judge's options judges them without generating again\n",
                   out.c_str(), out.c_str(), out.c_str());
      throw;
    }
    write_stored_evaluation(out, stored);
  }
  std::fputs(evaluation_summary(stored.eval, (out / "eval.json").string()).c_str(), stdout);
  std::printf("wrote %s/eval.json, responses.jsonl (%.1f s)\n", out.c_str(), r.seconds);
  return 0;
}

}  // namespace sppft::cli
