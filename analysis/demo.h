// The embedded default, end to end (`sppft demo`): a tokenizer and a small
// Llama-architecture model trained from scratch on the bundled data (a language-
// modelling base stage, then an alignment stage that answers benign instructions
// and refuses malicious ones), its safety layers found by `cossim` + `locate`,
// then fine-tuning on implicitly harmful data (D_I) twice - full and SPPFT - with
// safety, utility, memory and speed measured before and after. Every stage is
// cached in the output directory.
#pragma once

#include <string>

#include "engine/fs.h"

namespace sppft {

struct DemoOptions {
  fs::path out = "demo-out";
  fs::path data;              // the bundled data sets (data/)
  std::string preset = "small";  // small: the CPU budget; gpu: a larger model for a GPU
  // cpu (fp32) | cuda: every stage on the GPU - training bf16-mixed, analysis and
  // evaluation with bf16 weights (so the numbers differ from a CPU run's).
  std::string device = "cpu";
};

// Runs (or resumes) the demo; writes OUT/report.md and prints a summary. Returns 0.
int run_demo(const DemoOptions& o);

}  // namespace sppft
