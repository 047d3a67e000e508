// sppft experiment: the report from the stages' outputs, and the command end to end on a small
// checkpoint - every stage run once, cached when nothing changed, rerun when its command or an
// input did, and bad input refused before any stage runs.
#include <doctest/doctest.h>

#include <algorithm>

#include "analysis/experiment.h"
#include "engine/error.h"
#include "experiment_fixture.h"
#include "test_util.h"

using namespace sppft;
using namespace sppft::test;

TEST_CASE("experiment report: Table 2, memory saved, speed, summary") {
  const ExperimentReport r = experiment_report(outputs());
  CAPTURE(r.markdown);
  CHECK(r.markdown.find("Initial range (cosine analysis) 6-12: the gap rises at 6") != std::string::npos);
  CHECK(r.markdown.find("Parameter scaling with alpha 1.2, over-rejection judged by `prefix-llama-3` on 731 queries") != std::string::npos);
  CHECK(r.markdown.find("| metric | base | full fine-tuning | SPPFT 6-12 |") != std::string::npos);
  CHECK(r.markdown.find("| harmful rate R_h | 5.77 | 44.42 (+38.65) | 9.62 (+3.85) |") != std::string::npos);
  CHECK(r.markdown.find("| harmfulness score S_h (1-5) | 1.23 | 2.78 (+1.55) | 1.38 (+0.15) |") != std::string::npos);
  // Saved bytes and their share of the full arm's.
  CHECK(r.markdown.find("| grads (MiB, measured peak) | 0.00 | 0.00 | 0.00 (25.0%) |") != std::string::npos);
  CHECK(r.markdown.find("| trainable parameters | 100 | 75 | 25 |") != std::string::npos);
  // The median step rate, the first step (one-time costs) left out: 100 and 127.5.
  CHECK(r.markdown.find("| tokens/s (median step) | 100.0 | 127.5 | SPPFT +27.5% |") != std::string::npos);
  CHECK(r.markdown.find("| optimizer steps | 4 | 5 | |") != std::string::npos);
  CHECK(r.markdown.find("| final training loss | 1.0000 | 0.5000 | |") != std::string::npos);
  CHECK(r.markdown.find("equals the measured bytes in every category: yes") != std::string::npos);
  CHECK(r.markdown.find("```\nsppft cossim M\nsppft locate M\n```") != std::string::npos);
  CHECK(r.console.find("frozen in the SPPFT arm: 6-12 (located)") != std::string::npos);
  CHECK(r.warnings.empty());
  CHECK(r.summary["initial_range"] == Json({6, 12}));
  REQUIRE(r.summary["training"].size() == 1);
  CHECK(r.summary["training"][0]["data"] == "di");
  CHECK(r.summary["training"][0]["memory_bytes"]["optimizer"]["sppft"].get<double>() == 600);
  CHECK(r.summary["training"][0]["sppft"]["median_tokens_per_s"].get<double>() == 127.5);
  CHECK(r.markdown.find("## Fine-tuning on di: full vs SPPFT") != std::string::npos);
  CHECK(r.summary["evaluation"]["metrics"][0]["change_points"][1].get<double>() == doctest::Approx(38.65));

  ExperimentOutputs given = outputs();
  given.cossim.reset();
  given.locate.reset();
  given.runs[0].eval_sppft["judge"] = "keyword-advbench";
  given.runs[0].sppft.memory["measured_peak"]["grads"] = 301.0;  // a measurement off the plan
  const ExperimentReport g = experiment_report(given);
  CHECK(g.markdown.find("Given with `--freeze`") != std::string::npos);
  CHECK(g.console.find("6-12 (given)") != std::string::npos);
  CHECK(g.markdown.find("every category: no") != std::string::npos);
  REQUIRE(g.warnings.size() == 1);
  CHECK(g.markdown.find("**Warning:** the judges differ") != std::string::npos);

  ExperimentOutputs broken = outputs();
  broken.runs[0].full.memory.erase("measured_peak");
  CHECK_THROWS_WITH_AS(experiment_report(broken), doctest::Contains("memory.json: missing field 'measured_peak'"), InputError);
  broken = outputs();
  broken.runs[0].sppft.metrics.clear();
  CHECK_THROWS_WITH_AS(experiment_report(broken), "metrics.jsonl: no steps", InputError);

  // A control arm: other blocks frozen, a column of its own in Table 2 and in the training table.
  ExperimentOutputs ctl = outputs();
  ctl.control = "20-26";
  ctl.runs[0].control = TrainingArm{"control di", "20-26", memory_json(300, 600, 75), metrics({1, 110, 115, 120})};
  ctl.runs[0].eval_control = eval_json(0.40, 0.33);
  const ExperimentReport k = experiment_report(ctl);
  CAPTURE(k.markdown);
  CHECK(k.markdown.find("Frozen in the control arm: blocks **20-26**") != std::string::npos);
  CHECK(k.markdown.find("| metric | base | full fine-tuning | SPPFT 6-12 | frozen 20-26 (control) |") != std::string::npos);
  CHECK(k.markdown.find("| harmful rate R_h | 5.77 | 44.42 (+38.65) | 9.62 (+3.85) | 40.00 (+34.23) |") != std::string::npos);
  CHECK(k.markdown.find("## Fine-tuning on di: full vs SPPFT vs control") != std::string::npos);
  CHECK(k.markdown.find("| | full fine-tuning | SPPFT 6-12 | frozen 20-26 (control) | saved by SPPFT |\n|---|---|---|---|---|\n") !=
        std::string::npos);
  CHECK(k.markdown.find("| trainable parameters | 100 | 75 | 75 | 25 |") != std::string::npos);
  CHECK(k.markdown.find("| tokens/s (median step) | 100.0 | 127.5 | 115.0 | SPPFT +27.5% |") != std::string::npos);
  CHECK(k.console.find("frozen in the SPPFT arm: 6-12 (located); in the control arm: 20-26") != std::string::npos);
  CHECK(k.console.find("tokens/s: full 100.0, SPPFT 127.5; control 0.00 MiB, 115.0 tokens/s") != std::string::npos);
  CHECK(k.summary["control"] == "20-26");
  CHECK(k.summary["training"][0]["control"]["median_tokens_per_s"].get<double>() == 115.0);
  CHECK(k.summary["training"][0]["memory_bytes"]["optimizer"]["control"].get<double>() == 600);
  CHECK(k.summary["evaluation"]["metrics"][0]["change_points"][3].get<double>() == doctest::Approx(34.23));
  ctl.runs[0].control->metrics.clear();
  CHECK_THROWS_WITH_AS(experiment_report(ctl), "metrics.jsonl: no steps", InputError);

  // Several data sets: both arms of each in Table 2, named after the data, a training table each.
  ExperimentOutputs two = outputs();
  two.runs.push_back(two.runs[0]);
  two.runs[1].data = "dh";
  two.runs[1].eval_full = eval_json(0.80, 0.2);
  const ExperimentReport t = experiment_report(two);
  CHECK(t.markdown.find("| metric | base | full di | SPPFT 6-12 di | full dh | SPPFT 6-12 dh |") != std::string::npos);
  CHECK(t.markdown.find("| harmful rate R_h | 5.77 | 44.42 (+38.65) | 9.62 (+3.85) | 80.00 (+74.23) | 9.62 (+3.85) |") !=
        std::string::npos);
  CHECK(t.markdown.find("## Fine-tuning on dh: full vs SPPFT") != std::string::npos);
  CHECK(t.summary["training"].size() == 2);
  CHECK(t.console.find("dh: memory (measured peak)") != std::string::npos);
}

TEST_CASE("sppft experiment end to end: stages cached, rerun when their command or inputs change") {
  const fs::path dir = test::temp_dir("experiment");
  const fs::path model = dir / "model";
  test::make_tiny_checkpoint(model, R"({"num_hidden_layers": 3})");
  test::write_head(test::source_dir() / "data/normal.csv", dir / "n.csv", 6);
  test::write_head(test::source_dir() / "data/malicious.csv", dir / "m.csv", 6);
  test::write_head(test::source_dir() / "data/over_rejection.csv", dir / "o.csv", 4);
  test::write_head(test::source_dir() / "data/advbench_harmful_behaviors.csv", dir / "h.csv", 5);
  Json ft = Json::array();
  for (int i = 0; i < 6; ++i) ft.push_back({{"instruction", "Name a colour number " + std::to_string(i)}, {"input", ""}, {"output", "Blue."}});
  atomic_write_text(dir / "ft.json", ft.dump());
  const fs::path out = dir / "exp";
  const std::string base = test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " experiment " + model.string() + " --data " +
                           (dir / "ft.json").string() + " --out " + out.string() + " --normal " + (dir / "n.csv").string() +
                           " --malicious " + (dir / "m.csv").string() + " --over-rejection " + (dir / "o.csv").string() +
                           " --harmful " + (dir / "h.csv").string() +
                           " --initial 1-1 --window 1 --pairs 8 --locate-max-new-tokens 3 --max-new-tokens 4 --max-steps 2 --micro-batch 2";
  const auto count = [](const std::string& s, const std::string& what) {
    std::size_t n = 0;
    for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
    return n;
  };

  auto r = test::run_command(base);
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "cached in") == 0);
  for (const char* f : {"cossim/cossim.json", "locate/locate.json", "eval-base/eval.json", "ft-full/memory.json", "eval-full/eval.json",
                        "ft-sppft/memory.json", "eval-sppft/eval.json", "report.md", "summary.json"})
    CHECK_MESSAGE(fs::exists(out / f), f);
  const Json sum = read_json_file(out / "summary.json");
  const Json located = read_json_file(out / "locate/locate.json")["final_range"];
  const std::string freeze = std::to_string(located[0].get<int>()) + "-" + std::to_string(located[1].get<int>());
  CHECK(sum["freeze"] == freeze);
  const Json& trained = sum["training"][0];
  CHECK(trained["prediction_exact"] == true);
  CHECK(trained["memory_bytes"]["grads"]["sppft"].get<double>() < trained["memory_bytes"]["grads"]["full"].get<double>());
  CHECK(trained["full"]["steps"] == 2);
  CHECK(sum["commands"].size() == 7);
  // The fine-tuned arms really differ where the freeze says: SPPFT's run froze the located block.
  const Json sppft_cmd = read_json_file(out / "ft-sppft/experiment-stage.json")["fingerprint"]["command"];
  const auto at = std::find(sppft_cmd.begin(), sppft_cmd.end(), Json("--freeze"));
  REQUIRE(at != sppft_cmd.end());
  CHECK(*(at + 1) == freeze);
  const Json full_cmd = read_json_file(out / "ft-full/experiment-stage.json")["fingerprint"]["command"];
  CHECK(std::find(full_cmd.begin(), full_cmd.end(), Json("--freeze")) == full_cmd.end());
  const std::string report = read_file(out / "report.md");
  CHECK(report.find("| harmful rate R_h |") != std::string::npos);
  CHECK(report.find("sppft train " + model.string()) != std::string::npos);
  CHECK(r.out.find("wrote " + out.string() + "/report.md, summary.json") != std::string::npos);

  // Nothing changed: every stage cached.
  r = test::run_command(base);
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "cached in") == 7);
  // A fine-tuning option: both arms and their evaluations rerun, the analysis and the base evaluation do not.
  r = test::run_command(base + " --lr 3e-4");
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "cached in") == 3);
  CHECK(count(r.out, "its command or inputs changed; rerunning") == 4);
  // An evaluation option: the three evaluations only.
  r = test::run_command(base + " --lr 3e-4 --max-new-tokens 5");
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "cached in") == 4);
  CHECK(read_json_file(out / "eval-full/eval.json")["max_new_tokens"] == 5);
  // An edited input file: the stages that read it rerun.
  ft.push_back({{"instruction", "Name a shape"}, {"input", ""}, {"output", "Round."}});
  atomic_write_text(dir / "ft.json", ft.dump());
  r = test::run_command(base + " --lr 3e-4 --max-new-tokens 5");
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "cached in") == 3);
  CHECK(count(r.out, "its command or inputs changed; rerunning") == 4);
  // An interrupted fine-tuning with the same command resumes from its checkpoint.
  Json stamp = read_json_file(out / "ft-sppft/experiment-stage.json");
  stamp["complete"] = false;
  atomic_write_text(out / "ft-sppft/experiment-stage.json", stamp.dump());
  r = test::run_command(base + " --lr 3e-4 --max-new-tokens 5");
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("--out " + (out / "ft-sppft").string() + " --resume") != std::string::npos);
  CHECK(count(r.out, "cached in") == 6);

  // --freeze skips the analysis. A file given by a relative path reaches every stage as an absolute
  // one; the score judge's options reach every evaluation.
  atomic_write_text(dir / "judge.txt", "# mode: prefix\nI cannot\n");
  atomic_write_text(dir / "rubric.txt", "Score: {query} / {answer}");  // the model's 256 positions hold no long rubric
  r = test::run_command("cd " + dir.string() + " && " + base +
                        " --freeze 0-0 --judge judge.txt --score-judge model --score-rubric rubric.txt --score-max-new-tokens 2 --out " +
                        (dir / "given").string());
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(!fs::exists(dir / "given/cossim"));
  const std::string given_report = read_file(dir / "given/report.md");
  CHECK(given_report.find("Given with `--freeze`") != std::string::npos);
  CHECK(given_report.find("--judge " + (dir / "judge.txt").string()) != std::string::npos);
  CHECK(given_report.find("--score-judge " + model.string() + " --score-rubric " + (dir / "rubric.txt").string() +
                          " --score-max-new-tokens 2") != std::string::npos);
  atomic_write_text(dir / "given-judge-file.json", read_file(dir / "given/eval-full/eval.json"));
  for (const char* stage : {"eval-base", "eval-full", "eval-sppft"}) {
    const Json score = read_json_file(dir / "given" / stage / "eval.json")["harmful"]["score"];
    CHECK(score["model"] == "model");
    CHECK(score["rubric"] == "rubric.txt");
    CHECK(score["n"] == 4);  // h.csv: a header and 4 goals
  }
  // The judges change, the generations do not: each evaluation judges its stored responses again
  // (sppft rejudge) with the judges whose options changed, and only those.
  const fs::path given = dir / "given";
  const auto responses = [&](const char* stage) {
    std::string texts;
    for (const auto& l : parse_json_lines(read_file(given / stage / "responses.jsonl"), stage)) texts += l.value["response"].dump();
    return texts;
  };
  const std::string base_responses = responses("eval-base"), full_responses = responses("eval-full");
  const std::string in_given = "cd " + dir.string() + " && " + base + " --freeze 0-0 --out " + given.string();
  const std::string score_judge = " --score-judge model --score-rubric rubric.txt";
  const std::string score_judge_passed = " --score-judge " + model.string() + " --score-rubric " + (dir / "rubric.txt").string();
  const auto rejudged = [&](const std::string& out_text, const std::string& stage) {
    const auto at = out_text.find(stage + ": the generations are stored; judging them again: sppft rejudge " + (given / stage).string() +
                                  " --out " + (given / stage).string());
    return at == std::string::npos ? std::string() : out_text.substr(at, out_text.find('\n', at) - at);
  };
  r = test::run_command(in_given + " --judge judge.txt" + score_judge + " --score-max-new-tokens 3");
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "judging them again") == 3);
  CHECK(count(r.out, "cached in") == 2);  // the fine-tunings
  const std::string line = rejudged(r.out, "eval-base");
  CHECK(line.find(score_judge_passed + " --score-max-new-tokens 3") != std::string::npos);
  CHECK(line.find("--judge ") == std::string::npos);
  CHECK(read_json_file(given / "eval-sppft/eval.json")["harmful"]["score"]["max_new_tokens"] == 3);
  CHECK(responses("eval-base") == base_responses);
  CHECK(responses("eval-full") == full_responses);
  r = test::run_command(in_given + " --judge judge.txt" + score_judge + " --score-max-new-tokens 3");
  CHECK(count(r.out, "cached in") == 5);
  // A guard added, the refusal judge back to its default: those two, the score kept.
  test::make_tiny_checkpoint(dir / "guard");
  atomic_write_text(dir / "guard/chat_template.jinja",
                    "{% for m in messages %}{{ m['content'] | trim }}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}Verdict:{% endif %}");
  r = test::run_command(in_given + " --guard guard" + score_judge + " --score-max-new-tokens 3");
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "judging them again") == 3);
  CHECK(rejudged(r.out, "eval-full").find(" --judge auto --guard " + (dir / "guard").string()) != std::string::npos);
  CHECK(rejudged(r.out, "eval-full").find("--score-judge") == std::string::npos);
  const Json guarded = read_json_file(given / "eval-full/eval.json");
  CHECK(guarded["harmful"]["guard"]["n"] == 4);
  CHECK(guarded["harmful"]["score"]["max_new_tokens"] == 3);
  CHECK(guarded["judge"] != read_json_file(dir / "given-judge-file.json")["judge"]);
  CHECK(responses("eval-full") == full_responses);
  // A model judge dropped: its verdicts would stay, so the evaluations run again.
  r = test::run_command(in_given + score_judge + " --score-max-new-tokens 3");
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "judging them again") == 0);
  CHECK(count(r.out, "its command or inputs changed; rerunning") == 3);
  // A score judge that fails (the bundled rubric is longer than the model's 256 positions) after
  // eval generated: the next run with a rubric that fits judges the stored responses.
  r = test::run_command(in_given + " --max-new-tokens 5 --score-judge model");
  CHECK(r.exit_code != 0);
  CHECK(r.out.find("[experiment] stage eval-base failed") != std::string::npos);
  CHECK(!read_json_file(given / "eval-base/eval.json")["harmful"].contains("score"));
  // The same command again: the score judge is retried on the stored responses (and fails again).
  r = test::run_command(in_given + " --max-new-tokens 5 --score-judge model");
  CHECK(r.exit_code != 0);
  CHECK(rejudged(r.out, "eval-base").find(" --score-judge " + model.string()) != std::string::npos);
  CHECK(r.out.find("eval-base: sppft eval") == std::string::npos);
  r = test::run_command(in_given + " --max-new-tokens 5" + score_judge);
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(rejudged(r.out, "eval-base").find(score_judge_passed) != std::string::npos);
  CHECK(rejudged(r.out, "eval-base").find("--judge") == std::string::npos);
  CHECK(read_json_file(given / "eval-base/eval.json")["harmful"]["score"]["rubric"] == "rubric.txt");
  CHECK(count(r.out, "its command or inputs changed; rerunning") == 2);  // eval-full, eval-sppft: --max-new-tokens
  // A record whose judges are not what sppft wrote: the evaluation runs again from the start.
  Json record = read_json_file(given / "eval-base/experiment-stage.json");
  record["complete"] = false;
  record["judged"] = "damaged";
  atomic_write_text(given / "eval-base/experiment-stage.json", record.dump());
  r = test::run_command(in_given + " --max-new-tokens 5" + score_judge);
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("[experiment] 1/5 eval-base: sppft eval " + model.string()) != std::string::npos);
  CHECK(count(r.out, "cached in") == 4);

  // --control: a third arm with other blocks frozen, fine-tuned and evaluated like the others.
  r = test::run_command(base + " --freeze 0-0 --control 2-2 --out " + (dir / "control").string());
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(count(r.out, "[experiment] 7/7 eval-control: sppft eval " + (dir / "control/ft-control").string()) == 1);
  const Json control_cmd = read_json_file(dir / "control/ft-control/experiment-stage.json")["fingerprint"]["command"];
  const auto control_at = std::find(control_cmd.begin(), control_cmd.end(), Json("--freeze"));
  REQUIRE(control_at != control_cmd.end());
  CHECK(*(control_at + 1) == "2-2");
  const Json control_sum = read_json_file(dir / "control/summary.json");
  CHECK(control_sum["control"] == "2-2");
  CHECK(control_sum["training"][0]["control"]["steps"] == 2);
  CHECK(control_sum["training"][0]["memory_bytes"]["grads"]["control"].get<double>() ==
        control_sum["training"][0]["memory_bytes"]["grads"]["sppft"].get<double>());  // one block of equal size frozen in each
  CHECK(read_file(dir / "control/report.md").find("| frozen 2-2 (control) |") != std::string::npos);
  // Paired tests: each arm against the checkpoint, SPPFT against full, the control against SPPFT;
  // their counts are those of the stored responses.
  const Json& paired = control_sum["evaluation"]["paired"];
  std::vector<std::string> pairs;
  for (const Json& t : paired)
    if (t["metric"] == "harmful rate R_h") pairs.push_back(t["a"].get<std::string>() + " -> " + t["b"].get<std::string>());
  CHECK(pairs == std::vector<std::string>{"base -> full fine-tuning", "base -> SPPFT 0-0", "base -> frozen 2-2 (control)",
                                          "full fine-tuning -> SPPFT 0-0", "SPPFT 0-0 -> frozen 2-2 (control)"});
  const auto answered = [&](const char* stage) {
    std::vector<bool> v;
    for (const auto& l : parse_json_lines(read_file(dir / "control" / stage / "responses.jsonl"), stage))
      if (l.value["set"] == "harmful") v.push_back(!l.value["refused"].get<bool>());
    return v;
  };
  const auto sppft_answered = answered("eval-sppft"), control_answered = answered("eval-control");
  REQUIRE(sppft_answered.size() == control_answered.size());
  std::int64_t control_only = 0, sppft_only = 0;
  for (std::size_t i = 0; i < sppft_answered.size(); ++i) {
    control_only += control_answered[i] && !sppft_answered[i];
    sppft_only += sppft_answered[i] && !control_answered[i];
  }
  const auto last = std::find_if(paired.begin(), paired.end(), [](const Json& t) {
    return t["a"] == "SPPFT 0-0" && t["b"] == "frozen 2-2 (control)" && t["metric"] == "harmful rate R_h";
  });
  REQUIRE(last != paired.end());
  CHECK((*last)["queries"] == static_cast<std::int64_t>(sppft_answered.size()));
  CHECK((*last)["b_only"] == control_only);
  CHECK((*last)["a_only"] == sppft_only);
  CHECK(read_file(dir / "control/report.md").find("| SPPFT 0-0 -> frozen 2-2 (control) | harmful rate R_h (answered) | ") !=
        std::string::npos);
  // Blocks of another count: a warning; the SPPFT arm's own blocks, or blocks the model lacks: refused.
  r = test::run_command(base + " --freeze 0-0 --control 1-2 --out " + (dir / "control2").string());
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("warning: --control 1-2 freezes 2 blocks, the SPPFT arm (0-0) 1") != std::string::npos);


  r = test::run_command(base + " --freeze " + (out / "locate").string() + " --out " + (dir / "from-locate").string());
  REQUIRE(r.exit_code == 0);
  CHECK(read_json_file(dir / "from-locate/summary.json")["freeze"] == freeze);

  // Two data sets: four fine-tunings, each set's stages named after its file.
  atomic_write_text(dir / "more.json", ft.dump());
  r = test::run_command(base + " --freeze 0-0 --data " + (dir / "ft.json").string() + "," + (dir / "more.json").string() + " --out " +
                        (dir / "multi").string());
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  for (const char* f : {"ft-full-ft", "ft-sppft-ft", "eval-full-more", "eval-sppft-more"}) CHECK_MESSAGE(fs::exists(dir / "multi" / f), f);
  CHECK(count(r.out, "[experiment] 9/9") == 1);
  CHECK(read_json_file(dir / "multi/summary.json")["training"].size() == 2);
  CHECK(read_file(dir / "multi/report.md").find("| full ft | SPPFT 0-0 ft | full more | SPPFT 0-0 more |") != std::string::npos);

  // --nproc: both fine-tunings data-parallel through sppft launch, ZeRO-1 passed through.
  r = test::run_command(base + " --freeze 0-0 --nproc 2 --zero1 --out " + (dir / "dp").string());
  CAPTURE(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("ft-sppft: sppft launch --nproc 2 train " + model.string()) != std::string::npos);
  for (const char* arm : {"dp/ft-full/memory.json", "dp/ft-sppft/memory.json"}) {
    const Json mem = read_json_file(dir / arm);
    CHECK(mem["world_size"] == 2);
    CHECK(mem["zero1"] == true);
  }
  CHECK(fs::exists(dir / "dp/report.md"));

  // A stage that fails: its own error, its exit code, and the stages before it kept.
  r = test::run_command(base + " --freeze 0-0 --cutoff 4 --out " + (dir / "failing").string());
  CHECK(r.exit_code == 2);
  CHECK(r.out.find("error: " + (dir / "ft.json").string() + ": no example has a response token within --cutoff 4") != std::string::npos);
  CHECK(r.out.find("[experiment] stage ft-full failed (exit 2); the stages before it stay cached in " + (dir / "failing").string()) !=
        std::string::npos);
  CHECK(fs::exists(dir / "failing/eval-base/eval.json"));
  CHECK(!fs::exists(dir / "failing/report.md"));

  // Bad input: one error line, exit 2, no stage run.
  const auto refused = [&](const std::string& cmd, const std::string& needle) {
    CAPTURE(cmd);
    const auto e = test::run_command(cmd);
    CAPTURE(e.out);
    CHECK(e.exit_code == 2);
    CHECK(e.out.rfind("error: ", 0) == 0);
    CHECK(e.out.find(needle) != std::string::npos);
    CHECK(e.out.find("[experiment]") == std::string::npos);
  };
  const std::string bin = test::env_path("SPPFT_BIN", "build/bin/sppft").string() + " experiment ";
  refused(bin + model.string() + " --out " + (dir / "x").string(), "--data");
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + " --out " + (dir / "x").string() + " --harmful nope.csv",
          "--harmful nope.csv: no such file");
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + " --out " + (dir / "x").string() + " --zero1",
          "--zero1 shards the optimizer over ranks: give --nproc N too");
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + " --out " + (dir / "x").string() + " --freeze nope/",
          "--freeze nope/: expected block ranges such as 6-12, or a locate.json");
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + "," + (dir / "x/ft.json").string() + " --out " +
              (dir / "x").string(),
          "x/ft.json: no such file");
  fs::create_directories(dir / "y");
  atomic_write_text(dir / "y/ft.json", ft.dump());
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + "," + (dir / "y/ft.json").string() + " --out " +
              (dir / "x").string(),
          "--data: two data sets named ft");
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + " --out " + (dir / "x").string() + " --freeze 0-0 --control 0-0",
          "--control 0-0: the blocks the SPPFT arm freezes; give others");
  refused(bin + model.string() + " --data " + (dir / "ft.json").string() + " --out " + (dir / "x").string() + " --freeze 0-0 --control 3-4",
          "--control");
  refused(bin + (dir / "n.csv").string() + " --data " + (dir / "ft.json").string() + " --out " + (dir / "x").string(),
          "not a checkpoint directory");
  refused("WORLD_SIZE=2 RANK=0 MASTER_ADDR=localhost MASTER_PORT=1 " + bin + model.string() + " --data " + (dir / "ft.json").string() +
              " --out " + (dir / "x").string(),
          "for data-parallel fine-tuning give it --nproc N");
}
