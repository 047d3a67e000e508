// sppft eval DIR [--harmful FILE] [--over-rejection FILE] [--reference FILE] [--mmlu FILE] --out OUTDIR
#include <cstdio>

#include "analysis/evaluate.h"
#include "analysis/guard.h"
#include "analysis/harm_score.h"
#include "engine/error.h"
#include "models/prompting.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"

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
    "  --guard DIR               also judge the harmful answers with a safety classifier\n"
    "                            checkpoint (Llama Guard 2/3: \"safe\" / \"unsafe\" + categories\n"
    "                            through its chat template): eval.json harmful.guard\n"
    "  --score-judge DIR         also score each harmful answer from 1 (refuses) to 5 (does the\n"
    "                            harm asked) with a chat model as judge: S_h, eval.json\n"
    "                            harmful.score (mean, histogram, unparsed replies)\n"
    "  --score-rubric FILE       the judge's prompt, with {query} and {answer} (default\n"
    "                            data/judges/harm-score.txt)\n"
    "  --score-max-new-tokens N  the judge's reply length (default 16; more for rubrics that ask\n"
    "                            for reasons before the score)\n"
    "  --score-chat-template-kwargs J  the judge's extra chat-template variables, e.g.\n"
    "                            '{\"enable_thinking\": false}' for a Qwen3 judge\n"
    "  --template T              alpaca (default) | chat | none\n"
    "  --limit N                 only the first N rows of each set\n"
    "  --batch-size B            prompts per prefill chunk (default 32)\n") + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_eval(int argc, char** argv) {
  Args args(argc, argv,
            {"--device", "--harmful", "--over-rejection", "--reference", "--mmlu", "--max-new-tokens", "--judge", "--out", "--template",
             "--chat-template-kwargs", "--limit", "--batch-size", "--guard", "--score-judge", "--score-rubric",
             "--score-max-new-tokens", "--score-chat-template-kwargs"},
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
  const std::optional<std::string> score_dir = args.get("--score-judge");
  for (const auto& [flag, dir] : {std::pair{"--guard", guard_dir}, std::pair{"--score-judge", score_dir}}) {
    if (!dir) continue;
    if (!o.harmful) throw InputError(std::string(flag) + " judges the answers to the harmful set: give --harmful too");
    if (!fs::is_regular_file(fs::path(*dir) / "config.json"))
      throw InputError(std::string(flag) + " " + *dir + ": not a checkpoint directory (no config.json)");
    check_checkpoint(*dir);  // before the evaluation's generations, not after them
  }
  for (const char* flag : {"--score-rubric", "--score-max-new-tokens", "--score-chat-template-kwargs"})
    if (!score_dir && args.get(flag)) throw InputError(std::string(flag) + " sets up --score-judge: give --score-judge too");
  const auto score_kwargs = args.get("--score-chat-template-kwargs")
                                ? parse_chat_template_kwargs(*args.get("--score-chat-template-kwargs"), "--score-chat-template-kwargs")
                                : nlohmann::ordered_json::object();
  std::optional<HarmScoreRubric> rubric;
  if (score_dir) rubric = args.get("--score-rubric") ? read_harm_score_rubric(*args.get("--score-rubric")) : default_harm_score_rubric();
  const std::int64_t score_max_new = args.get_int("--score-max-new-tokens", 16, 1, 1 << 20);
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
  model.reset();  // the evaluated model makes way for the judges, one at a time
  if (guard_dir) {
    auto guard_model = Model::load(*guard_dir);
    place_model(*guard_model, args);
    guard = guard_judge(*guard_model, harmful_queries, harmful_answers, o.batch_size);
    j["harmful"]["guard"] = guard->to_json();
    for (std::size_t i = 0; i < harmful_rows.size(); ++i) responses[harmful_rows[i]]["guard"] = guard->replies[i];
  }
  std::optional<HarmScoreResult> score;
  if (score_dir) {
    auto judge_model = Model::load(*score_dir);
    place_model(*judge_model, args);
    judge_model->set_chat_template_kwargs(score_kwargs);
    score = harm_score_judge(*judge_model, *rubric, harmful_queries, harmful_answers, o.batch_size, score_max_new);
    j["harmful"]["score"] = score->to_json();
    for (std::size_t i = 0; i < harmful_rows.size(); ++i) {
      Json& row = responses[harmful_rows[i]];
      row["score"] = score->scores[i] ? Json(*score->scores[i]) : Json(nullptr);
      row["score_reply"] = score->replies[i];
    }
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
  if (score) {
    char mean[32] = "-";
    if (const auto m = score->mean()) std::snprintf(mean, sizeof mean, "%.2f", *m);
    std::printf("score %-15s S_h %s (1-5; %lld of %lld scored, %lld unparsed; rubric %s)\n", score->model.c_str(), mean,
                (long long)score->scored, (long long)score->n,
                (long long)(score->n - score->scored), score->rubric.c_str());
  }
  if (r.over_rejection) std::printf("over-rejection rate   %.2f%% (%lld of %lld refused)\n", 100 * r.over_rejection->rate, (long long)r.over_rejection->refused, (long long)r.over_rejection->n);
  if (r.rouge_l) std::printf("Rouge-L F1            %.4f (%lld references)\n", *r.rouge_l, (long long)r.rouge_n);
  if (r.mc_accuracy) std::printf("multiple choice       %.2f%% (%lld questions)\n", 100 * *r.mc_accuracy, (long long)r.mc_n);
  std::printf("wrote %s/eval.json, responses.jsonl (%.1f s)\n", out.c_str(), r.seconds);
  return 0;
}

}  // namespace sppft::cli
