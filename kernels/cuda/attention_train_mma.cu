// BF16 training attention, forward and backward, with every matrix fragment in registers
// (FlashAttention-2 style): mma.sync m16n8k16 and ldmatrix through warp_mma.cuh, the next tile
// in flight (cp.async, two buffers) while the current one is computed. Same math, masks, GQA
// row flattening r = t * G + g, sequence tables, inputs and outputs (out, lse; dq, dk, dv) as
// the WMMA kernels of attention_train_tc.cu; head_dim d a multiple of 8 up to 128, zero-padded
// to DP = 64, 96 or 128. The backward kernels are described where they are defined.
// Gemma-2's soft-capping as there: with softcap > 0 each visible score becomes
// softcap * tanh(scale q.k / softcap) (masked ones stay -inf) and the backward multiplies dS by
// the cap's slope 1 - (c / softcap)^2. In the log2 units these kernels use (y = s log2 e) that is
// the same cap with softcap log2 e: y' = softcap_2 tanh(y / softcap_2), slope 1 - (y' / softcap_2)^2,
// softcap_2 = softcap log2 e. softcap == 0 runs the uncapped arithmetic unchanged (a uniform branch).
//
// Forward. Block = 4 warps, a tile of 64 flattened query rows (warp w: rows 16w .. 16w + 15), key tiles
// of 64. Lane = 4 g + t holds rows g and g + 8 of its warp (warp_mma.cuh's layouts).
//   Q tile -> shared -> the warp's A fragments, in registers for the whole loop (DP / 16 x 4).
//   Per key tile j0: S = Q K^T (16 x 64 per warp: 8 accumulators of 16 x 8 keys; B fragments
//   by ldmatrix from the K tile, whose rows are K's); masked (and capped) scores in log2 units
//   (s * scale * log2 e); the rows' running max m (4 lanes share a row: two shuffles) and this
//   lane's share of the running sum l; O (16 x DP, fp32 in registers) scaled by 2^(m_old -
//   m_new); P = 2^(s - m) rounded to bf16 straight into A fragments (two S accumulators are one
//   A fragment of 16 keys); O += P V (B fragments by ldmatrix.trans from the V tile).
//   Tiles run last first (row_tile): under a causal mask the last has the most keys.
//   End: l summed over the row's 4 lanes; O / l staged through the warp's own Q rows in shared
//   and written as 16-byte packs; lse = (m + log2 l) ln 2.
// Shared memory: 2 (64 + 4 x 64) (DP + 8) bytes (85 KiB for DP = 128): rows padded by 16
// bytes, so the 8 row addresses of an ldmatrix fall in different banks.
// Precision as the WMMA kernels: bf16 products exact in fp32, fp32 accumulation, P and dS
// rounded to bf16 before they enter a product while l sums the unrounded P. Deterministic:
// each output element from one warp's registers, fixed order, no atomics.
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/warp_mma.cuh"

namespace sppft::cuda::attn {

namespace {

using detail::bf16;

constexpr int kMmaThreads = 128;
constexpr int kKeyTiles8 = kTcKeys / 8;  // 16 x 8 score accumulators per warp and key tile
static_assert(kTcRows == 64 && kTcKeys == 64 && kMmaThreads / 32 * 16 == kTcRows, "4 warps of 16 rows");

template <int DP>
constexpr std::size_t mma_forward_smem() {
  return sizeof(bf16) * (kTcRows + 4 * kTcKeys) * (DP + 8);
}

// tile[r][0, DP) = src(r)[0, d) then zeros for r < nrows; zero rows for nrows <= r < NR: the
// data by cp.async (lands at the caller's cp_async_wait), the zeros by plain stores.
template <int NR, int DP, typename F>
__device__ __forceinline__ void load_tile_async(bf16* tile, int nrows, int d, F&& src) {
  constexpr int kPacks = DP / 8, LD = DP + 8;
  for (int i = threadIdx.x; i < NR * kPacks; i += kMmaThreads) {
    const int r = i / kPacks, c = (i % kPacks) * 8;
    if (r < nrows && c < d)
      ptx::cp_async_16(tile + r * LD + c, src(r) + c);
    else
      *reinterpret_cast<uint4*>(tile + r * LD + c) = make_uint4(0, 0, 0, 0);
  }
}

// Pipeline step of a loop over `ntiles` tiles in two buffers: issues tile it + 1 into the other
// buffer (load(tile, buf), which every warp finished reading last iteration) and waits until
// tile it has landed; the caller's __syncthreads then shares it.
template <typename F>
__device__ __forceinline__ void next_tile_async(int it, int ntiles, F&& load) {
  if (it + 1 < ntiles) {
    load(it + 1, (it + 1) & 1);
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
  } else {
    ptx::cp_async_wait<0>();
  }
}

template <int DP>
__global__ void __launch_bounds__(kMmaThreads)
    mma_forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                       bf16* __restrict__ out, float* __restrict__ lse, const __grid_constant__ SeqTable t, int d,
                       int hq, int hkv, float scale, int window, float softcap) {
  constexpr int LD = DP + 8, KSTEPS = DP / 16, DTILES = DP / 8;
  extern __shared__ __align__(128) unsigned char mma_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(mma_smem);  // [64][LD]
  bf16* Kb = Qs + kTcRows * LD;                   // [2][64][LD]
  bf16* Vb = Kb + 2 * kTcKeys * LD;               // [2][64][LD]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const RowTile rt = row_tile<kTcRows>(t, d, hq, hkv, window);
  const int ntiles = (rt.ke - rt.kb + kTcKeys - 1) / kTcKeys;  // >= 1: every tile row sees its own key

  auto load_kv = [&](int tile, int buf) {
    const int j0 = rt.kb + tile * kTcKeys, nk = min(kTcKeys, rt.ke - j0);
    load_tile_async<kTcKeys, DP>(Kb + buf * kTcKeys * LD, nk, d, [&](int j) { return k + rt.kv(j0 + j); });
    load_tile_async<kTcKeys, DP>(Vb + buf * kTcKeys * LD, nk, d, [&](int j) { return v + rt.kv(j0 + j); });
  };
  load_tile_async<kTcRows, DP>(Qs, rt.nrows, d, [&](int r) { return q + rt.qrow(r) * d; });
  load_kv(0, 0);
  ptx::cp_async_commit();

  int pos[2], first[2];  // rows g and g + 8 of the warp
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    pos[h] = rt.pos(warp * 16 + g + 8 * h);
    first[h] = window > 0 ? max(0, pos[h] - window + 1) : 0;
  }
  const float scale_log2 = scale * 1.4426950408889634f;
  const float cap2 = softcap * 1.4426950408889634f;  // the cap in log2 units (used when softcap > 0)
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this lane's columns only
  float o[DTILES][4];
#pragma unroll
  for (int dt = 0; dt < DTILES; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  unsigned qf[KSTEPS][4];

  for (int it = 0; it < ntiles; ++it) {
    const int buf = it & 1;
    next_tile_async(it, ntiles, load_kv);
    __syncthreads();  // this tile (and, first time, Q) is in shared for every warp
    if (it == 0) {
      // A fragments: matrices (rows 0-7 | 8-15) x (dims 16 ks + 0-7 | + 8-15), in a0..a3 order.
#pragma unroll
      for (int ks = 0; ks < KSTEPS; ++ks)
        ptx::ldmatrix_x4(qf[ks], Qs + (warp * 16 + (lane / 8) % 2 * 8 + lane % 8) * LD + ks * 16 + lane / 16 * 8);
    }
    const bf16* Kt = Kb + buf * kTcKeys * LD;
    const bf16* Vt = Vb + buf * kTcKeys * LD;

    // S = Q K^T: B fragments of keys 16 np + (0-7 | 8-15) x dims 16 ks + (0-7 | 8-15).
    float s[kKeyTiles8][4];
#pragma unroll
    for (int nt = 0; nt < kKeyTiles8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
#pragma unroll
      for (int np = 0; np < kKeyTiles8 / 2; ++np) {
        unsigned kf[4];
        ptx::ldmatrix_x4(kf, Kt + (np * 16 + lane / 16 * 8 + lane % 8) * LD + ks * 16 + (lane / 8) % 2 * 8);
        ptx::mma_16816(s[2 * np], qf[ks], kf[0], kf[1]);
        ptx::mma_16816(s[2 * np + 1], qf[ks], kf[2], kf[3]);
      }

    // Masks, running max (shared by the row's 4 lanes), rescale, P.
    const int j0 = rt.kb + it * kTcKeys, nk = min(kTcKeys, rt.ke - j0);
    float mx[2] = {-INFINITY, -INFINITY};
    if (softcap > 0.0f) {  // uniform: the cap on the visible scores (a masked key stays -inf)
#pragma unroll
      for (int nt = 0; nt < kKeyTiles8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e / 2, kl = nt * 8 + 2 * tq + (e & 1), j = j0 + kl;
          const bool seen = kl < nk && j >= first[h] && j <= pos[h];
          s[nt][e] = seen ? detail::soft_cap(s[nt][e] * scale_log2, cap2) : -INFINITY;
          mx[h] = fmaxf(mx[h], s[nt][e]);
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < kKeyTiles8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e / 2, kl = nt * 8 + 2 * tq + (e & 1), j = j0 + kl;
          const bool seen = kl < nk && j >= first[h] && j <= pos[h];
          s[nt][e] = seen ? s[nt][e] * scale_log2 : -INFINITY;
          mx[h] = fmaxf(mx[h], s[nt][e]);
        }
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      const float m_new = fmaxf(m[h], mx[h]);
      alpha[h] = m_new == -INFINITY ? 1.0f : exp2f(m[h] - m_new);  // no key seen yet: nothing to scale
      m[h] = m_new;
    }
    l[0] *= alpha[0], l[1] *= alpha[1];
#pragma unroll
    for (int nt = 0; nt < kKeyTiles8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        s[nt][e] = m[h] == -INFINITY ? 0.0f : exp2f(s[nt][e] - m[h]);
        l[h] += s[nt][e];
      }
#pragma unroll
    for (int dt = 0; dt < DTILES; ++dt) {
      o[dt][0] *= alpha[0], o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1], o[dt][3] *= alpha[1];
    }

    // O += P V: A fragments from pairs of S accumulators; B fragments (ldmatrix.trans) of keys
    // 16 kk + (0-7 | 8-15) x dims 16 dp + (0-7 | 8-15).
#pragma unroll
    for (int kk = 0; kk < kKeyTiles8 / 2; ++kk) {
      const unsigned pa[4] = {ptx::pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), ptx::pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              ptx::pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              ptx::pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < DTILES / 2; ++dp) {
        unsigned vf[4];
        ptx::ldmatrix_x4_trans(vf, Vt + (kk * 16 + (lane / 8) % 2 * 8 + lane % 8) * LD + dp * 16 + lane / 16 * 8);
        ptx::mma_16816(o[2 * dp], pa, vf[0], vf[1]);
        ptx::mma_16816(o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }

  // l over the row's 4 lanes; O / l through the warp's own Q rows (its Q is in registers).
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    inv[h] = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;  // l = 0 only for padding rows past nrows
  }
  bf16* Ow = Qs + warp * 16 * LD;
#pragma unroll
  for (int dt = 0; dt < DTILES; ++dt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<__nv_bfloat162*>(Ow + (g + 8 * h) * LD + dt * 8 + 2 * tq) =
          __floats2bfloat162_rn(o[dt][2 * h] * inv[h], o[dt][2 * h + 1] * inv[h]);
  __syncwarp();
  for (int i = lane; i < 16 * (DP / 8); i += 32) {
    const int r = i / (DP / 8), c = i % (DP / 8) * 8;
    if (warp * 16 + r < rt.nrows && c < d)
      *reinterpret_cast<uint4*>(out + rt.qrow(warp * 16 + r) * d + c) = *reinterpret_cast<const uint4*>(Ow + r * LD + c);
  }
  if (tq == 0)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if (warp * 16 + g + 8 * h < rt.nrows) lse[rt.qrow(warp * 16 + g + 8 * h)] = (m[h] + log2f(l[h])) * 0.6931471805599453f;
}

// ---------------------------------------------------------------- backward
// A fragment (16 x 16) of rows r0 .. r0 + 15, columns c0 .. c0 + 15 of a row-major bf16 tile.
__device__ __forceinline__ void load_a(unsigned (&a)[4], const bf16* tile, int ld, int r0, int c0, int lane) {
  ptx::ldmatrix_x4(a, tile + (r0 + (lane / 8) % 2 * 8 + lane % 8) * ld + c0 + lane / 16 * 8);
}
// B fragments (16 x 8, k x n) for two n-tiles where the tile's rows are n (B[k][n] = tile[n][k],
// as K for S = Q K^T): rows n0 .. n0 + 15, columns k0 .. k0 + 15; b[0], b[1] n-tile n0, b[2], b[3] n0 + 8.
__device__ __forceinline__ void load_b_rows_n(unsigned (&b)[4], const bf16* tile, int ld, int n0, int k0, int lane) {
  ptx::ldmatrix_x4(b, tile + (n0 + lane / 16 * 8 + lane % 8) * ld + k0 + (lane / 8) % 2 * 8);
}
// B fragments where the tile's rows are k (B[k][n] = tile[k][n], as V for O += P V): rows
// k0 .. k0 + 15, columns n0 .. n0 + 15; b[0], b[1] n-tile n0, b[2], b[3] n-tile n0 + 8.
__device__ __forceinline__ void load_b_rows_k(unsigned (&b)[4], const bf16* tile, int ld, int k0, int n0, int lane) {
  ptx::ldmatrix_x4_trans(b, tile + (k0 + (lane / 8) % 2 * 8 + lane % 8) * ld + n0 + lane / 16 * 8);
}
// c[2 NP] (16 x 16 NP, zeroed first) = A B^T: A rows a_r0 .. a_r0 + 15 of tile `a`, B^T's columns
// rows n0 .. n0 + 16 NP - 1 of tile `b`, both [rows][DP] bf16 with row stride ld (S = Q K^T).
template <int NP, int DP>
__device__ __forceinline__ void scores(float (&c)[2 * NP][4], const bf16* a, int a_r0, const bf16* b, int n0, int ld,
                                       int lane) {
#pragma unroll
  for (int nt = 0; nt < 2 * NP; ++nt) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < DP / 16; ++ks) {
    unsigned fa[4];
    load_a(fa, a, ld, a_r0, ks * 16, lane);
#pragma unroll
    for (int np = 0; np < NP; ++np) {
      unsigned fb[4];
      load_b_rows_n(fb, b, ld, n0 + np * 16, ks * 16, lane);
      ptx::mma_16816(c[2 * np], fa, fb[0], fb[1]);
      ptx::mma_16816(c[2 * np + 1], fa, fb[2], fb[3]);
    }
  }
}
// The A fragment of 16 columns 16 kk .. 16 kk + 15 from the C fragments of two n-tiles, rounded to bf16.
__device__ __forceinline__ void c_to_a(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = ptx::pack_bf16x2(c0[0], c0[1]), a[1] = ptx::pack_bf16x2(c0[2], c0[3]);
  a[2] = ptx::pack_bf16x2(c1[0], c1[1]), a[3] = ptx::pack_bf16x2(c1[2], c1[3]);
}
// acc (16 x DP) += A (16 x 16 NK, from C fragments c[2 NK]) B, B's k rows from `tile` rows k0 ...
template <int NK, int DTILES>
__device__ __forceinline__ void acc_c_times_tile(float (&acc)[DTILES][4], const float (&c)[2 * NK][4], const bf16* tile,
                                                 int ld, int k0, int lane) {
#pragma unroll
  for (int kk = 0; kk < NK; ++kk) {
    unsigned a[4];
    c_to_a(a, c[2 * kk], c[2 * kk + 1]);
#pragma unroll
    for (int dp = 0; dp < DTILES / 2; ++dp) {
      unsigned b[4];
      load_b_rows_k(b, tile, ld, k0 + 16 * kk, 16 * dp, lane);
      ptx::mma_16816(acc[2 * dp], a, b[0], b[1]);
      ptx::mma_16816(acc[2 * dp + 1], a, b[2], b[3]);
    }
  }
}
// Writes a warp's 16 x DP fp32 accumulators times `mul` as bf16 rows: staged through `stage`
// (16 rows of stride LD in shared that only this warp uses), then 16-byte packs to
// dst + offset(r) for rows r < nrows, columns < d.
template <int DP, typename F>
__device__ __forceinline__ void store_acc(const float (&acc)[DP / 8][4], float mul, bf16* stage, int nrows, int d,
                                          bf16* dst, F&& offset, int lane) {
  constexpr int LD = DP + 8;
  const int g = lane / 4, tq = lane % 4;
  __syncwarp();
#pragma unroll
  for (int dt = 0; dt < DP / 8; ++dt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      *reinterpret_cast<__nv_bfloat162*>(stage + (g + 8 * h) * LD + dt * 8 + 2 * tq) =
          __floats2bfloat162_rn(acc[dt][2 * h] * mul, acc[dt][2 * h + 1] * mul);
  __syncwarp();
  for (int i = lane; i < 16 * (DP / 8); i += 32) {
    const int r = i / (DP / 8), c = i % (DP / 8) * 8;
    if (r < nrows && c < d) *reinterpret_cast<uint4*>(dst + offset(r) + c) = *reinterpret_cast<const uint4*>(stage + r * LD + c);
  }
}

template <int DP>
constexpr std::size_t mma_dkdv_smem() {
  return sizeof(bf16) * 6 * kTcKeys * (DP + 8) + sizeof(float) * 4 * kTcRows;
}

// dK, dV of a key tile (block = 64 keys of a (sequence, KV head); warp w owns keys 16w ..
// 16w + 15, dK and dV of them in registers). K and V stay in shared; the query tiles that can
// see the keys (rows fr_begin .. fr_end, all heads of the group) stream through two buffers of
// Q, dO, lse and delta, the next one by cp.async while the current one is computed, in two
// halves of 32 rows: S^T = K_w Q^T and dP^T = V_w dO^T (16 keys x 32 rows), P^T = 2^(S^T scale
// log2 e - lse log2 e) and dS^T = P^T (dP^T - delta) (0 where masked; times the cap's slope when
// capped), rounded to bf16 as A fragments; dV_w += P^T dO, dK_w += dS^T Q (B fragments by
// ldmatrix.trans). End: dk = scale dK, dv = dV, staged through the warp's own K and V rows.
// Shared memory: 2 (64 + 64 + 2 * 64 + 2 * 64) (DP + 8) + 4 * 4 * 64 bytes (103 KiB for DP = 128).
template <int DP>
__global__ void __launch_bounds__(kMmaThreads)
    mma_dkdv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                    const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                    bf16* __restrict__ dk, bf16* __restrict__ dv, const __grid_constant__ SeqTable t, int d, int hq,
                    int hkv, float scale, int window, float softcap) {
  constexpr int LD = DP + 8, DTILES = DP / 8, HALF = kTcRows / 2;
  extern __shared__ __align__(128) unsigned char mma_smem[];
  bf16* Ks = reinterpret_cast<bf16*>(mma_smem);  // [64][LD]
  bf16* Vs = Ks + kTcKeys * LD;                   // [64][LD]
  bf16* Qb = Vs + kTcKeys * LD;                   // [2][64][LD]
  bf16* dOb = Qb + 2 * kTcRows * LD;              // [2][64][LD]
  float* Lb = reinterpret_cast<float*>(dOb + 2 * kTcRows * LD);  // [2][64] lse
  float* Db = Lb + 2 * kTcRows;                                   // [2][64] delta

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const KeyTile kt = key_tile<kTcKeys>(t, d, hq, hkv, window);
  const int k0 = kt.k0, nk = kt.nk, group = kt.group;
  const int ntiles = (kt.fr_end - kt.fr_begin + kTcRows - 1) / kTcRows;  // >= 1: a key's own position sees it
  load_tile_async<kTcKeys, DP>(Ks, nk, d, [&](int j) { return k + kt.kv(j); });
  load_tile_async<kTcKeys, DP>(Vs, nk, d, [&](int j) { return v + kt.kv(j); });
  auto load_rows = [&](int tile, int buf) {
    const int fr0 = kt.fr_begin + tile * kTcRows, nrows = min(kTcRows, kt.fr_end - fr0);
    load_tile_async<kTcRows, DP>(Qb + buf * kTcRows * LD, nrows, d, [&](int r) { return q + kt.qrow(fr0 + r) * d; });
    load_tile_async<kTcRows, DP>(dOb + buf * kTcRows * LD, nrows, d, [&](int r) { return dout + kt.qrow(fr0 + r) * d; });
    load_row_stats<kTcRows>(Lb + buf * kTcRows, Db + buf * kTcRows, lse, delta, nrows,
                            [&](int r) { return kt.qrow(fr0 + r); });
  };
  load_rows(0, 0);
  ptx::cp_async_commit();

  int key[2];  // keys g and g + 8 of the warp (sequence positions)
  key[0] = k0 + warp * 16 + g, key[1] = key[0] + 8;
  const float scale_log2 = scale * 1.4426950408889634f;
  const float cap2 = softcap * 1.4426950408889634f;  // the cap in log2 units (used when softcap > 0)
  float dk_acc[DTILES][4], dv_acc[DTILES][4];
#pragma unroll
  for (int dt = 0; dt < DTILES; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[dt][e] = dv_acc[dt][e] = 0.0f;

  for (int it = 0; it < ntiles; ++it) {
    const int buf = it & 1;
    next_tile_async(it, ntiles, load_rows);
    __syncthreads();  // this query tile (and, first time, K and V) is in shared for every warp
    const int fr0 = kt.fr_begin + it * kTcRows, nrows = min(kTcRows, kt.fr_end - fr0);
    const bf16* Qt = Qb + buf * kTcRows * LD;
    const bf16* dOt = dOb + buf * kTcRows * LD;
    const float* Lt = Lb + buf * kTcRows;
    const float* Dt = Db + buf * kTcRows;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float st[HALF / 8][4], dpt[HALF / 8][4];  // S^T and dP^T, 16 keys x 32 rows each
      scores<HALF / 16, DP>(st, Ks, warp * 16, Qt, hh * HALF, LD, lane);
      scores<HALF / 16, DP>(dpt, Vs, warp * 16, dOt, hh * HALF, LD, lane);
      if (softcap > 0.0f) {  // uniform: capped score y (log2 units), dS through the cap's slope
#pragma unroll
        for (int nt = 0; nt < HALF / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = key[e / 2], rl = hh * HALF + nt * 8 + 2 * tq + (e & 1), tpos = (fr0 + rl) / group;
            const bool seen = rl < nrows && j < k0 + nk && j <= tpos && (window == 0 || tpos - j < window);
            const float y = detail::soft_cap(st[nt][e] * scale_log2, cap2);
            const float p = seen ? exp2f(y - Lt[rl] * 1.4426950408889634f) : 0.0f;
            st[nt][e] = p;
            dpt[nt][e] = seen ? p * (dpt[nt][e] - Dt[rl]) * detail::soft_cap_slope(y, cap2) : 0.0f;
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < HALF / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = key[e / 2], rl = hh * HALF + nt * 8 + 2 * tq + (e & 1), tpos = (fr0 + rl) / group;
            const bool seen = rl < nrows && j < k0 + nk && j <= tpos && (window == 0 || tpos - j < window);
            const float p = seen ? exp2f(st[nt][e] * scale_log2 - Lt[rl] * 1.4426950408889634f) : 0.0f;
            st[nt][e] = p;
            dpt[nt][e] = p * (dpt[nt][e] - Dt[rl]);
          }
      }
      acc_c_times_tile<HALF / 16>(dv_acc, st, dOt, LD, hh * HALF, lane);
      acc_c_times_tile<HALF / 16>(dk_acc, dpt, Qt, LD, hh * HALF, lane);
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }

  // Each warp stages through its own K and V rows (only it read them, as A fragments).
  const int own = min(16, nk - warp * 16);
  auto off = [&](int r) { return kt.kv(warp * 16 + r); };
  store_acc<DP>(dk_acc, scale, Ks + warp * 16 * LD, own, d, dk, off, lane);
  store_acc<DP>(dv_acc, 1.0f, Vs + warp * 16 * LD, own, d, dv, off, lane);
}

template <int DP>
constexpr std::size_t mma_dq_smem() {
  return sizeof(bf16) * 6 * kTcRows * (DP + 8);
}

// dQ of a query tile (block = 64 flattened rows, last tile first as the forward; warp w owns
// rows 16w .. 16w + 15, dQ in registers; each lane reads its two rows' lse and delta). Q and dO
// stay in shared; key tiles stream through two K/V buffers (cp.async, as the forward): S = Q_w K^T and dP = dO_w V^T (16 x 64), P = 2^(S scale log2 e -
// lse log2 e), dS = P (dP - delta) (0 where masked; times the cap's slope when capped) rounded
// to bf16 as A fragments; dQ_w += dS K (B by ldmatrix.trans). End: dq = scale dQ, staged
// through the warp's own Q rows.
// Shared memory: 2 (64 + 64 + 2 * 64 + 2 * 64) (DP + 8) bytes (102 KiB for DP = 128).
template <int DP>
__global__ void __launch_bounds__(kMmaThreads)
    mma_dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                  const bf16* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
                  bf16* __restrict__ dq, const __grid_constant__ SeqTable t, int d, int hq, int hkv, float scale,
                  int window, float softcap) {
  constexpr int LD = DP + 8, DTILES = DP / 8;
  extern __shared__ __align__(128) unsigned char mma_smem[];
  bf16* Qs = reinterpret_cast<bf16*>(mma_smem);  // [64][LD]
  bf16* dOs = Qs + kTcRows * LD;                  // [64][LD]
  bf16* Kb = dOs + kTcRows * LD;                  // [2][64][LD]
  bf16* Vb = Kb + 2 * kTcKeys * LD;               // [2][64][LD]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const RowTile rt = row_tile<kTcRows>(t, d, hq, hkv, window);
  const int ntiles = (rt.ke - rt.kb + kTcKeys - 1) / kTcKeys;
  auto load_kv = [&](int tile, int buf) {
    const int j0 = rt.kb + tile * kTcKeys, nk = min(kTcKeys, rt.ke - j0);
    load_tile_async<kTcKeys, DP>(Kb + buf * kTcKeys * LD, nk, d, [&](int j) { return k + rt.kv(j0 + j); });
    load_tile_async<kTcKeys, DP>(Vb + buf * kTcKeys * LD, nk, d, [&](int j) { return v + rt.kv(j0 + j); });
  };
  load_tile_async<kTcRows, DP>(Qs, rt.nrows, d, [&](int r) { return q + rt.qrow(r) * d; });
  load_tile_async<kTcRows, DP>(dOs, rt.nrows, d, [&](int r) { return dout + rt.qrow(r) * d; });
  load_kv(0, 0);
  ptx::cp_async_commit();

  int pos[2], first[2];
  bool row_ok[2];
  float lse2[2], dlt[2];  // lse in log2 units, delta
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + g + 8 * h;
    row_ok[h] = r < rt.nrows;
    pos[h] = rt.pos(r);
    first[h] = window > 0 ? max(0, pos[h] - window + 1) : 0;
    lse2[h] = row_ok[h] ? lse[rt.qrow(r)] * 1.4426950408889634f : 0.0f;
    dlt[h] = row_ok[h] ? delta[rt.qrow(r)] : 0.0f;
  }
  const float scale_log2 = scale * 1.4426950408889634f;
  const float cap2 = softcap * 1.4426950408889634f;  // the cap in log2 units (used when softcap > 0)
  float dq_acc[DTILES][4];
#pragma unroll
  for (int dt = 0; dt < DTILES; ++dt) dq_acc[dt][0] = dq_acc[dt][1] = dq_acc[dt][2] = dq_acc[dt][3] = 0.0f;

  for (int it = 0; it < ntiles; ++it) {
    const int buf = it & 1;
    next_tile_async(it, ntiles, load_kv);
    __syncthreads();  // this key tile (and, first time, Q and dO) is in shared
    const bf16* Kt = Kb + buf * kTcKeys * LD;
    const bf16* Vt = Vb + buf * kTcKeys * LD;
    float s[kKeyTiles8][4], dp[kKeyTiles8][4];  // S and dP, 16 rows x 64 keys each
    scores<kKeyTiles8 / 2, DP>(s, Qs, warp * 16, Kt, 0, LD, lane);
    scores<kKeyTiles8 / 2, DP>(dp, dOs, warp * 16, Vt, 0, LD, lane);
    const int j0 = rt.kb + it * kTcKeys, nk = min(kTcKeys, rt.ke - j0);
    if (softcap > 0.0f) {  // uniform: capped score y (log2 units), dS through the cap's slope
#pragma unroll
      for (int nt = 0; nt < kKeyTiles8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e / 2, kl = nt * 8 + 2 * tq + (e & 1), j = j0 + kl;
          const bool seen = row_ok[h] && kl < nk && j >= first[h] && j <= pos[h];
          const float y = detail::soft_cap(s[nt][e] * scale_log2, cap2);
          const float p = seen ? exp2f(y - lse2[h]) : 0.0f;
          dp[nt][e] = seen ? p * (dp[nt][e] - dlt[h]) * detail::soft_cap_slope(y, cap2) : 0.0f;
        }
    } else {
#pragma unroll
      for (int nt = 0; nt < kKeyTiles8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e / 2, kl = nt * 8 + 2 * tq + (e & 1), j = j0 + kl;
          const bool seen = row_ok[h] && kl < nk && j >= first[h] && j <= pos[h];
          const float p = seen ? exp2f(s[nt][e] * scale_log2 - lse2[h]) : 0.0f;
          dp[nt][e] = p * (dp[nt][e] - dlt[h]);
        }
    }
    acc_c_times_tile<kKeyTiles8 / 2>(dq_acc, dp, Kt, LD, 0, lane);
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }

  store_acc<DP>(dq_acc, scale, Qs + warp * 16 * LD, min(16, rt.nrows - warp * 16), d, dq,
                [&](int r) { return rt.qrow(warp * 16 + r) * d; }, lane);
}

}  // namespace

// ---------------------------------------------------------------- host side
void mma_forward(const SeqTable& qtiles, const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int d,
                 int hq, int hkv, float scale, int window, float softcap) {
  detail::check(d <= kMmaMaxHeadDim, "mma_forward", "head_dim above 128 takes the WMMA kernels");
  const dim3 grid(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv));
  dispatch_dp<kMmaMaxHeadDim>(d, [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    constexpr std::size_t smem = mma_forward_smem<DP>();
    auto kernel = mma_forward_kernel<DP>;
    allow_smem(kernel, smem);
    kernel<<<grid, kMmaThreads, smem, detail::stream()>>>(q, k, v, out, lse, qtiles, d, hq, hkv, scale, window, softcap);
    detail::check_launch();
  });
}


void mma_backward(const SeqTable& qtiles, const SeqTable& ktiles, const bf16* q, const bf16* k, const bf16* v,
                  const bf16* dout, const float* lse, const float* delta, bf16* dq, bf16* dk, bf16* dv, int d, int hq,
                  int hkv, float scale, int window, float softcap) {
  detail::check(d <= kMmaMaxHeadDim, "mma_backward", "head_dim above 128 takes the WMMA kernels");
  dispatch_dp<kMmaMaxHeadDim>(d, [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    constexpr std::size_t kv_smem = mma_dkdv_smem<DP>();
    auto kv_kernel = mma_dkdv_kernel<DP>;
    allow_smem(kv_kernel, kv_smem);
    kv_kernel<<<dim3(static_cast<unsigned>(ktiles.start[ktiles.count]), static_cast<unsigned>(hkv)), kMmaThreads,
                kv_smem, detail::stream()>>>(q, k, v, dout, lse, delta, dk, dv, ktiles, d, hq, hkv, scale, window,
                                             softcap);
    detail::check_launch();
    constexpr std::size_t q_smem = mma_dq_smem<DP>();
    auto q_kernel = mma_dq_kernel<DP>;
    allow_smem(q_kernel, q_smem);
    q_kernel<<<dim3(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv)), kMmaThreads,
               q_smem, detail::stream()>>>(q, k, v, dout, lse, delta, dq, qtiles, d, hq, hkv, scale, window,
                                           softcap);
    detail::check_launch();
  });
}

}  // namespace sppft::cuda::attn
