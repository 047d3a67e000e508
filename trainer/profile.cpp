#include "trainer/profile.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>

#include "engine/error.h"
#include "engine/progress.h"
#include "kernels/device_scratch.h"
#include "kernels/ops.h"
#include "trainer/memory_plan.h"
#ifdef SPPFT_HAVE_CUDA
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include "engine/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#endif

namespace sppft {

namespace {

using Clock = std::chrono::steady_clock;

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::size_t part_index(const StepPart& p, std::int64_t L) {
  switch (p.kind) {
    case StepPart::Embeddings: return 0;
    case StepPart::Block: return static_cast<std::size_t>(1 + p.block);
    case StepPart::FinalNorm: return static_cast<std::size_t>(L + 1);
    case StepPart::LmHead: return static_cast<std::size_t>(L + 2);
    case StepPart::Loss: return static_cast<std::size_t>(L + 3);
  }
  return 0;
}

// Which part a parameter belongs to.
std::size_t param_part(const NamedParam& p, std::int64_t L) {
  if (p.block >= 0) return static_cast<std::size_t>(1 + p.block);
  if (p.name == "model.embed_tokens.weight") return 0;
  if (p.name == "model.norm.weight") return static_cast<std::size_t>(L + 1);
  return static_cast<std::size_t>(L + 2);  // lm_head.weight
}

const char* mode_name(BlockMode m) {
  return m == BlockMode::Full ? "full" : m == BlockMode::InputGradOnly ? "frozen" : "no-bwd";
}

// Timestamps for the phase timer: a host clock (the CPU ops are synchronous) or
// CUDA events recorded on the stream the ops queue on (no host synchronisation inside
// a step; resolved after the step).
class Marks {
 public:
  virtual ~Marks() = default;
  virtual std::size_t mark() = 0;               // a timestamp "now" in stream order
  virtual void sync() {}                        // waits until every mark is resolvable
  virtual double us(std::size_t m) const = 0;   // microseconds since the timer's origin
  virtual void reset() = 0;                     // marks of the next step reuse the storage
};

class HostMarks final : public Marks {
 public:
  HostMarks() : origin_(Clock::now()) {}
  std::size_t mark() override {
    t_.push_back(Clock::now());
    return t_.size() - 1;
  }
  double us(std::size_t m) const override { return std::chrono::duration<double, std::micro>(t_[m] - origin_).count(); }
  void reset() override { t_.clear(); }

 private:
  Clock::time_point origin_;
  std::vector<Clock::time_point> t_;
};

#ifdef SPPFT_HAVE_CUDA
class CudaMarks final : public Marks {
 public:
  CudaMarks() { origin_ = event(0); cudaEventRecord(origin_, 0); }
  ~CudaMarks() override {
    for (auto e : pool_) cudaEventDestroy(e);
  }
  std::size_t mark() override {
    cudaEventRecord(event(used_ + 1), 0);  // the legacy stream every op queues on
    return used_++;
  }
  void sync() override {
    if (used_) SPPFT_CUDA_CHECK(cudaEventSynchronize(pool_[used_]));
  }
  double us(std::size_t m) const override {
    float ms = 0;
    SPPFT_CUDA_CHECK(cudaEventElapsedTime(&ms, origin_, pool_[m + 1]));
    return 1e3 * ms;
  }
  void reset() override { used_ = 0; }

 private:
  cudaEvent_t event(std::size_t i) {  // pool_[0] is the origin
    while (pool_.size() <= i) {
      cudaEvent_t e;
      SPPFT_CUDA_CHECK(cudaEventCreate(&e));
      pool_.push_back(e);
    }
    return pool_[i];
  }
  cudaEvent_t origin_;
  std::vector<cudaEvent_t> pool_;
  std::size_t used_ = 0;
};
#endif

// The PhaseTimer of `sppft profile`: each interval becomes a pair of marks; after
// the step they are resolved into the part's phase time and the trace. On a GPU the
// intervals are also NVTX ranges named <part>.<phase>, so Nsight shows the same cut.
// As an OpObserver (with --ops) it also marks every op, attributed to the open phase.
class StepPhaseTimer final : public PhaseTimer, public ops::OpObserver {
 public:
  StepPhaseTimer(ProfileRun& run, std::int64_t L, Marks& marks, bool nvtx) : run_(run), L_(L), marks_(marks), nvtx_(nvtx) {}

  void start_step(bool measured, std::int64_t step) {
    measured_ = measured;
    step_ = step;
    pending_.clear();
    pending_ops_.clear();
    marks_.reset();
    step_begin_ = marks_.mark();
  }
  // Resolves the step's intervals; returns the step's wall time in seconds (first to last mark).
  double finish_step() {
    const std::size_t step_end = marks_.mark();
    marks_.sync();
    const double t0 = marks_.us(step_begin_), dur = (marks_.us(step_end) - t0) * 1e-6;
    if (!measured_) return dur;
    for (auto& p : run_.parts)
      for (auto& sec : p.seconds) sec.push_back(0.0);
    const std::size_t m = run_.step_seconds.size();  // this step's index among the measured
    for (auto& o : run_.ops) {
      o.seconds.push_back(0.0);
      o.calls = 0;
    }
    for (const auto& op : pending_ops_) {
      OpProfile& o = op_entry(op.name, op.phase, m);
      const double a = marks_.us(op.begin), d = (marks_.us(op.end) - a) * 1e-6;
      o.seconds[m] += d;
      ++o.calls;
      run_.trace.push_back({op.name, kOpsTrack, step_, a, d * 1e6});
    }
    for (const auto& iv : pending_) {
      PartProfile& p = run_.parts[iv.part];
      const double a = marks_.us(iv.begin), d = (marks_.us(iv.end) - a) * 1e-6;
      p.seconds[static_cast<int>(iv.phase)].back() += d;
      run_.trace.push_back({p.name + "." + (iv.what ? iv.what : step_phase_name(iv.phase)), 1 + static_cast<int>(iv.phase),
                            step_, a, d * 1e6});
    }
    run_.step_seconds.push_back(dur);
    run_.trace.push_back({"step", 0, step_, t0, dur * 1e6});
    return dur;
  }
  void begin(const StepPart& part, StepPhase phase) override {
    range_push(part.name() + "." + step_phase_name(phase));
    phase_ = phase;
    open_ = marks_.mark();
  }
  void end(const StepPart& part, StepPhase phase) override {
    pending_.push_back({part_index(part, L_), phase, open_, marks_.mark(), nullptr});
    range_pop();
  }
  // Times fn() as `phase` of part `idx`; the trace names it <part>.<what>.
  template <typename F>
  void interval(std::size_t idx, StepPhase phase, const char* what, F&& fn) {
    range_push(run_.parts[idx].name + "." + what);
    phase_ = phase;
    const std::size_t a = marks_.mark();
    fn();
    pending_.push_back({idx, phase, a, marks_.mark(), what});
    range_pop();
  }
  // OpObserver: the op's own pair of marks (only outermost ops are reported).
  void begin(const char*) override { op_open_ = marks_.mark(); }
  void end(const char* op) override {
    if (measured_) pending_ops_.push_back({op, phase_, op_open_, marks_.mark()});
  }

 private:
  struct Interval {
    std::size_t part;
    StepPhase phase;
    std::size_t begin, end;
    const char* what;
  };
  struct OpInterval {
    const char* name;
    StepPhase phase;
    std::size_t begin, end;
  };
  // The entry of (name, phase), created with zeros for the measured steps before `m`.
  OpProfile& op_entry(const char* name, StepPhase phase, std::size_t m) {
    for (auto& o : run_.ops)
      if (o.phase == phase && o.name == name) return o;
    run_.ops.push_back({name, phase, std::vector<double>(m + 1, 0.0), 0});
    return run_.ops.back();
  }
  void range_push(const std::string& name) {
#ifdef SPPFT_HAVE_CUDA
    if (nvtx_) nvtxRangePushA(name.c_str());
#else
    (void)name;
#endif
  }
  void range_pop() {
#ifdef SPPFT_HAVE_CUDA
    if (nvtx_) nvtxRangePop();
#endif
  }

  ProfileRun& run_;
  std::int64_t L_;
  Marks& marks_;
  bool nvtx_;
  bool measured_ = false;
  std::int64_t step_ = 0;
  std::size_t step_begin_ = 0, open_ = 0, op_open_ = 0;
  StepPhase phase_ = StepPhase::Forward;  // the open phase, for the ops inside it
  std::vector<Interval> pending_;
  std::vector<OpInterval> pending_ops_;
};

struct OptSlot {
  Tensor* weight;
  Tensor grad, m, v, master;  // master: fp32 copy of a bf16 weight (GPU), else undefined
};

// A zero-filled tensor on `device`.
Tensor zeros_on(const Shape& s, DType dt, MemCategory cat, Device device) {
  Tensor t = Tensor::empty(s, dt, cat, device);
  ops::fill_zero(t);
  return t;
}

// AdamW over a part's tensors: one multi-tensor launch on a GPU, tensor by tensor on the CPU.
void adamw_part(std::vector<OptSlot>& part, const ops::AdamWParams& hp, std::int64_t step) {
#ifdef SPPFT_HAVE_CUDA
  if (!part.empty() && part.front().grad.device() == Device::CUDA) {
    std::vector<cuda::AdamWTensor> table;
    for (auto& sl : part)
      table.push_back({sl.weight, &sl.grad, &sl.m, &sl.v, sl.master.defined() ? &sl.master : nullptr,
                       static_cast<float>(hp.weight_decay)});
    const ops::OpScope scope("adamw_multi_tensor");  // past kernels/ops.h: reported here
    cuda::adamw_multi_tensor(table, hp.lr, hp.beta1, hp.beta2, hp.eps, step);
    return;
  }
#endif
  for (auto& sl : part) ops::adamw_step(*sl.weight, sl.grad, sl.m, sl.v, hp, step);
}

std::string fmt_ms(double seconds) {
  char b[32];
  const double ms = seconds * 1e3;
  if (seconds == 0) return "-";
  if (ms >= 100) std::snprintf(b, sizeof b, "%.0f", ms);
  else if (ms >= 10) std::snprintf(b, sizeof b, "%.1f", ms);
  else if (ms >= 1) std::snprintf(b, sizeof b, "%.2f", ms);
  else std::snprintf(b, sizeof b, "%.3f", ms);
  return b;
}

std::string fmt_signed_ms(double seconds) {
  if (seconds == 0) return "0";
  std::string s = fmt_ms(std::abs(seconds));
  return (seconds < 0 ? "-" : "") + s;
}

std::string fmt_flops(double flops, double unit) {
  if (flops == 0) return "-";
  char b[32];
  const double v = flops / unit;
  std::snprintf(b, sizeof b, v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f", v);
  return b;
}

std::string fmt_bytes(double b) { return b == 0 ? "-" : human_bytes(b); }
std::string fmt_signed_bytes(double b) {
  if (b == 0) return "0";
  return (b < 0 ? "-" : "") + human_bytes(std::abs(b));
}

Json stats_json(const std::vector<double>& v) {
  if (v.empty()) return {{"median", 0.0}, {"min", 0.0}, {"max", 0.0}, {"samples", Json::array()}};
  return {{"median", median_of(v)},
          {"min", *std::min_element(v.begin(), v.end())},
          {"max", *std::max_element(v.begin(), v.end())},
          {"samples", v}};
}

}  // namespace

// --- FLOPs ----------------------------------------------------------------

std::int64_t block_linear_params(const ModelConfig& c) {
  const std::int64_t h = c.hidden_size, f = c.intermediate_size, q = c.q_dim(), kv = c.kv_dim();
  return h * (q + 2 * kv) + q * h + 3 * h * f;
}

double attention_pairs(const ModelConfig& c, std::int64_t layer, const std::vector<std::int64_t>& seq_lens) {
  const std::int64_t w = c.attention_window(layer);
  double pairs = 0;
  for (std::int64_t t : seq_lens) {
    const double T = static_cast<double>(t);
    if (w <= 0 || w >= t) {
      pairs += T * (T + 1) / 2;  // query t attends to t + 1 keys
    } else {
      const double W = static_cast<double>(w);
      pairs += W * (W + 1) / 2 + (T - W) * W;  // the first w queries ramp up, the rest see w keys
    }
  }
  return pairs;
}

PhaseValues part_flops(const ModelConfig& c, const StepPart& part, BlockMode mode, bool weight_trains,
                       const std::vector<std::int64_t>& seq_lens, bool recomputed) {
  PhaseValues f{};
  double n = 0;
  for (auto t : seq_lens) n += static_cast<double>(t);
  const auto fw = static_cast<int>(StepPhase::Forward), dx = static_cast<int>(StepPhase::BackwardDX),
             dw = static_cast<int>(StepPhase::BackwardDW);
  if (part.kind == StepPart::Block) {
    const double lin = 2 * n * static_cast<double>(block_linear_params(c));
    const double attn = 4.0 * static_cast<double>(c.num_heads * c.head_dim) * attention_pairs(c, part.block, seq_lens);
    f[fw] = lin + attn;
    if (mode != BlockMode::NoBackward) f[dx] = lin + 2 * attn;
    if (mode == BlockMode::Full) f[dw] = lin;
    // The rerun stops before the down projection: backward needs no block output (gemma2's
    // output norm needs its input, the down projection's output).
    const double down = c.sandwich_norms ? 0 : 2 * n * static_cast<double>(c.hidden_size) * static_cast<double>(c.intermediate_size);
    if (recomputed && mode != BlockMode::NoBackward) f[static_cast<int>(StepPhase::Recompute)] = lin - down + attn;
  } else if (part.kind == StepPart::LmHead) {
    const double g = 2 * n * static_cast<double>(c.vocab_size * c.hidden_size);
    f[fw] = g;
    f[dx] = g;
    if (weight_trains) f[dw] = g;
  }
  return f;
}

// --- PartProfile / ProfileRun -------------------------------------------------

double PartProfile::median(StepPhase p) const { return median_of(seconds[static_cast<int>(p)]); }
double OpProfile::median() const { return median_of(seconds); }
double PartProfile::min(StepPhase p) const {
  const auto& v = seconds[static_cast<int>(p)];
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}
double PartProfile::max(StepPhase p) const {
  const auto& v = seconds[static_cast<int>(p)];
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}
std::vector<double> PartProfile::totals() const {
  std::vector<double> t(seconds[0].size(), 0.0);
  for (const auto& s : seconds)
    for (std::size_t i = 0; i < s.size() && i < t.size(); ++i) t[i] += s[i];
  return t;
}
double PartProfile::median_total() const { return median_of(totals()); }
double PartProfile::spread() const {
  const auto t = totals();
  if (t.size() < 2) return 0;
  const double m = median_of(t);
  return m > 0 ? (*std::max_element(t.begin(), t.end()) - *std::min_element(t.begin(), t.end())) / m : 0;
}

double ProfileRun::phase_sum(std::size_t i) const {
  double s = 0;
  for (const auto& p : parts)
    for (const auto& v : p.seconds) s += v.at(i);
  return s;
}
double ProfileRun::median_step() const { return median_of(step_seconds); }
double ProfileRun::max_sum_error() const {
  double e = 0;
  for (std::size_t i = 0; i < step_seconds.size(); ++i)
    e = std::max(e, std::abs(phase_sum(i) - step_seconds[i]) / step_seconds[i]);
  return e;
}
PartBytes ProfileRun::total_bytes() const {
  PartBytes b;
  for (const auto& p : parts) {
    b.weights += p.bytes.weights;
    b.grads += p.bytes.grads;
    b.optimizer += p.bytes.optimizer;
    b.activations += p.bytes.activations;
  }
  return b;
}
PhaseValues ProfileRun::total_flops() const {
  PhaseValues f{};
  for (const auto& p : parts)
    for (int i = 0; i < kStepPhases; ++i) f[i] += p.flops[i];
  return f;
}

// --- the profile loop ---------------------------------------------------------

ProfileRun profile_training(Model& model, const FreezePlan& plan, const ProfileOptions& o) {
  const ModelConfig& c = model.config();
  const std::int64_t L = c.num_layers;
  if (o.steps < 1) throw InputError("--steps: at least one measured step");
  if (o.warmup < 0) throw InputError("--warmup: must be >= 0");
  if (o.micro_batch < 1 || o.seq < 2) throw InputError("--micro-batch and --seq: at least 1 sequence of 2 tokens");
  if (o.seq > c.max_position_embeddings)
    throw InputError("--seq " + std::to_string(o.seq) + ": longer than max_position_embeddings (" +
                     std::to_string(c.max_position_embeddings) + ")");
  if (static_cast<std::int64_t>(plan.block_frozen.size()) != L) throw std::invalid_argument("profile: plan of another model");

  ProfileRun run;
  run.label = o.label;
  run.train = o.train;
  run.activations = o.activations;
  run.plan = o.train ? plan : FreezePlan::none(L);
  run.modes = o.train ? block_modes(plan, L) : std::vector<BlockMode>(L, BlockMode::NoBackward);
  run.micro_batch = o.micro_batch;
  run.seq = o.seq;
  run.tokens = o.micro_batch * o.seq;
  run.steps = o.steps;
  run.warmup = o.warmup;

  // Gradients and AdamW moments for the trainable tensors, grouped by part, on the
  // model's device (a GPU model holds bf16 weights: bf16 gradients, fp32 masters).
  const Device device = model.device();
  const DType act_dtype = model.weights().embed_tokens.dtype();
  ModelWeights grads;
  grads.blocks.resize(L);
  auto weights = model.parameters();
  auto slots = named_parameters(c, grads);
  run.parts.resize(L + 4);
  std::vector<std::vector<OptSlot>> opt(L + 4);
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const std::size_t p = param_part(weights[i], L);
    run.parts[p].bytes.weights += weights[i].tensor->nbytes();
    if (!o.train || !plan.trains(weights[i].name, weights[i].block, c)) continue;
    const Tensor& w = *weights[i].tensor;
    *slots[i].tensor = zeros_on(w.shape(), w.dtype(), MemCategory::Grads, device);
    OptSlot sl{weights[i].tensor, *slots[i].tensor, zeros_on(w.shape(), DType::F32, MemCategory::Optimizer, device),
               zeros_on(w.shape(), DType::F32, MemCategory::Optimizer, device), {}};
    if (w.dtype() != DType::F32) sl.master = f32_copy(w, MemCategory::Master);
    run.parts[p].bytes.grads += sl.grad.nbytes();
    run.parts[p].bytes.optimizer += sl.m.nbytes() + sl.v.nbytes() + (sl.master.defined() ? sl.master.nbytes() : 0);
    opt[p].push_back(std::move(sl));
  }
  bind_fused_views(c, grads);

  const std::vector<std::int64_t> lens(o.micro_batch, o.seq);
  const bool embed_trains = grads.embed_tokens.defined();
  const std::vector<bool> rerun = rerun_blocks(run.modes, o.activations);
  for (std::int64_t i = 0; i < L + 4; ++i) {
    PartProfile& p = run.parts[i];
    p.part = i == 0 ? StepPart{StepPart::Embeddings} : i <= L ? StepPart{StepPart::Block, i - 1}
             : i == L + 1 ? StepPart{StepPart::FinalNorm} : i == L + 2 ? StepPart{StepPart::LmHead} : StepPart{StepPart::Loss};
    p.name = p.part.name();
    const BlockMode mode = p.part.kind == StepPart::Block ? run.modes[p.part.block] : BlockMode::Full;
    // Every recomputed block reruns its forward, but the highest one.
    const bool recomputed = o.train && p.part.kind == StepPart::Block && rerun[p.part.block];
    p.flops = part_flops(c, p.part, mode, grads.lm_head.defined(), lens, recomputed);
    if (!o.train) {
      p.mode = p.part.kind == StepPart::Loss ? "-" : "fwd";
      p.flops[static_cast<int>(StepPhase::BackwardDX)] = 0;
      continue;
    }
    switch (p.part.kind) {
      case StepPart::Embeddings: p.mode = embed_trains ? "train" : "frozen"; break;
      case StepPart::Block: p.mode = mode_name(mode); break;
      case StepPart::FinalNorm: p.mode = grads.final_norm.defined() ? "train" : "frozen"; break;
      case StepPart::LmHead:
        p.mode = c.tie_word_embeddings ? "tied" : grads.lm_head.defined() ? "train" : "frozen";
        break;
      case StepPart::Loss: p.mode = "-"; break;
    }
  }

  TrainingGraph graph(model, run.modes, run.tokens, 256, o.activations);
  for (const auto& spec : TrainingGraph::buffer_specs(c, run.modes, run.tokens, 256, act_dtype, o.activations)) {
    if (spec.category == MemCategory::Activations && spec.name.rfind("recompute.", 0) == 0) {
      run.workspace_bytes += spec.bytes();  // shared by the blocks: no one part's
    } else if (spec.category == MemCategory::Activations && spec.name.rfind("block.", 0) == 0) {
      run.parts[1 + std::stoll(spec.name.substr(6))].bytes.activations += spec.bytes();
    } else if (spec.category == MemCategory::Activations) {
      run.parts[L + 1].bytes.activations += spec.bytes();  // final_x, final_normed
    } else {
      run.workspace_bytes += spec.bytes();
    }
  }
  run.workspace_bytes += Model::rope_table_bytes(c);
  // On a GPU the backend's own buffers too (cuBLASLt workspace, error flag, the scratch the graph reserves).
  const std::size_t backend = device == Device::CUDA ? device_scratch::backend_bytes(TrainingGraph::device_scratch_bytes(
                                                            c, run.modes, run.tokens, 256))
                                                      : 0;
  run.workspace_bytes += backend;
  const bool mixed = act_dtype == DType::BF16;
  if (o.train) {
    run.planned_total_bytes =
        plan_training_memory(c, plan, o.micro_batch, o.seq, mixed ? Precision::BF16Mixed : Precision::FP32, 256, {},
                             o.activations)
            .total();
  } else {  // the planner's arithmetic without gradients: weights + the graph's buffers + RoPE table
    for (const auto& ps : parameter_shapes(c))
      run.planned_total_bytes += static_cast<std::size_t>(shape_numel(ps.shape)) * dtype_size(act_dtype);
    for (const auto& spec : TrainingGraph::buffer_specs(c, run.modes, run.tokens, 256, act_dtype, o.activations))
      run.planned_total_bytes += spec.bytes();
    run.planned_total_bytes += Model::rope_table_bytes(c) + backend;
  }

  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(c.vocab_size - 1));
  std::vector<std::vector<std::int32_t>> ids(o.micro_batch, std::vector<std::int32_t>(o.seq));
  for (auto& s : ids)
    for (auto& x : s) x = tok(rng);
  std::vector<TrainSequence> batch;
  for (auto& s : ids) batch.push_back({&s, &s});
  const float grad_scale = 1.0f / static_cast<float>(o.micro_batch * (o.seq - 1));
  const ops::AdamWParams hp{1e-5, 0.9, 0.999, 1e-8, 0.0};

  std::unique_ptr<Marks> marks;
#ifdef SPPFT_HAVE_CUDA
  if (device == Device::CUDA) marks = std::make_unique<CudaMarks>();
#endif
  if (!marks) marks = std::make_unique<HostMarks>();
  StepPhaseTimer timer(run, L, *marks, device == Device::CUDA);
  graph.set_phase_timer(&timer);
  struct ObserverOff {  // also when a step throws: the timer dies with this frame
    ~ObserverOff() { ops::set_op_observer(nullptr); }
  } observer_off;
  if (o.ops) ops::set_op_observer(&timer);
  const std::int64_t total = o.warmup + o.steps;
  std::unique_ptr<Progress> bar;
  if (o.progress) bar = std::make_unique<Progress>(o.label, static_cast<std::size_t>(total), "step");
  for (std::int64_t s = 0; s < total; ++s) {
    const bool measured = s >= o.warmup;
    timer.start_step(measured, s - o.warmup);
    for (std::size_t p = 0; p < opt.size(); ++p)
      if (!opt[p].empty())
        timer.interval(p, StepPhase::Optimizer, "zero_grad", [&] {
          for (auto& sl : opt[p]) ops::fill_zero(sl.grad);
        });
    if (o.train) graph.step(batch, grads, grad_scale);
    else graph.evaluate(batch);
    for (std::size_t p = 0; p < opt.size(); ++p)
      if (!opt[p].empty())
        timer.interval(p, StepPhase::Optimizer, "optimizer", [&] { adamw_part(opt[p], hp, s + 1); });
    timer.finish_step();
    if (bar) bar->update(static_cast<std::size_t>(s + 1), measured ? "measuring" : "warm-up");
  }
  graph.set_phase_timer(nullptr);
  return run;
}

// --- comparison -----------------------------------------------------------------

FreezeComparison compare_freeze(const ModelConfig& c, const ProfileRun& full, const ProfileRun& sppft) {
  if (full.parts.size() != sppft.parts.size() || full.tokens != sppft.tokens || full.activations != sppft.activations)
    throw std::invalid_argument("compare_freeze: runs of different models, batches or activation policies");
  const std::int64_t L = c.num_layers;
  const std::vector<std::int64_t> lens(full.micro_batch, full.seq);
  // The planners' view: bytes per part of frozen parameters and of activations
  // not kept, in fp32 and in the bf16-mixed (CUDA) layout.
  std::vector<std::int64_t> pred(full.parts.size(), 0), pred_bf16(full.parts.size(), 0);
  for (const auto& ps : parameter_shapes(c)) {
    if (!full.plan.trains(ps.name, ps.block, c) || sppft.plan.trains(ps.name, ps.block, c)) continue;
    const std::size_t p = param_part(NamedParam{ps.name, nullptr, ps.block}, L);
    const auto n = shape_numel(ps.shape);
    pred[p] += n * (4 + 8);
    pred_bf16[p] += n * (2 + 4 + 8);
  }
  auto act_bytes = [&](const ProfileRun& r, bool bf16) {
    std::vector<std::int64_t> b(r.parts.size(), 0);
    for (const auto& spec :
         TrainingGraph::buffer_specs(c, r.modes, r.tokens, 256, bf16 ? DType::BF16 : DType::F32, r.activations)) {
      if (spec.category != MemCategory::Activations || spec.name.rfind("recompute.", 0) == 0) continue;  // as measured
      const std::size_t p = spec.name.rfind("block.", 0) == 0 ? 1 + std::stoll(spec.name.substr(6)) : L + 1;
      b[p] += static_cast<std::int64_t>(spec.bytes());
    }
    return b;
  };
  const auto af = act_bytes(full, false), as = act_bytes(sppft, false), bf = act_bytes(full, true), bs = act_bytes(sppft, true);

  FreezeComparison cmp;
  cmp.total.name = "total";
  for (std::size_t i = 0; i < full.parts.size(); ++i) {
    const PartProfile &f = full.parts[i], &s = sppft.parts[i];
    PartSaving ps;
    ps.name = f.name;
    ps.mode = s.mode;
    ps.full_s = f.median_total();
    ps.sppft_s = s.median_total();
    const int dw = static_cast<int>(StepPhase::BackwardDW);
    // Predicted time: the weight-gradient work that disappears, and the share
    // of the optimizer's work on the tensors that no longer train.
    if (f.flops[dw] > 0 && s.flops[dw] == 0) ps.predicted_s += f.median(StepPhase::BackwardDW);
    if (f.bytes.optimizer > 0)
      ps.predicted_s += f.median(StepPhase::Optimizer) *
                        (1.0 - static_cast<double>(s.bytes.optimizer) / static_cast<double>(f.bytes.optimizer));
    for (int k = 0; k < kStepPhases; ++k) ps.flops += f.flops[k] - s.flops[k];  // the optimizer's are 0
    if (f.part.kind == StepPart::Block && sppft.plan.block_frozen[f.part.block] && !full.plan.block_frozen[f.part.block])
      ps.predicted_flops = 2.0 * static_cast<double>(full.tokens) * static_cast<double>(block_linear_params(c));
    else
      ps.predicted_flops = f.flops[dw] - s.flops[dw];  // e.g. a frozen lm_head
    ps.bytes = static_cast<std::int64_t>(f.bytes.total()) - static_cast<std::int64_t>(s.bytes.total());
    ps.predicted_bytes = pred[i] + af[i] - as[i];
    ps.predicted_bytes_bf16 = pred_bf16[i] + bf[i] - bs[i];
    cmp.total.predicted_s += ps.predicted_s;
    cmp.total.flops += ps.flops;
    cmp.total.predicted_flops += ps.predicted_flops;
    cmp.total.bytes += ps.bytes;
    cmp.total.predicted_bytes += ps.predicted_bytes;
    cmp.total.predicted_bytes_bf16 += ps.predicted_bytes_bf16;
    cmp.parts.push_back(ps);
  }
  cmp.total.full_s = full.median_step();
  cmp.total.sppft_s = sppft.median_step();
  cmp.total.mode = "-";
  return cmp;
}

// --- output -----------------------------------------------------------------------

std::string format_profile_table(const ProfileRun& run) {
  std::string out;
  char line[256];
  const auto total_flops = run.total_flops();
  double max_flops = 0;
  for (const auto& p : run.parts)
    for (double f : p.flops) max_flops = std::max(max_flops, f);
  const bool giga = max_flops >= 1e9;
  const double unit = giga ? 1e9 : 1e6;
  std::snprintf(line, sizeof line, "%s: %s%s; %lld x %lld tokens; median of %lld steps after %lld warm-up; %d threads\n",
                run.label.c_str(), run.train ? run.plan.describe().c_str() : "forward and loss only",
                activation_policy_note(run.activations).c_str(), (long long)run.micro_batch, (long long)run.seq,
                (long long)run.steps, (long long)run.warmup, omp_get_max_threads());
  out += line;
  // Under Recompute a "recompute" column of time and one of FLOPs; the rate counts its work too.
  const bool rc = run.recomputes();
  const int RC = static_cast<int>(StepPhase::Recompute);
  const auto header = [&](const char* name, const char* mode, const char* fw, const char* dx, const char* dw,
                          const char* op, const char* re, const char* tot, const char* spread, const char* ffw,
                          const char* fdx, const char* fdw, const char* fre, const char* rate) {
    std::string r;
    std::snprintf(line, sizeof line, "  %-12s %-7s %9s %9s %9s %9s", name, mode, fw, dx, dw, op);
    r += line;
    if (rc) {
      std::snprintf(line, sizeof line, " %9s", re);
      r += line;
    }
    std::snprintf(line, sizeof line, " %9s %6s  %8s %8s %8s", tot, spread, ffw, fdx, fdw);
    r += line;
    if (rc) {
      std::snprintf(line, sizeof line, " %8s", fre);
      r += line;
    }
    std::snprintf(line, sizeof line, " %8s\n", rate);
    return r + line;
  };
  out += header("", "", "forward", "bwd-dX", "bwd-dW", "optimizer", "recompute", "total", "spread",
                giga ? "GFLOP" : "MFLOP", "", "", "", "achieved");
  out += header("part", "mode", "ms", "ms", "ms", "ms", "ms", "ms", "", "fwd", "dX", "dW", "recomp", "GFLOP/s");
  auto row = [&](const std::string& name, const std::string& mode, const PhaseValues& sec, double total, double spread,
                 const PhaseValues& flops) {
    double f = 0, t = 0;
    for (int k : {0, 1, 2, RC}) {
      f += flops[k];
      t += sec[k];
    }
    char rate[32] = "-";
    if (f > 0 && t > 0) std::snprintf(rate, sizeof rate, "%.2f", f / t / 1e9);
    char spr[16] = "";
    if (spread > 0) std::snprintf(spr, sizeof spr, "%.0f%%", spread * 100);
    out += header(name.c_str(), mode.c_str(), fmt_ms(sec[0]).c_str(), fmt_ms(sec[1]).c_str(), fmt_ms(sec[2]).c_str(),
                  fmt_ms(sec[3]).c_str(), fmt_ms(sec[RC]).c_str(), fmt_ms(total).c_str(), spr,
                  fmt_flops(flops[0], unit).c_str(), fmt_flops(flops[1], unit).c_str(), fmt_flops(flops[2], unit).c_str(),
                  fmt_flops(flops[RC], unit).c_str(), rate);
  };
  for (const auto& p : run.parts) {
    PhaseValues sec{};
    for (int k = 0; k < kStepPhases; ++k) sec[k] = p.median(static_cast<StepPhase>(k));
    row(p.name, p.mode, sec, p.median_total(), p.spread(), p.flops);
  }
  // Totals: per phase, the median over steps of the sum over parts.
  PhaseValues tot{};
  for (int k = 0; k < kStepPhases; ++k) {
    std::vector<double> per_step(run.step_seconds.size(), 0.0);
    for (const auto& p : run.parts)
      for (std::size_t i = 0; i < per_step.size(); ++i) per_step[i] += p.seconds[k][i];
    tot[k] = median_of(per_step);
  }
  std::vector<double> sums;
  for (std::size_t i = 0; i < run.step_seconds.size(); ++i) sums.push_back(run.phase_sum(i));
  row("sum of parts", "", tot, median_of(sums), 0, total_flops);
  const auto& st = run.step_seconds;
  const double spread = st.size() > 1 ? (*std::max_element(st.begin(), st.end()) - *std::min_element(st.begin(), st.end())) /
                                            run.median_step()
                                      : 0;
  row("step (wall)", "", PhaseValues{}, run.median_step(), spread, PhaseValues{});
  std::snprintf(line, sizeof line,
                "  sum of phases vs the step timed around them: %.3f%% off at worst (%zu steps); %.1f tokens/s\n",
                100 * run.max_sum_error(), st.size(), run.tokens / run.median_step());
  out += line;

  out += "\n";
  std::snprintf(line, sizeof line, "  %-12s %-7s %11s %11s %11s %12s %11s\n", "part", "mode", "weights", "grads", "optimizer",
                "activations", "total");
  out += line;
  auto brow = [&](const std::string& name, const std::string& mode, const PartBytes& b) {
    std::snprintf(line, sizeof line, "  %-12s %-7s %11s %11s %11s %12s %11s\n", name.c_str(), mode.c_str(),
                  fmt_bytes(b.weights).c_str(), fmt_bytes(b.grads).c_str(), fmt_bytes(b.optimizer).c_str(),
                  fmt_bytes(b.activations).c_str(), fmt_bytes(b.total()).c_str());
    out += line;
  };
  for (const auto& p : run.parts) brow(p.name, p.mode, p.bytes);
  const PartBytes tb = run.total_bytes();
  brow("sum of parts", "", tb);
  const std::size_t all = tb.total() + run.workspace_bytes;
  std::snprintf(line, sizeof line, "  + workspace (shared scratch) %s = %s; the memory planner predicts %s (%s)\n",
                human_bytes(run.workspace_bytes).c_str(), human_bytes(all).c_str(),
                human_bytes(run.planned_total_bytes).c_str(), all == run.planned_total_bytes ? "equal" : "DIFFERENT");
  out += line;
  if (!run.ops.empty()) out += "\n" + format_ops_table(run);
  return out;
}

std::string format_ops_table(const ProfileRun& run) {
  std::string out;
  char line[256];
  std::vector<const OpProfile*> order;
  for (const auto& o : run.ops) order.push_back(&o);
  std::stable_sort(order.begin(), order.end(), [](const OpProfile* a, const OpProfile* b) { return a->median() > b->median(); });
  const double step = run.median_step();
  std::snprintf(line, sizeof line, "  %-24s %-11s %7s %10s %7s %10s\n", "op (median per step)", "phase", "calls", "ms",
                "share", "ms/call");
  out += line;
  double sum = 0;
  for (const OpProfile* o : order) {
    const double t = o->median();
    sum += t;
    std::snprintf(line, sizeof line, "  %-24s %-11s %7lld %10s %6.1f%% %10s\n", o->name.c_str(), step_phase_name(o->phase),
                  (long long)o->calls, fmt_ms(t).c_str(), step > 0 ? 100 * t / step : 0.0,
                  fmt_ms(o->calls ? t / static_cast<double>(o->calls) : 0).c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-24s %-11s %7s %10s %6.1f%%   (the rest: between the ops)\n", "sum of ops", "", "",
                fmt_ms(sum).c_str(), step > 0 ? 100 * sum / step : 0.0);
  out += line;
  return out;
}

std::string format_comparison_table(const FreezeComparison& cmp, const ProfileRun& full, const ProfileRun& sppft) {
  std::string out;
  char line[256];
  double max_flops = 0;
  for (const auto& p : cmp.parts) max_flops = std::max({max_flops, std::abs(p.flops), p.predicted_flops});
  const bool giga = max_flops >= 1e9;
  const double unit = giga ? 1e9 : 1e6;
  std::snprintf(line, sizeof line, "What freezing saved per step: %s (%s) against %s, median of %lld steps each\n",
                sppft.label.c_str(), sppft.plan.describe().c_str(), full.label.c_str(), (long long)full.steps);
  out += line;
  std::snprintf(line, sizeof line, "  %-12s %-7s %9s %9s %9s %9s  %9s %9s  %11s %11s %11s\n", "", "", "full", "sppft",
                "saved", "predicted", giga ? "saved" : "saved", "predicted", "saved", "predicted", "predicted");
  out += line;
  std::snprintf(line, sizeof line, "  %-12s %-7s %9s %9s %9s %9s  %9s %9s  %11s %11s %11s\n", "part", "mode", "ms", "ms",
                "ms", "ms", giga ? "GFLOP" : "MFLOP", giga ? "GFLOP" : "MFLOP", "bytes", "bytes", "bf16-mixed");
  out += line;
  auto row = [&](const PartSaving& p) {
    std::snprintf(line, sizeof line, "  %-12s %-7s %9s %9s %9s %9s  %9s %9s  %11s %11s %11s\n", p.name.c_str(),
                  p.mode.c_str(), fmt_ms(p.full_s).c_str(), fmt_ms(p.sppft_s).c_str(),
                  fmt_signed_ms(p.full_s - p.sppft_s).c_str(), fmt_ms(p.predicted_s).c_str(),
                  p.flops == 0 ? "0" : fmt_flops(p.flops, unit).c_str(),
                  p.predicted_flops == 0 ? "0" : fmt_flops(p.predicted_flops, unit).c_str(),
                  fmt_signed_bytes(static_cast<double>(p.bytes)).c_str(),
                  fmt_signed_bytes(static_cast<double>(p.predicted_bytes)).c_str(),
                  fmt_signed_bytes(static_cast<double>(p.predicted_bytes_bf16)).c_str());
    out += line;
  };
  for (const auto& p : cmp.parts) row(p);
  PartSaving t = cmp.total;
  t.name = "step (wall)";
  row(t);
  const double saved = cmp.total.full_s - cmp.total.sppft_s;
  std::snprintf(line, sizeof line,
                "  the frozen range saved %.1f%% of the step time (predicted %.1f%%), %.1f%% of the FLOPs and %s of "
                "memory (%s in total)\n",
                100 * saved / cmp.total.full_s, 100 * cmp.total.predicted_s / cmp.total.full_s,
                100 * cmp.total.flops / [&] {
                  double f = 0;
                  for (double v : full.total_flops()) f += v;
                  return f;
                }(),
                human_bytes(static_cast<double>(cmp.total.bytes)).c_str(),
                human_bytes(static_cast<double>(full.total_bytes().total() + full.workspace_bytes)).c_str());
  out += line;
  out +=
      "  predicted: time = the full run's dW time of the frozen blocks + the optimizer's share of their tensors;\n"
      "  FLOPs = their weight-gradient FLOPs (2 x tokens x linear params); bytes = their grads + Adam moments\n"
      "  (+ fp32 master copies in bf16-mixed) + the norm outputs they no longer save\n";
  return out;
}

Json profile_to_json(const ProfileRun& run) {
  Json parts = Json::array();
  for (const auto& p : run.parts) {
    Json sec = Json::object(), fl = Json::object(), rate = Json::object();
    for (int k = 0; k < kStepPhases; ++k) {
      const char* n = step_phase_name(static_cast<StepPhase>(k));
      sec[n] = stats_json(p.seconds[k]);
      fl[n] = p.flops[k];
      const double m = p.median(static_cast<StepPhase>(k));
      rate[n] = p.flops[k] > 0 && m > 0 ? Json(p.flops[k] / m) : Json(nullptr);
    }
    parts.push_back({{"name", p.name},
                     {"mode", p.mode},
                     {"seconds", sec},
                     {"total_seconds", {{"median", p.median_total()}, {"spread", p.spread()}}},
                     {"flops", fl},
                     {"flops_per_second", rate},
                     {"bytes",
                      {{"weights", p.bytes.weights},
                       {"grads", p.bytes.grads},
                       {"optimizer", p.bytes.optimizer},
                       {"activations", p.bytes.activations},
                       {"total", p.bytes.total()}}}});
  }
  std::vector<double> sums;
  for (std::size_t i = 0; i < run.step_seconds.size(); ++i) sums.push_back(run.phase_sum(i));
  const auto tb = run.total_bytes();
  const auto tf = run.total_flops();
  Json ops = Json::array();
  for (const auto& o : run.ops)
    ops.push_back({{"name", o.name}, {"phase", step_phase_name(o.phase)}, {"calls", o.calls}, {"seconds", stats_json(o.seconds)}});
  return {{"label", run.label},
          {"ops", ops},
          {"freeze", run.plan.describe()},
          {"activation_policy", activation_policy_name(run.activations)},
          {"micro_batch", run.micro_batch},
          {"seq", run.seq},
          {"tokens", run.tokens},
          {"steps", run.steps},
          {"warmup", run.warmup},
          {"threads", omp_get_max_threads()},
          {"step_seconds", stats_json(run.step_seconds)},
          {"phase_sum_seconds", sums},
          {"sum_vs_step_max_error", run.max_sum_error()},
          {"parts", parts},
          {"flops",
           {{"forward", tf[0]}, {"backward_dx", tf[1]}, {"backward_dw", tf[2]},
            {"recompute", tf[static_cast<int>(StepPhase::Recompute)]}}},
          {"bytes",
           {{"weights", tb.weights},
            {"grads", tb.grads},
            {"optimizer", tb.optimizer},
            {"activations", tb.activations},
            {"workspace", run.workspace_bytes},
            {"total", tb.total() + run.workspace_bytes},
            {"planned_total", run.planned_total_bytes}}}};
}

Json comparison_to_json(const FreezeComparison& cmp) {
  auto one = [](const PartSaving& p) {
    return Json{{"name", p.name},
                {"mode", p.mode},
                {"full_seconds", p.full_s},
                {"sppft_seconds", p.sppft_s},
                {"saved_seconds", p.full_s - p.sppft_s},
                {"predicted_saved_seconds", p.predicted_s},
                {"saved_flops", p.flops},
                {"predicted_saved_flops", p.predicted_flops},
                {"saved_bytes", p.bytes},
                {"predicted_saved_bytes", p.predicted_bytes},
                {"predicted_saved_bytes_bf16_mixed", p.predicted_bytes_bf16}};
  };
  Json parts = Json::array();
  for (const auto& p : cmp.parts) parts.push_back(one(p));
  Json total = one(cmp.total);
  total["name"] = "step";
  return {{"parts", parts}, {"total", total}};
}

std::string chrome_trace(const std::vector<const ProfileRun*>& runs) {
  Json ev = Json::array();
  // Track 0 is whole steps, track 1 + k phase k (StepPhaseTimer), then the ops (--ops).
  const char* tracks[kOpsTrack + 1] = {"step", "forward", "backward_dx", "backward_dw", "optimizer", "recompute", "ops"};
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const int pid = static_cast<int>(r) + 1;
    ev.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", runs[r]->label}}}});
    ev.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
    for (int t = 0; t <= kOpsTrack; ++t) {
      ev.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", t}, {"args", {{"name", tracks[t]}}}});
      ev.push_back({{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", pid}, {"tid", t}, {"args", {{"sort_index", t}}}});
    }
    for (const auto& e : runs[r]->trace)
      ev.push_back({{"name", e.name},
                    {"cat", tracks[e.track]},
                    {"ph", "X"},
                    {"pid", pid},
                    {"tid", e.track},
                    {"ts", e.start_us},
                    {"dur", e.dur_us},
                    {"args", {{"step", e.step}}}});
  }
  return Json{{"traceEvents", ev}, {"displayTimeUnit", "ms"}}.dump() + "\n";
}

}  // namespace sppft
