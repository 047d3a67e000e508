// The CUDA backend of kernels/ops.h: same names, same math (see the comments
// there), for tensors on Device::CUDA. kernels/ops.cpp calls these when the
// dispatching tensor lives on the GPU; they can also be called directly.
//
// Plain C++ header (no CUDA headers), so host code includes it freely; only built
// when SPPFT_HAVE_CUDA is defined (nvcc found at configure time).
//
// Conventions of every op here:
//  - All tensor arguments must be on Device::CUDA and contiguous (Tensor always is);
//    a CPU tensor, a wrong shape or an unsupported dtype throws InputError naming
//    the op and the tensor. Ids and positions are I32 device tensors; a
//    std::span<const AttentionSeq> is host memory (it travels as kernel
//    parameters, in launches of up to 32 sequences, so no copy and no sync).
//  - Work is queued on one stream (stream() in kernels/cuda/cuda_common.cuh, the
//    legacy default stream for now) and returns without waiting; copy_to_host and
//    synchronize() wait. Launch errors throw RuntimeFailure at the call; faults
//    inside a kernel surface at the next synchronising call.
//  - Floating dtypes: F32 everywhere (the CPU reference dtype), BF16 storage where
//    listed per op below; arithmetic is always fp32.
//  - Scratch memory (cuBLASLt workspace, per-op scratch) comes from the CUDA tagged
//    allocator under MemCategory::Workspace, cached per device, in the closed-form
//    sizes of kernels/device_scratch.h; release_cached_resources() gives it back.
#pragma once

#include <cstdint>
#include <span>

#include "engine/tensor.h"
#include "kernels/ops.h"

namespace sppft::cuda {

// ---- host <-> device copies (same dtype and element count; shapes may differ) ----
// Both wait until the copy is done (and so for all work queued before it).
void copy_to_device(const Tensor& host_src, Tensor& device_dst);
void copy_to_host(const Tensor& device_src, Tensor& host_dst);
// Device to device (same dtype and element count), queued on the stream; does not wait.
void copy_on_device(const Tensor& src, Tensor& dst);
// t = 0 (all bytes), queued on the stream.
void fill_zero(Tensor& t);
// Convenience: a new tensor of the same shape and dtype on the other side.
Tensor to_device(const Tensor& host_src, MemCategory cat);
Tensor to_host(const Tensor& device_src, MemCategory cat);
// Waits for all queued work; throws RuntimeFailure if a kernel faulted.
void synchronize();
// The stream every op queues on, as an opaque cudaStream_t (this header includes no CUDA
// header): work on another stream that reads an op's output must wait for it through an event
// recorded here (trainer/comm_nccl.cpp).
void* compute_stream();
// Grows this device's scratch buffer to hold `bytes` now (sizes: kernels/device_scratch.h),
// so later ops requesting at most that much never reallocate. Synchronises if it grows.
void reserve_scratch(std::size_t bytes);
// Frees the cached cuBLASLt handle/workspace and scratch buffers of the current device
// (they are re-created on next use). Must not be called while work is in flight.
void release_cached_resources();

// ---- forward ops (math, shapes: kernels/ops.h) ----

// cuBLASLt GEMM, y = x w^T + bias, fp32 accumulation. dtypes:
//   x, w both F32 (fp32 FMA GEMM, TF32 off unless set_linear_allow_tf32(true)) with y F32;
//   x, w both BF16 (tensor cores) with y F32 or BF16;
//   bias F32 or BF16 (fused in the GEMM epilogue when it has y's dtype and is 16-byte
//   aligned, else written into y first and accumulated with beta = 1).
// Shapes/alignments cuBLASLt has no algorithm for go to a slow tiled fallback kernel.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
// F32 GEMMs may use TF32 tensor cores (about 10 bits of mantissa) when allowed. Default off.
void set_linear_allow_tf32(bool allow);
// Testing hook: route every GEMM through the fallback kernel.
void set_linear_fallback_for_testing(bool force);

// table F32/BF16, out F32/BF16 (any pair). Ids outside [0, V) throw InputError before
// anything is written; that check reads one int back, so this op synchronises.
void embedding_forward(const Tensor& ids, const Tensor& table, float scale, Tensor& out);

// x, w, y each F32 or BF16 (any combination). One block per row, fp32 sum of squares.
void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, bool unit_offset, Tensor& y);
// x += delta (delta of x's dtype, the sum rounded to it), then y = rmsnorm(x): one kernel.
void add_rmsnorm_forward(Tensor& x, const Tensor& delta, const Tensor& w, float eps, bool unit_offset, Tensor& y);

// x F32 or BF16 (in place); positions I32; inv_freq F32.
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale);

// gate and up of one dtype (F32 or BF16), out F32 or BF16; out may alias gate or up exactly.
void glu_forward(const Tensor& gate, const Tensor& up, ops::GluActivation act, Tensor& out);

// x F32 or BF16, y F32 or BF16 (any pair).
void add_inplace(Tensor& x, const Tensor& y);
// dst = src element for element through fp32 (F32 <-> BF16 rounds to nearest even); each
// F32 or BF16, same element count; queued on the stream.
void convert(const Tensor& src, Tensor& dst);

// k, v of one dtype (F32 or BF16); caches of one dtype (F32 or BF16), converted on write.
void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache);

// q, caches and out all F32 or all BF16; head_dim D <= 256. Tiled online-softmax kernel
// (fp32 math on CUDA cores): each block takes 16 (query position, query head) rows of one
// KV head, so the heads of a GQA group share every K/V tile; when there are too few such
// blocks to fill the GPU (decode), the key range is split across blocks and a second
// kernel merges the partial softmaxes (flash-decoding). softcap > 0 (Gemma-2): each visible
// score s becomes softcap * tanh(s / softcap) before the softmax (the split partials hold
// capped scores, so the merge is unchanged); softcap == 0: no cap, the uncapped arithmetic
// bit for bit; softcap < 0 throws InputError.
void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out,
                       float softcap = 0.0f);
// Testing hook: force the number of key splits of attention_forward (1..64); 0 = automatic.
void set_attention_splits_for_testing(int splits);

// ---- backward ops (rmsnorm.cu, rope.cu, glu.cu, embedding.cu) ----

// x, w, dy, dx, dw each F32 or BF16 (any combination); dx may alias dy (same dtype), not x;
// dw null or accumulated (BF16: read, summed in fp32, rounded once). One block per row
// for dx; without atomics for dw: per-block column partial sums (min(N, 512) blocks)
// reduced in a fixed order by a second kernel, so dw is bitwise reproducible.
// accumulate_dx: dx += the value (read, summed in fp32, rounded once; dx must not alias dy).
void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& dy, float eps, bool unit_offset, Tensor& dx,
                      Tensor* dw, bool accumulate_dx = false);

// dx F32 or BF16 (in place); positions I32; inv_freq F32. The forward's kernel with the
// inverse rotation: bitwise the same angles and sincosf as rope_forward.
void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim, float scale);

// gate and up of one dtype, dout, dgate and dup of one dtype (each F32 or BF16). dgate may
// alias gate or dout and dup may alias up or dout exactly (an alias of gate / up needs
// their dtype); dgate and dup distinct.
void glu_backward(const Tensor& gate, const Tensor& up, const Tensor& dout, ops::GluActivation act, Tensor& dgate,
                  Tensor& dup);

// dout F32 or BF16, dtable F32 or BF16 (accumulated; BF16 read, summed in fp32, rounded
// once). Ids outside [0, V) throw InputError before any write (the ids are read back, so
// this op synchronises). Repeated ids add up in row order, bitwise reproducibly, no
// atomics: the host groups each id's rows (a stable sort of the N ids), then one thread
// per (id, column) sums them in order.
void embedding_backward(const Tensor& ids, const Tensor& dout, float scale, Tensor& dtable);

// ---- training attention (kernels/cuda/attention_train.cu) ----

// The kernels BF16 training attention takes where the tensor-core path applies (the tests
// run each, bench_kernels times each):
//   tensor_cores (default): WMMA forward and backward (attention_train_tc.cu);
//   mma_sync: forward and backward with their fragments in registers (mma.sync, ldmatrix,
//     cp.async double buffering; attention_train_mma.cu) for head_dim <= 128, WMMA above;
//   cuda_cores: the fp32 CUDA-core kernels (what F32 and other head sizes always take).
enum class AttentionKernels { tensor_cores, mma_sync, cuda_cores };
void set_attention_kernels(AttentionKernels kernels);
// The kernels BF16 training attention takes for heads of `head_dim` on the current device
// (16-byte aligned tensors, as the model's are): the chosen ones where they apply, WMMA for
// mma_sync above 128, CUDA cores where the tensor-core tiles do not fit the head or the device.
AttentionKernels training_attention_kernels(std::int64_t head_dim);

// q, k, v, out all F32 or all BF16; lse F32; head_dim D even and <= 256; seqs need
// past_len == 0. Flash-attention style: a block takes a tile of (position, query head) rows
// of one KV head, so the heads of a GQA group share every K/V tile in shared memory; online
// softmax over key tiles; writes lse = m + log l. BF16 with D % 8 == 0, D <= 256 and 16-byte
// aligned tensors: tensor cores (WMMA, or mma.sync for D <= 128 as set_attention_kernels says;
// tiles of 64 rows x 64 keys, P rounded to bf16 before P V; D > 128 needs sm_90's shared
// memory); otherwise fp32 math on CUDA cores (tiles of 32 x 32). softcap > 0 (Gemma-2): every
// kernel caps each visible score, s -> softcap * tanh(s / softcap), before the softmax and
// lse (masked keys stay -inf); softcap == 0: no cap, bitwise the uncapped results; < 0 throws.
void attention_forward_train(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs,
                             float scale, std::int64_t window, Tensor& out, Tensor& lse, float softcap = 0.0f);
// q, k, v, out, dout, dq, dk, dv all F32 or all BF16; lse F32; same limits. Flash-attention-2
// backward without atomics, bitwise reproducible: delta = dout . out into scratch, then
// one block per key tile accumulates dk, dv over every query row (all heads of the group)
// that sees it, and one block per row tile accumulates dq over the key tiles, both
// recomputing P from q, k and lse (tensor cores under the forward's conditions, P and dS
// rounded to bf16 before their products). Outputs must not alias inputs. softcap as the
// forward's (the same value): P from the capped scores c and dS times 1 - (c / softcap)^2.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window,
                        Tensor& dq, Tensor& dk, Tensor& dv, float softcap = 0.0f);

// ---- training: linear backward, loss, optimizer (linear.cu, loss.cu, optimizer.cu) ----

// cuBLASLt GEMMs through linear_forward's plumbing (handle, workspace, plan cache), fp32
// accumulation, dtypes as linear_forward: the two inputs both F32 (TF32 only if
// set_linear_allow_tf32(true)) with an F32 output, or both BF16 with an F32 or BF16 output.
// Accumulation is the GEMM's beta = 1 (BF16 outputs: read, accumulated in fp32, rounded
// once). set_linear_fallback_for_testing(true) sends these GEMMs to the fallback kernel too.
// dx overwritten, or accumulated when `accumulate`.
void linear_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate);
// dw accumulated (dw += dy^T x). dbias (null, F32 or BF16) accumulated by a deterministic
// column sum of dy, no atomics: fixed 1024-row chunks summed in double, chunks added in
// order, so dbias is bitwise reproducible (and independent of the GPU).
void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor* dbias);

// logits F32 or BF16; dlogits null, F32 or BF16 (may alias logits exactly, then of its
// dtype); targets I32. One block per row: online max / sum-of-exp in fp32, then the
// gradient pass. Targets outside [0, V) other than -100 throw InputError before anything
// is written (a flag read back: one synchronisation); the per-row losses are summed in
// double in a fixed order and read back (a second synchronisation). Bitwise reproducible.
// softcap > 0 (Gemma-2's final logits): the loss of z' = softcap * tanh(z / softcap), and
// dlogits through the cap, times 1 - (z' / softcap)^2; each pass caps the raw logit it reads,
// so in place stays safe. softcap == 0: no cap, bitwise the uncapped results; < 0 throws.
double cross_entropy(const Tensor& logits, const Tensor& targets, float grad_scale, Tensor* dlogits,
                     float softcap = 0.0f);

// t F32 or BF16. Exact double squares, fixed grid (a function of numel only) and fixed
// reduction trees: bitwise reproducible. Reads the result back, so it synchronises.
double sum_squares(const Tensor& t);
// t F32 or BF16 (fp32 product, rounded back). Does not synchronise.
void scale_inplace(Tensor& t, float s);

// param F32 or BF16, grad F32 or BF16, m and v F32. kernels/ops.h's update with the same
// float scalars (computed on the host as kernels/cpu/adamw.cpp does) and the same sequence
// of correctly rounded fp32 operations (no FMA contraction beyond torch's lerp), so F32
// results are meant to equal the CPU reference's bit for bit. Runs adamw_multi_tensor's
// kernel on a one-entry table. Does not synchronise.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWParams& hp,
                std::int64_t step);

// One tensor of a multi-tensor AdamW step. param F32 or BF16, grad F32 or BF16, m, v (and
// master) F32, all of param's shape. master null: the update runs on param; set: it runs on
// the fp32 master copy and param receives the result (rounded to nearest even if BF16).
// Per-tensor decay is 1 - lr * double(weight_decay), so a tensor's update equals
// adamw_step's with hp.weight_decay = double(weight_decay), bit for bit.
struct AdamWTensor {
  Tensor* param;
  const Tensor* grad;
  Tensor* m;
  Tensor* v;
  Tensor* master;
  float weight_decay;
};
// AdamW over many tensors (frozen ones are simply left out of the list) in
// ceil(tensors / 64) launches: the tensor table travels in the kernel parameters (under
// 4 KiB, no device buffer, no copy, no sync); one block per 65536-element chunk of a tensor.
// Every entry is checked before any launch. Does not synchronise.
void adamw_multi_tensor(std::span<const AdamWTensor> tensors, double lr, double beta1, double beta2, double eps,
                        std::int64_t step);

}  // namespace sppft::cuda
