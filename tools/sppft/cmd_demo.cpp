// sppft demo: the embedded default, end to end (analysis/demo.h).
#include <cstdio>

#include "analysis/demo.h"
#include "analysis/judge.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft demo [--device cpu|cuda] [--preset small|gpu] [--out demo-out] [--data DIR]\n\n"
    "The whole method on a model it trains itself: a tokenizer and a small Llama-architecture\n"
    "model trained from scratch (language modelling, then alignment: answer benign, refuse\n"
    "malicious), its safety layers found (cossim + locate), then fine-tuning on implicitly\n"
    "harmful data twice - full and SPPFT - with harmful rate, over-rejection, utility, memory\n"
    "by category and step time measured. Stages are cached in the output directory.\n"
    "Writes OUT/report.md (tables + SVG plots) and prints a summary.\n\n"
    "  --device D   cpu (default, fp32) | cuda (every stage on the GPU: bf16-mixed training,\n"
    "               bf16 weights for the analysis and evaluation; numbers differ from a CPU run's)\n"
    "  --preset P   small (default; about 5 minutes on 2 CPU cores) | gpu (larger model)\n"
    "  --out DIR    output directory (default demo-out)\n"
    "  --data DIR   the bundled data sets (default: the repository's data/)\n";
}  // namespace

int cmd_demo(int argc, char** argv) {
  Args args(argc, argv, {"--out", "--data", "--device", "--preset"}, {});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  DemoOptions o;
  o.device = args.get_or("--device", "cpu");
  o.out = args.get_or("--out", "demo-out");
  o.data = args.has("--data") ? fs::path(args.require("--data")) : bundled_data_dir();
  o.preset = args.get_or("--preset", "small");
  return run_demo(o);
}

}  // namespace sppft::cli
