#include "analysis/locate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "analysis/stats.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "engine/text.h"
#include "kernels/ops.h"
#include "models/generate.h"
#include "models/prompting.h"

namespace sppft {

std::vector<Tensor*> scaled_tensors(Model& model, std::int64_t block, bool scale_o_proj) {
  BlockWeights& b = model.weights().blocks.at(block);
  std::vector<Tensor*> out;
  if (model.config().fused_qkv) {
    out.push_back(&b.qkv_fused);
  } else {  // push_backs, not insert({...}): GCC 12 warns (-Wstringop-overflow) on that
    out.push_back(&b.q);
    out.push_back(&b.k);
    out.push_back(&b.v);
  }
  if (scale_o_proj) out.push_back(&b.o);
  if (model.config().fused_gate_up) out.push_back(&b.gate_up_fused);
  else {
    out.push_back(&b.gate);
    out.push_back(&b.up);
  }
  out.push_back(&b.down);
  return out;
}

ScaledBlocks::ScaledBlocks(Model& model, LayerRange range, double alpha, bool scale_o_proj) {
  const float a = static_cast<float>(alpha);
  for (std::int64_t k = range.first; k <= range.last; ++k)
    for (Tensor* t : scaled_tensors(model, k, scale_o_proj)) {
      Tensor copy = Tensor::empty(t->shape(), t->dtype(), MemCategory::Workspace, t->device());
      ops::copy(*t, copy);
      ops::scale_inplace(*t, a);
      saved_.emplace_back(*t, std::move(copy));
    }
}

ScaledBlocks::~ScaledBlocks() {
  for (auto& [w, orig] : saved_) ops::copy(orig, w);  // bit-exact restore
}

double refusal_stddev(const std::vector<SweepPoint>& points) {
  if (points.empty()) return 0;
  double s = 0, sq = 0;
  for (const auto& p : points) {
    s += static_cast<double>(p.refusals);
    sq += static_cast<double>(p.refusals) * p.refusals;
  }
  const double m = s / points.size();
  return std::sqrt(std::max(0.0, sq / points.size() - m * m));
}

namespace {

struct Runner {
  Model& model;
  const std::vector<PromptRecord>& queries;
  const Judge& judge;
  const LocateOptions& o;
  const ResponseSink& sink;
  std::vector<std::vector<std::int32_t>> ids;
  std::int64_t unfinished = 0, judged = 0;  // responses cut off inside their reasoning, of all judged

  std::vector<bool> last;  // the last pass's verdicts, per query

  std::int64_t count(const std::string& setting) {
    SamplingOptions s;
    s.max_new_tokens = o.max_new_tokens;
    s.batch_size = o.batch_size;
    Progress bar(setting, ids.size(), "queries");
    auto gens = generate(model, ids, s, [&](std::size_t d, std::size_t) { bar.update(d); });
    bar.finish();
    std::int64_t refused = 0;
    last.assign(gens.size(), false);
    for (std::size_t i = 0; i < gens.size(); ++i) {
      const std::string text = model.tokenizer().decode(gens[i].new_ids, true);
      const bool r = judge.refused(text);
      refused += r;
      last[i] = r;
      unfinished += response_answer(text).unfinished;
      ++judged;
      if (sink) sink(setting, i, text, r);
    }
    return refused;
  }

  SweepPoint scaled_point(LayerRange r, double alpha, const std::string& what) {
    ScaledBlocks scaled(model, r, alpha, o.scale_o_proj);
    const std::int64_t refusals = count(printf_string("%s %s alpha %.2f", what.c_str(), layer_range_label(r).c_str(), alpha));
    return {r, refusals, last};
  }
};

// argmax for alpha > 1, argmin for alpha < 1; ties go to the first candidate. `skip`: a point
// left out (the choice, when looking for the runner-up).
std::size_t best(const std::vector<SweepPoint>& pts, double alpha, std::size_t skip = SIZE_MAX) {
  std::size_t b = skip == 0 ? 1 : 0;
  for (std::size_t i = b + 1; i < pts.size(); ++i)
    if (i != skip && (alpha > 1 ? pts[i].refusals > pts[b].refusals : pts[i].refusals < pts[b].refusals)) b = i;
  return b;
}

// The chosen point against the next best, query by query; none when the sweep had one point.
std::optional<ChoiceTest> test_choice(const std::vector<SweepPoint>& pts, double alpha) {
  if (pts.size() < 2) return std::nullopt;
  const std::size_t c = best(pts, alpha), r = best(pts, alpha, c);
  ChoiceTest t{pts[c].range, pts[r].range};
  for (std::size_t q = 0; q < pts[c].refused.size(); ++q) {
    t.chosen_only += pts[c].refused[q] && !pts[r].refused[q];
    t.runner_up_only += pts[r].refused[q] && !pts[c].refused[q];
  }
  t.p = mcnemar_exact_p(t.chosen_only, t.runner_up_only);
  return t;
}

std::vector<SweepPoint> lower_sweep(Runner& run, LayerRange base, double alpha, std::int64_t window) {
  std::vector<SweepPoint> out;
  const std::int64_t half = window / 2;
  for (std::int64_t i = base.first + half; i >= base.first - half; --i) {
    if (i < 0 || i > base.last) continue;
    LayerRange r{i, base.last};
    out.push_back(run.scaled_point(r, alpha, "lower"));
  }
  return out;
}

}  // namespace

LocateResult locate_safety_layers(Model& model, const std::vector<PromptRecord>& over_rejection, const Judge& judge,
                                  const LocateOptions& o, const ResponseSink& sink,
                                  const std::function<void(const std::string&)>& log) {
  const std::int64_t L = model.config().num_layers;
  if (o.initial.first < 0 || o.initial.last >= L || o.initial.first > o.initial.last)
    throw InputError("--initial " + layer_range_label(o.initial) + " is outside the model (blocks 0-" + std::to_string(L - 1) + ")");
  if (o.window < 1 || o.window > L) throw InputError("--window " + std::to_string(o.window) + " must be in [1, " + std::to_string(L) + "]");
  if (o.alpha < 0 || (o.alpha > 0 && std::abs(o.alpha - 1.0) < 1e-9))
    throw InputError("--alpha must be positive and not 1 (got " + std::to_string(o.alpha) + ")");
  const auto t0 = std::chrono::steady_clock::now();
  Runner run{model, over_rejection, judge, o, sink, {}, 0, 0, {}};
  for (const auto& q : over_rejection) run.ids.push_back(encode_prompt(model, q, o.tmpl));
  LocateResult r;
  r.judge = judge.name;
  r.queries = static_cast<std::int64_t>(over_rejection.size());
  r.baseline = run.count("baseline");
  log("baseline: " + std::to_string(r.baseline) + " of " + std::to_string(r.queries) + " refused (judge " + judge.name + ")");

  double alpha = o.alpha;
  if (alpha == 0) {
    // METHOD.md: step away from 1 by 0.05 until the lower-bound sweep's std of R_o
    // reaches ~15 per 731 queries; try above and below 1 alternately, stay close to 1.
    const double target = 15.0 * static_cast<double>(r.queries) / 731.0;
    for (double step : {0.05, 0.10, 0.15, 0.20, 0.25, 0.30}) {
      for (double a : {1.0 + step, 1.0 - step}) {
        AlphaTrial t{a, lower_sweep(run, o.initial, a, o.window), 0};
        t.stddev = refusal_stddev(t.lower);
        char buf[128];
        std::snprintf(buf, sizeof buf, "alpha %.2f: std of R_o over the lower sweep %.1f (target %.1f)", a, t.stddev, target);
        log(buf);
        r.alpha_trials.push_back(t);
        if (t.stddev >= target) {
          alpha = a;
          break;
        }
      }
      if (alpha != 0) break;
    }
    if (alpha == 0) {  // none reached the target: the most discriminating one
      std::size_t b = 0;
      for (std::size_t i = 1; i < r.alpha_trials.size(); ++i)
        if (r.alpha_trials[i].stddev > r.alpha_trials[b].stddev) b = i;
      alpha = r.alpha_trials[b].alpha;
      log("no alpha reached the target std; using the most discriminating one");
    }
  }
  r.alpha = alpha;

  // Upper bound: fix i, scale [i, j + k] around j.
  const std::int64_t half = o.window / 2;
  for (std::int64_t j = o.initial.last - half; j <= o.initial.last + half; ++j) {
    if (j < o.initial.first || j >= L) continue;
    LayerRange rr{o.initial.first, j};
    r.upper.push_back(run.scaled_point(rr, alpha, "upper"));
    log("upper " + layer_range_label(rr) + ": " + std::to_string(r.upper.back().refusals));
  }
  const std::int64_t j_best = r.upper[best(r.upper, alpha)].range.last;
  // Lower bound: fix j', scale [i - k, j'] around i.
  r.lower = lower_sweep(run, {o.initial.first, j_best}, alpha, o.window);
  for (const auto& p : r.lower) log("lower " + layer_range_label(p.range) + ": " + std::to_string(p.refusals));
  r.final_range = {r.lower[best(r.lower, alpha)].range.first, j_best};
  r.upper_choice = test_choice(r.upper, alpha);
  r.lower_choice = test_choice(r.lower, alpha);
  if (r.upper_choice) log(r.upper_choice->describe("upper bound"));
  if (r.lower_choice) log(r.lower_choice->describe("lower bound"));
  r.unfinished_reasoning = run.unfinished;
  r.responses = run.judged;
  if (const std::string note = unfinished_reasoning_note("over-rejection", run.unfinished, run.judged, o.max_new_tokens); !note.empty())
    log(note);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

Json ChoiceTest::to_json() const {
  return {{"chosen", {chosen.first, chosen.last}},         {"runner_up", {runner_up.first, runner_up.last}},
          {"chosen_only", chosen_only},                   {"runner_up_only", runner_up_only},
          {"p", p}};
}

std::string ChoiceTest::describe(const std::string& sweep) const {
  return sweep + " " + layer_range_label(chosen) + " against the runner-up " + layer_range_label(runner_up) + ": " +
         std::to_string(chosen_only) + " queries refused only with " + layer_range_label(chosen) + " scaled, " +
         std::to_string(runner_up_only) + " only with " + layer_range_label(runner_up) + "; exact McNemar p = " +
         p_value_text(p) +
         (p < 0.05 ? " (more than chance alone makes)" : " (within what chance alone makes: another over-rejection set may choose otherwise)");
}

Json LocateResult::to_json() const {
  auto pts = [](const std::vector<SweepPoint>& v) {
    Json a = Json::array();
    for (const auto& p : v) a.push_back({{"range", {p.range.first, p.range.last}}, {"refusals", p.refusals}});
    return a;
  };
  Json j = {{"alpha", alpha}, {"baseline", baseline}, {"queries", queries}, {"upper", pts(upper)}, {"lower", pts(lower)},
            {"final_range", {final_range.first, final_range.last}}, {"judge", judge}, {"seconds", seconds},
            {"responses", responses}, {"unfinished_reasoning", unfinished_reasoning}};
  Json trials = Json::array();
  for (const auto& t : alpha_trials) trials.push_back({{"alpha", t.alpha}, {"lower", pts(t.lower)}, {"stddev", t.stddev}});
  j["alpha_search"] = trials;
  if (upper_choice) j["upper_choice"] = upper_choice->to_json();
  if (lower_choice) j["lower_choice"] = lower_choice->to_json();
  return j;
}

std::string LocateResult::table_markdown() const {
  auto row = [&](const char* name, const std::vector<SweepPoint>& v, LayerRange chosen) {
    std::string head = "| " + std::string(name) + " |", cells = "| R_o |";
    for (const auto& p : v) {
      const bool star = p.range.first == chosen.first && p.range.last == chosen.last;
      head += ' ';
      head += layer_range_label(p.range);
      head += " |";
      cells += ' ';
      cells += std::to_string(p.refusals);
      cells += star ? "* |" : " |";
    }
    std::string sep = "|---|";
    for (std::size_t i = 0; i < v.size(); ++i) sep += "---|";
    return head + "\n" + sep + "\n" + cells + "\n";
  };
  char buf[256];
  std::snprintf(buf, sizeof buf, "alpha %.2f, baseline R_o %lld of %lld queries, judge %s; * = chosen\n\n", alpha,
                (long long)baseline, (long long)queries, judge.c_str());
  const LayerRange up_choice{upper.empty() ? 0 : upper[0].range.first, final_range.last};
  std::string tests;  // appends, not "\n" + ...: GCC 12 warns (-Wrestrict) on that
  for (const auto& [name, test] : {std::pair{"Upper bound", &upper_choice}, std::pair{"Lower bound", &lower_choice}})
    if (*test) tests.append("\n").append((*test)->describe(name)).append(".\n");
  return std::string(buf) + row("upper bound", upper, up_choice) + "\n" + row("lower bound", lower, final_range) + tests +
         "\nfinal safety layers: " + layer_range_label(final_range) + "\n";
}

}  // namespace sppft
