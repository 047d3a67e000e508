// sppft profile: FLOP counts against closed forms worked out here independently,
// phases that add up to the step, frozen blocks with no dW time and no grad or
// optimizer bytes, timer hooks that change no gradient bit, the freeze
// comparison's predictions, and the CLI end to end.
#include <doctest/doctest.h>

#include <cstring>
#include <map>
#include <regex>
#include <thread>

#include "analysis/profile_plot.h"
#include "engine/json.h"
#include "kernels/ops.h"
#include "models/model.h"
#include "models/presets.h"
#include "test_util.h"
#include "trainer/memory_plan.h"
#include "trainer/profile.h"

using namespace sppft;

namespace {

ModelConfig small_config(const std::string& extra = "{}") {
  Json j = Json::parse(R"({"model_type": "llama", "hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512})");
  j.update(Json::parse(extra));
  return parse_model_config(j, "test config");
}

// Weight-matrix entries of block k, from the parameter list (not from the config's dims).
double block_matrix_entries(const ModelConfig& c, int k) {
  double n = 0;
  for (const auto& p : parameter_shapes(c))
    if (p.block == k && p.shape.size() == 2) n += static_cast<double>(shape_numel(p.shape));
  return n;
}

// Keys each query attends to, counted one position at a time.
double pairs_by_loop(std::int64_t T, std::int64_t window) {
  double s = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j <= t; ++j) s += window <= 0 || t - j < window;
  return s;
}

const int FW = static_cast<int>(StepPhase::Forward), DX = static_cast<int>(StepPhase::BackwardDX),
          DW = static_cast<int>(StepPhase::BackwardDW), OPT = static_cast<int>(StepPhase::Optimizer),
          RC = static_cast<int>(StepPhase::Recompute);

// Records every hook call and checks they alternate begin/end on the same phase.
struct RecordingTimer : PhaseTimer {
  std::vector<std::string> names;
  bool open = false, nested = false;
  std::string open_name;
  void begin(const StepPart& p, StepPhase ph) override {
    nested |= open;
    open = true;
    open_name = p.name() + "." + step_phase_name(ph);
  }
  void end(const StepPart& p, StepPhase ph) override {
    const std::string n = p.name() + "." + step_phase_name(ph);
    nested |= !open || n != open_name;
    open = false;
    names.push_back(n);
  }
  bool saw(const std::string& n) const { return std::find(names.begin(), names.end(), n) != names.end(); }
};

ProfileOptions options(std::int64_t micro_batch, std::int64_t seq, std::int64_t steps, std::int64_t warmup) {
  ProfileOptions o;
  o.micro_batch = micro_batch;
  o.seq = seq;
  o.steps = steps;
  o.warmup = warmup;
  return o;
}

std::string sppft_bin() { return test::env_path("SPPFT_BIN", "build/bin/sppft").string(); }

// Counts the ops reported to it, by name.
struct CountingObserver : ops::OpObserver {
  std::map<std::string, int> calls;
  int open = 0, max_open = 0;
  void begin(const char*) override { max_open = std::max(max_open, ++open); }
  void end(const char* op) override {
    --open;
    ++calls[op];
  }
};

}  // namespace

TEST_CASE("phase FLOPs equal the closed-form counts of the architecture") {
  // Linear parameters: the presets, against the per-block parameter count less the norms and the
  // biases (qwen2.5-vl-7b's q/k/v).
  for (const auto& name : preset_names()) {
    const ModelConfig c = preset_config(name);
    CAPTURE(name);
    const std::int64_t biases = (c.qkv_bias ? c.q_dim() + 2 * c.kv_dim() : 0) + (c.o_bias ? c.hidden_size : 0) +
                                (c.mlp_bias ? 2 * c.intermediate_size + c.hidden_size : 0);
    CHECK(block_linear_params(c) == c.block_parameters() - c.block_norm_parameters() - biases);
    CHECK(static_cast<double>(block_linear_params(c)) == block_matrix_entries(c, 0));
  }
  CHECK(block_linear_params(preset_config("llama-3-8b")) == 218103808);  // 4096*6144 + 4096^2 + 3*4096*14336

  // Attention pairs: causal T(T+1)/2, and with a sliding window, against a position-by-position count.
  ModelConfig phi = preset_config("phi-3-mini");  // sliding_window 2047
  CHECK(attention_pairs(phi, 0, {100}) == 100.0 * 101 / 2);
  CHECK(attention_pairs(phi, 5, {3000, 17}) == pairs_by_loop(3000, 2047) + pairs_by_loop(17, 2047));
  ModelConfig gemma2 = preset_config("gemma-2-2b");  // window 4096 on the even blocks only
  CHECK(attention_pairs(gemma2, 0, {5000}) == pairs_by_loop(5000, 4096));
  CHECK(attention_pairs(gemma2, 1, {5000}) == 5000.0 * 5001 / 2);
  ModelConfig w5 = small_config(R"({"model_type": "mistral", "sliding_window": 5})");
  REQUIRE(w5.sliding_window == 5);
  CHECK(attention_pairs(w5, 2, {12}) == pairs_by_loop(12, 5));

  // A profiled run reports, per part and phase, exactly the closed form worked out here.
  for (const std::string extra : {"{}", R"({"model_type": "mistral", "sliding_window": 24})", R"({"attention_bias": true})",
                                  R"({"model_type": "gemma2", "sliding_window": 24})"}) {
    CAPTURE(extra);
    const ModelConfig c = small_config(extra);
    auto m = Model::random(c, 3);
    FreezePlan plan = FreezePlan::from_ranges({{1, 2}}, c.num_layers);
    plan.embeddings = true;  // block 0 keeps its backward (it trains); nothing below it
    ProfileRun r = profile_training(*m, plan, options(2, 40, 1, 0));
    const double n = 80, hd = static_cast<double>(c.num_heads * c.head_dim);
    for (int k = 0; k < c.num_layers; ++k) {
      // gemma2: the window on the even blocks only. 2 flops per multiply-add: QK^T and PV each
      // D multiply-adds per (query, key, head).
      const bool windowed = c.sliding_window && (c.family != Family::Gemma2 || k % 2 == 0);
      const double pairs = 2 * pairs_by_loop(40, windowed ? *c.sliding_window : 0);
      const double attn_fwd = 2 * 2 * hd * pairs;
      const double lin = 2 * n * block_matrix_entries(c, k);
      const auto& f = r.block(k).flops;
      CAPTURE(k);
      CHECK(f[FW] == doctest::Approx(lin + attn_fwd).epsilon(1e-12));
      CHECK(f[DX] == doctest::Approx(lin + 2 * attn_fwd).epsilon(1e-12));
      if (plan.block_frozen[k]) CHECK(f[DW] == 0);
      else CHECK(f[DW] == doctest::Approx(lin).epsilon(1e-12));
      CHECK(f[OPT] == 0);
    }
    const double head = 2 * n * static_cast<double>(c.vocab_size * c.hidden_size);
    const auto& lm = r.parts[c.num_layers + 2];
    CHECK(lm.name == "lm_head");
    CHECK(lm.flops[FW] == head);
    CHECK(lm.flops[DX] == head);
    CHECK(lm.flops[DW] == (c.tie_word_embeddings ? 0 : head));  // tied: frozen with the embeddings
    for (std::size_t i : {std::size_t{0}, static_cast<std::size_t>(c.num_layers + 1), static_cast<std::size_t>(c.num_layers + 3)})
      for (double f : r.parts[i].flops) CHECK(f == 0);
  }

  // No backward below the lowest trainable block: 0 dX and 0 dW there.
  const ModelConfig c = small_config();
  FreezePlan plan = FreezePlan::from_ranges({{0, 1}}, c.num_layers);
  plan.embeddings = true;
  plan.norms = true;
  CHECK(block_modes(plan, c.num_layers)[0] == BlockMode::NoBackward);
  const PhaseValues f = part_flops(c, {StepPart::Block, 0}, BlockMode::NoBackward, true, {16});
  CHECK(f[FW] > 0);
  CHECK(f[DX] == 0);
  CHECK(f[DW] == 0);

  // A recomputed block reruns its forward less the down projection; gemma2's rerun includes it
  // (its output norm's backward reads the projection's output), so it is the whole forward.
  const ModelConfig g2 = small_config(R"({"model_type": "gemma2"})");
  const PhaseValues fg = part_flops(g2, {StepPart::Block, 1}, BlockMode::Full, true, {16}, /*recomputed=*/true);
  CHECK(fg[RC] == fg[FW]);
  const PhaseValues fl = part_flops(c, {StepPart::Block, 1}, BlockMode::Full, true, {16}, /*recomputed=*/true);
  CHECK(fl[RC] == fl[FW] - 2.0 * 16 * static_cast<double>(c.hidden_size * c.intermediate_size));
}

TEST_CASE("the per-part phases add up to the step timed around them (within 5%)") {
  const ModelConfig c = small_config(R"({"hidden_size": 256, "intermediate_size": 640, "vocab_size": 4000})");
  auto m = Model::random(c, 5);
  ProfileOptions o = options(2, 64, 4, 1);
  ProfileRun r = profile_training(*m, FreezePlan::none(c.num_layers), o);
  REQUIRE(r.step_seconds.size() == 4);
  for (std::size_t i = 0; i < r.step_seconds.size(); ++i) {
    CAPTURE(i);
    CHECK(r.step_seconds[i] > 0);
    CHECK(std::abs(r.phase_sum(i) - r.step_seconds[i]) <= 0.05 * r.step_seconds[i]);
    CHECK(r.phase_sum(i) <= r.step_seconds[i]);  // the phases are disjoint intervals inside the step
  }
  CHECK(r.max_sum_error() < 0.05);
  for (int k = 0; k < c.num_layers; ++k) {
    for (int p : {FW, DX, DW, OPT}) CHECK(r.block(k).median(static_cast<StepPhase>(p)) > 0);
    CHECK(r.block(k).median(StepPhase::Recompute) == 0);  // activations saved: nothing reruns
  }
  // Every interval is in the trace, under its phase's track.
  double traced = 0;
  for (const auto& e : r.trace)
    if (e.track > 0) traced += e.dur_us * 1e-6;
  double summed = 0;
  for (std::size_t i = 0; i < r.step_seconds.size(); ++i) summed += r.phase_sum(i);
  CHECK(traced == doctest::Approx(summed).epsilon(1e-9));
  // Bytes by part add up to the memory planner's total.
  CHECK(r.total_bytes().total() + r.workspace_bytes == r.planned_total_bytes);
  // Forward only: no backward or optimizer time at all.
  o.train = false;
  o.steps = 2;
  ProfileRun fwd = profile_training(*m, FreezePlan::none(c.num_layers), o);
  CHECK(fwd.max_sum_error() < 0.05);
  CHECK(fwd.total_bytes().total() + fwd.workspace_bytes == fwd.planned_total_bytes);
  for (const auto& p : fwd.parts) {
    CHECK(p.median(StepPhase::BackwardDX) == 0);
    CHECK(p.median(StepPhase::BackwardDW) == 0);
    CHECK(p.median(StepPhase::Optimizer) == 0);
    CHECK(p.bytes.grads == 0);
    if (p.part.kind == StepPart::Block) CHECK(p.bytes.activations == 0);  // nothing saved for a backward
  }
}

TEST_CASE("--recompute: a recompute phase in every block with a backward but the top one") {
  const ModelConfig c = small_config(R"({"model_type": "mistral", "sliding_window": 24})");
  auto m = Model::random(c, 17);
  FreezePlan plan = FreezePlan::from_ranges({{0, 0}}, c.num_layers);
  plan.embeddings = plan.norms = true;  // block 0 runs no backward
  ProfileOptions o = options(2, 40, 2, 1);
  o.activations = ActivationPolicy::recompute();
  ProfileRun r = profile_training(*m, plan, o);
  REQUIRE(r.recomputes());
  // The rerun stops after gate and up: the block's FLOPs less the down projection's.
  const double n = 80, pairs = 2 * pairs_by_loop(40, 24);
  const double attn_fwd = 2 * 2 * static_cast<double>(c.num_heads * c.head_dim) * pairs;
  const double down = 2 * n * static_cast<double>(c.hidden_size * c.intermediate_size);
  for (int k = 0; k < c.num_layers; ++k) {
    CAPTURE(k);
    const bool reruns = k != 0 && k != c.num_layers - 1;
    const auto& b = r.block(k);
    CHECK(b.flops[RC] == (reruns ? doctest::Approx(2 * n * block_matrix_entries(c, k) - down + attn_fwd).epsilon(1e-12)
                                 : doctest::Approx(0)));
    CHECK((b.median(StepPhase::Recompute) > 0) == reruns);
    // What the block keeps between its forward and its backward: its input only.
    CHECK(b.bytes.activations == (k == 0 ? 0 : 80 * 128 * 4));
  }
  CHECK(r.max_sum_error() < 0.05);
  CHECK(r.total_bytes().total() + r.workspace_bytes == r.planned_total_bytes);
  const double traced_reruns = std::count_if(r.trace.begin(), r.trace.end(), [](const TraceEvent& e) {
    return e.track == 1 + RC && e.name.size() > 10 && e.name.substr(e.name.size() - 10) == ".recompute";
  });
  CHECK(traced_reruns == 2 * 2);  // blocks 1 and 2, two measured steps
  const std::string table = format_profile_table(r);
  CHECK(table.find("activations recomputed") != std::string::npos);
  CHECK(table.find("recompute") != std::string::npos);
  const Json j = profile_to_json(r);
  CHECK(j["activation_policy"] == "recompute");
  CHECK(j["flops"]["recompute"].get<double>() == doctest::Approx(r.total_flops()[RC]));
  CHECK(j["parts"][2]["seconds"]["recompute"]["median"].get<double>() > 0);
  // Only the two lowest blocks with a backward (1 and 2): block 1 reruns, block 2 keeps its own
  // activations in the shared set, block 3 saves everything itself.
  o.activations = ActivationPolicy::recompute(2);
  ProfileRun two = profile_training(*m, plan, o);
  CHECK(two.block(1).flops[RC] == r.block(1).flops[RC]);
  for (int k : {0, 2, 3}) CHECK(two.block(k).flops[RC] == 0);
  CHECK(two.block(3).bytes.activations > two.block(2).bytes.activations);
  CHECK(two.total_bytes().total() + two.workspace_bytes == two.planned_total_bytes);
  CHECK(format_profile_table(two).find("activations of 2 blocks recomputed") != std::string::npos);
  // The same run with its activations saved: the same FLOPs but for the reruns, more activation bytes.
  o.activations = ActivationPolicy::save();
  ProfileRun saved = profile_training(*m, plan, o);
  for (int p : {FW, DX, DW, OPT}) CHECK(saved.total_flops()[p] == r.total_flops()[p]);
  CHECK(saved.total_flops()[RC] == 0);
  CHECK(saved.total_bytes().activations > r.total_bytes().activations);
  CHECK(format_profile_table(saved).find("recompute") == std::string::npos);
}

TEST_CASE("op observer: outermost ops only, on the observing thread only") {
  CountingObserver seen;
  Tensor a = Tensor::zeros({4, 8}, DType::F32, MemCategory::Workspace), b = Tensor::zeros({4, 8}, DType::F32, MemCategory::Workspace);
  ops::set_op_observer(&seen);
  ops::convert(a, b);  // F32 to F32: convert calls copy, which is part of it
  ops::add_inplace(a, b);
  std::thread([&] { ops::add_inplace(a, b); }).join();  // another thread: not observed
  {
    const ops::OpScope scope("custom");  // code past ops.h labels its own work
    ops::fill_zero(a);                   // inside it: part of "custom"
  }
  ops::set_op_observer(nullptr);
  ops::add_inplace(a, b);  // observer off
  CHECK(seen.calls == std::map<std::string, int>{{"convert", 1}, {"add_inplace", 1}, {"custom", 1}});
  CHECK(seen.max_open == 1);
  CHECK(seen.open == 0);
}

TEST_CASE("--ops: every op timed inside its phase, called as often as the graph calls it") {
  const ModelConfig c = small_config();
  auto m = Model::random(c, 23);
  ProfileOptions o = options(2, 40, 2, 1);
  ProfileRun quiet = profile_training(*m, FreezePlan::none(c.num_layers), o);
  CHECK(quiet.ops.empty());  // off by default
  o.ops = true;
  ProfileRun r = profile_training(*m, FreezePlan::none(c.num_layers), o);
  REQUIRE(!r.ops.empty());
  auto calls = [&](const char* name, StepPhase phase) -> std::int64_t {
    for (const auto& op : r.ops)
      if (op.name == name && op.phase == phase) return op.calls;
    return 0;
  };
  const std::int64_t L = c.num_layers, tensors = static_cast<std::int64_t>(m->parameters().size());
  // Per block 7 linear layers (q, k, v, o, gate, up, down), plus the lm_head (80 rows: one loss chunk).
  CHECK(calls("linear_forward", StepPhase::Forward) == 7 * L + 1);
  CHECK(calls("linear_backward_input", StepPhase::BackwardDX) == 7 * L + 1);
  CHECK(calls("linear_backward_weight", StepPhase::BackwardDW) == 7 * L + 1);
  CHECK(calls("attention_forward_train", StepPhase::Forward) == L);
  CHECK(calls("attention_backward", StepPhase::BackwardDX) == L);
  CHECK(calls("glu_forward", StepPhase::Forward) == L);
  CHECK(calls("glu_forward", StepPhase::BackwardDW) == L);  // recomputed for dW of down_proj
  CHECK(calls("cross_entropy", StepPhase::Forward) == 1);
  CHECK(calls("embedding_backward", StepPhase::BackwardDW) == 1);
  CHECK(calls("adamw_step", StepPhase::Optimizer) == tensors);
  CHECK(calls("fill_zero", StepPhase::Optimizer) == tensors);
  // The ops lie inside the phases, disjoint; on the CPU they are nearly all of the step.
  for (std::size_t i = 0; i < r.step_seconds.size(); ++i) {
    double sum = 0;
    for (const auto& op : r.ops) sum += op.seconds.at(i);
    CHECK(sum <= r.phase_sum(i));
    CHECK(sum > 0.5 * r.step_seconds[i]);
  }
  std::size_t traced = 0;
  for (const auto& e : r.trace) traced += e.track == kOpsTrack;
  std::size_t per_step = 0;
  for (const auto& op : r.ops) per_step += static_cast<std::size_t>(op.calls);
  CHECK(traced == per_step * r.step_seconds.size());
  CHECK(profile_to_json(r)["ops"].size() == r.ops.size());
  const std::string table = format_profile_table(r);
  CHECK(table.find("op (median per step)") != std::string::npos);
  CHECK(table.find("attention_backward") != std::string::npos);
}

TEST_CASE("frozen blocks report zero dW time and zero grad/optimizer bytes") {
  const ModelConfig c = small_config();
  auto m = Model::random(c, 7);
  ProfileOptions o = options(1, 32, 2, 0);
  FreezePlan plan = FreezePlan::from_ranges({{1, 2}}, c.num_layers);
  for (bool norms : {true, false}) {
    CAPTURE(norms);
    plan.norms = norms;
    ProfileRun r = profile_training(*m, plan, o);
    for (int k = 0; k < c.num_layers; ++k) {
      CAPTURE(k);
      const PartProfile& b = r.block(k);
      const bool frozen = plan.block_frozen[k];
      CHECK(b.mode == (frozen ? "frozen" : "full"));
      CHECK((b.median(StepPhase::BackwardDW) == 0) == frozen);
      CHECK(b.median(StepPhase::BackwardDX) > 0);
      CHECK(b.bytes.weights > 0);
      if (frozen) {
        // With the norms training (the authors' SPPFT) only their two vectors keep a gradient.
        const std::size_t norm_bytes = norms ? 0 : 2 * c.hidden_size * 4;
        CHECK(b.bytes.grads == norm_bytes);
        CHECK(b.bytes.optimizer == 2 * norm_bytes);
        if (norms) CHECK(b.median(StepPhase::Optimizer) == 0);
      } else {
        CHECK(b.bytes.grads == b.bytes.weights);
        CHECK(b.bytes.optimizer == 2 * b.bytes.weights);
      }
    }
    CHECK(r.total_bytes().total() + r.workspace_bytes == r.planned_total_bytes);
  }
}

TEST_CASE("the timer hooks change no gradient bit and label every phase") {
  const ModelConfig c = small_config(R"({"tie_word_embeddings": true})");
  auto m = Model::random(c, 11);
  FreezePlan plan = FreezePlan::from_ranges({{2, 2}}, c.num_layers);
  auto grads_of = [&](PhaseTimer* timer) {
    ModelWeights g;
    g.blocks.resize(c.num_layers);
    auto w = m->parameters();
    auto slots = named_parameters(c, g);
    std::vector<Tensor> out;
    for (std::size_t i = 0; i < w.size(); ++i)
      if (plan.trains(w[i].name, w[i].block, c)) {
        *slots[i].tensor = Tensor::zeros(w[i].tensor->shape(), DType::F32, MemCategory::Grads);
        out.push_back(*slots[i].tensor);
      }
    bind_fused_views(c, g);
    std::vector<std::int32_t> a(37), b(21);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::int32_t>((i * 7919) % c.vocab_size);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::int32_t>((i * 104729 + 3) % c.vocab_size);
    TrainingGraph graph(*m, block_modes(plan, c.num_layers), 58, /*loss_chunk=*/16);  // several loss chunks
    graph.set_phase_timer(timer);
    LossSum l = graph.step({{&a, &a}, {&b, &b}}, g, 1.0f / 56);
    return std::make_pair(l.sum, out);
  };
  auto [loss0, plain] = grads_of(nullptr);
  RecordingTimer rec;
  CountingObserver seen;
  ops::set_op_observer(&seen);  // the op hooks too
  auto [loss1, timed] = grads_of(&rec);
  ops::set_op_observer(nullptr);
  CHECK(seen.calls["attention_backward"] == c.num_layers);  // the embeddings train: every block runs backward
  CHECK(loss0 == loss1);
  REQUIRE(plain.size() == timed.size());
  for (std::size_t i = 0; i < plain.size(); ++i)
    CHECK(std::memcmp(plain[i].data<float>(), timed[i].data<float>(), plain[i].nbytes()) == 0);
  CHECK_FALSE(rec.nested);
  CHECK_FALSE(rec.open);
  const std::regex name_re(R"((embeddings|block\.\d+|final_norm|lm_head|loss)\.(forward|backward_dx|backward_dw))");
  for (const auto& n : rec.names) CHECK(std::regex_match(n, name_re));
  for (const char* n : {"embeddings.forward", "block.0.forward", "block.3.backward_dx", "block.3.backward_dw",
                        "block.2.backward_dx", "final_norm.forward", "final_norm.backward_dx", "lm_head.forward",
                        "lm_head.backward_dx", "lm_head.backward_dw", "loss.forward", "embeddings.backward_dw"})
    CHECK_MESSAGE(rec.saw(n), n);
  CHECK_FALSE(rec.saw("block.2.backward_dw"));  // frozen: no weight-gradient work at all
}

TEST_CASE("compare-freeze: measured savings against the FLOP and memory models") {
  const ModelConfig c = small_config();
  auto m = Model::random(c, 13);
  ProfileOptions o = options(2, 24, 2, 1);
  o.label = "full";
  ProfileRun full = profile_training(*m, FreezePlan::none(c.num_layers), o);
  o.label = "sppft";
  const FreezePlan plan = FreezePlan::from_ranges({{1, 2}}, c.num_layers);
  ProfileRun sp = profile_training(*m, plan, o);
  FreezeComparison cmp = compare_freeze(c, full, sp);
  REQUIRE(cmp.parts.size() == full.parts.size());
  const double lin = 2.0 * 48 * static_cast<double>(block_linear_params(c));
  for (int k = 0; k < c.num_layers; ++k) {
    const PartSaving& p = cmp.parts[1 + k];
    CAPTURE(k);
    CHECK(p.flops == (plan.block_frozen[k] ? lin : 0.0));
    CHECK(p.predicted_flops == p.flops);
    CHECK(p.bytes == p.predicted_bytes);  // the allocator's bytes as the planner predicts them
    if (plan.block_frozen[k]) {
      CHECK(p.bytes > 0);
      CHECK(p.predicted_s > 0);
      CHECK(p.predicted_bytes_bf16 > 0);
    } else {
      CHECK(p.bytes == 0);
      CHECK(p.predicted_s == 0);
    }
  }
  CHECK(cmp.total.bytes == static_cast<std::int64_t>(full.planned_total_bytes - sp.planned_total_bytes));
  CHECK(cmp.total.predicted_bytes == cmp.total.bytes);
  // bf16-mixed: what `sppft memory --precision bf16-mixed` says the frozen range saves.
  CHECK(cmp.total.predicted_bytes_bf16 ==
        static_cast<std::int64_t>(plan_training_memory(c, FreezePlan::none(c.num_layers), 2, 24, Precision::BF16Mixed).total() -
                                  plan_training_memory(c, plan, 2, 24, Precision::BF16Mixed).total()));
  const std::string table = format_comparison_table(cmp, full, sp);
  CHECK(table.find("block.1") != std::string::npos);
  CHECK(table.find("frozen") != std::string::npos);
  Json j = comparison_to_json(cmp);
  CHECK(j["parts"].size() == full.parts.size());
  CHECK(j["total"]["saved_bytes"].get<std::int64_t>() == cmp.total.bytes);
  // The outputs: trace JSON, SVG, tables.
  Json trace = Json::parse(chrome_trace({&full, &sp}));
  bool fwd = false, dw = false;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] != "X") continue;
    fwd |= e["name"] == "block.0.forward" && e["tid"] == 1 && e["pid"] == 1;
    dw |= e["name"] == "block.0.backward_dw" && e["tid"] == 3 && e["pid"] == 2;
    const bool frozen_dw = e["name"] == "block.1.backward_dw" && e["pid"] == 2;  // frozen in the SPPFT run
    CHECK_FALSE(frozen_dw);
  }
  CHECK(fwd);
  CHECK(dw);
  const std::string svg = profile_svg({&full, &sp}, "test");
  CHECK(svg.find("<svg") != std::string::npos);
  CHECK(svg.find("backward dW") != std::string::npos);
  const std::string t = format_profile_table(sp);
  CHECK(t.find("block.3") != std::string::npos);
  CHECK(t.find("step (wall)") != std::string::npos);
}

TEST_CASE("sppft profile on a checkpoint: tables, JSON, trace, SVG and bad input") {
  const fs::path dir = test::temp_dir("profile") / "model";
  test::make_tiny_checkpoint(dir);
  const fs::path trace = dir.parent_path() / "trace.json", svg = dir.parent_path() / "p.svg";
  auto r = test::run_command(sppft_bin() + " profile " + dir.string() + " --steps 2 --seq 16 --micro-batch 2 " +
                             "--compare-freeze 1-2 --json --trace " + trace.string() + " --svg " + svg.string() +
                             " 2>/dev/null");
  REQUIRE(r.exit_code == 0);
  Json j = Json::parse(r.out);
  REQUIRE(j["runs"].size() == 2);
  CHECK(j["runs"][0]["label"] == "full");
  CHECK(j["runs"][1]["parts"][2]["mode"] == "frozen");
  CHECK(j["runs"][1]["parts"][2]["seconds"]["backward_dw"]["median"].get<double>() == 0);
  CHECK(j["runs"][0]["sum_vs_step_max_error"].get<double>() < 0.05);
  CHECK(j["comparison"]["total"]["saved_bytes"] == j["comparison"]["total"]["predicted_saved_bytes"]);
  CHECK(Json::parse(read_file(trace))["traceEvents"].size() > 10);
  CHECK(read_file(svg).find("<svg") != std::string::npos);

  auto table = test::run_command(sppft_bin() + " profile " + dir.string() + " --steps 1 --warmup 0 --seq 8 --layers 2 2>&1");
  REQUIRE(table.exit_code == 0);
  CHECK(table.out.find("block.1") != std::string::npos);
  CHECK(table.out.find("block.2") == std::string::npos);
  CHECK(table.out.find("(2 of 4 blocks)") != std::string::npos);
  auto rc = test::run_command(sppft_bin() + " profile " + dir.string() + " --steps 1 --warmup 0 --seq 8 --recompute 2>&1");
  REQUIRE(rc.exit_code == 0);
  CHECK(rc.out.find("activations recomputed") != std::string::npos);
  CHECK(rc.out.find("the memory planner predicts") != std::string::npos);
  CHECK(rc.out.find("(equal)") != std::string::npos);
  auto op_table = test::run_command(sppft_bin() + " profile " + dir.string() + " --steps 1 --warmup 0 --seq 8 --ops 2>&1");
  REQUIRE(op_table.exit_code == 0);
  CHECK(op_table.out.find("linear_forward") != std::string::npos);
  CHECK(op_table.out.find("sum of ops") != std::string::npos);
  auto fwd = test::run_command(sppft_bin() + " profile " + dir.string() + " --mode forward --steps 1 --seq 8 2>/dev/null");
  REQUIRE(fwd.exit_code == 0);
  CHECK(fwd.out.find("forward and loss only") != std::string::npos);
  CHECK(test::run_command(sppft_bin() + " profile --help").exit_code == 0);

  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--device cuda", "--device cuda"},
           {"--device tpu", "--device"},
           {"--mode backward", "--mode"},
           {"--compare-freeze 9-9", "outside the model"},
           {"--freeze 1-1 --compare-freeze 2-2", "--compare-freeze"},
           {"--mode forward --freeze 1-1", "needs --mode train"},
           {"--mode forward --recompute", "needs --mode train"},
           {"--recompute --recompute-blocks 2", "not both"},
           {"--recompute-blocks 0", "--recompute-blocks"},
           {"--layers 0", "--layers"},
           {"--steps 0", "--steps"},
           {"--seq 100000", "--seq"},
           {"--preset nope", "unknown preset"}}) {
    CAPTURE(args);
    auto e = test::run_command(sppft_bin() + " profile " + (args.rfind("--preset", 0) == 0 ? "" : dir.string() + " ") + args);
    CAPTURE(e.out);
    CHECK(e.exit_code == 2);
    CHECK(e.out.rfind("error: ", 0) == 0);
    CHECK(e.out.find(needle) != std::string::npos);
  }
}
