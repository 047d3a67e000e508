#include "analysis/experiment.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include "analysis/compare.h"
#include "analysis/cossim.h"
#include "engine/error.h"
#include "engine/text.h"

namespace sppft {

namespace {

// What the report says of one arm's training, from its metrics.jsonl.
struct ArmStats {
  std::int64_t steps = 0;
  double median_tokens_per_s = 0, final_loss = 0;
  std::optional<double> val_loss, probe_gap_deg;
};

ArmStats arm_stats(const TrainingArm& a) {
  if (a.metrics.empty()) throw InputError(a.metrics_file + ": no steps");
  ArmStats s;
  std::vector<double> tps;
  for (const Json& row : a.metrics) {
    s.steps = std::max(s.steps, json_get<std::int64_t>(row, "step", a.metrics_file));
    tps.push_back(json_get<double>(row, "tokens_per_s", a.metrics_file));
    if (row.contains("val_loss")) s.val_loss = json_get<double>(row, "val_loss", a.metrics_file);
    if (row.contains("probe_gap_deg")) s.probe_gap_deg = json_get<double>(row, "probe_gap_deg", a.metrics_file);
  }
  // The first step carries one-time costs (allocation, first touches); the median is the rate.
  if (tps.size() > 1) tps.erase(tps.begin());
  std::sort(tps.begin(), tps.end());
  s.median_tokens_per_s = tps.size() % 2 ? tps[tps.size() / 2] : (tps[tps.size() / 2 - 1] + tps[tps.size() / 2]) / 2;
  s.final_loss = json_get<double>(a.metrics.back(), "loss", a.metrics_file);
  return s;
}

constexpr const char* kCategories[] = {"weights", "grads", "master", "optimizer", "activations", "workspace", "total_bytes"};

std::string mib(double bytes) { return printf_string("%.2f", bytes / 1048576.0); }

}  // namespace

std::vector<Json> read_metrics_jsonl(const std::string& path) {
  std::vector<Json> rows;
  for (JsonLine& l : parse_json_lines(read_file(path), path)) rows.push_back(std::move(l.value));
  return rows;
}

ExperimentReport experiment_report(const ExperimentOutputs& o) {
  ExperimentReport rep;
  std::string& md = rep.markdown;
  Json& sum = rep.summary;
  sum = {{"model", o.model}, {"device", o.device}, {"freeze", o.freeze}};
  md = "# SPPFT experiment: " + o.model + "\n\nEvery number here was measured by `sppft experiment` on " + o.device +
       " (stages are cached in this directory; a stage's numbers are from the run that made it). Each stage is an "
       "ordinary sppft command, listed at the end.\n\n## Safety layers\n\n";
  if (o.cossim && o.locate) {
    const std::optional<LayerRange> initial = initial_range_of(*o.cossim, o.cossim_file);
    md += "![cosine analysis](cossim/cossim.svg)\n\n" +
          (initial ? "Initial range (cosine analysis) " + format_layer_ranges({*initial})
                   : std::string("The cosine analysis found no initial range")) +
          ": " + json_get_or<std::string>(*o.cossim, "reasoning", "", o.cossim_file) + "\n\n";
    if (o.locate->is_object() && o.locate->contains("initial"))
      md += "Localization started from " + format_layer_ranges({layer_range_at(*o.locate, "/initial", o.locate_file)}) + ".\n\n";
    const double alpha = json_at<double>(*o.locate, "/alpha", o.locate_file);
    md += "![localization](locate/locate.svg)\n\nParameter scaling with alpha " + printf_string("%.3g", alpha) +
          ", over-rejection judged by `" + json_get_or<std::string>(*o.locate, "judge", "?", o.locate_file) + "` on " +
          std::to_string(json_at<std::int64_t>(*o.locate, "/queries", o.locate_file)) +
          " queries (`locate/locate.md` has the sweeps).\n\n";
    if (initial) sum["initial_range"] = {initial->first, initial->last};
    sum["alpha"] = alpha;
  } else {
    md += "Given with `--freeze` (no cosine analysis or localization in this run).\n\n";
  }
  md += "Frozen in the SPPFT arm: blocks **" + o.freeze + "** (0-indexed, inclusive).\n\n";
  const std::string control_name = "frozen " + o.control + " (control)";
  if (!o.control.empty()) {
    md += "Frozen in the control arm: blocks **" + o.control +
          "**, the same fine-tuning with other blocks frozen: if SPPFT keeps the base model's safety and the "
          "control does not, it is the safety layers that hold it, not freezing as such (the paper's Table 8).\n\n";
    sum["control"] = o.control;
  }

  // Table 2: the checkpoint, then both arms of every data set.
  if (o.runs.empty()) throw InputError("experiment: no fine-tuning runs to report");
  const bool several = o.runs.size() > 1;
  const auto stored = [](const std::string& name, const Json& eval, const std::string& file) {
    return EvalRun{name, eval, file, responses_next_to(file)};
  };
  std::vector<EvalRun> evals = {stored("base", o.eval_base, o.eval_base_file)};
  // Paired tests: every run against the checkpoint; SPPFT against full fine-tuning and the control
  // against SPPFT on the same data (the paper's Tables 2 and 8).
  std::vector<RunPair> pairs;
  for (const FineTuning& r : o.runs) {
    const std::size_t full = evals.size();
    evals.push_back(stored(several ? "full " + r.data : "full fine-tuning", r.eval_full, r.eval_full_file));
    evals.push_back(stored("SPPFT " + o.freeze + (several ? " " + r.data : ""), r.eval_sppft, r.eval_sppft_file));
    if (r.control) evals.push_back(stored(control_name + (several ? " " + r.data : ""), r.eval_control, r.eval_control_file));
    for (std::size_t i = full; i < evals.size(); ++i) pairs.push_back({0, i});
    for (std::size_t i = full + 1; i < evals.size(); ++i) pairs.push_back({i - 1, i});
  }
  const Comparison c = compare_evaluations(evals, pairs);
  rep.warnings = c.warnings;
  md += "## Safety and utility (the paper's Table 2)\n\n" + c.markdown;
  for (const auto& w : c.warnings) md += "\n**Warning:** " + w + ".\n";
  sum["evaluation"] = c.json;
  rep.console = "safety layers frozen in the SPPFT arm: " + o.freeze + (o.locate ? " (located)" : " (given)") +
                (o.control.empty() ? std::string() : "; in the control arm: " + o.control) + "\n\n" + c.markdown + "\n";

  // Training: the arms of a data set on the same settings; memory as the trainer measured it.
  sum["training"] = Json::array();
  for (const FineTuning& r : o.runs) {
    std::vector<const TrainingArm*> arms = {&r.full, &r.sppft};
    std::vector<std::string> keys = {"full", "sppft"}, headers = {"full fine-tuning", "SPPFT " + o.freeze};
    if (r.control) arms.push_back(&*r.control), keys.push_back("control"), headers.push_back(control_name);
    std::vector<ArmStats> stats;
    for (const TrainingArm* a : arms) {
      (void)json_at<Json>(a->memory, "/measured_peak", a->memory_file);  // the whole block named when it is missing
      stats.push_back(arm_stats(*a));
    }
    const ArmStats &full = stats[0], &sppft = stats[1];
    const auto row = [&](const std::string& label, const std::function<std::string(std::size_t)>& cell, const std::string& last) {
      md += "| " + label + " |";
      for (std::size_t i = 0; i < arms.size(); ++i) md.append(" ").append(cell(i)).append(" |");
      md.append(last.empty() ? " |\n" : " " + last + " |\n");
    };
    std::string header = "| ", rule = "|---|";
    for (const auto& h : headers) header += "| " + h + " ", rule += "---|";
    md += "\n## Fine-tuning on " + r.data + ": full vs SPPFT" + (r.control ? std::string(" vs control") : "") +
          " (same data, schedule and seed)\n\n" + header + "| saved by SPPFT |\n" + rule + "---|\n";
    Json mem = Json::object();
    for (const char* cat : kCategories) {
      const std::string label = cat == std::string("total_bytes") ? "total" : cat;
      std::vector<double> bytes;
      for (const TrainingArm* a : arms) bytes.push_back(json_at<double>(a->memory, std::string("/measured_peak/") + cat, a->memory_file));
      const double f = bytes[0], v = bytes[1];
      row(label + " (MiB, measured peak)", [&](std::size_t i) { return mib(bytes[i]); },
          mib(f - v) + (f > 0 ? printf_string(" (%.1f%%)", 100 * (f - v) / f) : std::string()));
      for (std::size_t i = 0; i < arms.size(); ++i) mem[label][keys[i]] = bytes[i];
    }
    const auto trainable = [](const TrainingArm& a) {
      return json_at<std::int64_t>(a.memory, "/measured_peak/trainable_params", a.memory_file);
    };
    row("trainable parameters", [&](std::size_t i) { return std::to_string(trainable(*arms[i])); },
        std::to_string(trainable(r.full) - trainable(r.sppft)));
    row("optimizer steps", [&](std::size_t i) { return std::to_string(stats[i].steps); }, "");
    row("tokens/s (median step)", [&](std::size_t i) { return printf_string("%.1f", stats[i].median_tokens_per_s); },
        "SPPFT " + printf_string("%+.1f%%", 100 * (sppft.median_tokens_per_s / std::max(full.median_tokens_per_s, 1e-12) - 1)));
    row("final training loss", [&](std::size_t i) { return printf_string("%.4f", stats[i].final_loss); }, "");
    const auto all = [&](auto has) { return std::all_of(stats.begin(), stats.end(), has); };
    if (all([](const ArmStats& a) { return a.val_loss.has_value(); }))
      row("validation loss", [&](std::size_t i) { return printf_string("%.4f", *stats[i].val_loss); }, "");
    if (all([](const ArmStats& a) { return a.probe_gap_deg.has_value(); }))
      row("safety probe gap at the end (deg)", [&](std::size_t i) { return printf_string("%.2f", *stats[i].probe_gap_deg); }, "");
    bool exact = true;
    for (const TrainingArm* a : arms)
      exact = exact && json_at<Json>(a->memory, "/predicted", a->memory_file) == json_at<Json>(a->memory, "/measured_peak", a->memory_file);
    md += std::string("\nThe memory planner's prediction equals the measured bytes in every category: ") + (exact ? "yes" : "no") +
          " (each arm's memory.json; `sppft memory` predicts them without a run).\n";
    const auto arm_json = [](const ArmStats& a) {
      Json j = {{"steps", a.steps}, {"median_tokens_per_s", a.median_tokens_per_s}, {"final_loss", a.final_loss}};
      if (a.val_loss) j["val_loss"] = *a.val_loss;
      if (a.probe_gap_deg) j["probe_gap_deg"] = *a.probe_gap_deg;
      return j;
    };
    Json t = {{"data", r.data}, {"memory_bytes", mem}, {"prediction_exact", exact}};
    for (std::size_t i = 0; i < arms.size(); ++i) t[keys[i]] = arm_json(stats[i]);
    sum["training"].push_back(t);
    rep.console += (several ? r.data + ": " : std::string()) + "memory (measured peak): full " + mib(mem["total"]["full"].get<double>()) +
                   " MiB, SPPFT " + mib(mem["total"]["sppft"].get<double>()) + " MiB; tokens/s: full " +
                   printf_string("%.1f", full.median_tokens_per_s) + ", SPPFT " + printf_string("%.1f", sppft.median_tokens_per_s) +
                   (r.control ? "; control " + mib(mem["total"]["control"].get<double>()) + " MiB, " +
                                    printf_string("%.1f", stats[2].median_tokens_per_s) + " tokens/s"
                              : std::string()) +
                   "\n";
  }

  md += "\n## The stages as commands\n\n```\n";
  for (const auto& cmd : o.commands) md += cmd + "\n";
  md += "```\n";
  sum["commands"] = o.commands;
  return rep;
}

}  // namespace sppft
