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
//  - Scratch memory (cuBLASLt workspace, attention split partials) comes from the
//    CUDA tagged allocator under MemCategory::Workspace, cached per device;
//    release_cached_resources() gives it back.
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
// Convenience: a new tensor of the same shape and dtype on the other side.
Tensor to_device(const Tensor& host_src, MemCategory cat);
Tensor to_host(const Tensor& device_src, MemCategory cat);
// Waits for all queued work; throws RuntimeFailure if a kernel faulted.
void synchronize();
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

// x F32 or BF16 (in place); positions I32; inv_freq F32.
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& inv_freq, std::int64_t head_dim);

// gate and up of one dtype (F32 or BF16), out F32 or BF16; out may alias gate or up exactly.
void glu_forward(const Tensor& gate, const Tensor& up, ops::GluActivation act, Tensor& out);

// x F32 or BF16, y F32 or BF16 (any pair).
void add_inplace(Tensor& x, const Tensor& y);

// k, v of one dtype (F32 or BF16); caches of one dtype (F32 or BF16), converted on write.
void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache);

// q, caches and out all F32 or all BF16; head_dim D <= 256. Tiled online-softmax kernel
// (fp32 math on CUDA cores): each block takes 16 (query position, query head) rows of one
// KV head, so the heads of a GQA group share every K/V tile; when there are too few such
// blocks to fill the GPU (decode), the key range is split across blocks and a second
// kernel merges the partial softmaxes (flash-decoding).
void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out);
// Testing hook: force the number of key splits of attention_forward (1..64); 0 = automatic.
void set_attention_splits_for_testing(int splits);

}  // namespace sppft::cuda
