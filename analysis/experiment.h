// The paper's experiment on one checkpoint, as `sppft experiment` runs it: the safety layers
// found (cossim + locate, or given), fine-tuning on each data set twice - full and SPPFT with
// those layers frozen - and the base model and every fine-tuned one evaluated alike. This
// gathers what those stages wrote into one report: Table 2 (harmful rate, over-rejection,
// utility, with changes in points), memory by category and training speed of both arms (and of
// a control arm with other blocks frozen, when asked).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/json.h"

namespace sppft {

// One fine-tuning run: its OUT/memory.json and the rows of OUT/metrics.jsonl.
struct TrainingArm {
  std::string name;
  std::string freeze;  // "" for full fine-tuning
  Json memory;
  std::vector<Json> metrics;
  std::string memory_file = "memory.json", metrics_file = "metrics.jsonl";  // where they were read, for errors
};

// Fine-tuning on one data set, full and SPPFT, with the eval.json of each; and, when asked, a
// control arm with other blocks frozen (the paper's Table 8: blocks of the same size elsewhere
// protect much less).
struct FineTuning {
  std::string data;  // the data set's name
  TrainingArm full, sppft;
  Json eval_full, eval_sppft;
  std::string eval_full_file = "eval.json", eval_sppft_file = "eval.json";  // where they were read, for errors
  std::optional<TrainingArm> control{};
  Json eval_control{};
  std::string eval_control_file = "eval.json";
};

struct ExperimentOutputs {
  std::string model;
  std::string device;
  std::optional<Json> cossim, locate;  // absent when the layers were given (--freeze)
  std::string cossim_file = "cossim.json", locate_file = "locate.json";  // where they were read, for errors
  std::string freeze;                  // the SPPFT arms' frozen blocks
  std::string control;                 // the control arms' frozen blocks ("" without control arms)
  Json eval_base;                      // the checkpoint's eval.json
  std::string eval_base_file = "eval.json";
  std::vector<FineTuning> runs;        // one per data set
  std::vector<std::string> commands;   // each stage as its own sppft command line
};

struct ExperimentReport {
  std::string markdown;
  std::string console;  // the short form for the terminal: layers, Table 2, memory and speed
  Json summary;  // the numbers of the report, for machines
  std::vector<std::string> warnings;
};

// InputError when an output lacks what the report needs (a stage's file from something else).
ExperimentReport experiment_report(const ExperimentOutputs& o);

// The rows of a metrics.jsonl, in order; InputError naming the file and line on bad JSON.
std::vector<Json> read_metrics_jsonl(const std::string& path);

}  // namespace sppft
