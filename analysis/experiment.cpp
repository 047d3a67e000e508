#include "analysis/experiment.h"

#include <algorithm>
#include <cstdio>

#include "analysis/compare.h"
#include "engine/error.h"

namespace sppft {

namespace {

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

const Json& need(const Json& j, const char* pointer, const std::string& what) {
  const Json::json_pointer p(pointer);
  if (!j.contains(p)) throw InputError(what + ": no " + std::string(pointer + 1) + " (not written by this version of sppft?)");
  return j[p];
}

// What the report says of one arm's training, from its metrics.jsonl.
struct ArmStats {
  std::int64_t steps = 0;
  double median_tokens_per_s = 0, final_loss = 0;
  std::optional<double> val_loss, probe_gap_deg;
};

ArmStats arm_stats(const TrainingArm& a) {
  if (a.metrics.empty()) throw InputError(a.name + ": metrics.jsonl has no steps");
  ArmStats s;
  std::vector<double> tps;
  for (const Json& row : a.metrics) {
    s.steps = std::max(s.steps, json_get<std::int64_t>(row, "step", a.name + " metrics.jsonl"));
    tps.push_back(json_get<double>(row, "tokens_per_s", a.name + " metrics.jsonl"));
    if (row.contains("val_loss")) s.val_loss = row["val_loss"].get<double>();
    if (row.contains("probe_gap_deg")) s.probe_gap_deg = row["probe_gap_deg"].get<double>();
  }
  // The first step carries one-time costs (allocation, first touches); the median is the rate.
  if (tps.size() > 1) tps.erase(tps.begin());
  std::sort(tps.begin(), tps.end());
  s.median_tokens_per_s = tps.size() % 2 ? tps[tps.size() / 2] : (tps[tps.size() / 2 - 1] + tps[tps.size() / 2]) / 2;
  s.final_loss = json_get<double>(a.metrics.back(), "loss", a.name + " metrics.jsonl");
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
    const Json* initial = o.cossim->contains("initial_range") && (*o.cossim)["initial_range"].is_array() ? &(*o.cossim)["initial_range"] : nullptr;
    md += "![cosine analysis](cossim/cossim.svg)\n\n" +
          (initial ? "Initial range (cosine analysis) " + std::to_string((*initial)[0].get<int>()) + "-" + std::to_string((*initial)[1].get<int>())
                   : std::string("The cosine analysis found no initial range")) +
          ": " + o.cossim->value("reasoning", std::string()) + "\n\n";
    if (o.locate->contains("initial"))
      md += "Localization started from " + std::to_string((*o.locate)["initial"][0].get<int>()) + "-" +
            std::to_string((*o.locate)["initial"][1].get<int>()) + ".\n\n";
    md += "![localization](locate/locate.svg)\n\nParameter scaling with alpha " +
          fmt("%.3g", need(*o.locate, "/alpha", "locate.json").get<double>()) + ", over-rejection judged by `" +
          o.locate->value("judge", std::string("?")) + "` on " + std::to_string(need(*o.locate, "/queries", "locate.json").get<int>()) +
          " queries (`locate/locate.md` has the sweeps).\n\n";
    if (initial) sum["initial_range"] = *initial;
    sum["alpha"] = (*o.locate)["alpha"];
  } else {
    md += "Given with `--freeze` (no cosine analysis or localization in this run).\n\n";
  }
  md += "Frozen in the SPPFT arm: blocks **" + o.freeze + "** (0-indexed, inclusive).\n\n";

  // Table 2: the checkpoint, then both arms of every data set.
  if (o.runs.empty()) throw InputError("experiment: no fine-tuning runs to report");
  const bool several = o.runs.size() > 1;
  std::vector<EvalRun> evals = {{"base", o.eval_base}};
  for (const FineTuning& r : o.runs) {
    evals.push_back({several ? "full " + r.data : "full fine-tuning", r.eval_full});
    evals.push_back({"SPPFT " + o.freeze + (several ? " " + r.data : ""), r.eval_sppft});
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
    const Json& fm = need(r.full.memory, "/measured_peak", r.full.name + " memory.json");
    const Json& sm = need(r.sppft.memory, "/measured_peak", r.sppft.name + " memory.json");
    md += "\n## Fine-tuning on " + r.data + ": full vs SPPFT (same data, schedule and seed)\n\n| | full fine-tuning | SPPFT " +
          o.freeze + " | saved |\n|---|---|---|---|\n";
    Json mem = Json::object();
    for (const char* cat : kCategories) {
      const double f = need(fm, (std::string("/") + cat).c_str(), "memory.json").get<double>();
      const double v = need(sm, (std::string("/") + cat).c_str(), "memory.json").get<double>();
      const std::string label = cat == std::string("total_bytes") ? "total" : cat;
      md += "| " + label + " (MiB, measured peak) | " + mib(f) + " | " + mib(v) + " | " + mib(f - v) +
            (f > 0 ? fmt(" (%.1f%%)", 100 * (f - v) / f) : std::string()) + " |\n";
      mem[label] = {{"full", f}, {"sppft", v}};
    }
    const auto trainable = [&](const Json& m) { return need(m, "/trainable_params", "memory.json").get<std::int64_t>(); };
    md += "| trainable parameters | " + std::to_string(trainable(fm)) + " | " + std::to_string(trainable(sm)) + " | " +
          std::to_string(trainable(fm) - trainable(sm)) + " |\n";
    md += "| optimizer steps | " + std::to_string(full.steps) + " | " + std::to_string(sppft.steps) + " | |\n";
    md += "| tokens/s (median step) | " + fmt("%.1f", full.median_tokens_per_s) + " | " + fmt("%.1f", sppft.median_tokens_per_s) +
          " | SPPFT " + fmt("%+.1f%%", 100 * (sppft.median_tokens_per_s / std::max(full.median_tokens_per_s, 1e-12) - 1)) + " |\n";
    md += "| final training loss | " + fmt("%.4f", full.final_loss) + " | " + fmt("%.4f", sppft.final_loss) + " | |\n";
    if (full.val_loss && sppft.val_loss)
      md += "| validation loss | " + fmt("%.4f", *full.val_loss) + " | " + fmt("%.4f", *sppft.val_loss) + " | |\n";
    if (full.probe_gap_deg && sppft.probe_gap_deg)
      md += "| safety probe gap at the end (deg) | " + fmt("%.2f", *full.probe_gap_deg) + " | " + fmt("%.2f", *sppft.probe_gap_deg) +
            " | |\n";
    const bool exact = need(r.full.memory, "/predicted", "memory.json") == fm && need(r.sppft.memory, "/predicted", "memory.json") == sm;
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
