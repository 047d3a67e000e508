// Tiling shared by the attention kernels (attention.cu: over the KV cache; attention_train.cu:
// training, fp32 CUDA-core kernels for every dtype and head size; attention_train_tc.cu: BF16
// tensor-core training kernels):
// the per-launch sequence table that travels as a kernel parameter, the query-row tile of a
// block, and host helpers. Rows of a (sequence, KV head) are flattened as r = t * G + g
// (query head kvh * G + g), so the G query heads of a GQA group share every K/V tile.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <type_traits>
#include <vector>

#include "engine/error.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/ops.h"

namespace sppft::cuda::attn {

constexpr int kMaxSeqs = 32;  // sequences per launch (kernel-parameter table)

// Per-launch sequence table; start[] is a prefix over blocks (of whatever the kernel tiles:
// query-row tiles, key tiles or rows) of the sequences in the table.
struct SeqTable {
  int count;
  int start[kMaxSeqs + 1];
  int q_begin[kMaxSeqs];
  int q_len[kMaxSeqs];
  int slot[kMaxSeqs];      // KV-cache slot (attention.cu only)
  int past_len[kMaxSeqs];  // cached positions before the queries (attention.cu only)
};

__device__ __forceinline__ int find_seq(const SeqTable& t, int b) {
  int s = 0;
  while (s + 1 < t.count && t.start[s + 1] <= b) ++s;
  return s;
}

// The row (token * Hq + query head) of flattened row fr of the sequence starting at q_begin,
// KV head kvh: fr = t * group + g is token q_begin + t, query head kvh * group + g.
__device__ __forceinline__ std::int64_t flat_row(int q_begin, int fr, int group, int hq, int kvh) {
  return static_cast<std::int64_t>(q_begin + fr / group) * hq + kvh * group + fr % group;
}

// Where a query-row tile of a (sequence, KV head) sits, its rows' common key range, and
// where its rows and its sequence's keys are in memory.
struct RowTile {
  int q_begin, q_len, row0, nrows;  // flattened rows [row0, row0 + nrows) of the sequence
  int kb, ke;                       // keys [kb, ke) seen by at least one of them
  int group, hq, kvh;
  std::int64_t kw, kv_base;  // k / v row width (Hkv * D); element offset of (q_begin, kvh) in k / v
  __device__ std::int64_t qrow(int r) const { return flat_row(q_begin, row0 + r, group, hq, kvh); }  // tile row r
  __device__ std::int64_t kv(int j) const { return kv_base + j * kw; }  // key j of the sequence
  __device__ int pos(int r) const { return (row0 + r) / group; }         // position of tile row r
};

// The tile of block (blockIdx.x, KV head blockIdx.y), tiles of ROWS flattened rows. A
// sequence's blocks take its tiles from the last (most keys under a causal mask) to the first,
// so the longest blocks start first and the launch does not end waiting on them.
template <int ROWS>
__device__ __forceinline__ RowTile row_tile(const SeqTable& t, int d, int hq, int hkv, int window) {
  RowTile rt;
  const int si = find_seq(t, blockIdx.x);
  rt.q_begin = t.q_begin[si];
  rt.q_len = t.q_len[si];
  rt.group = hq / hkv;
  rt.hq = hq;
  rt.kvh = blockIdx.y;
  const int local = blockIdx.x - t.start[si];
  rt.row0 = (t.start[si + 1] - t.start[si] - 1 - local) * ROWS;
  rt.nrows = min(ROWS, rt.q_len * rt.group - rt.row0);
  const int pos_lo = rt.row0 / rt.group, pos_hi = (rt.row0 + rt.nrows - 1) / rt.group;
  rt.kb = window > 0 ? max(0, pos_lo - window + 1) : 0;
  rt.ke = pos_hi + 1;
  rt.kw = static_cast<std::int64_t>(hkv) * d;
  rt.kv_base = static_cast<std::int64_t>(rt.q_begin) * rt.kw + static_cast<std::int64_t>(rt.kvh) * d;
  return rt;
}

// Ls[r] = lse and Ds[r] = delta of a query tile's row r (row index from row_of(r)), 0 for
// r >= nrows; threads r < NR of the block do it (no barrier: the caller syncs before use).
template <int NR, typename F>
__device__ __forceinline__ void load_row_stats(float* Ls, float* Ds, const float* lse, const float* delta, int nrows,
                                               F&& row_of) {
  if (threadIdx.x < NR) {
    const int r = threadIdx.x;
    const std::int64_t idx = r < nrows ? row_of(r) : 0;
    Ls[r] = r < nrows ? lse[idx] : 0.0f;
    Ds[r] = r < nrows ? delta[idx] : 0.0f;
  }
}

// A key tile of a (sequence, KV head): keys [k0, k0 + nk) of the sequence and the flattened
// query rows [fr_begin, fr_end) that can see one of them (positions k0 .. t_end, where
// t_end = min(q_len - 1, last key + window - 1), written so that it cannot overflow).
struct KeyTile {
  int q_begin, q_len, k0, nk, fr_begin, fr_end;
  int group, hq, kvh;
  std::int64_t kw, kv_base;  // k / v row width; element offset of key k0 (head kvh) in k / v
  __device__ std::int64_t qrow(int fr) const { return flat_row(q_begin, fr, group, hq, kvh); }
  __device__ std::int64_t kv(int j) const { return kv_base + j * kw; }  // key k0 + j
};

// The tile of block (blockIdx.x, KV head blockIdx.y), tiles of KEYS keys.
template <int KEYS>
__device__ __forceinline__ KeyTile key_tile(const SeqTable& t, int d, int hq, int hkv, int window) {
  KeyTile kt;
  const int si = find_seq(t, blockIdx.x);
  kt.q_begin = t.q_begin[si];
  kt.q_len = t.q_len[si];
  kt.group = hq / hkv;
  kt.hq = hq;
  kt.kvh = blockIdx.y;
  kt.k0 = (blockIdx.x - t.start[si]) * KEYS;
  kt.nk = min(KEYS, kt.q_len - kt.k0);
  const int last_key = kt.k0 + kt.nk - 1;
  const int t_end = window > 0 && window < kt.q_len - last_key ? last_key + window - 1 : kt.q_len - 1;
  kt.fr_begin = kt.k0 * kt.group;
  kt.fr_end = (t_end + 1) * kt.group;
  kt.kw = static_cast<std::int64_t>(hkv) * d;
  kt.kv_base = static_cast<std::int64_t>(kt.q_begin + kt.k0) * kt.kw + static_cast<std::int64_t>(kt.kvh) * d;
  return kt;
}

// acc[i] = a[(row0 + ROW_STEP * i) * DMAX + :] . b[:] over d4 float4s (both zero-padded past d):
// the scores of a warp's NR query rows (row0, row0 + ROW_STEP, ...) against this lane's key row b.
// a is broadcast to the warp (same row for every lane).
template <int NR, int DMAX, int ROW_STEP>
__device__ __forceinline__ void row_dots(const float* a, int row0, const float* b, int d4, float (&acc)[NR]) {
#pragma unroll
  for (int i = 0; i < NR; ++i) acc[i] = 0.0f;
  const float4* b4 = reinterpret_cast<const float4*>(b);
#pragma unroll 4
  for (int e4 = 0; e4 < d4; ++e4) {
    const float4 bb = b4[e4];
#pragma unroll
    for (int i = 0; i < NR; ++i) {
      const float4 aa = reinterpret_cast<const float4*>(a + (row0 + ROW_STEP * i) * DMAX)[e4];
      acc[i] = fmaf(aa.x, bb.x, acc[i]);
      acc[i] = fmaf(aa.y, bb.y, acc[i]);
      acc[i] = fmaf(aa.z, bb.z, acc[i]);
      acc[i] = fmaf(aa.w, bb.w, acc[i]);
    }
  }
}

// Splits seqs (those with q_len > 0) into tables of up to kMaxSeqs; `blocks_of(seq)` gives the
// number of blocks of each sequence for the table's prefix. The chunking depends only on seqs,
// so tables built with different blocks_of hold the same sequences at the same indices.
template <typename F>
std::vector<SeqTable> make_tables(std::span<const ops::AttentionSeq> seqs, F&& blocks_of) {
  std::vector<SeqTable> tables;
  for (const auto& s : seqs) {
    if (s.q_len == 0) continue;
    if (tables.empty() || tables.back().count == kMaxSeqs) {
      tables.emplace_back();
      tables.back().count = 0;
      tables.back().start[0] = 0;
    }
    SeqTable& t = tables.back();
    const std::int64_t blocks = blocks_of(s);
    if (t.start[t.count] + blocks >= INT_MAX)
      throw InputError("attention (cuda): too many blocks for one launch");
    const int i = t.count++;
    t.q_begin[i] = static_cast<int>(s.q_begin);
    t.q_len[i] = static_cast<int>(s.q_len);
    t.slot[i] = static_cast<int>(s.slot);
    t.past_len[i] = static_cast<int>(s.past_len);
    t.start[i + 1] = t.start[i] + static_cast<int>(blocks);
  }
  return tables;
}

template <typename K>
void allow_smem(K kernel, std::size_t bytes) {
  if (bytes > 48 * 1024)
    SPPFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

// window <= 0: none; a window longer than any sequence changes nothing.
inline int clamp_window(std::int64_t window, std::int64_t n) {
  return window <= 0 ? 0 : static_cast<int>(std::min<std::int64_t>(window, n + 1));
}

// f(std::integral_constant<int, DMAX>{}) for the smallest DMAX in {32, 64, 128, 256} >= d: the
// head sizes the CUDA-core kernels (attention.cu, attention_train.cu) are instantiated for.
template <typename F>
void dispatch_dmax(std::int64_t d, F&& f) {
  if (d <= 32)
    f(std::integral_constant<int, 32>{});
  else if (d <= 64)
    f(std::integral_constant<int, 64>{});
  else if (d <= 128)
    f(std::integral_constant<int, 128>{});
  else
    f(std::integral_constant<int, 256>{});
}

// ---- BF16 tensor-core kernels (attention_train_tc.cu) ----
// Blocks of 4 warps; a query tile is 64 flattened rows (16 per warp), a key tile 64 keys.
constexpr int kTcRows = 64;
constexpr int kTcKeys = 64;
// The tensor-core path takes BF16 calls with head_dim a multiple of 8 up to kTcMaxHeadDim and
// 16-byte aligned tensors (tile rows move as 16-byte packs) whose kernels' shared memory fits
// the device, unless forced off for testing. The mma.sync kernels stop at kMmaMaxHeadDim
// (their accumulators live in registers); larger heads take the WMMA kernels.
constexpr int kTcMaxHeadDim = 256;
constexpr int kMmaMaxHeadDim = 128;
bool tc_usable(int d, std::initializer_list<const void*> ptrs);
void set_tc_enabled(bool enabled);
// f(std::integral_constant<int, DP>{}) for DP = 64 (d <= 64), 96 (d <= 96: Phi-3's heads),
// 128 (d <= 128) or, when MaxDP is 256, 256: the padded head sizes of the tensor-core kernels.
// d <= MaxDP is the caller's.
template <int MaxDP, typename F>
void dispatch_dp(int d, F&& f) {
  static_assert(MaxDP == 128 || MaxDP == 256, "padded head sizes are 64, 96, 128 and 256");
  if (d <= 64)
    f(std::integral_constant<int, 64>{});
  else if (d <= 96)
    f(std::integral_constant<int, 96>{});
  else if (MaxDP == 128 || d <= 128)
    f(std::integral_constant<int, 128>{});
  else if constexpr (MaxDP == 256)
    f(std::integral_constant<int, 256>{});
}
// Forward over one table of query tiles (kTcRows rows each). softcap > 0: scores soft-capped,
// softcap * tanh(s / softcap) (0: no cap), as in attention_train.cu.
void tc_forward(const SeqTable& qtiles, const detail::bf16* q, const detail::bf16* k, const detail::bf16* v, detail::bf16* out, float* lse, int d,
                int hq, int hkv, float scale, int window, float softcap);
// dK/dV over one table of key tiles (kTcKeys keys each) and dQ over the matching table of
// query tiles; delta = rowsum(dout * out) [N, Hq] must be computed already.
void tc_backward(const SeqTable& qtiles, const SeqTable& ktiles, const detail::bf16* q, const detail::bf16* k, const detail::bf16* v,
                 const detail::bf16* dout, const float* lse, const float* delta, detail::bf16* dq, detail::bf16* dk, detail::bf16* dv, int d, int hq,
                 int hkv, float scale, int window, float softcap);
// The same forward and backward (same tables, inputs and outputs) with the fragments in
// registers: mma.sync, ldmatrix and cp.async double buffering (attention_train_mma.cu); where
// tc_usable holds.
void mma_forward(const SeqTable& qtiles, const detail::bf16* q, const detail::bf16* k, const detail::bf16* v,
                 detail::bf16* out, float* lse, int d, int hq, int hkv, float scale, int window, float softcap);
void mma_backward(const SeqTable& qtiles, const SeqTable& ktiles, const detail::bf16* q, const detail::bf16* k,
                  const detail::bf16* v, const detail::bf16* dout, const float* lse, const float* delta, detail::bf16* dq,
                  detail::bf16* dk, detail::bf16* dv, int d, int hq, int hkv, float scale, int window, float softcap);

}  // namespace sppft::cuda::attn
