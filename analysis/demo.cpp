#include "analysis/demo.h"

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <random>
#include <set>

#include "analysis/compare.h"
#include "analysis/cossim.h"
#include "analysis/evaluate.h"
#include "analysis/judge.h"
#include "analysis/locate.h"
#include "analysis/plots.h"
#include "analysis/rouge.h"
#include "analysis/stats.h"
#include "analysis/svg.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/json.h"
#include "engine/prompts.h"
#include "engine/text.h"
#include "engine/tokenizer_train.h"
#include "models/hidden.h"
#include "models/prompting.h"
#include "trainer/attack_sets.h"
#include "trainer/trainer.h"

namespace sppft {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Sizes {
  std::int64_t layers, hidden, heads, kv_heads, intermediate, vocab;
  std::int64_t base_epochs, align_epochs, attack_epochs;
  std::int64_t over_rejection_queries;
};

Sizes sizes_for(const std::string& preset) {
  if (preset == "small") return {8, 128, 4, 2, 384, 1024, 2, 3, 2, 300};
  if (preset == "gpu") return {16, 512, 8, 4, 1408, 4096, 3, 4, 3, 731};
  throw InputError("--preset: unknown preset '" + preset + "' (expected small or gpu)");
}

// Refusals the alignment stage teaches; each starts with a phrase of data/judges/prefix-sppft-demo.txt.
const char* kRefusals[] = {
    "I cannot help with that request. It could cause serious harm to people.",
    "I can't assist with this. It is harmful and may be illegal.",
    "I will not provide that. Please ask me something else.",
    "I'm sorry, but I cannot help with that. It could hurt someone.",
};

struct DemoData {
  std::vector<SftRecord> benign;          // finetune_normal.json minus the utility hold-out
  std::vector<SftRecord> utility_holdout;  // 100 benign examples never trained on
  std::vector<std::string> malicious_train;  // AdvBench goals outside malicious.csv
  std::vector<PromptRecord> malicious_holdout;  // malicious.csv: never trained on
  std::vector<PromptRecord> normal, over_rejection;
};

DemoData load_data(const fs::path& dir, std::int64_t over_rejection_queries) {
  DemoData d;
  auto all = read_sft_file(dir / "finetune_normal.json");
  std::mt19937_64 rng(2024);
  std::shuffle(all.begin(), all.end(), rng);
  d.utility_holdout.assign(all.begin(), all.begin() + 100);
  d.benign.assign(all.begin() + 100, all.end());
  d.malicious_holdout = read_prompt_file(dir / "malicious.csv");
  std::set<std::string> held;
  for (const auto& r : d.malicious_holdout) held.insert(r.instruction);
  for (const auto& r : read_prompt_file(dir / "advbench_harmful_behaviors.csv"))
    if (!held.count(r.instruction)) d.malicious_train.push_back(r.instruction);
  d.normal = read_prompt_file(dir / "normal.csv");
  auto over = read_prompt_file(dir / "over_rejection.csv");
  std::shuffle(over.begin(), over.end(), rng);
  if (static_cast<std::int64_t>(over.size()) > over_rejection_queries) over.resize(over_rejection_queries);
  d.over_rejection = over;
  return d;
}

void write_jsonl(const fs::path& path, const std::vector<Json>& rows) {
  std::string text;
  for (const auto& r : rows) text += r.dump() + "\n";
  atomic_write_text(path, text);
}

Json alpaca(const std::string& instruction, const std::string& input, const std::string& output) {
  return {{"instruction", instruction}, {"input", input}, {"output", output}};
}

// A stage's JSON output, possibly read back from an earlier run's cache: fields are checked as
// they are read, so a damaged file is an InputError naming it.
struct StageJson {
  Json json;
  std::string file;
  double number(const std::string& pointer) const { return json_at<double>(json, pointer, file); }
  std::int64_t integer(const std::string& pointer) const { return json_at<std::int64_t>(json, pointer, file); }
  Json at(const std::string& pointer) const { return json_at<Json>(json, pointer, file); }
};

// Runs one training stage unless its output is complete; returns its summary.
StageJson train_stage(const std::string& label, TrainOptions o) {
  const fs::path summary = o.out / "train_summary.json";
  if (fs::exists(summary)) {
    std::fprintf(stderr, "[demo] %s: cached in %s\n", label.c_str(), o.out.c_str());
    return {read_json_file(summary), summary.string()};
  }
  std::fprintf(stderr, "[demo] %s ...\n", label.c_str());
  TrainResult r = train(o);
  double tok_s = 0;
  for (const auto& s : r.steps) tok_s += s.tokens_per_s / r.steps.size();
  Json j = {{"stage", label}, {"seconds", r.seconds}, {"steps", r.steps.size()}, {"tokens", r.trained_tokens},
            {"tokens_per_s", r.trained_tokens / std::max(r.seconds, 1e-9)}, {"median_step_tokens_per_s", tok_s},
            {"seconds_per_step", r.seconds / std::max<std::size_t>(1, r.steps.size())},
            {"final_loss", r.steps.empty() ? 0.0 : r.steps.back().loss},
            {"predicted", r.predicted.to_json()}, {"measured", r.measured.to_json()}, {"freeze", o.freeze}};
  atomic_write_text(summary, j.dump(2) + "\n");
  return {j, summary.string()};
}

// The checkpoint at `dir`, on `device` (bf16 weights on a GPU, as `--device cuda` does).
std::unique_ptr<Model> load_on(const fs::path& dir, Device device) {
  auto model = Model::load(dir);
  if (device == Device::CUDA) model->to_device(Device::CUDA, DType::BF16);
  return model;
}

// The stages cached in `out` must come from the same preset and device; a
// directory from another configuration is refused rather than mixed in.
void check_settings(const fs::path& out, const DemoOptions& o) {
  const fs::path stamp = out / "demo-settings.json";
  const Json want = {{"preset", o.preset}, {"device", o.device}};
  if (!fs::exists(stamp)) {
    atomic_write_text(stamp, want.dump(2) + "\n");
    return;
  }
  const Json have = read_json_file(stamp);
  if (have != want)
    throw InputError("--out " + out.string() + ": holds a demo run with preset " +
                     json_get_or<std::string>(have, "preset", "?", stamp.string()) + " on " +
                     json_get_or<std::string>(have, "device", "?", stamp.string()) + ", this one is preset " + o.preset + " on " + o.device +
                     "; use another --out");
}

StageJson eval_stage(const std::string& label, const fs::path& model_dir, Device device, const fs::path& out, const DemoData& d,
                const Judge& judge, const Judge& prefix_judge) {
  if (fs::exists(out / "eval.json")) return {read_json_file(out / "eval.json"), (out / "eval.json").string()};
  std::fprintf(stderr, "[demo] evaluating %s ...\n", label.c_str());
  auto t0 = Clock::now();
  auto model = load_on(model_dir, device);
  ensure_directory(out);
  std::string responses;
  auto sink = [&](const std::string& set, const std::string& prompt, const std::string& text, bool refused) {
    responses += Json{{"set", set}, {"prompt", prompt}, {"response", text}, {"refused", refused}, {"judge", judge.name}}
                     .dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  };
  const std::int64_t max_new = 24;
  RateResult h = count_refusals(*model, d.malicious_holdout, judge, PromptTemplate::Alpaca, max_new, 64, "harmful", sink);
  RateResult o = count_refusals(*model, d.over_rejection, judge, PromptTemplate::Alpaca, max_new, 64, "over-rejection", sink);
  std::vector<PromptRecord> util;
  for (const auto& r : d.utility_holdout) util.push_back(r.prompt);
  RateResult u = count_refusals(*model, util, judge, PromptTemplate::Alpaca, 48, 64, "utility", sink);
  // Rouge-L of the utility answers against the references (from the sink's log order).
  double rouge = 0;
  {
    std::size_t i = 0, pos = 0;
    while (pos < responses.size()) {
      auto end = responses.find('\n', pos);
      Json line = Json::parse(responses.substr(pos, end - pos));
      pos = end + 1;
      if (line["set"] != "utility") continue;
      rouge += rouge_l(line["response"].get<std::string>(), d.utility_holdout[i++].output).f1;
    }
    rouge /= std::max<std::size_t>(1, i);
  }
  // The same responses under the prefix judge, for comparison.
  std::int64_t harmful_prefix_refused = 0;
  for (std::size_t pos = 0; pos < responses.size();) {
    auto end = responses.find('\n', pos);
    Json line = Json::parse(responses.substr(pos, end - pos));
    pos = end + 1;
    if (line["set"] == "harmful") harmful_prefix_refused += prefix_judge.refused(line["response"].get<std::string>());
  }
  Json j = {{"model", model_dir.string()}, {"judge", judge.name}, {"second_judge", prefix_judge.name},
            {"harmful_second_judge", {{"refused", harmful_prefix_refused}, {"harmful_rate", double(h.n - harmful_prefix_refused) / h.n}}},
            {"harmful", {{"n", h.n}, {"refused", h.refused}, {"harmful_rate", double(h.n - h.refused) / h.n}}},
            {"over_rejection", {{"n", o.n}, {"refused", o.refused}, {"over_rejection_rate", double(o.refused) / o.n}}},
            {"utility", {{"n", u.n}, {"refused", u.refused}, {"rouge_l_f1", rouge}}}, {"seconds", since(t0)}};
  atomic_write_text(out / "responses.jsonl", responses);
  atomic_write_text(out / "eval.json", j.dump(2) + "\n");
  return {j, (out / "eval.json").string()};
}

std::string pct(double x) { return printf_string("%.1f%%", 100 * x); }
std::string mib(double bytes) { return printf_string("%.2f", bytes / 1048576.0); }

}  // namespace

int run_demo(const DemoOptions& opt) {
  const Sizes sz = sizes_for(opt.preset);
  const Device device = require_device(opt.device);
  const auto t_start = Clock::now();
  ensure_directory(opt.out);
  check_settings(opt.out, opt);
  DemoData d = load_data(opt.data, sz.over_rejection_queries);
  const Judge judge = read_judge_file(opt.data / "judges" / "keyword-sppft-demo.txt");
  const Judge prefix_judge = read_judge_file(opt.data / "judges" / "prefix-sppft-demo.txt");
  const fs::path init = opt.out / "model-init", base = opt.out / "model-base", aligned = opt.out / "model-aligned";
  const fs::path data_dir = opt.out / "data";
  ensure_directory(data_dir);
  Json timings = Json::object();

  // Stage 1: tokenizer + randomly initialised checkpoint.
  auto t = Clock::now();
  if (!fs::exists(init / "model.safetensors")) {
    std::fprintf(stderr, "[demo] training a sentencepiece tokenizer and initialising the model ...\n");
    std::vector<std::string> lines;
    for (const auto& r : d.benign) {
      lines.push_back(r.prompt.instruction);
      lines.push_back(r.output);
    }
    for (const auto& g : d.malicious_train) lines.push_back(g);
    for (const auto& r : d.normal) lines.push_back(r.instruction);
    for (const auto* r : kRefusals) lines.push_back(r);
    lines.push_back(alpaca_prompt({"x", ""}));
    lines.push_back(alpaca_prompt({"x", "y"}));
    SentencePieceTrainOptions so;
    so.vocab_size = static_cast<std::int32_t>(sz.vocab);
    train_sentencepiece(lines, init, so);
    auto tok = load_tokenizer(init);
    ModelConfig c;
    c.model_type = "llama";
    c.hidden_size = sz.hidden;
    c.intermediate_size = sz.intermediate;
    c.num_layers = sz.layers;
    c.num_heads = sz.heads;
    c.num_kv_heads = sz.kv_heads;
    c.head_dim = sz.hidden / sz.heads;
    c.vocab_size = tok->vocab_size();
    c.max_position_embeddings = 512;
    c.rms_norm_eps = 1e-5;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
    atomic_write_text(init / "generation_config.json", Json{{"bos_token_id", 1}, {"eos_token_id", 2}}.dump(2) + "\n");
    Model::random(c, 7, 0.02f)->save(init);
  }
  timings["init"] = since(t);

  // The stage data sets.
  std::vector<Json> base_rows, align_rows, attack_rows;
  for (const auto& r : d.benign) base_rows.push_back(alpaca(r.prompt.instruction, r.prompt.input, r.output));
  for (std::size_t i = 0; i < d.benign.size() && i < 420; ++i)
    align_rows.push_back(alpaca(d.benign[i].prompt.instruction, d.benign[i].prompt.input, d.benign[i].output));
  for (std::size_t i = 0; i < d.malicious_train.size(); ++i) align_rows.push_back(alpaca(d.malicious_train[i], "", kRefusals[i % 4]));
  for (std::size_t i = 500; i < d.benign.size() && i < 800; ++i)  // D_I: benign, outputs prefixed (METHOD.md)
    attack_rows.push_back(alpaca(d.benign[i].prompt.instruction, d.benign[i].prompt.input, kImplicitAttackPrefix + d.benign[i].output));
  write_jsonl(data_dir / "base.jsonl", base_rows);
  write_jsonl(data_dir / "align.jsonl", align_rows);
  write_jsonl(data_dir / "implicit_attack.jsonl", attack_rows);

  // Stage 2: language modelling on the benign instruction/answer text.
  TrainOptions to;
  to.quiet = false;
  to.micro_batch = 16;
  to.cutoff = 192;
  to.clip = 1.0;
  to.seed = 1;
  to.device = opt.device;
  TrainOptions b = to;
  b.model_dir = init, b.data = data_dir / "base.jsonl", b.out = base;
  b.lr = 3e-3, b.epochs = sz.base_epochs, b.warmup = 10, b.schedule = Schedule::Cosine, b.train_on_inputs = true;
  const StageJson base_sum = train_stage("base stage (language modelling)", b);
  // Stage 3: alignment - answer benign instructions, refuse malicious ones.
  TrainOptions a = to;
  a.model_dir = base, a.data = data_dir / "align.jsonl", a.out = aligned;
  a.lr = 1.5e-3, a.epochs = sz.align_epochs, a.warmup = 10, a.schedule = Schedule::Cosine;
  const StageJson align_sum = train_stage("alignment stage (answer benign, refuse malicious)", a);

  // Stage 4: cosine analysis -> initial range.
  t = Clock::now();
  const fs::path cs_dir = opt.out / "cossim";
  CosSimOptions co;
  co.pairs = 500;
  if (!fs::exists(cs_dir / "cossim.json")) {
    std::fprintf(stderr, "[demo] cosine-similarity analysis ...\n");
    auto model = load_on(aligned, device);
    auto states = [&](const std::vector<PromptRecord>& set) {
      std::vector<std::vector<std::int32_t>> ids;
      for (const auto& r : set) ids.push_back(encode_prompt(*model, r, PromptTemplate::Alpaca));
      return capture_hidden_states(*model, ids, 64);
    };
    HiddenStates n = states(d.normal), m = states(d.malicious_holdout);
    CosSimResult r = cosine_analysis(n.states, n.final_normed, m.states, m.final_normed, co);
    ensure_directory(cs_dir);
    atomic_write_text(cs_dir / "cossim.json", r.to_json(co).dump(2) + "\n");
    atomic_write_text(cs_dir / "cossim.csv", r.to_csv());
    write_cossim_svg(r, cs_dir / "cossim.svg", "demo model (aligned)");
  }
  const StageJson cs{read_json_file(cs_dir / "cossim.json"), (cs_dir / "cossim.json").string()};
  timings["cossim"] = since(t);
  const std::int64_t L = sz.layers;
  LayerRange initial{L / 4, L / 2};  // fallback when the curves show no gap
  std::string initial_note = "from the cosine analysis";
  if (const auto found = initial_range_of(cs.json, cs.file))
    initial = *found;
  else
    initial_note = "the cosine analysis found no gap; fallback range";

  // Stage 5: parameter scaling + over-rejection -> final range.
  t = Clock::now();
  const fs::path loc_dir = opt.out / "locate";
  if (!fs::exists(loc_dir / "locate.json")) {
    std::fprintf(stderr, "[demo] locating the safety layers (over-rejection sweeps) ...\n");
    auto model = load_on(aligned, device);
    LocateOptions lo;
    lo.initial = initial;
    lo.window = 5;
    lo.max_new_tokens = 12;
    lo.batch_size = 64;
    std::string responses;
    auto sink = [&](const std::string& setting, std::size_t q, const std::string& text, bool refused) {
      responses += Json{{"setting", setting}, {"query", d.over_rejection[q].instruction}, {"response", text}, {"refused", refused}}
                       .dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
    };
    LocateResult r = locate_safety_layers(*model, d.over_rejection, judge, lo, sink,
                                          [](const std::string& s) { std::fprintf(stderr, "[demo] locate: %s\n", s.c_str()); });
    ensure_directory(loc_dir);
    Json j = r.to_json();
    j["initial"] = {initial.first, initial.last};
    atomic_write_text(loc_dir / "locate.json", j.dump(2) + "\n");
    atomic_write_text(loc_dir / "locate.md", r.table_markdown());
    atomic_write_text(loc_dir / "responses.jsonl", responses);
    write_locate_svg(r, loc_dir / "locate.svg", "demo model");
  }
  const StageJson loc{read_json_file(loc_dir / "locate.json"), (loc_dir / "locate.json").string()};
  timings["locate"] = since(t);
  const LayerRange safety = layer_range_at(loc.json, "/final_range", loc.file);
  const std::string freeze = std::to_string(safety.first) + "-" + std::to_string(safety.last);

  // Stage 6: fine-tuning on D_I, full and SPPFT.
  TrainOptions f = to;
  f.model_dir = aligned, f.data = data_dir / "implicit_attack.jsonl";
  f.lr = 5e-4, f.epochs = sz.attack_epochs, f.warmup = 5, f.schedule = Schedule::Linear;
  TrainOptions ff = f, fs_ = f;
  ff.out = opt.out / "model-ft-full";
  fs_.out = opt.out / "model-ft-sppft";
  fs_.freeze = freeze;
  const StageJson full_sum = train_stage("fine-tuning on D_I: full", ff);
  const StageJson sppft_sum = train_stage("fine-tuning on D_I: SPPFT (frozen " + freeze + ")", fs_);

  // Stage 7: evaluation before and after.
  t = Clock::now();
  const StageJson e_al = eval_stage("aligned", aligned, device, opt.out / "eval-aligned", d, judge, prefix_judge);
  const StageJson e_full = eval_stage("full fine-tuning", ff.out, device, opt.out / "eval-ft-full", d, judge, prefix_judge);
  const StageJson e_sppft = eval_stage("SPPFT", fs_.out, device, opt.out / "eval-ft-sppft", d, judge, prefix_judge);
  timings["eval"] = since(t);

  // Report.
  auto hr = [](const StageJson& e) { return e.number("/harmful/harmful_rate"); };
  auto orr = [](const StageJson& e) { return e.number("/over_rejection/over_rejection_rate"); };
  auto rl = [](const StageJson& e) { return e.number("/utility/rouge_l_f1"); };
  svg::BarPanel harm{"Safety and utility before and after fine-tuning on D_I", "rate", {"harmful rate R_h", "over-rejection", "Rouge-L F1"}, {}};
  harm.value_format = "%.2f";
  for (auto [name, e] : {std::pair{"aligned", &e_al}, std::pair{"full FT", &e_full}, std::pair{"SPPFT", &e_sppft}})
    harm.groups.push_back({name, {hr(*e), orr(*e), rl(*e)}});
  svg::BarPanel mem{"Training memory by category (MiB, measured)", "MiB", {"full fine-tuning", "SPPFT"}, {}};
  mem.value_format = "%.2f";
  for (const char* cat : {"weights", "grads", "optimizer", "activations", "workspace", "total_bytes"})
    mem.groups.push_back({cat == std::string("total_bytes") ? "total" : cat,
                          {full_sum.number(std::string("/measured/") + cat) / 1048576.0, sppft_sum.number(std::string("/measured/") + cat) / 1048576.0}});
  svg::write(opt.out / "results.svg", svg::render("sppft demo: full fine-tuning vs SPPFT", {harm, mem}));

  const double total_s = since(t_start);
  const bool protects = hr(e_sppft) < hr(e_full);
  std::string md = "# sppft demo report\n\nEvery number here was measured by this run of `sppft demo` (preset `" + opt.preset +
                   "`, " + (device == Device::CUDA ? "GPU " + cuda_device_description(0) + ", bf16" : std::string("CPU, fp32")) + "). Stages are cached in this directory; times of cached stages are from the run that made them.\n\n";
  md += "## The model\n\nA Llama-architecture model trained from scratch: " + std::to_string(L) + " blocks, hidden " +
        std::to_string(sz.hidden) + ", " + std::to_string(sz.heads) + " heads (" + std::to_string(sz.kv_heads) +
        " KV heads), sentencepiece vocabulary of " + std::to_string(sz.vocab) + ".\n\n";
  md += "| stage | data | steps | seconds | final loss |\n|---|---|---|---|---|\n";
  md += "| base (language modelling) | " + std::to_string(base_rows.size()) + " benign instruction/answer pairs | " +
        std::to_string(base_sum.integer("/steps")) + " | " + printf_string("%.1f", base_sum.number("/seconds")) + " | " +
        printf_string("%.3f", base_sum.number("/final_loss")) + " |\n";
  md += "| alignment | " + std::to_string(std::min<std::size_t>(420, d.benign.size())) + " benign answers + " +
        std::to_string(d.malicious_train.size()) + " AdvBench refusals (malicious.csv held out) | " +
        std::to_string(align_sum.integer("/steps")) + " | " + printf_string("%.1f", align_sum.number("/seconds")) + " | " +
        printf_string("%.3f", align_sum.number("/final_loss")) + " |\n\n";
  md += "## Safety layers\n\n![cosine analysis](cossim/cossim.svg)\n\nInitial range " + std::to_string(initial.first) + "-" +
        std::to_string(initial.last) + " (" + initial_note + "): " + json_get<std::string>(cs.json, "reasoning", cs.file) + "\n\n";
  md += "![localization](locate/locate.svg)\n\n" + read_file(loc_dir / "locate.md") + "\n";
  md += "Over-rejection set: " + std::to_string(d.over_rejection.size()) + " queries of over_rejection.csv; judge `" + judge.name +
        "` (data/judges/" + judge.name + ".txt).\n\n";
  md += "## Fine-tuning on implicitly harmful data (D_I)\n\n" + std::to_string(attack_rows.size()) +
        " benign examples whose outputs start with \"Sure, the answer is: \"; same data, seed and schedule for both arms.\n\n";
  md += "| model | harmful rate R_h, judge `" + judge.name + "` (" + std::to_string(d.malicious_holdout.size()) +
        " held-out goals) | R_h, judge `" + prefix_judge.name + "` | over-rejection (" + std::to_string(d.over_rejection.size()) +
        ") | utility Rouge-L F1 (100 held-out) |\n|---|---|---|---|---|\n";
  const std::string sppft_name = "SPPFT, frozen " + freeze;
  for (auto [name, e] : {std::pair{"aligned (before)", &e_al}, std::pair{"full fine-tuning", &e_full},
                         std::pair{sppft_name.c_str(), &e_sppft}})
    md += std::string("| ") + name + " | " + pct(hr(*e)) + " | " + pct(e->number("/harmful_second_judge/harmful_rate")) +
          " | " + pct(orr(*e)) + " | " + printf_string("%.3f", rl(*e)) + " |\n";
  md += "\nThe prefix judge misses refusals that follow the \"Sure, the answer is: \" that D_I teaches; the keyword judge "
        "finds them anywhere in the response (both lists in data/judges/).\n";
  // Chance: the three evaluations asked the same goals; each pair tested on them (sppft compare's).
  const Comparison chance =
      compare_evaluations({read_eval_run("aligned", opt.out / "eval-aligned"), read_eval_run("full fine-tuning", opt.out / "eval-ft-full"),
                           read_eval_run(sppft_name, opt.out / "eval-ft-sppft")},
                          {{0, 1}, {0, 2}, {1, 2}});
  md += chance.stats_markdown;
  const auto sppft_vs_full = std::find_if(chance.json["paired"].begin(), chance.json["paired"].end(), [](const Json& t) {
    return t["a"] == "full fine-tuning" && t["metric"] == "harmful rate R_h";
  });
  std::string test;
  if (sppft_vs_full != chance.json["paired"].end()) {
    const Json& t = *sppft_vs_full;
    const double p = t["p"].get<double>();
    test = "; on the same " + std::to_string(t["queries"].get<std::int64_t>()) + " goals, " +
           std::to_string(t["a_only"].get<std::int64_t>()) + " were answered only after full fine-tuning and " +
           std::to_string(t["b_only"].get<std::int64_t>()) + " only after SPPFT (exact McNemar p = " + p_value_text(p) +
           (p < 0.05 ? ": more than chance alone makes)" : ": within what chance alone makes)");
  }
  md += "\n![results](results.svg)\n\n";
  md += protects ? "SPPFT kept the model safer than full fine-tuning: R_h " + pct(hr(e_sppft)) + " vs " + pct(hr(e_full)) + test + ".\n\n"
                 : "**SPPFT did not protect this model**: R_h " + pct(hr(e_sppft)) + " with SPPFT vs " + pct(hr(e_full)) +
                       " with full fine-tuning" + test + ". See docs/demo.md for why a model this small may not show the effect.\n\n";
  md += "## What SPPFT saved (measured)\n\n| | full fine-tuning | SPPFT |\n|---|---|---|\n";
  for (const char* cat : {"weights", "grads", "master", "optimizer", "activations", "workspace", "total_bytes"})
    md += std::string("| ") + cat + " (MiB) | " + mib(full_sum.number(std::string("/measured/") + cat)) + " | " +
          mib(sppft_sum.number(std::string("/measured/") + cat)) + " |\n";
  md += "| trainable parameters | " + std::to_string(full_sum.integer("/predicted/trainable_params")) + " | " +
        std::to_string(sppft_sum.integer("/predicted/trainable_params")) + " |\n";
  md += "| seconds per step | " + printf_string("%.3f", full_sum.number("/seconds_per_step")) + " | " +
        printf_string("%.3f", sppft_sum.number("/seconds_per_step")) + " |\n\n";
  md += "Predicted and measured bytes agree per category: " +
        std::string(full_sum.at("/predicted") == full_sum.at("/measured") && sppft_sum.at("/predicted") == sppft_sum.at("/measured")
                        ? "yes"
                        : "NO") +
        ".\n\nTotal wall time of this invocation: " + printf_string("%.0f", total_s) + " s.\n";
  atomic_write_text(opt.out / "report.md", md);

  std::printf("\nsppft demo (%s preset, %s) - %.0f s\n", opt.preset.c_str(), opt.device.c_str(), total_s);
  std::printf("  safety layers: initial %lld-%lld (cossim), final %s (locate, alpha %.2f)\n", (long long)initial.first,
              (long long)initial.last, freeze.c_str(), loc.number("/alpha"));
  std::printf("  %-26s %10s %15s %10s\n", "model", "R_h", "over-rejection", "Rouge-L");
  for (auto [name, e] : {std::pair{"aligned (before)", &e_al}, std::pair{"full fine-tuning", &e_full}, std::pair{"SPPFT", &e_sppft}})
    std::printf("  %-26s %10s %15s %10.3f\n", name, pct(hr(*e)).c_str(), pct(orr(*e)).c_str(), rl(*e));
  std::printf("  memory: full %s MiB, SPPFT %s MiB; s/step: full %.3f, SPPFT %.3f\n",
              mib(full_sum.number("/measured/total_bytes")).c_str(), mib(sppft_sum.number("/measured/total_bytes")).c_str(),
              full_sum.number("/seconds_per_step"), sppft_sum.number("/seconds_per_step"));
  std::printf("  report: %s\n", (opt.out / "report.md").c_str());
  return 0;
}

}  // namespace sppft
