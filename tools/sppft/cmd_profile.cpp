// sppft profile (DIR | --preset NAME) ...: per block and phase, the time, FLOPs and
// bytes of a training step, and what a frozen range saves.
#include <omp.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "analysis/profile_plot.h"
#include "engine/device.h"
#include "engine/error.h"
#include "models/presets.h"
#include "trainer/memory_plan.h"
#include "trainer/profile.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/device_option.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft profile (DIR | --preset NAME) [--device cpu|cuda] [--mode forward|train] [--freeze a-b]\n"
    "                     [--micro-batch B --seq T] [--steps N] [--warmup W] [--layers K]\n"
    "                     [--compare-freeze a-b] [--recompute] [--ops] [--trace OUT.json]\n"
    "                     [--svg OUT.svg] [--json]\n\n"
    "Runs W warm-up steps, then N measured training steps (zero grads, forward, loss,\n"
    "backward, AdamW; random tokens, loss on every token) and reports per part of the\n"
    "model - embeddings, each block, final norm, lm_head, loss - the median time of\n"
    "forward, backward-dX, backward-dW and optimizer (with the spread over the steps),\n"
    "the closed-form FLOPs of each phase, the achieved FLOP/s and the bytes each part\n"
    "holds (weights, grads, optimizer moments, saved activations). The phases are\n"
    "checked to add up to the step timed around them. See docs/profile.md.\n\n"
    "  DIR                   a Hugging Face checkpoint (config.json + safetensors)\n"
    "  --preset NAME         random weights at a model's shape (presets listed below)\n"
    "  --layers K            keep only the first K blocks (random weights, also for DIR)\n"
    "  --device D            cpu (fp32, host clock) or cuda (bf16 weights, activations and\n"
    "                        gradients, fp32 masters and moments; CUDA events, NVTX ranges)\n"
    "  --attention K         with --device cuda: wmma (default) | mma | cuda-cores, the\n"
    "                        training attention kernels (as in sppft train)\n"
    "  --mode M              train (default) | forward (forward and loss only)\n"
    "  --freeze RANGES       freeze blocks (SPPFT), e.g. 6-12 (0-indexed, inclusive), or a\n"
    "                        locate.json / its directory (its final_range)\n"
    "  --freeze-norms --freeze-embeddings --freeze-lm-head   as in sppft train\n"
    "  --compare-freeze R    profile full fine-tuning and SPPFT with R frozen in one\n"
    "                        run, and print what the frozen range saved (time, FLOPs,\n"
    "                        bytes) next to what the FLOP and memory models predict\n"
    "  --recompute           activation checkpointing, as in sppft train: adds a\n"
    "                        recompute phase (each block's forward rerun before its\n"
    "                        backward, all but the top block)\n"
    "  --recompute-blocks N  only the N lowest blocks that run backward\n"
    "  --ops                 also time every op (GEMM, attention, norm, ... and AdamW) and\n"
    "                        print them per phase, slowest first, with calls per step and\n"
    "                        share of the step; adds two timestamps per op (on a GPU two\n"
    "                        CUDA events), and puts the ops on their own trace track\n"
    "  --micro-batch B       sequences per step (default 1)\n"
    "  --seq T               tokens per sequence (default 64)\n"
    "  --steps N             measured steps (default 3)   --warmup W  (default 1)\n"
    "  --seed S              random weights and tokens (default 0)\n"
    "  --trace OUT.json      Chrome-trace timeline of the measured steps (ui.perfetto.dev)\n"
    "  --svg OUT.svg         bar chart of the time per part and phase\n"
    "  --json                the results as JSON on stdout instead of tables\n\n"
    "If the run would not fit in the memory available and the embeddings or lm_head\n"
    "train, they are frozen (with a note on stderr) so an 8B-shaped block stack fits,\n"
    "e.g. --preset llama-3-8b --layers 2 --micro-batch 1 --seq 64 in 24 GB.\n";

// MemAvailable of /proc/meminfo in bytes; 0 when unknown.
std::size_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

std::size_t planned_bytes(const ModelConfig& c, const FreezePlan& plan, std::int64_t mb, std::int64_t seq, bool train,
                          bool gpu, ActivationPolicy policy) {
  if (train)
    return plan_training_memory(c, plan, mb, seq, gpu ? Precision::BF16Mixed : Precision::FP32, 256, {}, policy).total();
  // Forward only: weights and the graph's buffers with nothing saved for backward.
  const DType dt = gpu ? DType::BF16 : DType::F32;
  std::size_t b = 0;
  for (const auto& ps : parameter_shapes(c)) b += static_cast<std::size_t>(shape_numel(ps.shape)) * dtype_size(dt);
  for (const auto& s :
       TrainingGraph::buffer_specs(c, std::vector<BlockMode>(c.num_layers, BlockMode::NoBackward), mb * seq, 256, dt))
    b += s.bytes();
  return b;
}

}  // namespace

int cmd_profile(int argc, char** argv) {
  Args args(argc, argv,
            {"--preset", "--device", "--mode", "--freeze", "--micro-batch", "--seq", "--steps", "--warmup", "--trace",
             "--layers", "--compare-freeze", "--svg", "--seed", "--attention", "--recompute-blocks"},
            {"--json", "--freeze-norms", "--freeze-embeddings", "--freeze-lm-head", "--recompute", "--ops"});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    std::printf("\npresets: %s\n", preset_list().c_str());
    return 0;
  }
  const bool gpu = require_device(args.get_or("--device", "cpu")) == Device::CUDA;
  const std::string attention = apply_attention_option(args, gpu);
  const std::string mode = args.get_or("--mode", "train");
  if (mode != "train" && mode != "forward") throw InputError("--mode: expected forward or train, got '" + mode + "'");
  const bool train = mode == "train";

  ModelConfig c;
  std::string what;
  std::optional<fs::path> dir;
  if (auto p = args.get("--preset")) {
    if (!args.positional().empty()) throw InputError("profile: give a checkpoint directory or --preset, not both");
    c = preset_config(*p);
    what = "preset " + *p;
  } else {
    if (args.positional().size() != 1) throw InputError("profile: expected a checkpoint directory or --preset NAME (see --help)");
    dir = args.positional()[0];
    c = load_model_config(*dir);
    what = dir->string();
  }
  const std::int64_t all_layers = c.num_layers;
  const std::int64_t layers = args.get_int("--layers", all_layers, 1, all_layers);
  c.num_layers = layers;
  if (layers < all_layers) what += " (" + std::to_string(layers) + " of " + std::to_string(all_layers) + " blocks)";
  const std::string attention_used = attention_kernels_used(gpu, c.head_dim);
  if (const std::string note = attention_note(attention, attention_used, c.head_dim); !note.empty())
    std::fprintf(stderr, "%s\n", note.c_str());

  ProfileOptions o;
  o.train = train;
  o.micro_batch = args.get_int("--micro-batch", 1, 1, 1 << 16);
  o.seq = args.get_int("--seq", 64, 2, 1 << 20);
  if (o.seq > c.max_position_embeddings)
    throw InputError("--seq " + std::to_string(o.seq) + ": longer than the model's max_position_embeddings (" +
                     std::to_string(c.max_position_embeddings) + ")");
  o.steps = args.get_int("--steps", 3, 1, 100000);
  o.warmup = args.get_int("--warmup", 1, 0, 100000);
  o.seed = static_cast<std::uint64_t>(args.get_int("--seed", 0, 0, std::int64_t{1} << 62));
  o.progress = true;
  o.ops = args.has("--ops");
  o.activations = activation_policy_option(args);
  if (o.activations.recomputes() && !train)
    throw InputError("--recompute: needs --mode train (a forward-only run keeps no activations)");

  if (args.has("--freeze") && args.has("--compare-freeze"))
    throw InputError("--compare-freeze: compares against full fine-tuning; do not also give --freeze");
  if (!train && (args.has("--freeze") || args.has("--compare-freeze")))
    throw InputError(std::string(args.has("--freeze") ? "--freeze" : "--compare-freeze") + ": needs --mode train");
  FreezePlan plan = FreezePlan::none(layers), sppft = plan;
  if (args.has("--freeze")) plan = FreezePlan::from_ranges(parse_layer_ranges(freeze_option(args), layers, "--freeze"), layers);
  if (auto f = args.get("--compare-freeze"))
    sppft = FreezePlan::from_ranges(parse_layer_ranges(*f, layers, "--compare-freeze"), layers);
  for (FreezePlan* p : {&plan, &sppft}) {
    p->norms = args.has("--freeze-norms");
    p->embeddings = args.has("--freeze-embeddings");
    p->lm_head = args.has("--freeze-lm-head") || (c.tie_word_embeddings && p->embeddings);
  }
  const std::optional<std::string> trace = args.get("--trace"), svg_out = args.get("--svg");
  const bool json = args.has("--json");

  // Does it fit? The largest run is the unfrozen one (the plan's own arithmetic).
  std::size_t avail = available_memory(), gpu_total = 0;
  if (gpu) cuda_memory_info(avail, gpu_total);
  std::size_t need = planned_bytes(c, plan, o.micro_batch, o.seq, train, gpu, o.activations);
  if (avail > 0 && need > avail / 100 * 95 && train && (!plan.embeddings || !plan.lm_head)) {
    FreezePlan lighter = plan;
    lighter.embeddings = lighter.lm_head = true;
    const std::size_t lighter_need = planned_bytes(c, lighter, o.micro_batch, o.seq, train, gpu, o.activations);
    if (lighter_need <= avail / 100 * 95) {
      std::fprintf(stderr,
                   "note: the run needs %s, %s are available; embeddings and lm_head frozen to fit (%s). Their\n"
                   "      forward and backward-dX are still measured; their dW and optimizer are not.\n",
                   human_bytes(need).c_str(), human_bytes(avail).c_str(), human_bytes(lighter_need).c_str());
      for (FreezePlan* p : {&plan, &sppft}) p->embeddings = p->lm_head = true;
      need = lighter_need;
    }
  }
  if (avail > 0 && need > avail / 100 * 95)
    throw InputError("profile: the run needs " + human_bytes(need) + " but " + human_bytes(avail) +
                     " are available; use fewer --layers, a smaller --micro-batch/--seq, or --freeze-embeddings "
                     "--freeze-lm-head");

  std::unique_ptr<Model> model;
  if (dir && layers == all_layers) {
    model = Model::load(*dir, false);
  } else {
    std::fprintf(stderr, "drawing random weights: %.2f B parameters at the shape of %s\n", c.total_parameters() / 1e9,
                 what.c_str());
    model = Model::random(c, o.seed, 0.02f, /*chunked=*/true);
  }
  if (gpu) model->to_device(Device::CUDA, DType::BF16);

  std::vector<ProfileRun> runs;
  o.label = !train ? "forward" : args.has("--compare-freeze") ? "full" : args.has("--freeze") ? "sppft" : "full";
  runs.push_back(profile_training(*model, plan, o));
  if (args.has("--compare-freeze")) {
    o.label = "sppft";
    runs.push_back(profile_training(*model, sppft, o));
  }
  std::vector<const ProfileRun*> ptrs;
  for (const auto& r : runs) ptrs.push_back(&r);

  std::string title = "sppft profile: " + what + ", " + std::to_string(o.micro_batch) + " x " + std::to_string(o.seq) +
                      " tokens" + activation_policy_note(o.activations) + ", " + (gpu ? "GPU " + cuda_device_description(0) + ", bf16-mixed, attention " + attention_used
                                         : "CPU " + std::to_string(omp_get_max_threads()) + " threads");
  if (trace) atomic_write_text(*trace, chrome_trace(ptrs));
  if (svg_out) write_profile_svg(ptrs, *svg_out, title);

  std::optional<FreezeComparison> cmp;
  if (runs.size() == 2) cmp = compare_freeze(c, runs[0], runs[1]);
  if (json) {
    Json j = {{"model", what},
              {"device", gpu ? "cuda" : "cpu"},
              {"attention_kernels", gpu ? attention : "cpu"},  // as asked (--attention)
              {"attention_kernels_used", attention_used},      // what ran for this head_dim
              {"mode", mode},
              {"layers", layers},
              {"config",
               {{"hidden_size", c.hidden_size},
                {"intermediate_size", c.intermediate_size},
                {"num_heads", c.num_heads},
                {"num_kv_heads", c.num_kv_heads},
                {"head_dim", c.head_dim},
                {"vocab_size", c.vocab_size},
                {"block_linear_params", block_linear_params(c)}}},
              {"runs", Json::array()}};
    for (const auto& r : runs) j["runs"].push_back(profile_to_json(r));
    if (cmp) j["comparison"] = comparison_to_json(*cmp);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s\n\n", title.c_str());
  for (const auto& r : runs) std::printf("%s\n", format_profile_table(r).c_str());
  if (cmp) std::printf("%s", format_comparison_table(*cmp, runs[0], runs[1]).c_str());
  if (trace) std::printf("trace: %s (open in ui.perfetto.dev)\n", trace->c_str());
  if (svg_out) std::printf("chart: %s\n", svg_out->c_str());
  return 0;
}

}  // namespace sppft::cli
