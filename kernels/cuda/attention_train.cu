// attention_forward_train and attention_backward on the GPU: causal grouped-query attention
// without a cache over packed training sequences, flash-attention style (no [T, T] matrix is
// ever stored), and its gradient.
//
// Math (kernels/ops.h). Sequence s covers rows [q_begin, q_begin + q_len) of q, k, v (past_len
// is 0); row t of it (position t) attends to keys j of the same sequence with j <= t and
// (window == 0 or t - j < window). Query head h reads KV head h / G, G = Hq / Hkv:
//   s_j = cap(scale * q[t, h] . k[j, h/G]),  cap(x) = softcap * tanh(x / softcap)
//   out[t, h] = sum_j softmax_j(s) v[j, h/G],  lse[t, h] = log sum_j exp(s_j)   (natural log)
// (cap is Gemma-2's soft-capping, applied to visible keys only; softcap == 0 means no cap and
// leaves every kernel's arithmetic as it is without one, bit for bit.)
// Backward, with P[t, j] = exp(s_j - lse[t]) recomputed and delta[t] = dout[t] . out[t]:
//   dv[j] = sum_{t, h in group} P[t, j] dout[t]
//   dS[t, j] = c_j P[t, j] (dout[t] . v[j] - delta[t]),  c_j = 1 - (s_j / softcap)^2 (1 uncapped)
//   dq[t] = scale sum_j dS[t, j] k[j],  dk[j] = scale sum_{t, h in group} dS[t, j] q[t]
// Shapes: q, out, dout, dq [N, Hq * D]; k, v, dk, dv [N, Hkv * D]; lse [N, Hq].
// dtypes: q, k, v, out (and dout, dq, dk, dv) all F32 or all BF16; lse F32; every
// arithmetic step in fp32 (BF16 is converted on load into shared memory and rounded once
// on store). D even, D <= 256: kernels for D padded to DMAX = 32, 64, 128 or 256.
// Rows not covered by any sequence are never read as queries nor written.
//
// Tiling. A "row" of a (sequence, KV head) is a pair (t, g) flattened as r = t * G + g
// (query head h = kvh * G + g), so the G query heads of a GQA group are neighbours and share
// every K/V tile loaded into shared memory (native GQA: K/V are never copied per head).
// Blocks have 8 warps (256 threads); grid = (tiles of all sequences of the launch, Hkv).
//   forward (one block = 32 rows): Q tile [32][DMAX] in shared memory; loops over K/V tiles
//     of 32 keys (the union of its rows' causal/window ranges). Each warp owns 4 rows
//     (rows warp + 8 i); lane j scores key j0 + j for them (q broadcast, float4 reads of a
//     K row padded by 4 floats: conflict-free), online softmax with warp shuffles (running
//     max m and sum l), then o += P V with lane owning dims lane + 32 c and p_j broadcast
//     by shuffle. Writes out = o / l and lse = m + log l.
//     Shared memory: 4 (32 DMAX + 32 (DMAX + 4) + 32 DMAX) bytes (96.5 KiB for DMAX = 256).
//   backward, three kernels in stream order:
//     1. delta: one block per covered row, one warp per head: delta = dout . out (fp32,
//        lanes then a fixed shuffle tree) into scratch [N, Hq].
//     2. dK/dV (one block = 32 keys of a (sequence, KV head)): K, V tiles stay in shared
//        memory; the block loops over the tiles of 32 query rows (all heads of the group)
//        that can see its keys (t from the first key to the last key + window - 1). Per
//        tile: Q, dO, lse, delta to shared memory; each warp scores 4 rows x 32 keys (as
//        the forward) and writes P and dS to shared [32][32]; then warp w owns keys
//        4w .. 4w + 3 with lane owning dims lane + 32 c and accumulates
//        dv += P[r, j] dout[r], dk += dS[r, j] q[r] over the tile's rows in order.
//        Shared memory: 4 (2 * 32 (DMAX + 4) + 2 * 32 DMAX + 2 * 32 * 32 + 2 * 32) bytes
//        (137 KiB for DMAX = 256, within sm_80's 163 KiB opt-in limit).
//     3. dQ (one block = 32 rows, as the forward): Q, dO tiles and the rows' lse, delta
//        stay; loops over K/V tiles recomputing s, P and dp = dout . v, then
//        dq += dS k with dS_j broadcast by shuffle. 4 (2 * 32 DMAX + 2 * 32 (DMAX + 4))
//        bytes (129 KiB for DMAX = 256).
// Determinism: no atomics anywhere. Every output element (out, lse, delta, dq, dk, dv) is
// accumulated by exactly one thread, over key tiles / query tiles in increasing order and
// within a tile in a fixed order; reductions across lanes use fixed shuffle trees. The work
// split depends only on the shapes and seqs, so the same inputs give bitwise the same outputs.
//
// Sequences travel as kernel parameters (a __grid_constant__ table of up to 32 per launch,
// as kernels/cuda/attention.cu), so the host span needs no copy and nothing synchronises
// (except detail::scratch growing the delta buffer, which frees the old one: first use only).
// DMAX = 256 backward tiles need more than the 99 KiB of shared memory of sm_86 / sm_89; there
// the launch fails with RuntimeFailure (the build targets sm_80 and sm_90a).
// BF16 calls with head_dim a multiple of 8 up to 256 (128 on sm_80 for want of shared memory)
// and 16-byte aligned tensors go to the tensor-core kernels of attention_train_tc.cu
// (same math and tiling scheme, WMMA products) or, when chosen, attention_train_mma.cu (head_dim
// up to 128); these kernels are the reference they are checked against, and take the rest.
#include <algorithm>
#include <atomic>
#include <climits>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/device_scratch.h"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using attn::SeqTable;
using attn::RowTile;
using attn::row_tile;
using attn::find_seq;
using attn::KeyTile;
using attn::key_tile;
using attn::load_row_stats;
using attn::make_tables;
using attn::allow_smem;
using attn::clamp_window;
using attn::dispatch_dmax;
using attn::row_dots;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;               // forward / dQ: (position, head) rows per warp
constexpr int kRows = kWarps * kRowsPerWarp;  // rows per query tile (32)
constexpr int kKeys = 32;                     // keys per K/V tile: one per lane in the score steps
constexpr int kKeysPerWarp = kKeys / kWarps;  // dK/dV: keys owned per warp
static_assert(kKeysPerWarp == 4, "the dK/dV kernel reads a warp's 4 probabilities as one float4");
static_assert(kRows == 32 && kKeys == 32, "the score steps map one key per lane");


// tile[r * STRIDE + e] = src(r)[e] for r < nrows and e < d, 0 for the rest of r < NR, e < DMAX.
// One warp per row, lanes along the row (coalesced), all threads of the block take part.
template <int NR, int DMAX, int STRIDE, typename T, typename F>
__device__ __forceinline__ void load_rows(float* tile, int nrows, int d, F&& src) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < NR; r += kWarps) {
    float* dst = tile + r * STRIDE;
    if (r < nrows) {
      const T* p = src(r);
      for (int e = lane; e < DMAX; e += 32) dst[e] = e < d ? detail::to_f32(p[e]) : 0.0f;
    } else {
      for (int e = lane; e < DMAX; e += 32) dst[e] = 0.0f;
    }
  }
}

// ---------------------------------------------------------------- forward
template <int DMAX>
constexpr std::size_t forward_smem_bytes() {
  return sizeof(float) * (kRows * DMAX + kKeys * (DMAX + 4) + kKeys * DMAX);
}

template <typename T, int DMAX>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                   float* __restrict__ lse, const __grid_constant__ SeqTable t, int d, int hq, int hkv, float scale,
                   int window, float softcap) {
  constexpr int KS = DMAX + 4;  // padded K row: float4 reads of 8 lanes hit distinct banks
  constexpr int C = DMAX / 32;  // output dims per lane
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // [kRows][DMAX]
  float* Ks = Qs + kRows * DMAX;                // [kKeys][KS]
  float* Vs = Ks + kKeys * KS;                  // [kKeys][DMAX]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const RowTile rt = row_tile<kRows>(t, d, hq, hkv, window);

  load_rows<kRows, DMAX, DMAX, T>(Qs, rt.nrows, d, [&](int r) { return q + rt.qrow(r) * d; });

  // This warp's rows: local rows warp + kWarps * i (interleaved, so few rows still spread over warps).
  bool act[kRowsPerWarp];
  int pos[kRowsPerWarp], first[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + kWarps * i;
    act[i] = r < rt.nrows;
    pos[i] = rt.pos(r);
    first[i] = window > 0 ? max(0, pos[i] - window + 1) : 0;
  }
  const bool warp_active = act[0];

  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][C];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) o[i][c] = 0.0f;
  }
  const int d4 = (d + 3) / 4;

  for (int j0 = rt.kb; j0 < rt.ke; j0 += kKeys) {
    const int nk = min(kKeys, rt.ke - j0);
    __syncthreads();  // the previous tile is consumed
    load_rows<kKeys, DMAX, KS, T>(Ks, nk, d, [&](int j) { return k + rt.kv(j0 + j); });
    load_rows<kKeys, DMAX, DMAX, T>(Vs, nk, d, [&](int j) { return v + rt.kv(j0 + j); });
    __syncthreads();
    if (!warp_active) continue;  // warp-uniform

    // Scores: lane = key j0 + lane, for each of the warp's rows.
    const int j = j0 + lane;
    float acc[kRowsPerWarp];
    row_dots<kRowsPerWarp, DMAX, kWarps>(Qs, warp, Ks + lane * KS, d4, acc);

    // Online softmax (all values warp-uniform except the per-lane score and p).
    float sc[kRowsPerWarp], p[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) sc[i] = act[i] && lane < nk && j >= first[i] && j <= pos[i] ? acc[i] * scale : -INFINITY;
    if (softcap > 0.0f) {  // uniform: Gemma-2's cap on the visible scores (a masked key stays -inf)
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i)
        sc[i] = act[i] && lane < nk && j >= first[i] && j <= pos[i] ? detail::soft_cap(acc[i] * scale, softcap) : -INFINITY;
    }
    detail::online_softmax_step(sc, m, l, o, p);

    // o += P V: key jj's probability broadcast from lane jj; lane owns dims lane + 32c.
    detail::accumulate_broadcast(p, Vs, DMAX, nk, o);
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    if (!act[i]) continue;
    const std::int64_t idx = rt.qrow(warp + kWarps * i);
    const float inv = 1.0f / l[i];  // l >= 1: the running max's key contributes exp(0)
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      if (e < d) out[idx * d + e] = detail::from_f32<T>(o[i][c] * inv);
    }
    if (lane == 0) lse[idx] = m[i] + logf(l[i]);
  }
}

// ---------------------------------------------------------------- backward: delta
// delta[n, h] = dout[n, h, :] . out[n, h, :] for the covered rows: one block per row, one
// warp per head.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    delta_kernel(const T* __restrict__ out, const T* __restrict__ dout, float* __restrict__ delta,
                 const __grid_constant__ SeqTable t, int d, int hq) {
  const int si = find_seq(t, blockIdx.x);
  const std::int64_t n = static_cast<std::int64_t>(t.q_begin[si]) + (blockIdx.x - t.start[si]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int h = warp; h < hq; h += kWarps) {
    const std::int64_t base = (n * hq + h) * d;
    float acc = 0.0f;
    for (int e = lane; e < d; e += 32) acc = fmaf(detail::to_f32(dout[base + e]), detail::to_f32(out[base + e]), acc);
    acc = detail::warp_sum(acc);
    if (lane == 0) delta[n * hq + h] = acc;
  }
}

// ---------------------------------------------------------------- backward: dK, dV
template <int DMAX>
constexpr std::size_t dkdv_smem_bytes() {
  return sizeof(float) * (2 * kKeys * (DMAX + 4) + 2 * kRows * DMAX + 2 * kRows * kKeys + 2 * kRows);
}

template <typename T, int DMAX>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
                const float* __restrict__ lse, const float* __restrict__ delta, T* __restrict__ dk,
                T* __restrict__ dv, const __grid_constant__ SeqTable t, int d, int hq, int hkv, float scale,
                int window, float softcap) {
  constexpr int KS = DMAX + 4;
  constexpr int C = DMAX / 32;
  extern __shared__ float4 smem4[];
  float* Ks = reinterpret_cast<float*>(smem4);  // [kKeys][KS]
  float* Vs = Ks + kKeys * KS;                  // [kKeys][KS]
  float* Qs = Vs + kKeys * KS;                  // [kRows][DMAX]
  float* dOs = Qs + kRows * DMAX;               // [kRows][DMAX]
  float* Ps = dOs + kRows * DMAX;               // [kRows][kKeys]
  float* dSs = Ps + kRows * kKeys;              // [kRows][kKeys]
  float* Ls = dSs + kRows * kKeys;              // [kRows] lse of the tile's rows
  float* Ds = Ls + kRows;                       // [kRows] delta of the tile's rows

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KeyTile kt = key_tile<kKeys>(t, d, hq, hkv, window);  // keys [k0, k0 + nk), rows [fr_begin, fr_end)
  const int k0 = kt.k0, nk = kt.nk, group = kt.group;
  load_rows<kKeys, DMAX, KS, T>(Ks, nk, d, [&](int j) { return k + kt.kv(j); });
  load_rows<kKeys, DMAX, KS, T>(Vs, nk, d, [&](int j) { return v + kt.kv(j); });

  float dka[kKeysPerWarp][C], dva[kKeysPerWarp][C];
#pragma unroll
  for (int i = 0; i < kKeysPerWarp; ++i)
#pragma unroll
    for (int c = 0; c < C; ++c) dka[i][c] = dva[i][c] = 0.0f;

  const int d4 = (d + 3) / 4;
  const int j = k0 + lane;  // the key this lane scores
  for (int fr0 = kt.fr_begin; fr0 < kt.fr_end; fr0 += kRows) {
    const int nrows = min(kRows, kt.fr_end - fr0);
    __syncthreads();  // the previous query tile is consumed
    load_rows<kRows, DMAX, DMAX, T>(Qs, nrows, d, [&](int r) { return q + kt.qrow(fr0 + r) * d; });
    load_rows<kRows, DMAX, DMAX, T>(dOs, nrows, d, [&](int r) { return dout + kt.qrow(fr0 + r) * d; });
    load_row_stats<kRows>(Ls, Ds, lse, delta, nrows, [&](int r) { return kt.qrow(fr0 + r); });
    __syncthreads();

    // P and dS for rows warp + kWarps * i and key j: written to shared memory.
    float s[kRowsPerWarp], dp[kRowsPerWarp];
    row_dots<kRowsPerWarp, DMAX, kWarps>(Qs, warp, Ks + lane * KS, d4, s);
    row_dots<kRowsPerWarp, DMAX, kWarps>(dOs, warp, Vs + lane * KS, d4, dp);
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const int r = warp + kWarps * i;
      const int tpos = (fr0 + r) / group;
      const bool ok = r < nrows && lane < nk && j <= tpos && (window == 0 || tpos - j < window);
      if (softcap > 0.0f) {  // uniform: capped score c, dS through the cap's slope 1 - (c / softcap)^2
        const float c = detail::soft_cap(s[i] * scale, softcap);
        const float p = ok ? expf(c - Ls[r]) : 0.0f;
        Ps[r * kKeys + lane] = p;
        dSs[r * kKeys + lane] = ok ? p * (dp[i] - Ds[r]) * detail::soft_cap_slope(c, softcap) : 0.0f;
      } else {
        const float p = ok ? expf(s[i] * scale - Ls[r]) : 0.0f;
        Ps[r * kKeys + lane] = p;
        dSs[r * kKeys + lane] = ok ? p * (dp[i] - Ds[r]) : 0.0f;
      }
    }
    __syncthreads();

    // dv[key] += P[r, key] dout[r], dk[key] += dS[r, key] q[r]: warp owns keys 4 warp .. 4 warp + 3.
    if (warp * kKeysPerWarp >= nk) continue;  // warp-uniform; the loop top syncs again
    for (int r = 0; r < nrows; ++r) {
      const float4 p4 = reinterpret_cast<const float4*>(Ps + r * kKeys)[warp];
      const float4 s4 = reinterpret_cast<const float4*>(dSs + r * kKeys)[warp];
      const float pk[kKeysPerWarp] = {p4.x, p4.y, p4.z, p4.w};
      const float sk[kKeysPerWarp] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const float go = dOs[r * DMAX + lane + 32 * c];
        const float qq = Qs[r * DMAX + lane + 32 * c];
#pragma unroll
        for (int i = 0; i < kKeysPerWarp; ++i) {
          dva[i][c] = fmaf(pk[i], go, dva[i][c]);
          dka[i][c] = fmaf(sk[i], qq, dka[i][c]);
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kKeysPerWarp; ++i) {
    const int jl = warp * kKeysPerWarp + i;
    if (jl >= nk) continue;
    const std::int64_t base = kt.kv(jl);
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      if (e < d) {
        dk[base + e] = detail::from_f32<T>(dka[i][c] * scale);
        dv[base + e] = detail::from_f32<T>(dva[i][c]);
      }
    }
  }
}

// ---------------------------------------------------------------- backward: dQ
template <int DMAX>
constexpr std::size_t dq_smem_bytes() {
  return sizeof(float) * (2 * kRows * DMAX + 2 * kKeys * (DMAX + 4));
}

template <typename T, int DMAX>
__global__ void __launch_bounds__(kThreads)
    dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
              const float* __restrict__ lse, const float* __restrict__ delta, T* __restrict__ dq,
              const __grid_constant__ SeqTable t, int d, int hq, int hkv, float scale, int window, float softcap) {
  constexpr int KS = DMAX + 4;
  constexpr int C = DMAX / 32;
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // [kRows][DMAX]
  float* dOs = Qs + kRows * DMAX;               // [kRows][DMAX]
  float* Ks = dOs + kRows * DMAX;               // [kKeys][KS]
  float* Vs = Ks + kKeys * KS;                  // [kKeys][KS]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const RowTile rt = row_tile<kRows>(t, d, hq, hkv, window);

  load_rows<kRows, DMAX, DMAX, T>(Qs, rt.nrows, d, [&](int r) { return q + rt.qrow(r) * d; });
  load_rows<kRows, DMAX, DMAX, T>(dOs, rt.nrows, d, [&](int r) { return dout + rt.qrow(r) * d; });

  bool act[kRowsPerWarp];
  int pos[kRowsPerWarp], first[kRowsPerWarp];
  float lrow[kRowsPerWarp], drow[kRowsPerWarp], acc[kRowsPerWarp][C];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + kWarps * i;
    act[i] = r < rt.nrows;
    pos[i] = rt.pos(r);
    first[i] = window > 0 ? max(0, pos[i] - window + 1) : 0;
    lrow[i] = act[i] ? lse[rt.qrow(r)] : 0.0f;
    drow[i] = act[i] ? delta[rt.qrow(r)] : 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[i][c] = 0.0f;
  }
  const bool warp_active = act[0];
  const int d4 = (d + 3) / 4;

  for (int j0 = rt.kb; j0 < rt.ke; j0 += kKeys) {
    const int nk = min(kKeys, rt.ke - j0);
    __syncthreads();  // the previous tile is consumed (first time: nothing)
    load_rows<kKeys, DMAX, KS, T>(Ks, nk, d, [&](int j) { return k + rt.kv(j0 + j); });
    load_rows<kKeys, DMAX, KS, T>(Vs, nk, d, [&](int j) { return v + rt.kv(j0 + j); });
    __syncthreads();
    if (!warp_active) continue;  // warp-uniform

    const int j = j0 + lane;
    float s[kRowsPerWarp], dp[kRowsPerWarp], ds[kRowsPerWarp];
    row_dots<kRowsPerWarp, DMAX, kWarps>(Qs, warp, Ks + lane * KS, d4, s);
    row_dots<kRowsPerWarp, DMAX, kWarps>(dOs, warp, Vs + lane * KS, d4, dp);
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const bool ok = act[i] && lane < nk && j >= first[i] && j <= pos[i];
      if (softcap > 0.0f) {  // uniform: capped score c, dS through the cap's slope 1 - (c / softcap)^2
        const float c = detail::soft_cap(s[i] * scale, softcap);
        ds[i] = ok ? expf(c - lrow[i]) * (dp[i] - drow[i]) * detail::soft_cap_slope(c, softcap) : 0.0f;
      } else {
        ds[i] = ok ? expf(s[i] * scale - lrow[i]) * (dp[i] - drow[i]) : 0.0f;
      }
    }

    // acc += dS K: key jj's dS broadcast from lane jj; lane owns dims lane + 32c.
    detail::accumulate_broadcast(ds, Ks, KS, nk, acc);
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    if (!act[i]) continue;
    const std::int64_t base = rt.qrow(warp + kWarps * i) * d;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      if (e < d) dq[base + e] = detail::from_f32<T>(acc[i][c] * scale);
    }
  }
}

// ---------------------------------------------------------------- host side

struct Dims {
  std::int64_t n, hq, hkv, d;
};

bool overlaps(const Tensor& a, const Tensor& b) {
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// Checks shared by both ops; dims from lse (Hq), q (D) and k (Hkv), as kernels/ops.cpp.
Dims check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                  std::span<const ops::AttentionSeq> seqs, const char* op) {
  detail::check_cuda_tensor(q, op, "q");
  detail::check_cuda_tensor(k, op, "k");
  detail::check_cuda_tensor(v, op, "v");
  detail::check_cuda_tensor(out, op, "out");
  detail::check_cuda_tensor(lse, op, "lse");
  detail::check(q.rank() == 2 && k.rank() == 2 && lse.rank() == 2, op, "q, k and lse must be 2-d");
  detail::check(lse.dtype() == DType::F32, op, "lse must be F32");
  const std::int64_t n = q.dim(0), hq = lse.dim(1);
  detail::check(lse.dim(0) == n && hq > 0 && q.dim(1) % hq == 0, op,
                "lse has shape " + shape_str(lse.shape()) + ", expected [N, Hq] with Hq dividing q's width");
  const std::int64_t d = q.dim(1) / hq;
  detail::check(d > 0 && d % 2 == 0 && d <= 256, op,
                "head_dim " + std::to_string(d) + " has no CUDA kernel (it must be even and <= 256)");
  detail::check(k.dim(0) == n && k.dim(1) % d == 0 && k.dim(1) > 0, op,
                "k has shape " + shape_str(k.shape()) + ", expected [N, Hkv * " + std::to_string(d) + "]");
  const std::int64_t hkv = k.dim(1) / d;
  detail::check(hq % hkv == 0, op, "Hq must be a multiple of Hkv");
  detail::check_shape(v, k.shape(), op, "v");
  detail::check_shape(out, q.shape(), op, "out");
  detail::check_float(q, op, "q");
  detail::check(k.dtype() == q.dtype() && v.dtype() == q.dtype() && out.dtype() == q.dtype(), op,
                "q, k, v and out must share one dtype (F32 or BF16)");
  detail::check(n < INT_MAX && n * hq < INT_MAX && hkv < 65536, op, "too many rows or heads for int32 indices");
  for (const auto& s : seqs) {
    detail::check(s.past_len == 0, op, "training attention needs past_len == 0");
    detail::check(s.q_begin >= 0 && s.q_len >= 0 && s.q_begin + s.q_len <= n, op,
                  "sequence rows [" + std::to_string(s.q_begin) + ", " + std::to_string(s.q_begin + s.q_len) +
                      ") outside the " + std::to_string(n) + " rows");
  }
  return {n, hq, hkv, d};
}

}  // namespace

namespace {
std::atomic<bool> g_mma{false};  // tensor-core path on mma.sync instead of WMMA

// The kernels a BF16 call with head_dim d and these tensors takes: tensor cores where their
// tiles fit (mma.sync when chosen and d <= attn::kMmaMaxHeadDim, else WMMA), else CUDA cores.
// The one decision the ops follow and training_attention_kernels reports.
AttentionKernels bf16_kernels(int d, std::initializer_list<const void*> ptrs) {
  if (!attn::tc_usable(d, ptrs)) return AttentionKernels::cuda_cores;
  return g_mma && d <= attn::kMmaMaxHeadDim ? AttentionKernels::mma_sync : AttentionKernels::tensor_cores;
}
}  // namespace

void set_attention_kernels(AttentionKernels kernels) {
  attn::set_tc_enabled(kernels != AttentionKernels::cuda_cores);
  g_mma = kernels == AttentionKernels::mma_sync;
}

AttentionKernels training_attention_kernels(std::int64_t head_dim) {
  return bf16_kernels(static_cast<int>(std::min<std::int64_t>(head_dim, INT_MAX)), {});
}

void attention_forward_train(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs,
                             float scale, std::int64_t window, Tensor& out, Tensor& lse, float softcap) {
  const char* op = "attention_forward_train";
  const Dims dm = check_inputs(q, k, v, out, lse, seqs, op);
  detail::check(softcap >= 0.0f, op, "softcap must be >= 0");
  for (const Tensor* in : {&q, &k, &v}) {
    detail::check(!overlaps(out, *in), op, "out must not alias q, k or v");
    detail::check(!overlaps(lse, *in), op, "lse must not alias q, k or v");
  }
  detail::check(!overlaps(out, lse), op, "out and lse must be distinct buffers");

  const int group = static_cast<int>(dm.hq / dm.hkv), win = clamp_window(window, dm.n);
  const int d = static_cast<int>(dm.d), hq = static_cast<int>(dm.hq), hkv = static_cast<int>(dm.hkv);
  const AttentionKernels path = q.dtype() == DType::BF16 ? bf16_kernels(d, {q.raw(), k.raw(), v.raw(), out.raw()})
                                                         : AttentionKernels::cuda_cores;
  if (path != AttentionKernels::cuda_cores) {
    for (const SeqTable& t : make_tables(seqs, [&](const ops::AttentionSeq& s) {
           return (s.q_len * group + attn::kTcRows - 1) / attn::kTcRows;
         }))
      (path == AttentionKernels::mma_sync ? attn::mma_forward : attn::tc_forward)(t, q.data<detail::bf16>(), k.data<detail::bf16>(),
                                                             v.data<detail::bf16>(), out.data<detail::bf16>(),
                                                             lse.data<float>(), d, hq, hkv, scale, win, softcap);
    return;
  }
  const auto tables = make_tables(seqs, [&](const ops::AttentionSeq& s) { return (s.q_len * group + kRows - 1) / kRows; });
  cudaStream_t st = detail::stream();
  for (const SeqTable& t : tables) {
    const dim3 grid(static_cast<unsigned>(t.start[t.count]), static_cast<unsigned>(hkv));
    detail::dispatch_float(q.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      dispatch_dmax(dm.d, [&](auto dmax) {
        constexpr int DMAX = decltype(dmax)::value;
        constexpr std::size_t smem = forward_smem_bytes<DMAX>();
        auto kernel = forward_kernel<T, DMAX>;
        allow_smem(kernel, smem);
        kernel<<<grid, kThreads, smem, st>>>(q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<float>(), t,
                                             d, hq, hkv, scale, win, softcap);
        detail::check_launch();
      });
    });
  }
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window,
                        Tensor& dq, Tensor& dk, Tensor& dv, float softcap) {
  const char* op = "attention_backward";
  const Dims dm = check_inputs(q, k, v, out, lse, seqs, op);
  detail::check(softcap >= 0.0f, op, "softcap must be >= 0");
  detail::check_cuda_tensor(dout, op, "dout");
  detail::check_cuda_tensor(dq, op, "dq");
  detail::check_cuda_tensor(dk, op, "dk");
  detail::check_cuda_tensor(dv, op, "dv");
  detail::check_shape(dout, q.shape(), op, "dout");
  detail::check_shape(dq, q.shape(), op, "dq");
  detail::check_shape(dk, k.shape(), op, "dk");
  detail::check_shape(dv, v.shape(), op, "dv");
  detail::check(dout.dtype() == q.dtype() && dq.dtype() == q.dtype() && dk.dtype() == q.dtype() &&
                    dv.dtype() == q.dtype(),
                op, "dout, dq, dk and dv must have q's dtype (all F32 or all BF16)");
  for (const Tensor* g : {&dq, &dk, &dv})
    for (const Tensor* in : {&q, &k, &v, &out, &lse, &dout})
      detail::check(!overlaps(*g, *in), op, "dq, dk and dv must not alias an input");
  detail::check(!overlaps(dq, dk) && !overlaps(dq, dv) && !overlaps(dk, dv), op,
                "dq, dk and dv must be distinct buffers");

  const int group = static_cast<int>(dm.hq / dm.hkv), win = clamp_window(window, dm.n);
  const int d = static_cast<int>(dm.d), hq = static_cast<int>(dm.hq), hkv = static_cast<int>(dm.hkv);
  const auto row_tables = make_tables(seqs, [](const ops::AttentionSeq& s) { return s.q_len; });
  if (row_tables.empty()) return;
  const AttentionKernels path =
      q.dtype() == DType::BF16 ? bf16_kernels(d, {q.raw(), k.raw(), v.raw(), dout.raw(), dq.raw(), dk.raw(), dv.raw()})
                               : AttentionKernels::cuda_cores;
  const bool tc = path != AttentionKernels::cuda_cores;
  const int q_tile = tc ? attn::kTcRows : kRows, k_tile = tc ? attn::kTcKeys : kKeys;
  const auto qtile_tables =
      make_tables(seqs, [&](const ops::AttentionSeq& s) { return (s.q_len * group + q_tile - 1) / q_tile; });
  const auto ktile_tables = make_tables(seqs, [&](const ops::AttentionSeq& s) { return (s.q_len + k_tile - 1) / k_tile; });
  float* delta = static_cast<float*>(detail::scratch(device_scratch::attention_backward(dm.n, dm.hq)));

  cudaStream_t st = detail::stream();
  for (std::size_t ti = 0; ti < row_tables.size(); ++ti) {
    const SeqTable& rows = row_tables[ti];
    const SeqTable& qtiles = qtile_tables[ti];
    const SeqTable& ktiles = ktile_tables[ti];
    detail::dispatch_float(q.dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      // 1. delta for this chunk's rows (its sequences are read only by its own dK/dV and dQ).
      delta_kernel<T><<<static_cast<unsigned>(rows.start[rows.count]), kThreads, 0, st>>>(
          out.data<T>(), dout.data<T>(), delta, rows, d, hq);
      detail::check_launch();
      if constexpr (std::is_same_v<T, detail::bf16>) {
        if (tc) {
          (path == AttentionKernels::mma_sync ? attn::mma_backward : attn::tc_backward)(qtiles, ktiles, q.data<T>(), k.data<T>(), v.data<T>(),
                                                           dout.data<T>(), lse.data<float>(), delta, dq.data<T>(),
                                                           dk.data<T>(), dv.data<T>(), d, hq, hkv, scale, win, softcap);
          return;
        }
      }
      dispatch_dmax(dm.d, [&](auto dmax) {
        constexpr int DMAX = decltype(dmax)::value;
        // 2. dK, dV: one block per key tile.
        constexpr std::size_t kv_smem = dkdv_smem_bytes<DMAX>();
        auto kv_kernel = dkdv_kernel<T, DMAX>;
        allow_smem(kv_kernel, kv_smem);
        kv_kernel<<<dim3(static_cast<unsigned>(ktiles.start[ktiles.count]), static_cast<unsigned>(hkv)), kThreads,
                    kv_smem, st>>>(q.data<T>(), k.data<T>(), v.data<T>(), dout.data<T>(), lse.data<float>(), delta,
                                   dk.data<T>(), dv.data<T>(), ktiles, d, hq, hkv, scale, win, softcap);
        detail::check_launch();
        // 3. dQ: one block per query-row tile.
        constexpr std::size_t q_smem = dq_smem_bytes<DMAX>();
        auto q_kernel = dq_kernel<T, DMAX>;
        allow_smem(q_kernel, q_smem);
        q_kernel<<<dim3(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv)), kThreads,
                   q_smem, st>>>(q.data<T>(), k.data<T>(), v.data<T>(), dout.data<T>(), lse.data<float>(), delta,
                                 dq.data<T>(), qtiles, d, hq, hkv, scale, win, softcap);
        detail::check_launch();
      });
    });
  }
}

}  // namespace sppft::cuda
