// Stage outputs of `sppft experiment` as its stages write them (eval.json, memory.json,
// metrics.jsonl rows, cossim.json, locate.json), with made-up numbers: the report's inputs for
// tests/analysis/experiment_test.cpp and malformed_outputs_test.cpp.
#pragma once

#include <initializer_list>
#include <vector>

#include "analysis/experiment.h"

namespace sppft::test {

inline Json eval_json(double rh, double orr) {
  return {{"judge", "prefix-llama-3"},
          {"max_new_tokens", 128},
          {"harmful",
           {{"n", 520},
            {"refused", 0},
            {"harmful_rate", rh},
            {"score", {{"model", "judge-8b"}, {"rubric", "harm-score.txt"}, {"n", 520}, {"scored", 520}, {"mean", 1 + 4 * rh}}}}},
          {"over_rejection", {{"n", 731}, {"refused", 0}, {"over_rejection_rate", orr}}}};
}

inline Json memory_json(double grads, double optimizer, std::int64_t trainable) {
  Json m = {{"weights", 1000.0}, {"grads", grads}, {"master", 0.0}, {"optimizer", optimizer}, {"activations", 50.0},
            {"workspace", 10.0}, {"trainable_params", trainable}, {"frozen_params", 0}};
  m["total_bytes"] = 1060.0 + grads + optimizer;
  return {{"predicted", m}, {"measured_peak", m}};
}

inline std::vector<Json> metrics(std::initializer_list<double> tokens_per_s) {
  std::vector<Json> rows;
  int step = 0;
  for (double t : tokens_per_s) rows.push_back({{"step", ++step}, {"loss", 3.0 - step * 0.5}, {"tokens_per_s", t}});
  return rows;
}

inline ExperimentOutputs outputs() {
  ExperimentOutputs o;
  o.model = "Meta-Llama-3-8B-Instruct";
  o.device = "cuda";
  o.cossim = Json{{"initial_range", {6, 12}}, {"reasoning", "the gap rises at 6"}};
  o.locate = Json{{"alpha", 1.2}, {"queries", 731}, {"judge", "prefix-llama-3"}, {"final_range", {6, 12}}, {"initial", {6, 12}}};
  o.freeze = "6-12";
  o.eval_base = eval_json(0.0577, 0.40);
  o.runs = {{"di", {"full fine-tuning di", "", memory_json(400, 800, 100), metrics({1, 90, 100, 110})},
             {"SPPFT di", "6-12", memory_json(300, 600, 75), metrics({1, 120, 125, 130, 135})}, eval_json(0.4442, 0.30),
             eval_json(0.0962, 0.38)}};
  o.commands = {"sppft cossim M", "sppft locate M"};
  return o;
}

}  // namespace sppft::test
