// sppft memory (DIR | --preset NAME) [--freeze a-b] ...: predicted training bytes per category.
#include <cstdio>
#include <optional>
#include <string>

#include "engine/error.h"
#include "models/presets.h"
#include "trainer/data_parallel.h"
#include "trainer/memory_plan.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/device_option.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft memory (DIR | --preset NAME) [--freeze a-b] [--micro-batch B --seq T]\n"
    "                    [--device cpu|cuda | --precision fp32|bf16-mixed] [--freeze-norms]\n"
    "                    [--freeze-embeddings] [--recompute | --recompute-blocks N] [--fit SIZE]\n"
    "                    [--world N [--zero1] [--rank R]] [--json]\n\n"
    "Predicts, without allocating, the bytes a training run holds per category (weights,\n"
    "grads, master, optimizer, activations, workspace) for any config.json or a preset\n"
    "(listed below). With --freeze (ranges, or a locate.json / its directory: the located\n"
    "safety layers) it also prints full fine-tuning for comparison. With --world N: one rank of an N-rank\n"
    "data-parallel run (--zero1 shards the optimizer state; rank 0 holds the largest slice)\n"
    "and the bytes it communicates per optimizer step.\n"
    "--device names the run to plan: cpu is fp32 (the default), cuda is bf16-mixed (what\n"
    "`sppft train --device cuda` runs, workspace including the CUDA backend's buffers);\n"
    "--precision picks the layout directly. No GPU is needed to plan.\n"
    "--recompute plans `sppft train --recompute` (each block keeps only its input and\n"
    "reruns its forward before its backward); without it, one line says what it would save.\n"
    "--recompute-blocks N plans recomputing the N lowest blocks that run backward only.\n"
    "--fit SIZE (e.g. 141GB, 80GiB): the largest micro-batch of --seq tokens per sequence whose\n"
    "plan fits in SIZE, with activations saved and recomputed (and for full fine-tuning too\n"
    "with --freeze): what freezing and recomputing buy in batch size on a given GPU. With\n"
    "--micro-batch given too, also the fewest --recompute-blocks that make that micro-batch fit.\n";
}  // namespace

int cmd_memory(int argc, char** argv) {
  Args args(argc, argv, {"--preset", "--freeze", "--micro-batch", "--seq", "--precision", "--device", "--world", "--rank", "--fit",
             "--recompute-blocks"},
            {"--json", "--freeze-norms", "--freeze-embeddings", "--freeze-lm-head", "--zero1", "--recompute"});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    std::printf("\npresets: %s\n", preset_list().c_str());
    return 0;
  }
  ModelConfig c;
  std::string what;
  if (auto p = args.get("--preset")) {
    if (!args.positional().empty()) throw InputError("memory: give a checkpoint directory or --preset, not both");
    c = preset_config(*p);
    what = "preset " + *p;
  } else {
    if (args.positional().size() != 1) throw InputError("memory: expected a checkpoint directory or --preset NAME (see --help)");
    c = load_model_config(args.positional()[0]);
    what = args.positional()[0];
  }
  const auto mb = args.get_int("--micro-batch", 4, 1, 1 << 20), seq = args.get_int("--seq", 256, 1, 1 << 24);
  Precision prec = parse_precision(args.get_or("--precision", "fp32"));
  if (auto d = args.get("--device")) {
    if (*d != "cpu" && *d != "cuda") throw InputError("--device: expected cpu or cuda, got '" + *d + "'");
    const Precision runs = *d == "cuda" ? Precision::BF16Mixed : Precision::FP32;
    if (args.has("--precision") && prec != runs)
      throw InputError("--precision " + precision_name(prec) + " contradicts --device " + *d + " (which trains " +
                       precision_name(runs) + "); give one of them");
    prec = runs;
  }
  FreezePlan plan = FreezePlan::none(c.num_layers);
  if (args.has("--freeze")) plan = FreezePlan::from_ranges(parse_layer_ranges(freeze_option(args), c.num_layers, "--freeze"), c.num_layers);
  plan.norms = args.has("--freeze-norms");
  plan.embeddings = args.has("--freeze-embeddings");
  plan.lm_head = args.has("--freeze-lm-head") || (c.tie_word_embeddings && plan.embeddings);
  const int world = static_cast<int>(args.get_int("--world", 1, 1, 1 << 20));
  const DataParallelShape dp{world, static_cast<int>(args.get_int("--rank", 0, 0, world - 1)), args.has("--zero1")};
  const std::size_t elem = prec == Precision::FP32 ? 4 : 2;
  const ActivationPolicy policy = activation_policy_option(args);
  MemoryBreakdown m = plan_training_memory(c, plan, mb, seq, prec, 256, dp, policy);
  const CommBytes comm = plan_comm_bytes(trainable_part_numels(c, plan), world, dp.zero1, elem);
  const FreezePlan none = FreezePlan::none(c.num_layers);
  // --fit: the largest micro-batch per activation policy, for this plan and (with --freeze) full fine-tuning.
  const std::optional<std::size_t> budget = args.get_bytes("--fit");
  struct Fit {
    std::int64_t saved = 0, recomputed = 0;
  };
  const auto fit = [&](const FreezePlan& p) {
    return Fit{max_micro_batch(c, p, seq, prec, *budget, dp, ActivationPolicy::save()),
               max_micro_batch(c, p, seq, prec, *budget, dp, ActivationPolicy::recompute())};
  };
  std::optional<Fit> fit_plan, fit_full;
  std::optional<std::int64_t> fit_blocks;  // the fewest recomputed blocks for the given --micro-batch
  if (budget) {
    fit_plan = fit(plan);
    if (args.has("--freeze")) fit_full = fit(none);
    if (args.has("--micro-batch")) fit_blocks = min_recompute_blocks(c, plan, mb, seq, prec, *budget, dp);
  }
  if (args.has("--json")) {
    Json j = m.to_json();
    j["world_size"] = world;
    j["rank"] = dp.rank;
    j["zero1"] = dp.zero1;
    j["comm_per_step"] = comm.to_json(world);
    j["model"] = what;
    j["freeze"] = plan.describe();
    j["precision"] = precision_name(prec);
    j["activation_policy"] = activation_policy_name(policy);
    j["micro_batch"] = mb;
    j["seq"] = seq;
    if (budget) {
      const auto fit_json = [](const Fit& f) { return Json{{"save", f.saved}, {"recompute", f.recomputed}}; };
      j["fit"] = {{"budget_bytes", *budget}, {"seq", seq}, {"max_micro_batch", fit_json(*fit_plan)}};
      if (fit_full) j["fit"]["full_fine_tuning_max_micro_batch"] = fit_json(*fit_full);
      if (fit_blocks) j["fit"]["min_recompute_blocks"] = {{"micro_batch", mb}, {"blocks", *fit_blocks}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s: %s, micro-batch %lld x %lld tokens, %s%s\n", what.c_str(), plan.describe().c_str(), (long long)mb,
              (long long)seq, precision_name(prec).c_str(),
              activation_policy_note(policy).c_str());
  std::printf("%lld trainable / %lld frozen parameters\n%s", (long long)m.trainable_params, (long long)m.frozen_params,
              format_memory_table(m, nullptr).c_str());
  if (world > 1) {
    const CommBytes full = plan_comm_bytes(trainable_part_numels(c, none), world, dp.zero1, elem);
    std::printf("rank %d of %d%s; communicated per optimizer step: %s (ring traffic per rank %s)", dp.rank, world,
                dp.zero1 ? ", ZeRO-1" : "", human_bytes(static_cast<double>(comm.payload())).c_str(),
                human_bytes(comm.ring_bytes_per_rank(world)).c_str());
    if (args.has("--freeze")) std::printf("; full fine-tuning %s", human_bytes(static_cast<double>(full.payload())).c_str());
    std::printf("\n");
  }
  if (args.has("--freeze")) {
    MemoryBreakdown full = plan_training_memory(c, none, mb, seq, prec, 256, dp, policy);
    std::printf("full fine-tuning: %s total; the frozen blocks save %s (%.1f%%)\n", human_bytes(full.total()).c_str(),
                human_bytes(static_cast<double>(full.total()) - m.total()).c_str(),
                100.0 * (static_cast<double>(full.total()) - m.total()) / full.total());
  }
  if (policy == ActivationPolicy::save()) {
    const MemoryBreakdown r = plan_training_memory(c, plan, mb, seq, prec, 256, dp, ActivationPolicy::recompute());
    const auto act = static_cast<std::size_t>(MemCategory::Activations);
    std::printf("with --recompute: activations %s instead of %s; %s total\n", human_bytes(r.bytes[act]).c_str(),
                human_bytes(m.bytes[act]).c_str(), human_bytes(r.total()).c_str());
  }
  if (budget) {
    const auto say = [&](const Fit& f, const FreezePlan& p) {
      if (f.saved > 0)
        return "micro-batch up to " + std::to_string(f.saved) + " (" + std::to_string(f.recomputed) + " with --recompute)";
      if (f.recomputed > 0) return "micro-batch up to " + std::to_string(f.recomputed) + " with --recompute (none without it)";
      const MemoryBreakdown one = plan_training_memory(c, p, 1, seq, prec, 256, dp, ActivationPolicy::recompute());
      return "no micro-batch (one sequence needs " + human_bytes(static_cast<double>(one.total())) + " with --recompute)";
    };
    std::printf("fits in %s at %lld tokens per sequence: %s", human_bytes(static_cast<double>(*budget)).c_str(),
                (long long)seq, say(*fit_plan, plan).c_str());
    if (fit_full) std::printf("; full fine-tuning: %s", say(*fit_full, none).c_str());
    std::printf("\n");
    if (fit_blocks) {
      if (*fit_blocks == 0) std::printf("micro-batch %lld fits without recomputing\n", (long long)mb);
      else if (*fit_blocks < 0) std::printf("micro-batch %lld does not fit even with --recompute\n", (long long)mb);
      else std::printf("micro-batch %lld fits with --recompute-blocks %lld\n", (long long)mb, (long long)*fit_blocks);
    }
  }
  return 0;
}

}  // namespace sppft::cli
