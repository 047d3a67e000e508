#include "analysis/experiment.h"

#include <algorithm>
#include <cstdio>

#include "analysis/compare.h"
#include "analysis/cossim.h"
#include "engine/error.h"

namespace sppft {

namespace {

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

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

std::string mib(double bytes) { return fmt("%.2f", bytes / 1048576.0); }

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
    md += "![localization](locate/locate.svg)\n\nParameter scaling with alpha " + fmt("%.3g", alpha) +
          ", over-rejection judged by `" + json_get_or<std::string>(*o.locate, "judge", "?", o.locate_file) + "` on " +
          std::to_string(json_at<std::int64_t>(*o.locate, "/queries", o.locate_file)) +
          " queries (`locate/locate.md` has the sweeps).\n\n";
    if (initial) sum["initial_range"] = {initial->first, initial->last};
    sum["alpha"] = alpha;
  } else {
    md += "Given with `--freeze` (no cosine analysis or localization in this run).\n\n";
  }
  md += "Frozen in the SPPFT arm: blocks **" + o.freeze + "** (0-indexed, inclusive).\n\n";

  // Table 2: the checkpoint, then both arms of every data set.
  if (o.runs.empty()) throw InputError("experiment: no fine-tuning runs to report");
  const bool several = o.runs.size() > 1;
  std::vector<EvalRun> evals = {{"base", o.eval_base, o.eval_base_file}};
  for (const FineTuning& r : o.runs) {
    evals.push_back({several ? "full " + r.data : "full fine-tuning", r.eval_full, r.eval_full_file});
    evals.push_back({"SPPFT " + o.freeze + (several ? " " + r.data : ""), r.eval_sppft, r.eval_sppft_file});
  }
  const Comparison c = compare_evaluations(evals);
  rep.warnings = c.warnings;
  md += "## Safety and utility (the paper's Table 2)\n\n" + c.markdown;
  for (const auto& w : c.warnings) md += "\n**Warning:** " + w + ".\n";
  sum["evaluation"] = c.json;
  rep.console = "safety layers frozen in the SPPFT arm: " + o.freeze + (o.locate ? " (located)" : " (given)") + "\n\n" + c.markdown + "\n";

  // Training: both arms of a data set on the same settings; memory as the trainer measured it.
  sum["training"] = Json::array();
  for (const FineTuning& r : o.runs) {
    const ArmStats full = arm_stats(r.full), sppft = arm_stats(r.sppft);
    const Json fm = json_at<Json>(r.full.memory, "/measured_peak", r.full.memory_file);
    const Json sm = json_at<Json>(r.sppft.memory, "/measured_peak", r.sppft.memory_file);
    md += "\n## Fine-tuning on " + r.data + ": full vs SPPFT (same data, schedule and seed)\n\n| | full fine-tuning | SPPFT " +
          o.freeze + " | saved |\n|---|---|---|---|\n";
    Json mem = Json::object();
    for (const char* cat : kCategories) {
      const double f = json_at<double>(r.full.memory, std::string("/measured_peak/") + cat, r.full.memory_file);
      const double v = json_at<double>(r.sppft.memory, std::string("/measured_peak/") + cat, r.sppft.memory_file);
      const std::string label = cat == std::string("total_bytes") ? "total" : cat;
      md += "| " + label + " (MiB, measured peak) | " + mib(f) + " | " + mib(v) + " | " + mib(f - v) +
            (f > 0 ? fmt(" (%.1f%%)", 100 * (f - v) / f) : std::string()) + " |\n";
      mem[label] = {{"full", f}, {"sppft", v}};
    }
    const auto trainable = [](const TrainingArm& a) {
      return json_at<std::int64_t>(a.memory, "/measured_peak/trainable_params", a.memory_file);
    };
    md += "| trainable parameters | " + std::to_string(trainable(r.full)) + " | " + std::to_string(trainable(r.sppft)) + " | " +
          std::to_string(trainable(r.full) - trainable(r.sppft)) + " |\n";
    md += "| optimizer steps | " + std::to_string(full.steps) + " | " + std::to_string(sppft.steps) + " | |\n";
    md += "| tokens/s (median step) | " + fmt("%.1f", full.median_tokens_per_s) + " | " + fmt("%.1f", sppft.median_tokens_per_s) +
          " | SPPFT " + fmt("%+.1f%%", 100 * (sppft.median_tokens_per_s / std::max(full.median_tokens_per_s, 1e-12) - 1)) + " |\n";
    md += "| final training loss | " + fmt("%.4f", full.final_loss) + " | " + fmt("%.4f", sppft.final_loss) + " | |\n";
    if (full.val_loss && sppft.val_loss)
      md += "| validation loss | " + fmt("%.4f", *full.val_loss) + " | " + fmt("%.4f", *sppft.val_loss) + " | |\n";
    if (full.probe_gap_deg && sppft.probe_gap_deg)
      md += "| safety probe gap at the end (deg) | " + fmt("%.2f", *full.probe_gap_deg) + " | " + fmt("%.2f", *sppft.probe_gap_deg) +
            " | |\n";
    const bool exact = json_at<Json>(r.full.memory, "/predicted", r.full.memory_file) == fm &&
                       json_at<Json>(r.sppft.memory, "/predicted", r.sppft.memory_file) == sm;
    md += std::string("\nThe memory planner's prediction equals the measured bytes in every category: ") + (exact ? "yes" : "no") +
          " (each arm's memory.json; `sppft memory` predicts them without a run).\n";
    const auto arm_json = [](const ArmStats& a) {
      Json j = {{"steps", a.steps}, {"median_tokens_per_s", a.median_tokens_per_s}, {"final_loss", a.final_loss}};
      if (a.val_loss) j["val_loss"] = *a.val_loss;
      if (a.probe_gap_deg) j["probe_gap_deg"] = *a.probe_gap_deg;
      return j;
    };
    sum["training"].push_back(
        {{"data", r.data}, {"full", arm_json(full)}, {"sppft", arm_json(sppft)}, {"memory_bytes", mem}, {"prediction_exact", exact}});
    rep.console += (several ? r.data + ": " : std::string()) + "memory (measured peak): full " + mib(mem["total"]["full"].get<double>()) +
                   " MiB, SPPFT " + mib(mem["total"]["sppft"].get<double>()) + " MiB; tokens/s: full " +
                   fmt("%.1f", full.median_tokens_per_s) + ", SPPFT " + fmt("%.1f", sppft.median_tokens_per_s) + "\n";
  }

  md += "\n## The stages as commands\n\n```\n";
  for (const auto& cmd : o.commands) md += cmd + "\n";
  md += "```\n";
  sum["commands"] = o.commands;
  return rep;
}

}  // namespace sppft
