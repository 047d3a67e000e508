// BF16 tensor-core training attention: the forward and backward of attention_train.cu (same
// math, masks, GQA row flattening r = t * G + g, sequence tables and determinism) with the
// matrix products of every tile on tensor cores through WMMA (16x16x16, bf16 in, fp32
// accumulate), for head_dim d a multiple of 8 up to 256, zero-padded to DP = 64, 96, 128 or 256.
// Gemma-2's soft-capping as there: with softcap > 0 every visible score s = scale q.k becomes
// c = softcap * tanh(s / softcap) (masked ones stay -inf) before the softmax, and the backward
// multiplies dS by the cap's slope 1 - (c / softcap)^2; softcap == 0 runs the uncapped
// arithmetic unchanged (a uniform branch).
//
// Blocks of 4 warps (128 threads). Query tiles: 64 flattened rows, warp w owning rows
// 16w .. 16w + 15; key tiles: 64 keys. Tiles are staged in shared memory as bf16 rows padded
// by 8 elements (WMMA needs 32-byte aligned fragments; the pad also spreads banks), moved as
// 16-byte packs. Element-wise steps go by lane pairs: lane 2i and 2i + 1 own row i of the
// warp's 16, each half of the columns.
//
// forward (block = 64 rows of a (sequence, KV head)), per key tile:
//   S_w = Q_w K^T (16 x 64, fp32) to shared; the lane pair takes its row: masked (and capped) scores,
//   running max m and sum l (fp32), P = exp(s - m) rounded to bf16 into shared, the row of the
//   warp's O (fp32 in shared) scaled by exp(m_old - m_new); then O_w += P_w V on tensor cores
//   (accumulator fragments loaded from shared and stored back, 128 columns at a time). End:
//   out = O / l, lse = m + log l.
//   Shared memory: 2 (3 * 64 (DP + 8) + 64 (64 + 8)) + 4 (64 (64 + 4) + 64 (DP + 4)) bytes
//   (110 KiB for DP = 128, 190 KiB for DP = 256).
// backward (delta = rowsum(dO * O) first, by attention_train.cu's kernel):
//   dK/dV (block = 64 keys; warp w owns keys 16w .. 16w + 15 and keeps dK, dV in fragments)
//     over the query tiles that can see the keys, in increasing order:
//     S^T_w = K_w Q^T and dP^T_w = V_w dO^T (16 x 64 each); P^T = exp(scale S^T - lse) and
//     dS^T = P^T (dP^T - delta) (0 where masked; times the cap's slope), rounded to bf16; dV_w += P^T_w dO,
//     dK_w += dS^T_w Q. End: dk = scale dK, dv = dV (staged through shared).
//     Shared memory: 2 (4 * 64 (DP + 8) + 2 * 64 (64 + 8)) + 4 (2 * 64 (64 + 4) + 2 * 64)
//     bytes (120.5 KiB for DP = 128, 184.5 KiB for DP = 256).
//   dQ (block = 64 rows; warp w owns rows 16w ..), per key tile: S_w = Q_w K^T,
//     dP_w = dO_w V^T, dS as above, dQ_w += dS_w K. End: dq = scale dQ.
//     Shared memory: 2 (4 * 64 (DP + 8) + 64 (64 + 8)) + 4 (2 * 64 (64 + 4) + 2 * 64) bytes
//     (175.5 KiB for DP = 256).
//   DP = 256: a block of either kernel accumulates 128 of the output columns (blockIdx.z
//     says which; kOutCols): 16 accumulator fragments of dK and dV would be 256 registers a
//     thread, and a warp stages its output in its score rows, which hold 136 floats a row.
//     Both column blocks compute the whole S and dP (reductions over all of DP).
// DP = 256 needs the 227 KiB of shared memory of sm_90 (H100, H200); elsewhere tc_usable is
// false and such heads take the CUDA-core kernels.
// Precision: bf16 products are exact in fp32 and accumulate in fp32; P and dS are rounded to
// bf16 before entering a product (as flash-attention does); m, l, lse, delta, the masks and
// every accumulator stay fp32.
// Determinism: each output element comes from one warp's fragments, accumulated over tiles
// in a fixed order; no atomics; the work split depends only on shapes and sequences.
#include <mma.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <type_traits>

#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace sppft::cuda::attn {

namespace {

using namespace nvcuda;
using detail::bf16;

constexpr int kTcWarps = 4;
constexpr int kTcThreads = 32 * kTcWarps;
constexpr int kWarpRows = kTcRows / kTcWarps;
constexpr int kKeyBlocks = kTcKeys / 16;  // 16-wide fragments across a key tile
constexpr int kLdS = kTcKeys + 4;         // fp32 rows of 64 scores
constexpr int kLdP = kTcKeys + 8;         // bf16 rows of 64 probabilities
static_assert(kWarpRows == 16 && kTcRows == kTcKeys && kTcKeys == 64, "lane pairs own one of 16 rows, 32 columns each");

// Output columns a block (backward) or one accumulator pass (forward) takes, and how many
// such column blocks DP has: the backward grids' z extent.
template <int DP>
constexpr int kOutCols = DP < 128 ? DP : 128;
template <int DP>
constexpr int kColBlocks = DP / kOutCols<DP>;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// tile[r][0, DP) = src(r)[0, d) then zeros for r < nrows; zero rows for nrows <= r < NR.
// 16-byte packs (d % 8 == 0 and src rows 16-byte aligned), all threads of the block.
template <int NR, int DP, typename F>
__device__ __forceinline__ void load_tile(bf16* tile, int nrows, int d, F&& src) {
  constexpr int kPacks = DP / 8, LD = DP + 8;
  for (int i = threadIdx.x; i < NR * kPacks; i += kTcThreads) {
    const int r = i / kPacks, c = (i % kPacks) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < nrows && c < d) val = *reinterpret_cast<const uint4*>(src(r) + c);
    *reinterpret_cast<uint4*>(tile + r * LD + c) = val;
  }
}

// out[16][16 NB] (fp32 in shared, row stride ldo) = A[16][16 KB] B^T, where A and B are
// bf16 row-major in shared (B is [16 NB][16 KB]): scores from two row-major tiles.
template <int KB, int NB>
__device__ __forceinline__ void mma_abt(const bf16* a, int lda, const bf16* b, int ldb, float* out, int ldo) {
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    FragC c;
    wmma::fill_fragment(c, 0.0f);
#pragma unroll
    for (int kb = 0; kb < KB; ++kb) {
      FragA fa;
      FragBCol fb;  // (k, n) = b[16 nb + n][16 kb + k]
      wmma::load_matrix_sync(fa, a + 16 * kb, lda);
      wmma::load_matrix_sync(fb, b + 16 * nb * ldb + 16 * kb, ldb);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(out + 16 * nb, c, ldo, wmma::mem_row_major);
  }
}

// acc[nb] += A[16][16 KB] B[16 KB][16 NB], both bf16 row-major in shared.
template <int KB, int NB>
__device__ __forceinline__ void mma_acc(FragC (&acc)[NB], const bf16* a, int lda, const bf16* b, int ldb) {
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
    FragA fa;
    wmma::load_matrix_sync(fa, a + 16 * kb, lda);
#pragma unroll
    for (int nb = 0; nb < NB; ++nb) {
      FragBRow fb;  // (k, n) = b[16 kb + k][16 nb + n]
      wmma::load_matrix_sync(fb, b + 16 * kb * ldb + 16 * nb, ldb);
      wmma::mma_sync(acc[nb], fa, fb, acc[nb]);
    }
  }
}

// Writes the lane pair's row of a warp's fp32 accumulators (staged in shared) times `mul` to
// dst[0, ncols) as bf16, 16-byte packs alternating between the pair.
__device__ __forceinline__ void store_row(const float* staged_row, float mul, int ncols, int half, bf16* dst) {
  for (int e = half * 8; e < ncols; e += 16) {
    float vals[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) vals[i] = staged_row[e + i] * mul;
    detail::store8(dst + e, vals);
  }
}

// ---------------------------------------------------------------- forward
template <int DP>
constexpr std::size_t forward_smem() {
  return sizeof(bf16) * (3 * kTcRows * (DP + 8) + kTcRows * kLdP) + sizeof(float) * (kTcRows * kLdS + kTcRows * (DP + 4));
}

template <int DP>
__global__ void __launch_bounds__(kTcThreads)
    tc_forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                      bf16* __restrict__ out, float* __restrict__ lse, const __grid_constant__ SeqTable t, int d,
                      int hq, int hkv, float scale, int window, float softcap) {
  constexpr int LDT = DP + 8, LDO = DP + 4, NB = DP / 16, OC = kOutCols<DP>;
  extern __shared__ __align__(128) unsigned char tc_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(tc_smem);  // [64][LDT]
  bf16* Ks = Qs + kTcRows * LDT;                 // [64][LDT]
  bf16* Vs = Ks + kTcKeys * LDT;                 // [64][LDT]
  bf16* Ps = Vs + kTcKeys * LDT;                 // [4 warps][16][kLdP]
  float* Ss = reinterpret_cast<float*>(Ps + kTcRows * kLdP);  // [4 warps][16][kLdS]
  float* Os = Ss + kTcRows * kLdS;                              // [4 warps][16][LDO]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const RowTile rt = row_tile<kTcRows>(t, d, hq, hkv, window);
  load_tile<kTcRows, DP>(Qs, rt.nrows, d, [&](int r) { return q + rt.qrow(r) * d; });

  const bf16* Qw = Qs + warp * kWarpRows * LDT;
  bf16* Pw = Ps + warp * kWarpRows * kLdP;
  float* Sw = Ss + warp * kWarpRows * kLdS;
  float* Ow = Os + warp * kWarpRows * LDO;
  const int row = lane / 2, half = lane % 2;  // this lane pair's row of the warp's 16
  const int r_local = warp * kWarpRows + row;
  const int pos = rt.pos(r_local);
  const int first = window > 0 ? max(0, pos - window + 1) : 0;
  float* orow = Ow + row * LDO;
  for (int e = half * (DP / 2); e < (half + 1) * (DP / 2); ++e) orow[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;

  for (int j0 = rt.kb; j0 < rt.ke; j0 += kTcKeys) {
    const int nk = min(kTcKeys, rt.ke - j0);
    __syncthreads();  // every warp is done with the previous K/V tile
    load_tile<kTcKeys, DP>(Ks, nk, d, [&](int j) { return k + rt.kv(j0 + j); });
    load_tile<kTcKeys, DP>(Vs, nk, d, [&](int j) { return v + rt.kv(j0 + j); });
    __syncthreads();
    mma_abt<NB, kKeyBlocks>(Qw, LDT, Ks, LDT, Sw, kLdS);
    __syncwarp();

    const float* srow = Sw + row * kLdS + half * 32;
    float sc[32];
    float mx = -INFINITY;
    if (softcap > 0.0f) {  // uniform: the cap on the visible scores (a masked key stays -inf)
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const int kl = half * 32 + c, j = j0 + kl;
        sc[c] = kl < nk && j >= first && j <= pos ? detail::soft_cap(srow[c] * scale, softcap) : -INFINITY;
        mx = fmaxf(mx, sc[c]);
      }
    } else {
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const int kl = half * 32 + c, j = j0 + kl;
        sc[c] = kl < nk && j >= first && j <= pos ? srow[c] * scale : -INFINITY;
        mx = fmaxf(mx, sc[c]);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_new = fmaxf(m, mx);
    const bool none = m_new == -INFINITY;  // no key seen yet by this row
    const float alpha = none ? 1.0f : __expf(m - m_new);
    bf16* prow = Pw + row * kLdP + half * 32;
    float sum = 0.0f;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const float p = none ? 0.0f : __expf(sc[c] - m_new);
      prow[c] = __float2bfloat16_rn(p);
      sum += p;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = m_new;
    for (int e = half * (DP / 2); e < (half + 1) * (DP / 2); ++e) orow[e] *= alpha;
    __syncwarp();

#pragma unroll
    for (int c0 = 0; c0 < DP; c0 += OC) {
      FragC acc[OC / 16];
#pragma unroll
      for (int nb = 0; nb < OC / 16; ++nb) wmma::load_matrix_sync(acc[nb], Ow + c0 + 16 * nb, LDO, wmma::mem_row_major);
      mma_acc<kKeyBlocks, OC / 16>(acc, Pw, kLdP, Vs + c0, LDT);
#pragma unroll
      for (int nb = 0; nb < OC / 16; ++nb) wmma::store_matrix_sync(Ow + c0 + 16 * nb, acc[nb], LDO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (r_local < rt.nrows) {
    const std::int64_t idx = rt.qrow(r_local);
    store_row(orow, 1.0f / l, d, half, out + idx * d);  // l >= 1: the running max's key gives exp(0)
    if (half == 0) lse[idx] = m + logf(l);
  }
}

// ---------------------------------------------------------------- backward: dK, dV
template <int DP>
constexpr std::size_t dkdv_smem() {
  return sizeof(bf16) * (4 * kTcRows * (DP + 8) + 2 * kTcRows * kLdP) + sizeof(float) * (2 * kTcRows * kLdS + 2 * kTcRows);
}

template <int DP>
__global__ void __launch_bounds__(kTcThreads)
    tc_dkdv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                   const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                   bf16* __restrict__ dk, bf16* __restrict__ dv, const __grid_constant__ SeqTable t, int d, int hq,
                   int hkv, float scale, int window, float softcap) {
  constexpr int LDT = DP + 8, NB = DP / 16, OC = kOutCols<DP>, LDO = OC + 4;
  static_assert(kWarpRows * LDO <= 2 * kWarpRows * kLdS, "the output staging reuses a warp's score rows");
  extern __shared__ __align__(128) unsigned char tc_smem[];
  bf16* Ks = reinterpret_cast<bf16*>(tc_smem);  // [64][LDT]
  bf16* Vs = Ks + kTcKeys * LDT;
  bf16* Qs = Vs + kTcKeys * LDT;
  bf16* dOs = Qs + kTcRows * LDT;
  bf16* Pb = dOs + kTcRows * LDT;                          // [4 warps][2][16][kLdP]: P^T, dS^T
  float* Ws = reinterpret_cast<float*>(Pb + 2 * kTcRows * kLdP);  // [4 warps][2][16][kLdS]: S^T, dP^T
  float* Ls = Ws + 2 * kTcRows * kLdS;                            // [64] lse of the query tile's rows
  float* Ds = Ls + kTcRows;                                       // [64] delta

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const KeyTile kt = key_tile<kTcKeys>(t, d, hq, hkv, window);  // keys [k0, k0 + nk), rows [fr_begin, fr_end)
  const int k0 = kt.k0, nk = kt.nk, group = kt.group;
  load_tile<kTcKeys, DP>(Ks, nk, d, [&](int j) { return k + kt.kv(j); });
  load_tile<kTcKeys, DP>(Vs, nk, d, [&](int j) { return v + kt.kv(j); });

  const bf16* Kw = Ks + warp * kWarpRows * LDT;
  const bf16* Vw = Vs + warp * kWarpRows * LDT;
  bf16* PTw = Pb + warp * 2 * kWarpRows * kLdP;
  bf16* dSTw = PTw + kWarpRows * kLdP;
  float* STw = Ws + warp * 2 * kWarpRows * kLdS;
  float* dPTw = STw + kWarpRows * kLdS;
  const int krow = lane / 2, half = lane % 2;  // this lane pair's key of the warp's 16
  const int j = k0 + warp * kWarpRows + krow;
  const int c0 = blockIdx.z * OC;  // this block's output columns [c0, c0 + OC)

  FragC dk_acc[OC / 16], dv_acc[OC / 16];
#pragma unroll
  for (int nb = 0; nb < OC / 16; ++nb) {
    wmma::fill_fragment(dk_acc[nb], 0.0f);
    wmma::fill_fragment(dv_acc[nb], 0.0f);
  }

  for (int fr0 = kt.fr_begin; fr0 < kt.fr_end; fr0 += kTcRows) {
    const int nrows = min(kTcRows, kt.fr_end - fr0);
    __syncthreads();  // every warp is done with the previous query tile
    load_tile<kTcRows, DP>(Qs, nrows, d, [&](int r) { return q + kt.qrow(fr0 + r) * d; });
    load_tile<kTcRows, DP>(dOs, nrows, d, [&](int r) { return dout + kt.qrow(fr0 + r) * d; });
    load_row_stats<kTcRows>(Ls, Ds, lse, delta, nrows, [&](int r) { return kt.qrow(fr0 + r); });
    __syncthreads();
    mma_abt<NB, kTcRows / 16>(Kw, LDT, Qs, LDT, STw, kLdS);   // S^T: [16 keys][64 rows]
    mma_abt<NB, kTcRows / 16>(Vw, LDT, dOs, LDT, dPTw, kLdS);  // dP^T
    __syncwarp();
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const int rl = half * 32 + c;
      const int tpos = (fr0 + rl) / group;
      const bool seen = rl < nrows && j < k0 + nk && j <= tpos && (window == 0 || tpos - j < window);
      float p, ds;
      if (softcap > 0.0f) {  // uniform: capped score cs, dS through the cap's slope
        const float cs = detail::soft_cap(STw[krow * kLdS + rl] * scale, softcap);
        p = seen ? __expf(cs - Ls[rl]) : 0.0f;
        ds = seen ? p * (dPTw[krow * kLdS + rl] - Ds[rl]) * detail::soft_cap_slope(cs, softcap) : 0.0f;
      } else {
        p = seen ? __expf(STw[krow * kLdS + rl] * scale - Ls[rl]) : 0.0f;
        ds = p * (dPTw[krow * kLdS + rl] - Ds[rl]);
      }
      PTw[krow * kLdP + rl] = __float2bfloat16_rn(p);
      dSTw[krow * kLdP + rl] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    mma_acc<kTcRows / 16, OC / 16>(dv_acc, PTw, kLdP, dOs + c0, LDT);
    mma_acc<kTcRows / 16, OC / 16>(dk_acc, dSTw, kLdP, Qs + c0, LDT);
  }

  // Stage through the warp's own score rows (no other warp touches them) and write.
  __syncwarp();
  const bool key_ok = warp * kWarpRows + krow < nk;
  const std::int64_t out_off = kt.kv(warp * kWarpRows + krow) + c0;
  const int ncols = min(OC, d - c0);  // >= 8: a DP = 256 head has d > 128
#pragma unroll
  for (int nb = 0; nb < OC / 16; ++nb) wmma::store_matrix_sync(STw + 16 * nb, dk_acc[nb], LDO, wmma::mem_row_major);
  __syncwarp();
  if (key_ok) store_row(STw + krow * LDO, scale, ncols, half, dk + out_off);
  __syncwarp();
#pragma unroll
  for (int nb = 0; nb < OC / 16; ++nb) wmma::store_matrix_sync(STw + 16 * nb, dv_acc[nb], LDO, wmma::mem_row_major);
  __syncwarp();
  if (key_ok) store_row(STw + krow * LDO, 1.0f, ncols, half, dv + out_off);
}

// ---------------------------------------------------------------- backward: dQ
template <int DP>
constexpr std::size_t dq_smem() {
  return sizeof(bf16) * (4 * kTcRows * (DP + 8) + kTcRows * kLdP) + sizeof(float) * (2 * kTcRows * kLdS + 2 * kTcRows);
}

template <int DP>
__global__ void __launch_bounds__(kTcThreads)
    tc_dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                 const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                 bf16* __restrict__ dq, const __grid_constant__ SeqTable t, int d, int hq, int hkv, float scale,
                 int window, float softcap) {
  constexpr int LDT = DP + 8, NB = DP / 16, OC = kOutCols<DP>, LDO = OC + 4;
  static_assert(kWarpRows * LDO <= 2 * kWarpRows * kLdS, "the output staging reuses a warp's score rows");
  extern __shared__ __align__(128) unsigned char tc_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(tc_smem);  // [64][LDT]
  bf16* dOs = Qs + kTcRows * LDT;
  bf16* Ks = dOs + kTcRows * LDT;
  bf16* Vs = Ks + kTcKeys * LDT;
  bf16* dSs = Vs + kTcKeys * LDT;                              // [4 warps][16][kLdP]
  float* Ws = reinterpret_cast<float*>(dSs + kTcRows * kLdP);  // [4 warps][2][16][kLdS]: S, dP
  float* Ls = Ws + 2 * kTcRows * kLdS;
  float* Ds = Ls + kTcRows;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const RowTile rt = row_tile<kTcRows>(t, d, hq, hkv, window);
  load_tile<kTcRows, DP>(Qs, rt.nrows, d, [&](int r) { return q + rt.qrow(r) * d; });
  load_tile<kTcRows, DP>(dOs, rt.nrows, d, [&](int r) { return dout + rt.qrow(r) * d; });
  load_row_stats<kTcRows>(Ls, Ds, lse, delta, rt.nrows, [&](int r) { return rt.qrow(r); });

  const bf16* Qw = Qs + warp * kWarpRows * LDT;
  const bf16* dOw = dOs + warp * kWarpRows * LDT;
  bf16* dSw = dSs + warp * kWarpRows * kLdP;
  float* Sw = Ws + warp * 2 * kWarpRows * kLdS;
  float* dPw = Sw + kWarpRows * kLdS;
  const int row = lane / 2, half = lane % 2;
  const int r_local = warp * kWarpRows + row;
  const bool row_ok = r_local < rt.nrows;
  const int pos = rt.pos(r_local);
  const int first = window > 0 ? max(0, pos - window + 1) : 0;
  const int c0 = blockIdx.z * OC;  // this block's output columns [c0, c0 + OC)

  FragC dq_acc[OC / 16];
#pragma unroll
  for (int nb = 0; nb < OC / 16; ++nb) wmma::fill_fragment(dq_acc[nb], 0.0f);

  for (int j0 = rt.kb; j0 < rt.ke; j0 += kTcKeys) {
    const int nk = min(kTcKeys, rt.ke - j0);
    __syncthreads();  // every warp is done with the previous K/V tile (and Ls/Ds are written)
    load_tile<kTcKeys, DP>(Ks, nk, d, [&](int j) { return k + rt.kv(j0 + j); });
    load_tile<kTcKeys, DP>(Vs, nk, d, [&](int j) { return v + rt.kv(j0 + j); });
    __syncthreads();
    mma_abt<NB, kKeyBlocks>(Qw, LDT, Ks, LDT, Sw, kLdS);
    mma_abt<NB, kKeyBlocks>(dOw, LDT, Vs, LDT, dPw, kLdS);
    __syncwarp();
    const float lse_r = Ls[r_local], delta_r = Ds[r_local];
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      const int kl = half * 32 + c, j = j0 + kl;
      const bool seen = row_ok && kl < nk && j >= first && j <= pos;
      if (softcap > 0.0f) {  // uniform: capped score cs, dS through the cap's slope
        const float cs = detail::soft_cap(Sw[row * kLdS + kl] * scale, softcap);
        const float p = seen ? __expf(cs - lse_r) : 0.0f;
        dSw[row * kLdP + kl] =
            __float2bfloat16_rn(seen ? p * (dPw[row * kLdS + kl] - delta_r) * detail::soft_cap_slope(cs, softcap) : 0.0f);
      } else {
        const float p = seen ? __expf(Sw[row * kLdS + kl] * scale - lse_r) : 0.0f;
        dSw[row * kLdP + kl] = __float2bfloat16_rn(p * (dPw[row * kLdS + kl] - delta_r));
      }
    }
    __syncwarp();
    mma_acc<kKeyBlocks, OC / 16>(dq_acc, dSw, kLdP, Ks + c0, LDT);
  }

  __syncwarp();
#pragma unroll
  for (int nb = 0; nb < OC / 16; ++nb) wmma::store_matrix_sync(Sw + 16 * nb, dq_acc[nb], LDO, wmma::mem_row_major);
  __syncwarp();
  if (row_ok) store_row(Sw + row * LDO, scale, min(OC, d - c0), half, dq + rt.qrow(r_local) * d + c0);
}

std::atomic<bool> g_tc_enabled{true};

}  // namespace

void set_tc_enabled(bool enabled) { g_tc_enabled = enabled; }

bool tc_usable(int d, std::initializer_list<const void*> ptrs) {
  if (!g_tc_enabled || d % 8 != 0 || d > kTcMaxHeadDim) return false;
  for (const void* p : ptrs)
    if (!detail::aligned16(p)) return false;
  // The kernels' shared memory must fit the device's opt-in limit: DP = 128 needs up to
  // 120.5 KiB, more than sm_86 / sm_89 / sm_120 allow (99 KiB), and DP = 256 up to 190 KiB,
  // more than sm_80's 163 KiB; those take the CUDA-core kernels. The limit is read once per
  // device.
  static std::array<std::atomic<int>, detail::kMaxDevices> optin_limit{};
  const int dev = detail::current_device();
  int limit = optin_limit[dev].load();
  if (limit == 0) {
    SPPFT_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    optin_limit[dev] = limit;
  }
  std::size_t need = 0;
  dispatch_dp<kTcMaxHeadDim>(d, [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    need = std::max({forward_smem<DP>(), dkdv_smem<DP>(), dq_smem<DP>()});
  });
  return need <= static_cast<std::size_t>(limit);
}

void tc_forward(const SeqTable& qtiles, const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int d,
                int hq, int hkv, float scale, int window, float softcap) {
  const dim3 grid(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv));
  dispatch_dp<kTcMaxHeadDim>(d, [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    constexpr std::size_t smem = forward_smem<DP>();
    auto kernel = tc_forward_kernel<DP>;
    allow_smem(kernel, smem);
    kernel<<<grid, kTcThreads, smem, detail::stream()>>>(q, k, v, out, lse, qtiles, d, hq, hkv, scale, window, softcap);
    detail::check_launch();
  });
}

void tc_backward(const SeqTable& qtiles, const SeqTable& ktiles, const bf16* q, const bf16* k, const bf16* v,
                 const bf16* dout, const float* lse, const float* delta, bf16* dq, bf16* dk, bf16* dv, int d, int hq,
                 int hkv, float scale, int window, float softcap) {
  dispatch_dp<kTcMaxHeadDim>(d, [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    constexpr std::size_t kv_smem = dkdv_smem<DP>();
    auto kv_kernel = tc_dkdv_kernel<DP>;
    allow_smem(kv_kernel, kv_smem);
    kv_kernel<<<dim3(static_cast<unsigned>(ktiles.start[ktiles.count]), static_cast<unsigned>(hkv), kColBlocks<DP>),
                kTcThreads, kv_smem, detail::stream()>>>(q, k, v, dout, lse, delta, dk, dv, ktiles, d, hq, hkv, scale, window,
                                                         softcap);
    detail::check_launch();
    constexpr std::size_t q_smem = dq_smem<DP>();
    auto q_kernel = tc_dq_kernel<DP>;
    allow_smem(q_kernel, q_smem);
    q_kernel<<<dim3(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv), kColBlocks<DP>),
               kTcThreads, q_smem, detail::stream()>>>(q, k, v, dout, lse, delta, dq, qtiles, d, hq, hkv, scale, window,
                                                       softcap);
    detail::check_launch();
  });
}

}  // namespace sppft::cuda::attn
