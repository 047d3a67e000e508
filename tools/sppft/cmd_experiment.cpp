// sppft experiment DIR --data FILE[,FILE...] --out OUT: the paper's whole experiment on one checkpoint,
// as the ordinary sppft commands it chains (analysis/experiment.h gathers their outputs).
#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>

#include "analysis/experiment.h"
#include "analysis/judge.h"
#include "engine/error.h"
#include "engine/text.h"
#include "models/config.h"
#include "trainer/comm.h"
#include "trainer/freeze.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/self_exec.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft experiment DIR --data FILE[,FILE...] --out OUT [options]\n\n"
    "The paper's experiment on one checkpoint, each stage an ordinary sppft command:\n"
    "  1 cossim      the initial safety-layer range (--normal, --malicious)\n"
    "  2 locate      the final range by parameter scaling + over-rejection (--over-rejection)\n"
    "  3 eval-base   the checkpoint before fine-tuning\n"
    "  4 ft-full     fine-tuning on --data, every block trainable\n"
    "  5 eval-full\n"
    "  6 ft-sppft    the same fine-tuning with the located blocks frozen\n"
    "  7 eval-sppft\n"
    "With several data sets (the paper's D_N, D_I, D_H: --data dn.json,di.json,dh.json; see\n"
    "sppft data), stages 4-7 run for each, named after its file (ft-full-di, eval-sppft-di, ...).\n"
    "then OUT/report.md: the safety layers, the paper's Table 2 (harmful rate, over-rejection,\n"
    "utility; changes in points), memory by category and tokens/s of both arms, and every\n"
    "stage's command. OUT/summary.json has the numbers. A stage whose command and inputs\n"
    "are unchanged is not run again; change an option and only the stages it touches rerun;\n"
    "an interrupted fine-tuning resumes from its last checkpoint (--save-every K); an\n"
    "evaluation whose judges changed (--judge, --guard, --score-*) or failed judges its stored\n"
    "responses (sppft rejudge) without generating them again.\n\n"
    "  --freeze RANGES           the blocks to freeze (e.g. 6-12, or an earlier locate.json or\n"
    "                            its directory): skips stages 1 and 2\n"
    "  --control RANGES          a control arm: the same fine-tuning with these blocks frozen\n"
    "                            instead (e.g. 20-26, as many blocks elsewhere; the paper's\n"
    "                            Table 8), and its evaluation (stages ft-control, eval-control)\n"
    "  --device D                cpu (default, fp32) | cuda (bf16), every stage\n"
    "  --template T              alpaca (default) | chat | none, every stage\n"
    "  --chat-template-kwargs J  every stage (see sppft train --help)\n"
    "  --batch-size N            prompts per batch in stages 1, 2, 3, 5, 7 (default 32)\n"
    "  --judge J                 refusal judge of locate and eval (default auto)\n\n"
    "stage 1 (defaults: the bundled data/normal.csv, data/malicious.csv):\n"
    "  --normal FILE  --malicious FILE  --pairs N\n"
    "stage 2 (default: the bundled data/over_rejection.csv, also evaluation's over-rejection set):\n"
    "  --over-rejection FILE  --initial i-j  --alpha A  --window W  --scale-o-proj\n"
    "  --locate-limit N          the first N over-rejection queries only\n"
    "  --locate-max-new-tokens N\n"
    "evaluation (default harmful set: the bundled AdvBench data/advbench_harmful_behaviors.csv):\n"
    "  --harmful FILE  --reference FILE  --mmlu FILE  --guard DIR  --max-new-tokens N\n"
    "  --score-judge DIR  --score-rubric FILE  --score-max-new-tokens N\n"
    "  --score-chat-template-kwargs J   S_h, a judge model's 1-5 score (sppft eval --help)\n"
    "  --eval-limit N            the first N queries of each set\n"
    "fine-tuning: every option of sppft train but --out, --freeze, --resume, --dist and\n"
    "--dist-timeout, e.g. --lr 1e-4 --epochs 3 --micro-batch 4 --grad-accum 32 --cutoff 256\n"
    "  --warmup 100 --train-on-inputs\n"
    "  --nproc N|gpus            fine-tune data-parallel as N ranks on this machine (sppft\n"
    "                            launch; each rank takes micro-batch x grad-accum examples of\n"
    "                            every step's global batch); --zero1 then shards the optimizer\n";

// Flags of sppft train that are the experiment's own or have no place in one process.
const std::set<std::string> kNotPassedToTrain = {"--data", "--out", "--freeze", "--resume", "--dist", "--dist-timeout"};

struct Flags {
  std::set<std::string> valued = {"--data", "--out", "--freeze", "--device", "--template", "--chat-template-kwargs",
                                   "--batch-size", "--judge", "--normal", "--malicious", "--pairs", "--over-rejection",
                                   "--initial", "--alpha", "--window", "--locate-limit", "--locate-max-new-tokens", "--harmful",
                                   "--reference", "--mmlu", "--guard", "--score-judge", "--score-rubric", "--score-max-new-tokens",
                                   "--score-chat-template-kwargs", "--max-new-tokens", "--eval-limit", "--nproc", "--control"};
  std::set<std::string> switches = {"--scale-o-proj"};
  Flags() {
    for (const auto& f : kTrainValuedFlags)
      if (!kNotPassedToTrain.count(f)) valued.insert(f);
    for (const auto& f : kTrainSwitches)
      if (!kNotPassedToTrain.count(f)) switches.insert(f);
  }
};

// A path as every stage sees it, whatever the directory the experiment was started in.
std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

struct Stage {
  std::string name;
  std::vector<std::string> argv;  // after "sppft": the command's name, then its arguments
  fs::path dir, done;             // its output directory, and the file it writes last
  Json fingerprint;               // its command (OUT as "$OUT") and the fingerprints of its inputs
  // An evaluation's fingerprint in two parts: what its generations depend on, and each judge's
  // options with the files they name ("judge": the refusal judge; "guard", "score": null when
  // not asked for). A change of judges only judges the stored responses again.
  Json generation, judges;
  std::map<std::string, std::vector<std::string>> judge_argv;  // each judge's options, as given
};

// The options of each judge of an evaluation, as `sppft rejudge` takes them.
const std::pair<const char*, std::vector<const char*>> kJudgeOptions[] = {
    {"judge", {"--judge"}},
    {"guard", {"--guard"}},
    {"score", {"--score-judge", "--score-rubric", "--score-max-new-tokens", "--score-chat-template-kwargs"}}};

std::string command_line(const std::vector<std::string>& argv) {
  std::string s = "sppft";
  for (const auto& a : argv) {
    const bool plain = !a.empty() && a.find_first_of(" \t\n'\"$\\{}*?;&|<>()") == std::string::npos;
    if (plain) {
      s += " " + a;
      continue;
    }
    s += " '";
    for (char ch : a) s += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    s += "'";
  }
  return s;
}

// Size and modification time of each file a stage reads from outside OUT (a data file, or the
// files of a checkpoint directory), so that editing an input reruns the stages that read it.
Json input_file_stamps(const std::vector<std::string>& argv, const fs::path& out) {
  Json stamps = Json::object();
  const auto stamp = [&](const fs::path& f) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    const auto mtime = fs::last_write_time(f, ec).time_since_epoch().count();
    if (!ec) stamps[f.string()] = {size, mtime};
  };
  std::error_code ec;
  for (const auto& a : argv) {
    if (a.empty() || a[0] == '-' || a.rfind(out.string(), 0) == 0) continue;
    if (fs::is_regular_file(a, ec)) stamp(a);
    else if (fs::is_directory(a, ec))
      for (const auto& e : fs::directory_iterator(a, ec))
        if (e.is_regular_file(ec)) stamp(e.path());
  }
  return stamps;
}

// A stage that failed has said why itself; the experiment ends with its exit code.
struct StageFailed {
  std::string stage;
  int exit_code;
};

// Where a stage records the fingerprint it was run with, and whether it finished.
fs::path stamp_of(const Stage& s) { return s.dir / "experiment-stage.json"; }

// The judges whose verdicts an evaluation's eval.json holds after `sppft eval` failed: eval
// writes it once the refusal judge has run, and again with the verdicts of any model judge that
// finished. Null when it wrote nothing (the generations are lost with it).
Json judges_on_disk(const Stage& s) {
  try {
    if (!fs::exists(s.dir / "responses.jsonl") || !fs::exists(s.done)) return nullptr;
    const Json eval = read_json_file(s.done);
    const Json* harmful = eval.contains("harmful") ? &eval["harmful"] : nullptr;
    Json judged = {{"judge", s.judges["judge"]}, {"guard", nullptr}, {"score", nullptr}};
    for (const char* judge : {"guard", "score"})
      if (harmful && harmful->is_object() && harmful->contains(judge)) judged[judge] = s.judges[judge];
    return judged;
  } catch (const std::exception&) {
    return nullptr;  // damaged: the stage runs again from the start
  }
}

// `sppft rejudge` arguments judging an evaluation's stored responses with the judges whose
// options differ from those its outputs were judged with, or nothing when it cannot: the
// generations are not there, or a model judge was dropped (its verdicts would stay).
std::optional<std::vector<std::string>> rejudge_argv(const Stage& s, const Json& judged) {
  if (!judged.is_object() || !fs::exists(s.dir / "responses.jsonl") || !fs::exists(s.done)) return std::nullopt;
  std::vector<std::string> argv = {"rejudge", s.dir.string(), "--out", s.dir.string()};
  // The model judges run where and in the batches the evaluation would run them.
  for (auto at = s.argv.begin(); at != s.argv.end(); ++at)
    if ((*at == "--device" || *at == "--batch-size") && at + 1 != s.argv.end()) argv.insert(argv.end(), {*at, *(at + 1)});
  bool any = false;
  for (const auto& [judge, options] : kJudgeOptions) {
    const Json& now = s.judges[judge];
    const Json before = judged.contains(judge) ? judged[judge] : Json(nullptr);
    if (now == before) continue;
    if (now.is_null()) return std::nullopt;
    any = true;
    const auto given = s.judge_argv.find(judge);
    if (given == s.judge_argv.end() || given->second.empty()) argv.insert(argv.end(), {"--judge", "auto"});  // the default
    else argv.insert(argv.end(), given->second.begin(), given->second.end());
  }
  if (!any) argv.resize(0);  // judged as asked: only the record was left to write
  return argv;
}

// Runs a stage unless it finished with the same fingerprint; a stage that started with the
// same fingerprint and was interrupted resumes when it can (fine-tuning from its checkpoint; an
// evaluation whose generations are stored, through `sppft rejudge`, as one whose judges changed).
// Each stage is a process of its own, exactly its printed command: in one process a GPU's
// cuBLASLt workspace, allocated by an earlier stage, would be missing from a fine-tuning's
// measured memory, and the device would not start clean for it.
void run_stage(Stage& s, int index, int count) {
  std::optional<Json> stamp;
  bool complete = false;
  if (fs::exists(stamp_of(s))) {
    // A damaged record stops the run: rerunning would delete the stage's outputs.
    const std::string where = stamp_of(s).string() + " (delete " + s.dir.string() + " to rerun the stage)";
    stamp = parse_json(read_file(stamp_of(s)), where);
    if (!stamp->is_object() || !stamp->contains("fingerprint")) throw InputError(where + ": not a stage record");
    complete = json_get_or<bool>(*stamp, "complete", false, where);
  }
  const bool same = stamp && (*stamp)["fingerprint"] == s.fingerprint;
  if (same && complete && fs::exists(s.done)) {
    std::fprintf(stderr, "[experiment] %d/%d %s: cached in %s\n", index, count, s.name.c_str(), s.dir.c_str());
    return;
  }
  const auto record = [&](bool done, const Json& judged) {
    Json r = {{"fingerprint", s.fingerprint}, {"complete", done}};
    if (!s.generation.is_null()) r["generation"] = s.generation;
    if (!judged.is_null()) r["judged"] = judged;
    atomic_write_text(stamp_of(s), r.dump(2) + "\n");
  };
  const bool same_generations = stamp && !s.generation.is_null() && stamp->contains("generation") &&
                                (*stamp)["generation"] == s.generation;
  if (same_generations) {
    // A run of this very command that was killed left no record of its judges: they are read
    // from what it wrote.
    const Json judged = stamp->contains("judged") ? (*stamp)["judged"] : same ? judges_on_disk(s) : Json(nullptr);
    if (const auto rejudge = rejudge_argv(s, judged)) {
      if (rejudge->empty()) {
        std::fprintf(stderr, "[experiment] %d/%d %s: cached in %s\n", index, count, s.name.c_str(), s.dir.c_str());
      } else {
        record(false, judged);  // until rejudge succeeds, the outputs hold the old verdicts
        std::fflush(stdout);
        std::fprintf(stderr, "[experiment] %d/%d %s: the generations are stored; judging them again: %s\n", index, count,
                     s.name.c_str(), command_line(*rejudge).c_str());
        const int rc = run_self(*rejudge);
        if (rc != 0) throw StageFailed{s.name, rc};
      }
      record(true, s.judges);
      return;
    }
  }
  if (fs::exists(s.dir) && !same) {
    if (stamp) std::fprintf(stderr, "[experiment] %d/%d %s: its command or inputs changed; rerunning\n", index, count, s.name.c_str());
    fs::remove_all(s.dir);
  }
  std::vector<std::string> argv = s.argv;
  if (same && (argv[0] == "train" || argv[0] == "launch") && fs::exists(s.dir / "checkpoint")) argv.push_back("--resume");
  ensure_directory(s.dir);
  record(false, nullptr);
  std::fflush(stdout);
  std::fprintf(stderr, "[experiment] %d/%d %s: %s\n", index, count, s.name.c_str(), command_line(argv).c_str());
  const int rc = run_self(argv);
  if (rc != 0) {
    // An evaluation whose judge failed keeps its generations for the next run.
    if (!s.generation.is_null()) record(false, judges_on_disk(s));
    throw StageFailed{s.name, rc};
  }
  record(true, s.judges);
}

}  // namespace

int cmd_experiment(int argc, char** argv) {
  const Flags flags;
  Args args(argc, argv, flags.valued, flags.switches);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("experiment: expected one checkpoint directory (see --help)");
  if (detect_launch().world > 1)
    throw InputError("experiment: runs as one process, not as a rank; for data-parallel fine-tuning give it --nproc N");
  if (args.has("--zero1") && !args.has("--nproc")) throw InputError("--zero1 shards the optimizer over ranks: give --nproc N too");
  const std::string model = absolute(args.positional()[0]);
  if (!fs::is_regular_file(fs::path(model) / "config.json"))
    throw InputError(args.positional()[0] + ": not a checkpoint directory (no config.json)");
  const fs::path out = absolute(args.require("--out"));
  // The fine-tuning data sets, each named after its file.
  std::vector<std::pair<std::string, std::string>> data_sets;  // (name, absolute path)
  const std::string data_list = args.require("--data");  // split's fields point into it
  for (std::string_view d : split(data_list, ',')) {
    const std::string path(trim(d));
    if (!fs::is_regular_file(path)) throw InputError("--data " + path + ": no such file");
    const std::string name = fs::path(path).stem().string();
    for (const auto& [other, p] : data_sets)
      if (other == name) throw InputError("--data: two data sets named " + name + " (" + p + ", " + absolute(path) + "); rename one");
    data_sets.emplace_back(name, absolute(path));
  }
  const auto bundled = [&](const char* flag, const char* file) {
    const std::string p = args.has(flag) ? args.require(flag) : (bundled_data_dir() / file).string();
    if (!fs::is_regular_file(p)) throw InputError(std::string(flag) + " " + p + ": no such file");
    return absolute(p);
  };
  const std::string normal = bundled("--normal", "normal.csv"), malicious = bundled("--malicious", "malicious.csv");
  const std::string over_rejection = bundled("--over-rejection", "over_rejection.csv");
  const std::string harmful = bundled("--harmful", "advbench_harmful_behaviors.csv");

  // Arguments several stages share, passed on as given; a value naming a file or directory (a
  // judge file, a guard checkpoint, a reference set) as an absolute path, so that each stage's
  // command line works from anywhere and its record notices an edit.
  const auto value_of = [&](const char* f) -> std::optional<std::string> {
    auto v = args.get(f);
    std::error_code ec;
    if (v && fs::exists(*v, ec)) v = absolute(*v);
    return v;
  };
  const auto pass = [&](std::vector<std::string>& to, std::initializer_list<const char*> names) {
    for (const char* f : names)
      if (flags.switches.count(f) && args.has(f)) to.push_back(f);
      else if (auto v = value_of(f)) to.insert(to.end(), {f, *v});
  };
  const auto renamed = [&](std::vector<std::string>& to, const char* from, const char* as) {
    if (auto v = args.get(from)) to.insert(to.end(), {as, *v});
  };
  std::vector<std::string> common;
  pass(common, {"--device", "--template", "--chat-template-kwargs"});
  std::vector<std::string> inference = common;
  pass(inference, {"--batch-size"});

  // A command with OUT as "$OUT" (a moved experiment stays valid) and the files it reads.
  const auto command_fingerprint = [&](const std::vector<std::string>& argv) {
    Json cmd = Json::array();
    for (const auto& a : argv) cmd.push_back(a.rfind(out.string(), 0) == 0 ? "$OUT" + a.substr(out.string().size()) : a);
    return Json{{"command", cmd}, {"files", input_file_stamps(argv, out)}};
  };
  const auto stage = [&](const std::string& name, std::vector<std::string> head, const char* done,
                         const std::vector<std::string>& rest, std::vector<const Stage*> inputs) {
    Stage s{name, std::move(head), out / name, out / name / done, {}, nullptr, nullptr, {}};
    s.argv.insert(s.argv.end(), rest.begin(), rest.end());
    s.argv.insert(s.argv.end(), {"--out", s.dir.string()});
    Json after = Json::array();
    for (const Stage* in : inputs) after.push_back(in->fingerprint);
    s.fingerprint = command_fingerprint(s.argv);
    s.fingerprint["after"] = after;
    if (s.argv[0] == "eval") {
      std::vector<std::string> generation_argv;
      auto& judge_argv = s.judge_argv;
      for (std::size_t i = 0; i < s.argv.size(); ++i) {
        const char* judge = nullptr;
        for (const auto& [name, options] : kJudgeOptions)
          for (const char* o : options)
            if (s.argv[i] == o) judge = name;
        if (judge && i + 1 < s.argv.size()) {
          judge_argv[judge].insert(judge_argv[judge].end(), {s.argv[i], s.argv[i + 1]});
          ++i;
        } else {
          generation_argv.push_back(s.argv[i]);
        }
      }
      s.generation = command_fingerprint(generation_argv);
      s.generation["after"] = after;
      s.judges = {{"judge", nullptr}, {"guard", nullptr}, {"score", nullptr}};
      for (const auto& [name, options] : kJudgeOptions)
        if (judge_argv.count(name) || std::string(name) == "judge") {
          const Json f = command_fingerprint(judge_argv[name]);
          s.judges[name] = {{"options", f["command"]}, {"files", f["files"]}};
        }
    }
    return s;
  };

  ensure_directory(out);
  try {
    std::vector<std::string> commands;
    int index = 0;
    const bool given = args.has("--freeze");
    // A control arm: other blocks frozen, checked against the model before any stage runs.
    const std::string control = args.get_or("--control", "");
    const std::int64_t num_layers = load_model_config(model).num_layers;
    std::vector<LayerRange> control_blocks;
    if (args.has("--control")) control_blocks = parse_layer_ranges(control, num_layers, "--control");
    const int count = (given ? 1 : 3) + (control.empty() ? 4 : 6) * static_cast<int>(data_sets.size());
    std::optional<Stage> cossim, locate;
    std::string freeze;
    if (given) {
      freeze = freeze_option(args);  // ranges, or a locate.json (or its directory): its final_range
      if (freeze.empty()) throw InputError("--freeze: expected the blocks to freeze (e.g. 6-12) or a locate.json");
    } else {
      std::vector<std::string> a = inference;
      a.insert(a.end(), {"--normal", normal, "--malicious", malicious});
      pass(a, {"--pairs"});
      cossim = stage("cossim", {"cossim", model}, "cossim.json", a, {});
      run_stage(*cossim, ++index, count);
      a = inference;
      a.insert(a.end(), {"--over-rejection", over_rejection, "--cossim", (cossim->dir / "cossim.json").string()});
      pass(a, {"--initial", "--alpha", "--window", "--judge", "--scale-o-proj"});
      renamed(a, "--locate-limit", "--limit");
      renamed(a, "--locate-max-new-tokens", "--max-new-tokens");
      locate = stage("locate", {"locate", model}, "locate.json", a, {&*cossim});
      run_stage(*locate, ++index, count);
      freeze = located_range(locate->done);
      commands.push_back(command_line(cossim->argv));
      commands.push_back(command_line(locate->argv));
    }

    if (!control.empty()) {
      const auto frozen = FreezePlan::from_ranges(parse_layer_ranges(freeze, num_layers, "--freeze"), num_layers).block_frozen;
      const auto other = FreezePlan::from_ranges(control_blocks, num_layers).block_frozen;
      if (frozen == other) throw InputError("--control " + control + ": the blocks the SPPFT arm freezes; give others");
      const auto n_frozen = std::count(frozen.begin(), frozen.end(), true), n_other = std::count(other.begin(), other.end(), true);
      if (n_frozen != n_other)
        std::fprintf(stderr, "sppft: warning: --control %s freezes %td blocks, the SPPFT arm (%s) %td: the paper's control freezes as many\n",
                     control.c_str(), n_other, freeze.c_str(), n_frozen);
    }

    std::vector<std::string> eval_args = inference;
    eval_args.insert(eval_args.end(), {"--harmful", harmful, "--over-rejection", over_rejection});
    pass(eval_args, {"--reference", "--mmlu", "--guard", "--score-judge", "--score-rubric", "--score-max-new-tokens",
                     "--score-chat-template-kwargs", "--max-new-tokens", "--judge"});
    renamed(eval_args, "--eval-limit", "--limit");
    std::vector<std::string> train_args = common;
    for (const auto& f : kTrainValuedFlags)
      if (!kNotPassedToTrain.count(f) && f != "--device" && f != "--template" && f != "--chat-template-kwargs")
        if (auto v = value_of(f.c_str())) train_args.insert(train_args.end(), {f, *v});
    for (const auto& f : kTrainSwitches)
      if (!kNotPassedToTrain.count(f) && args.has(f)) train_args.push_back(f);

    Stage eval_base = stage("eval-base", {"eval", model}, "eval.json", eval_args, {});
    // Data parallel through sppft launch, which starts the ranks as processes of their own.
    const std::optional<std::string> nproc = args.get("--nproc");
    const std::vector<std::string> train_head =
        nproc ? std::vector<std::string>{"launch", "--nproc", *nproc, "train", model} : std::vector<std::string>{"train", model};
    run_stage(eval_base, ++index, count);
    commands.push_back(command_line(eval_base.argv));

    ExperimentOutputs o;
    o.model = args.positional()[0];
    o.device = args.get_or("--device", "cpu");
    if (cossim) o.cossim = read_json_file(cossim->done), o.cossim_file = cossim->done.string();
    if (locate) o.locate = read_json_file(locate->done), o.locate_file = locate->done.string();
    o.freeze = freeze;
    o.control = control;
    o.eval_base = read_json_file(eval_base.done), o.eval_base_file = eval_base.done.string();
    for (const auto& [name, path] : data_sets) {
      const std::string suffix = data_sets.size() > 1 ? "-" + name : "";
      std::vector<std::string> full_args = train_args;
      full_args.insert(full_args.end(), {"--data", path});
      std::vector<std::string> sppft_args = full_args;
      sppft_args.insert(sppft_args.end(), {"--freeze", freeze});
      Stage ft_full = stage("ft-full" + suffix, train_head, "memory.json", full_args, {});
      Stage ft_sppft = stage("ft-sppft" + suffix, train_head, "memory.json", sppft_args, {});
      // The fine-tuned models are evaluated as the base one was, from their own directories.
      const auto eval_of = [&](const std::string& stage_name, const Stage& trained) {
        return stage(stage_name, {"eval", trained.dir.string()}, "eval.json", eval_args, {&trained});
      };
      Stage eval_full = eval_of("eval-full" + suffix, ft_full), eval_sppft = eval_of("eval-sppft" + suffix, ft_sppft);
      std::vector<Stage*> stages = {&ft_full, &eval_full, &ft_sppft, &eval_sppft};
      std::optional<Stage> ft_control, eval_control;
      if (!control.empty()) {
        std::vector<std::string> control_args = full_args;
        control_args.insert(control_args.end(), {"--freeze", control});
        ft_control = stage("ft-control" + suffix, train_head, "memory.json", control_args, {});
        eval_control = eval_of("eval-control" + suffix, *ft_control);
        stages.insert(stages.end(), {&*ft_control, &*eval_control});
      }
      for (Stage* s : stages) {
        run_stage(*s, ++index, count);
        commands.push_back(command_line(s->argv));
      }
      const auto arm = [](const std::string& arm_name, const std::string& frozen, const Stage& s) {
        const std::string metrics = (s.dir / "metrics.jsonl").string();
        return TrainingArm{arm_name, frozen, read_json_file(s.done), read_metrics_jsonl(metrics), s.done.string(), metrics};
      };
      FineTuning run{name, arm("full fine-tuning " + name, "", ft_full), arm("SPPFT " + name, freeze, ft_sppft),
                     read_json_file(eval_full.done), read_json_file(eval_sppft.done), eval_full.done.string(),
                     eval_sppft.done.string(), std::nullopt, nullptr, "eval.json"};
      if (ft_control) {
        run.control = arm("control " + name, control, *ft_control);
        run.eval_control = read_json_file(eval_control->done), run.eval_control_file = eval_control->done.string();
      }
      o.runs.push_back(std::move(run));
    }
    o.commands = commands;
    const ExperimentReport rep = experiment_report(o);
    atomic_write_text(out / "report.md", rep.markdown);
    atomic_write_text(out / "summary.json", rep.summary.dump(2) + "\n");
    for (const auto& w : rep.warnings) std::fprintf(stderr, "sppft: warning: %s\n", w.c_str());
    std::printf("%s", rep.console.c_str());
    std::printf("wrote %s/report.md, summary.json\n", out.c_str());
    return 0;
  } catch (const StageFailed& f) {  // the stage has printed why
    std::fprintf(stderr, "[experiment] stage %s failed (exit %d); the stages before it stay cached in %s\n", f.stage.c_str(),
                 f.exit_code, out.c_str());
    return f.exit_code;
  }
}

}  // namespace sppft::cli
