#include "trainer/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>

#include "engine/error.h"
#ifdef SPPFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace sppft {

namespace {

bool is_norm_or_bias(const std::string& name) {
  return name.find("norm") != std::string::npos || (name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0);
}

}  // namespace

std::vector<std::size_t> shard_counts(std::int64_t n, int world) {
  std::vector<std::size_t> c(world, static_cast<std::size_t>(n / world));
  for (int r = 0; r < n % world; ++r) ++c[r];
  return c;
}

std::size_t shard_offset(const std::vector<std::size_t>& counts, int rank) {
  std::size_t o = 0;
  for (int r = 0; r < rank; ++r) o += counts[r];
  return o;
}

double CommBytes::ring_bytes_per_rank(int world) const {
  if (world < 2) return 0;
  const double f = static_cast<double>(world - 1) / world;
  return 2 * f * all_reduce + f * (reduce_scatter + all_gather) + 2 * f * scalars;
}

Json CommBytes::to_json(int world) const {
  return {{"all_reduce_bytes", all_reduce}, {"reduce_scatter_bytes", reduce_scatter}, {"all_gather_bytes", all_gather},
          {"scalar_bytes", scalars}, {"payload_bytes", payload()}, {"ring_bytes_per_rank", ring_bytes_per_rank(world)}};
}

CommBytes plan_comm_bytes(const std::vector<std::int64_t>& part_numels, int world, bool zero1, std::size_t elem_bytes) {
  CommBytes b;
  if (world < 2) return b;
  for (auto n : part_numels) {
    const std::size_t bytes = static_cast<std::size_t>(n) * elem_bytes;
    if (zero1) {
      b.reduce_scatter += bytes;
      b.all_gather += bytes;
    } else {
      b.all_reduce += bytes;
    }
  }
  b.scalars = 2 * sizeof(double) + (zero1 ? sizeof(double) : 0);  // loss sum + tokens; ZeRO: the norm's partial sums
  return b;
}

DataParallel::DataParallel(Model& model, std::vector<PackedPart> grads, CommQueue* queue, bool zero1, Hyper hyper,
                           CommQueue* host_queue)
    : model_(model), queue_(queue), host_queue_(host_queue ? host_queue : queue), zero1_(zero1), hyper_(hyper) {
  if (queue_) {
    rank_ = queue_->comm().rank();
    world_ = queue_->comm().world();
  }
  std::map<std::string, const PackedPart*> weight_part;
  for (const auto& p : model_.packed_weights()) weight_part[p.name] = &p;
  std::reverse(grads.begin(), grads.end());  // allocation order is forward order
  for (auto& g : grads) {
    Part p;
    const PackedPart& w = *weight_part.at(g.name);
    std::map<std::string, std::int64_t> w_offset;
    for (const auto& m : w.members) w_offset[m.param.name] = m.offset;
    const std::int64_t base = w_offset.at(g.members.front().param.name), n = g.numel();
    for (const auto& m : g.members)
      if (w_offset.at(m.param.name) != base + m.offset)
        throw std::logic_error("DataParallel: trainable tensors of " + g.name + " are not contiguous in the packed weights");
    p.weights = w.flat.view(base, {n});
    p.counts = zero1_ ? shard_counts(n, world_) : std::vector<std::size_t>(world_, 0);
    p.own_begin = zero1_ ? static_cast<std::int64_t>(shard_offset(p.counts, rank_)) : 0;
    p.own_len = zero1_ ? static_cast<std::int64_t>(p.counts[rank_]) : n;
    const Device device = g.flat.device();
    for (Tensor* t : {&p.m, &p.v}) {
      *t = Tensor::empty({p.own_len}, DType::F32, MemCategory::Optimizer, device);
      ops::fill_zero(*t);
    }
    if (p.weights.dtype() != DType::F32) {
      // From the checkpoint's fp32 values when the model kept them (to_device), else the stored weights.
      if (const Tensor* exact = model_.host_f32(w.name)) {
        p.master = Tensor::empty({p.own_len}, DType::F32, MemCategory::Master, device);
        ops::copy(exact->view(base + p.own_begin, {p.own_len}), p.master);
      } else {
        p.master = f32_copy(p.weights.view(p.own_begin, {p.own_len}), MemCategory::Master);
      }
    }
    for (std::size_t i = 0; i < g.members.size(); ++i) {
      const auto& m = g.members[i];
      const std::int64_t b = std::max(m.offset, p.own_begin),
                         e = std::min(m.offset + shape_numel(m.shape), p.own_begin + p.own_len);
      if (b < e)
        p.segments.push_back({static_cast<int>(i), b, e - b, hyper_.decay_norms_and_biases || !is_norm_or_bias(m.param.name)});
    }
    p.grad = std::move(g);
    parts_.push_back(std::move(p));
  }
}

void DataParallel::zero_grads() {
  for (auto& p : parts_) {
    ops::fill_zero(p.grad.flat);
    p.submitted = false;
  }
}

void DataParallel::submit(Part& p) {
  p.submitted = true;
  if (world_ < 2) return;
  void* data = p.grad.flat.raw();
  const DType dt = p.grad.flat.dtype();
  const std::size_t n = static_cast<std::size_t>(p.grad.flat.numel());
  Communicator& comm = queue_->comm();
  if (zero1_) {
    counting_.reduce_scatter += p.grad.flat.nbytes();
    queue_->submit("reduce-scatter of " + p.grad.name + " gradients",
                   [&comm, data, dt, &p] { comm.reduce_scatter_sum(data, p.counts, dt); });
  } else {
    counting_.all_reduce += p.grad.flat.nbytes();
    queue_->submit("all-reduce of " + p.grad.name + " gradients", [&comm, data, n, dt] { comm.all_reduce_sum(data, n, dt); });
  }
}

void DataParallel::part_ready(const std::string& part) {
  auto it = std::find_if(parts_.begin(), parts_.end(), [&](const Part& p) { return p.grad.name == part; });
  if (it == parts_.end()) return;  // trains nothing
  for (auto j = parts_.begin(); j <= it; ++j)
    if (!j->submitted) submit(*j);
}

double DataParallel::reduce_gradients() {
  for (auto& p : parts_)
    if (!p.submitted) submit(p);
  const auto t0 = std::chrono::steady_clock::now();
  if (queue_) queue_->wait_all();
  exposed_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  busy_s_ = queue_ ? queue_->take_busy_seconds() : 0;  // the gradient reductions only
  double sq = 0;
  for (auto& p : parts_)
    if (p.own_len) sq += ops::sum_squares(p.grad.flat.view(p.own_begin, {p.own_len}));
  if (zero1_ && world_ > 1) all_reduce(&sq, 1);
  return std::sqrt(sq);
}

void DataParallel::scale_gradients(float coef) {
  for (auto& p : parts_) {
    if (!p.own_len) continue;
    Tensor g = p.grad.flat.view(p.own_begin, {p.own_len});
    ops::scale_inplace(g, coef);
  }
}

void DataParallel::optimizer_step(double lr, std::int64_t step) {
  for (auto& p : parts_) {
    if (p.master.defined()) {
      masters_step(p, lr, step);
    } else {
      for (const auto& s : p.segments) {
        Tensor w = p.weights.view(s.begin, {s.len}), g = p.grad.flat.view(s.begin, {s.len});
        Tensor m = p.m.view(s.begin - p.own_begin, {s.len}), v = p.v.view(s.begin - p.own_begin, {s.len});
        ops::AdamWParams hp{lr, hyper_.beta1, hyper_.beta2, hyper_.eps, s.decay ? hyper_.weight_decay : 0.0};
        ops::adamw_step(w, g, m, v, hp, step);
      }
    }
    if (zero1_ && world_ > 1) {
      void* data = p.weights.raw();
      const DType dt = p.weights.dtype();
      counting_.all_gather += p.weights.nbytes();
      Communicator& comm = queue_->comm();
      queue_->submit("all-gather of " + p.grad.name + " weights", [&comm, data, dt, &p] { comm.all_gather(data, p.counts, dt); });
    }
  }
  if (queue_) queue_->wait_all();
  step_bytes_ = counting_;
  counting_ = {};
  if (queue_) queue_->take_busy_seconds();  // all-gathers and scalars are not gradient reductions
}

// bf16 weights with fp32 masters (GPU): every segment of the part in one multi-tensor
// launch; the update runs on the master and the bf16 weight gets it rounded.
void DataParallel::masters_step(Part& p, double lr, std::int64_t step) {
#ifdef SPPFT_HAVE_CUDA
  std::vector<Tensor> views;
  views.reserve(5 * p.segments.size());  // stable addresses for the table
  std::vector<cuda::AdamWTensor> table;
  for (const auto& s : p.segments) {
    const std::int64_t o = s.begin - p.own_begin;
    views.push_back(p.weights.view(s.begin, {s.len}));
    views.push_back(p.grad.flat.view(s.begin, {s.len}));
    views.push_back(p.m.view(o, {s.len}));
    views.push_back(p.v.view(o, {s.len}));
    views.push_back(p.master.view(o, {s.len}));
    Tensor* t = &views[views.size() - 5];
    table.push_back({t, t + 1, t + 2, t + 3, t + 4, static_cast<float>(s.decay ? hyper_.weight_decay : 0.0)});
  }
  cuda::adamw_multi_tensor(table, lr, hyper_.beta1, hyper_.beta2, hyper_.eps, step);
#else
  (void)p, (void)lr, (void)step;
  throw std::logic_error("DataParallel: fp32 master weights need the CUDA backend");
#endif
}

void DataParallel::all_reduce(double* v, std::size_t n) {
  if (world_ < 2) return;
  counting_.scalars += n * sizeof(double);
  all_reduce_between_steps(v, n);
}

void DataParallel::all_reduce_between_steps(double* v, std::size_t n) {
  if (world_ < 2) return;
  Communicator& comm = queue_->comm();
  queue_->run("all-reduce of " + std::to_string(n) + " scalars", [&comm, v, n] { comm.all_reduce_sum(v, n); });
}

std::vector<TensorToWrite> DataParallel::gather_moments(std::vector<std::vector<float>>& staging) {
  std::vector<TensorToWrite> out;
  staging.clear();
  staging.reserve(3 * parts_.size());
  for (auto it = parts_.rbegin(); it != parts_.rend(); ++it) {  // forward order in the file
    Part& p = *it;
    std::vector<std::pair<std::string, const float*>> full;  // prefix, values of the whole part
    for (auto [prefix, t] : {std::pair{"m.", &p.m}, std::pair{"v.", &p.v}, std::pair{"master.", &p.master}}) {
      if (!t->defined()) continue;
      const bool whole_on_host = t->device() == Device::CPU && !(zero1_ && world_ > 1);
      if (whole_on_host) {
        full.push_back({prefix, t->data<float>()});
        continue;
      }
      auto& buf = staging.emplace_back(static_cast<std::size_t>(p.grad.flat.numel()));
      const std::vector<float> mine = host_values_f32(*t);
      std::copy(mine.begin(), mine.end(), buf.begin() + p.own_begin);
      if (zero1_ && world_ > 1) {  // host buffers: through the host communicator
        Communicator& comm = host_queue_->comm();
        float* data = buf.data();
        host_queue_->run("all-gather of " + p.grad.name + " optimizer state (checkpoint)",
                         [&comm, data, &p] { comm.all_gather(data, p.counts); });
      }
      full.push_back({prefix, buf.data()});
    }
    if (rank_ != 0) continue;
    for (const auto& m : p.grad.members)
      for (const auto& [prefix, values] : full) out.push_back({prefix + m.param.name, DType::F32, m.shape, values + m.offset});
  }
  return out;
}

void DataParallel::load_moments(const Checkpoint& ckpt, const std::string& file) {
  for (auto& p : parts_) {
    for (const auto& s : p.segments) {
      const PackedMember& m = p.grad.members[s.member];
      for (auto [prefix, dst] : {std::pair{"m.", &p.m}, std::pair{"v.", &p.v}, std::pair{"master.", &p.master}}) {
        if (!dst->defined()) continue;
        const std::string name = prefix + m.param.name;
        if (!ckpt.has(name)) {
          if (dst == &p.master) {  // a checkpoint of an fp32 run: the master is the (bf16) weight itself
            Tensor w = p.weights.view(s.begin, {s.len});
            const std::vector<float> v = host_values_f32(w);
            Tensor d = dst->view(s.begin - p.own_begin, {s.len});
            assign_from_f32(v.data(), d);
            continue;
          }
          throw InputError(file + ": tensor '" + name + "' missing (was it saved with another --freeze?)");
        }
        const TensorEntry& e = ckpt.entry(name);
        if (e.shape != m.shape || e.dtype != DType::F32)
          throw InputError(file + ": tensor '" + name + "' does not match this model");
        if (reinterpret_cast<std::uintptr_t>(e.data) % alignof(float) != 0)
          throw InputError(file + ": tensor '" + name + "' does not start at a multiple of 4 bytes (not written by sppft)");
        const float* values = reinterpret_cast<const float*>(e.data) + (s.begin - m.offset);
        // A bit flipped on disk would otherwise poison every later step without a word.
        for (std::int64_t i = 0; i < s.len; ++i)
          if (!std::isfinite(values[i]) || (dst == &p.v && values[i] < 0))
            throw InputError(file + ": tensor '" + name + "' holds " + (std::isfinite(values[i]) ? "a negative" : "a non-finite") +
                             " value at element " + std::to_string(s.begin - m.offset + i) + " (a damaged or diverged checkpoint)");
        Tensor d = dst->view(s.begin - p.own_begin, {s.len});
        assign_from_f32(values, d);
      }
    }
  }
}

}  // namespace sppft
