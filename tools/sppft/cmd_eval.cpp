// sppft eval DIR [--harmful FILE] [--over-rejection FILE] [--reference FILE] [--mmlu FILE] --out OUTDIR
#include <cstdio>

#include "analysis/evaluate.h"
#include "analysis/guard.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft eval DIR [--harmful FILE] [--over-rejection FILE] [--reference FILE.json]\n"
    "                  [--mmlu FILE.csv] [--max-new-tokens 128] [--judge J] --out OUTDIR\n\n"
    "Harmful rate R_h (fraction of harmful queries answered), over-rejection rate,\n"
    "Rouge-L F1 against reference answers (Alpaca JSON), and multiple-choice accuracy by\n"
    "answer log-likelihood (CSV: question, A, B, C, D, answer). Greedy decoding. Writes\n"
    "OUTDIR/eval.json and every response to OUTDIR/responses.jsonl.\n\n"
    "  --judge J                 auto (default: the family's prefix list, else keyword) |\n"
    "                            prefix | keyword (AdvBench substrings) | FILE\n"
    "  --guard DIR               also judge the harmful answers with a safety classifier\n"
    "                            checkpoint (Llama Guard 2/3: \"safe\" / \"unsafe\" + categories\n"
    "                            through its chat template): eval.json harmful.guard\n"
    "  --template T              alpaca (default) | chat | none\n"
    "  --limit N                 only the first N rows of each set\n"
    "  --batch-size B            prompts per prefill chunk (default 32)\n") + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_eval(int argc, char** argv) {
  Args args(argc, argv,
            {"--device", "--harmful", "--over-rejection", "--reference", "--mmlu", "--max-new-tokens", "--judge", "--out", "--template",
             "--chat-template-kwargs", "--limit", "--batch-size", "--guard"},
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
  const std::optional<std::string> guard_dir = args.get("--guard");
  if (guard_dir && !o.harmful) throw InputError("--guard judges the answers to the harmful set: give --harmful too");
  if (guard_dir && !fs::is_regular_file(fs::path(*guard_dir) / "config.json"))
    throw InputError("--guard " + *guard_dir + ": not a checkpoint directory (no config.json)");
  auto model = Model::load(args.positional()[0]);
  place_model(*model, args);
  model->set_chat_template_kwargs(chat_kwargs);
  const Judge judge = load_judge(args.get_or("--judge", "auto"), judge_family(*model));
  ensure_directory(out);
  std::vector<Json> responses;
  std::vector<std::string> harmful_queries, harmful_answers;
  std::vector<std::size_t> harmful_rows;
  EvalResult r = evaluate_model(*model, judge, o, [&](const std::string& set, const std::string& prompt, const std::string& text, bool refused) {
    if (set == "harmful") {
      harmful_queries.push_back(prompt);
      harmful_answers.push_back(text);
      harmful_rows.push_back(responses.size());
    }
    responses.push_back({{"set", set}, {"prompt", prompt}, {"response", text}, {"refused", refused}, {"judge", judge.name}});
  });
  Json j = r.to_json();
  std::optional<GuardResult> guard;
  if (guard_dir) {  // the evaluated model makes way for the guard
    model.reset();
    auto guard_model = Model::load(*guard_dir);
    place_model(*guard_model, args);
    guard = guard_judge(*guard_model, harmful_queries, harmful_answers, o.batch_size);
    j["harmful"]["guard"] = guard->to_json();
    for (std::size_t i = 0; i < harmful_rows.size(); ++i) responses[harmful_rows[i]]["guard"] = guard->replies[i];
  }
  j["model"] = args.positional()[0];
  j["max_new_tokens"] = o.max_new_tokens;
  atomic_write_text(out / "eval.json", j.dump(2) + "\n");
  std::string lines;
  for (const Json& row : responses) lines += row.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  atomic_write_text(out / "responses.jsonl", lines);
  std::printf("judge: %s\n", judge.name.c_str());
  if (r.harmful) std::printf("harmful rate R_h      %.2f%% (%lld of %lld answered)\n", 100 * r.harmful->rate, (long long)(r.harmful->n - r.harmful->refused), (long long)r.harmful->n);
  if (guard)
    std::printf("guard %-15s unsafe %.2f%% (%lld of %lld; %lld safe, %lld unparsed)\n", guard->model.c_str(),
                guard->n ? 100.0 * guard->unsafe / guard->n : 0.0, (long long)guard->unsafe, (long long)guard->n, (long long)guard->safe,
                (long long)guard->unparsed);
  if (r.over_rejection) std::printf("over-rejection rate   %.2f%% (%lld of %lld refused)\n", 100 * r.over_rejection->rate, (long long)r.over_rejection->refused, (long long)r.over_rejection->n);
  if (r.rouge_l) std::printf("Rouge-L F1            %.4f (%lld references)\n", *r.rouge_l, (long long)r.rouge_n);
  if (r.mc_accuracy) std::printf("multiple choice       %.2f%% (%lld questions)\n", 100 * *r.mc_accuracy, (long long)r.mc_n);
  std::printf("wrote %s/eval.json, responses.jsonl (%.1f s)\n", out.c_str(), r.seconds);
  return 0;
}

}  // namespace sppft::cli
