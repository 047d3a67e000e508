// sppft train DIR --data FILE --out OUT [--freeze a-b] ...: fine-tuning, full or SPPFT.
#include <cstdio>

#include "engine/device.h"
#include "engine/error.h"
#include "analysis/safety_probe.h"
#include "models/prompting.h"
#include "trainer/comm.h"
#include "trainer/trainer.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "tools/sppft/device_option.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft train DIR --data FILE --out OUT [options]\n\n"
    "Fine-tunes a checkpoint on Alpaca JSON/JSONL ({instruction, input, output}), chat\n"
    "records ({messages: [{role, content}]} or ShareGPT's {conversations: [{from, value}]})\n"
    "or TRL's prompt-completion records ({prompt, completion}: strings or message lists).\n"
    "With --freeze a-b the attention and MLP weights of those blocks are frozen (SPPFT): no\n"
    "gradient, no optimizer state, no weight-gradient work. Writes OUT/ (Hugging Face\n"
    "checkpoint), OUT/metrics.jsonl, OUT/memory.json and OUT/checkpoint/ (resumable state).\n\n"
    "  --freeze RANGES           e.g. 6-12 or 2-3,6-12 (0-indexed, inclusive); none = full FT;\n"
    "                            or a locate.json / its directory: its final_range\n"
    "  --freeze-norms            also freeze the RMSNorm weights of frozen blocks\n"
    "  --freeze-embeddings       freeze the token embeddings\n"
    "  --freeze-lm-head          freeze the output projection\n"
    "  --lr LR                   peak learning rate (default 1e-4)\n"
    "  --epochs N                (default 3)      --max-steps N   overrides epochs\n"
    "  --micro-batch B           sequences per forward (default 4)\n"
    "  --grad-accum K            micro-batches per optimizer step (default 1)\n"
    "  --recompute               keep each block's input only and rerun its forward before\n"
    "                            its backward (activation checkpointing): activations drop\n"
    "                            to one block's worth plus an input per block, for about\n"
    "                            one more forward of time; gradients are unchanged\n"
    "  --recompute-blocks N      the same for the N lowest blocks that run backward only:\n"
    "                            memory and time in between (sppft memory --fit says how\n"
    "                            many a micro-batch needs)\n"
    "  --cutoff T                tokens per example after truncation (default 256)\n"
    "  --warmup N                warmup steps (default 0)\n"
    "  --schedule S              constant | linear (default) | cosine\n"
    "  --weight-decay W          AdamW decoupled decay (default 0)\n"
    "  --decay-norms-and-biases  also decay norm weights and biases (default: not)\n"
    "  --beta1 --beta2 --eps     AdamW (defaults 0.9, 0.999, 1e-8)\n"
    "  --clip C                  global gradient-norm clip (default 1.0; 0 = off)\n"
    "  --seed S                  data order and validation split (default 42)\n"
    "  --val-size N              validation records held out (default 0; a conversation\n"
    "                            split into one example per turn stays on one side)\n"
    "  --eval-every K            validation loss every K steps (and at the end)\n"
    "  --save-every K            resumable checkpoint every K steps\n"
    "  --template T              alpaca (default) | chat | none\n"
    "  --chat-template-kwargs J  extra chat-template variables (JSON object) for chat records\n"
    "                            and --template chat, e.g. '{\"enable_thinking\": false}'\n"
    "  --train-on-inputs         loss on prompt and response (default: response only)\n"
    "  --resume                  continue from OUT/checkpoint\n"
    "  --safety-probe N.csv,M.csv  every --probe-every steps, the mean angle gap (N-M minus\n"
    "                            N-N, degrees) of the last-token states at --probe-layers\n"
    "                            (default: the frozen range, else all blocks), logged as\n"
    "                            probe_gap_deg in metrics.jsonl: watch safety drift live\n"
    "  --probe-every K           (default 10)   --probe-layers a-b\n\n"
    "Data parallel (docs/distributed.md): start one process per rank with mpirun, or with\n"
    "RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun / Slurm style). Each rank takes\n"
    "micro-batch x grad-accum examples of every step's global batch.\n"
    "  --dist B                  auto (default) | none | mpi | tcp\n"
    "  --device D                cpu (default, fp32) | cuda (bf16 weights, activations and\n"
    "                            gradients; fp32 masters and moments; one GPU)\n"
    "  --zero1                   shard optimizer state over ranks (reduce-scatter + all-gather)\n"
    "  --dist-timeout S          a collective stuck this long ends the run (default 300)\n";
}  // namespace

const std::set<std::string> kTrainValuedFlags = {
    "--data", "--out", "--freeze", "--lr", "--epochs", "--max-steps", "--micro-batch", "--grad-accum", "--cutoff",
    "--warmup", "--schedule", "--weight-decay", "--beta1", "--beta2", "--eps", "--clip", "--seed", "--val-size",
    "--eval-every", "--save-every", "--template", "--chat-template-kwargs", "--safety-probe", "--probe-every", "--probe-layers",
    "--dist", "--device", "--dist-timeout", "--attention", "--recompute-blocks"};
const std::set<std::string> kTrainSwitches = {"--freeze-norms", "--freeze-embeddings", "--freeze-lm-head", "--decay-norms-and-biases",
                                              "--train-on-inputs", "--resume", "--zero1", "--recompute"};

int cmd_train(int argc, char** argv) {
  Args args(argc, argv, kTrainValuedFlags, kTrainSwitches);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    std::fputs(kAttentionHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("train: expected one checkpoint directory (see --help)");
  TrainOptions o;
  o.model_dir = args.positional()[0];
  o.data = args.require("--data");
  o.out = args.require("--out");
  o.freeze = freeze_option(args);
  o.freeze_norms = args.has("--freeze-norms");
  o.freeze_embeddings = args.has("--freeze-embeddings");
  o.freeze_lm_head = args.has("--freeze-lm-head");
  o.lr = args.get_double("--lr", 1e-4, 1e-12, 1e12);
  o.epochs = args.get_int("--epochs", 3, 1, 1000000);
  o.max_steps = args.get_int("--max-steps", 0, 0, INT64_MAX);
  o.micro_batch = args.get_int("--micro-batch", 4, 1, 65536);
  o.grad_accum = args.get_int("--grad-accum", 1, 1, 65536);
  o.cutoff = args.get_int("--cutoff", 256, 2, 1 << 20);
  o.warmup = args.get_int("--warmup", 0, 0, INT64_MAX);
  o.schedule = parse_schedule(args.get_or("--schedule", "linear"));
  o.weight_decay = args.get_double("--weight-decay", 0.0, 0.0, 10.0);
  o.decay_norms_and_biases = args.has("--decay-norms-and-biases");
  o.beta1 = args.get_double("--beta1", 0.9, 0.0, 0.999999);
  o.beta2 = args.get_double("--beta2", 0.999, 0.0, 0.99999999);
  o.eps = args.get_double("--eps", 1e-8, 0.0, 1.0);
  o.clip = args.get_double("--clip", 1.0, 0.0, 1e9);
  o.seed = static_cast<std::uint64_t>(args.get_int("--seed", 42, 0, INT64_MAX));
  o.val_size = args.get_int("--val-size", 0, 0, INT64_MAX);
  o.eval_every = args.get_int("--eval-every", 0, 0, INT64_MAX);
  o.save_every = args.get_int("--save-every", 0, 0, INT64_MAX);
  o.tmpl = parse_template(args.get_or("--template", "alpaca"));
  if (auto kw = args.get("--chat-template-kwargs")) o.chat_template_kwargs = parse_chat_template_kwargs(*kw, "--chat-template-kwargs");
  o.train_on_inputs = args.has("--train-on-inputs");
  o.resume = args.has("--resume");
  o.activations = activation_policy_option(args);
  o.device = args.get_or("--device", "cpu");
  const bool gpu = require_device(o.device) == Device::CUDA;
  const std::string attention = apply_attention_option(args, gpu);
  if (gpu) {
    // Once per run, from rank 0 on its own GPU: no other rank touches a device before the
    // trainer gives it its own.
    const LaunchInfo launch = detect_launch();
    if (launch.rank == 0) {
      set_cuda_device(launch.local_rank);
      const std::int64_t head_dim = load_model_config(o.model_dir).head_dim;
      if (const std::string note = attention_note(attention, attention_kernels_used(gpu, head_dim), head_dim); !note.empty())
        std::fprintf(stderr, "%s\n", note.c_str());
    }
  }
  o.dist = args.get_or("--dist", "auto");
  o.zero1 = args.has("--zero1");
  o.dist_timeout_s = args.get_int("--dist-timeout", 300, 1, 86400 * 7);
  StepHook hook;
  std::unique_ptr<SafetyProbe> probe;
  std::int64_t probe_every = args.get_int("--probe-every", 10, 1, INT64_MAX);
  if (auto spec = args.get("--safety-probe")) {
    const auto comma = spec->find(',');
    if (comma == std::string::npos) throw InputError("--safety-probe: expected N.csv,M.csv");
    // The probe encodes its prompts with the starting model's tokenizer; this copy is freed before training.
    auto probe_model = Model::load(o.model_dir);
    const std::int64_t L = probe_model->config().num_layers;
    std::vector<std::int64_t> layers;
    const std::string lspec = args.get_or("--probe-layers", o.freeze.empty() ? "0-" + std::to_string(L - 1) : o.freeze);
    for (const auto& r : parse_layer_ranges(lspec, L, "--probe-layers"))
      for (std::int64_t k = r.first; k <= r.last; ++k) layers.push_back(k);
    probe = std::make_unique<SafetyProbe>(*probe_model, read_prompt_file(spec->substr(0, comma)),
                                          read_prompt_file(spec->substr(comma + 1)), layers, o.tmpl);
    probe_model.reset();
    hook = [&](Model& m, StepRecord& rec) {
      if (rec.step % probe_every != 0 && rec.step != 1) return;
      rec.probe_gap_deg = probe->measure(m).mean_gap_deg;
    };
  }
  TrainResult r = train(o, hook);
  if (r.rank != 0) return 0;  // rank 0 reports for the job
  const auto& last = r.steps.empty() ? StepRecord{0, 0, 0, 0, 0, -1, std::nullopt} : r.steps.back();
  std::printf("trained %lld steps in %.2f s (%.0f tokens/s); final loss %.4f%s\n", (long long)last.step, r.seconds,
              r.trained_tokens / std::max(r.seconds, 1e-9), last.loss,
              last.val_loss >= 0 ? (", validation loss " + std::to_string(last.val_loss)).c_str() : "");
  std::printf("memory by category%s%s (predicted before the run, measured peak at the end):\n%s",
              r.world > 1 ? " on rank 0" : "", activation_policy_note(o.activations).c_str(),
              format_memory_table(r.predicted, &r.measured).c_str());
  if (r.world > 1) {
    std::printf("per rank (measured peak):");
    for (int k = 0; k < r.world; ++k)
      std::printf(" rank %d %s (optimizer %s)", k, human_bytes(r.measured_per_rank[k].total()).c_str(),
                  human_bytes(r.measured_per_rank[k].bytes[static_cast<std::size_t>(MemCategory::Optimizer)]).c_str());
    const CommBytes& b = r.comm_per_step;
    std::printf("\ncommunicated per step: %zu bytes (%s: all-reduce %zu, reduce-scatter %zu, all-gather %zu, scalars %zu); "
                "ring-algorithm traffic per rank %s; planned %zu bytes\n",
                b.payload(), human_bytes(static_cast<double>(b.payload())).c_str(), b.all_reduce, b.reduce_scatter, b.all_gather,
                b.scalars, human_bytes(b.ring_bytes_per_rank(r.world)).c_str(), r.comm_planned.payload());
  }
  std::printf("wrote %s (model), metrics.jsonl, memory.json, checkpoint/\n", o.out.c_str());
  return 0;
}

}  // namespace sppft::cli
