// BF16 training attention forward with every matrix fragment in registers (FlashAttention-2
// style): mma.sync m16n8k16 and ldmatrix through warp_mma.cuh, the next K/V tile in flight
// (cp.async, two buffers) while the current one is computed. Same math, masks, GQA row
// flattening r = t * G + g, sequence tables and outputs (out, lse) as tc_forward_kernel of
// attention_train_tc.cu, whose backward takes this lse; head_dim d a multiple of 8 up to 128,
// zero-padded to DP = 64 or 128.
//
// Block = 4 warps, a tile of 64 flattened query rows (warp w: rows 16w .. 16w + 15), key tiles
// of 64. Lane = 4 g + t holds rows g and g + 8 of its warp (warp_mma.cuh's layouts).
//   Q tile -> shared -> the warp's A fragments, in registers for the whole loop (DP / 16 x 4).
//   Per key tile j0: S = Q K^T (16 x 64 per warp: 8 accumulators of 16 x 8 keys; B fragments
//   by ldmatrix from the K tile, whose rows are K's); masked scores in log2 units
//   (s * scale * log2 e); the rows' running max m (4 lanes share a row: two shuffles) and this
//   lane's share of the running sum l; O (16 x DP, fp32 in registers) scaled by 2^(m_old -
//   m_new); P = 2^(s - m) rounded to bf16 straight into A fragments (two S accumulators are one
//   A fragment of 16 keys); O += P V (B fragments by ldmatrix.trans from the V tile).
//   End: l summed over the row's 4 lanes; O / l staged through the warp's own Q rows in shared
//   and written as 16-byte packs; lse = (m + log2 l) ln 2.
// Shared memory: 2 (64 + 4 x 64) (DP + 8) bytes (85 KiB for DP = 128): rows padded by 16
// bytes, so the 8 row addresses of an ldmatrix fall in different banks.
// Precision as tc_forward_kernel: bf16 products exact in fp32, fp32 accumulation, P rounded
// to bf16 before P V while l sums the unrounded P. Deterministic: fixed order, no atomics.
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

template <int DP>
__global__ void __launch_bounds__(kMmaThreads)
    mma_forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                       bf16* __restrict__ out, float* __restrict__ lse, const __grid_constant__ SeqTable t, int d,
                       int hq, int hkv, float scale, int window) {
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
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // l: this lane's columns only
  float o[DTILES][4];
#pragma unroll
  for (int dt = 0; dt < DTILES; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
  unsigned qf[KSTEPS][4];

  for (int it = 0; it < ntiles; ++it) {
    const int buf = it & 1;
    if (it + 1 < ntiles) {  // the next tile goes into the buffer every warp finished with last iteration
      load_kv(it + 1, buf ^ 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
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
#pragma unroll
    for (int nt = 0; nt < kKeyTiles8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2, kl = nt * 8 + 2 * tq + (e & 1), j = j0 + kl;
        const bool seen = kl < nk && j >= first[h] && j <= pos[h];
        s[nt][e] = seen ? s[nt][e] * scale_log2 : -INFINITY;
        mx[h] = fmaxf(mx[h], s[nt][e]);
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

}  // namespace

// ---------------------------------------------------------------- host side
void mma_forward(const SeqTable& qtiles, const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int d,
                 int hq, int hkv, float scale, int window) {
  const dim3 grid(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv));
  dispatch_dp(d, [&](auto dp) {
    constexpr int DP = decltype(dp)::value;
    constexpr std::size_t smem = mma_forward_smem<DP>();
    auto kernel = mma_forward_kernel<DP>;
    allow_smem(kernel, smem);
    kernel<<<grid, kMmaThreads, smem, detail::stream()>>>(q, k, v, out, lse, qtiles, d, hq, hkv, scale, window);
    detail::check_launch();
  });
}

}  // namespace sppft::cuda::attn
