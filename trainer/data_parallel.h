// Data parallel over packed parts (models/model.h: allocate_packed).
//
// Every trainable part (embeddings, block.<k>, final_norm, lm_head) has one
// gradient buffer that mirrors a contiguous range of the part's weights. When
// backward finishes a part (TrainingGraph's grads-ready hook, last micro-batch
// of the step), its gradient is queued for reduction and backward goes on:
//   plain   all-reduce (sum) of the part's gradient; every rank then runs AdamW
//           over the whole part (identical on every rank);
//   ZeRO-1  reduce-scatter: rank r receives the summed gradient of its slice
//           only; AdamW runs on that slice with the slice's moments (and, in
//           bf16-mixed, master weights) - the only optimizer state the rank
//           holds - then an all-gather hands every rank the updated weights.
// Frozen tensors have no part, so they take part in no collective and hold
// no shard. Gradients are pre-scaled by 1 / (tokens of the global batch), so
// the reduction is a sum and the update equals one process's with the same
// global batch split into accumulation steps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/safetensors.h"
#include "kernels/ops.h"
#include "models/model.h"
#include "trainer/comm.h"

namespace sppft {

// Slice sizes of n elements over `world` ranks: contiguous, in rank order, the
// first n % world ranks one element larger.
std::vector<std::size_t> shard_counts(std::int64_t n, int world);
std::size_t shard_offset(const std::vector<std::size_t>& counts, int rank);

// Bytes handed to collectives per optimizer step (payload, what the buffers
// hold) and what a ring algorithm moves out of each rank for them.
struct CommBytes {
  std::size_t all_reduce = 0, reduce_scatter = 0, all_gather = 0, scalars = 0;
  std::size_t payload() const { return all_reduce + reduce_scatter + all_gather + scalars; }
  // Ring: all-reduce 2(w-1)/w of the buffer, reduce-scatter and all-gather (w-1)/w each.
  double ring_bytes_per_rank(int world) const;
  Json to_json(int world) const;
};
// The per-step bytes a run will communicate, from the parts' sizes alone
// (gradient element size: 4 B fp32, 2 B bf16-mixed; ZeRO all-gathers weights of the same size).
CommBytes plan_comm_bytes(const std::vector<std::int64_t>& part_numels, int world, bool zero1, std::size_t elem_bytes);

class DataParallel {
 public:
  struct Hyper {
    double beta1, beta2, eps, weight_decay;
    bool decay_norms_and_biases;
  };
  // `grads`: the trainable parts' gradient buffers (allocate_packed over the
  // trainable tensors); each must mirror a contiguous range of `model`'s packed
  // weights. `queue` null = one process. Gradients and weights go through `queue`'s
  // communicator (NCCL for a GPU model); checkpoint gathers of host buffers through
  // `host_queue` (MPI or TCP; null = `queue`).
  DataParallel(Model& model, std::vector<PackedPart> grads, CommQueue* queue, bool zero1, Hyper hyper,
               CommQueue* host_queue = nullptr);

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool zero1() const { return zero1_; }

  void zero_grads();
  // Starts the reduction of `part` (and of any part before it in backward
  // order that has not started: every rank submits the same sequence).
  void part_ready(const std::string& part);
  // Finishes every reduction; returns the global gradient norm (L2 over all
  // trainable tensors, as torch.nn.utils.clip_grad_norm_ reports it).
  double reduce_gradients();
  // Scales this rank's gradient (slice) by `coef` (clipping).
  void scale_gradients(float coef);
  // AdamW on this rank's (slice of the) weights, then the ZeRO all-gather.
  void optimizer_step(double lr, std::int64_t step);
  // Sums host doubles over ranks (loss sums and token counts), counted as scalars.
  void all_reduce(double* v, std::size_t n);
  // The same between steps (validation, the checkpoint barrier, the memory report):
  // not part of any step's traffic, so not counted in bytes_per_step.
  void all_reduce_between_steps(double* v, std::size_t n);

  // Full (unsharded) Adam moments as checkpoint tensors "m.<name>" / "v.<name>" (and
  // "master.<name>", the fp32 weights, when the model stores bf16), gathered on rank 0
  // (every rank must call; other ranks get an empty list). The returned tensors point
  // into `staging` or into host state.
  std::vector<TensorToWrite> gather_moments(std::vector<std::vector<float>>& staging);
  // Loads this rank's slice of every moment from a checkpoint written with any world size.
  void load_moments(const Checkpoint& ckpt, const std::string& file);

  const CommBytes& bytes_per_step() const { return step_bytes_; }
  // Of the last step: seconds the gradient reductions ran (on the worker thread) and how
  // long the step waited for them after backward ended (the rest overlapped with backward).
  double comm_busy_seconds() const { return busy_s_; }
  double comm_exposed_seconds() const { return exposed_s_; }

 private:
  struct Segment {  // a run of this rank's slice inside one tensor
    int member;               // index into grad.members
    std::int64_t begin, len;  // element offsets in the part
    bool decay;
  };
  struct Part {
    PackedPart grad;
    Tensor weights;  // the mirrored range of the packed weights
    std::vector<std::size_t> counts;
    std::int64_t own_begin = 0, own_len = 0;  // this rank's slice (whole part without ZeRO)
    Tensor m, v;    // moments of the slice
    Tensor master;  // fp32 copy of the slice's weights when they are stored in bf16 (GPU)
    std::vector<Segment> segments;
    bool submitted = false;
  };
  void submit(Part& p);
  void masters_step(Part& p, double lr, std::int64_t step);

  Model& model_;
  CommQueue* queue_;
  CommQueue* host_queue_;
  int rank_ = 0, world_ = 1;
  bool zero1_;
  Hyper hyper_;
  std::vector<Part> parts_;  // backward order: lm_head, final_norm, block.<L-1> ... block.0, embeddings
  CommBytes step_bytes_, counting_;
  double busy_s_ = 0, exposed_s_ = 0;
};

}  // namespace sppft
