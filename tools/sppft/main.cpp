// sppft: find the safety layers of Llama-family models and fine-tune with them frozen.
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "engine/error.h"
#include "tools/sppft/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"info", sppft::cli::cmd_info, "architecture, parameters per block and in total, dtypes, weight bytes"},
    {"generate", sppft::cli::cmd_generate, "batched generation (greedy or sampled) from prompts"},
    {"hidden", sppft::cli::cmd_hidden, "per-block last-token hidden states of prompts, as safetensors"},
    {"data", sppft::cli::cmd_data, "build the method's attack sets (D_I, D_H) as training data"},
    {"train", sppft::cli::cmd_train, "fine-tune, fully or with frozen safety layers (SPPFT)"},
    {"launch", sppft::cli::cmd_launch, "train data-parallel as N processes on this machine (CPU cores or GPUs)"},
    {"memory", sppft::cli::cmd_memory, "predicted training memory per category, without allocating"},
    {"cossim", sppft::cli::cmd_cossim, "cosine-similarity analysis of hidden states: the initial safety-layer range"},
    {"locate", sppft::cli::cmd_locate, "parameter scaling + over-rejection search: the precise safety layers"},
    {"eval", sppft::cli::cmd_eval, "harmful rate, over-rejection rate, Rouge-L, multiple-choice accuracy"},
    {"rejudge", sppft::cli::cmd_rejudge, "judge an evaluation's stored responses again (another judge, a guard, S_h), no generation"},
    {"compare", sppft::cli::cmd_compare, "evaluations side by side (base, full fine-tuning, SPPFT) with changes in points"},
    {"experiment", sppft::cli::cmd_experiment, "the paper's experiment on a checkpoint: locate, fine-tune full and SPPFT, evaluate, report"},
    {"demo", sppft::cli::cmd_demo, "end-to-end run on the embedded default model"},
    {"profile", sppft::cli::cmd_profile, "per-block time, FLOPs and bytes of a training step; what freezing saves"},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "sppft - safety-layer analysis and safety-preserving fine-tuning for Llama-family models\n\n"
               "usage: sppft <command> [options]   (sppft <command> --help for its options)\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(stdout);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const sppft::InputError& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 2;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "error: out of memory\n");
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", sppft::one_line(e.what()).c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s' (see sppft --help)\n", name.c_str());
  return 2;
}
