// Step 2 of the method: precise safety-layer bounds by parameter scaling and
// over-rejection counts.
//
// Scaling blocks [a, b] by alpha multiplies, in place, their attention and MLP
// projection weights (q, k, v, gate, up, down; o only with --scale-o-proj, since
// the authors' code never scaled it; Phi-3: the fused qkv and gate_up). Norms,
// embeddings, final norm and lm_head are untouched. Undone exactly by copying
// the original weights back (never by multiplying by 1/alpha).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "analysis/judge.h"
#include "engine/json.h"
#include "engine/prompts.h"
#include "models/model.h"
#include "trainer/freeze.h"

namespace sppft {

// Scales blocks [range] by alpha for its lifetime; restores the exact weights on destruction.
class ScaledBlocks {
 public:
  ScaledBlocks(Model& model, LayerRange range, double alpha, bool scale_o_proj);
  ~ScaledBlocks();
  ScaledBlocks(const ScaledBlocks&) = delete;
  ScaledBlocks& operator=(const ScaledBlocks&) = delete;

 private:
  std::vector<std::pair<Tensor, Tensor>> saved_;  // (weight, original copy)
};

// The tensors scaling touches in block k (fused ones for Phi-3).
std::vector<Tensor*> scaled_tensors(Model& model, std::int64_t block, bool scale_o_proj);

struct SweepPoint {
  LayerRange range;
  std::int64_t refusals;
  std::vector<bool> refused = {};  // per query, in the set's order
};

// A sweep's choice against its runner-up on the same queries: how many only the chosen setting
// refused, how many only the runner-up did, and the two-sided exact McNemar p. A large p says the
// bound rests on a difference chance alone could make (another over-rejection set may move it).
struct ChoiceTest {
  LayerRange chosen{0, 0}, runner_up{0, 0};
  std::int64_t chosen_only = 0, runner_up_only = 0;
  double p = 1;
  Json to_json() const;
  std::string describe(const std::string& sweep) const;  // one sentence, for the log and locate.md
};

struct LocateOptions {
  double alpha = 0;  // 0 = automatic
  LayerRange initial{0, 0};
  std::int64_t window = 5;
  std::int64_t max_new_tokens = 16;
  bool scale_o_proj = false;
  std::int64_t batch_size = 32;
  PromptTemplate tmpl = PromptTemplate::Alpaca;
};

struct AlphaTrial {
  double alpha;
  std::vector<SweepPoint> lower;
  double stddev;
};

struct LocateResult {
  double alpha = 0;
  std::int64_t queries = 0, baseline = 0;
  std::vector<SweepPoint> upper, lower;
  LayerRange final_range{0, 0};
  std::vector<AlphaTrial> alpha_trials;  // the automatic alpha search, when it ran
  std::optional<ChoiceTest> upper_choice, lower_choice;  // where a sweep had two settings or more
  std::string judge;
  // Responses judged over all settings, and those cut off inside their reasoning (response_answer).
  std::int64_t responses = 0, unfinished_reasoning = 0;
  double seconds = 0;
  Json to_json() const;
  std::string table_markdown() const;  // like the paper's Table 1
};

// One generation pass over the over-rejection set under the current weights:
// refusal count; every response appended to `responses` (JSONL) with `setting`.
using ResponseSink = std::function<void(const std::string& setting, std::size_t query, const std::string& response, bool refused)>;

LocateResult locate_safety_layers(Model& model, const std::vector<PromptRecord>& over_rejection, const Judge& judge,
                                  const LocateOptions& o, const ResponseSink& sink,
                                  const std::function<void(const std::string&)>& log);

// Population standard deviation of the refusal counts.
double refusal_stddev(const std::vector<SweepPoint>& points);

}  // namespace sppft
