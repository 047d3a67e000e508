// kv_cache_write and attention_forward on the GPU: causal grouped-query attention over
// the KV cache, for packed batches of sequences (prefill, chunked prefill and decode).
//
// kv_cache_write: for each sequence s and t < q_len:
//   k_cache[slot, h, past_len + t, :] = k[q_begin + t, h*D : (h+1)*D]   (v likewise)
//   k, v [N, Hkv * D]; k_cache, v_cache [S, Hkv, Tmax, D].
//   dtypes: k, v of one dtype, caches of one dtype, each F32 or BF16 (converted on write).
//   One block per written row; 16-byte packs of 8 when D % 8 == 0 and the bases are aligned.
//
// attention_forward: query row n = q_begin + t of a sequence sits at position p = past_len + t;
// query head h reads KV head h / G (G = Hq / Hkv). Keys j with j <= p and (window == 0 or
// p - j < window):
//   out[n, h] = sum_j softmax_j(cap(scale * q[n, h] . k[slot, h/G, j])) v[slot, h/G, j]
//   cap(s) = softcap * tanh(s / softcap) (Gemma-2's soft-capping; the identity for
//   softcap == 0, which keeps the uncapped arithmetic bit for bit), applied to visible keys
//   only (masked ones stay -inf) before the online softmax.
//   q, out [N, Hq * D]; caches [S, Hkv, Tmax, D]. Rows not covered by any sequence untouched.
//   dtypes: q, caches, out all F32 or all BF16; D <= 256 (kernels for D padded to 32, 64,
//   128 or 256). All math fp32 on CUDA cores (scores, exp, accumulators).
//
// The tiled kernel (flash-attention style, online softmax, no [T, T] scores in memory):
//   - A block owns 16 "rows" of one (sequence, KV head): row r = (t, g) with t = r / G and
//     query head h = kvh * G + g, so every query head of a GQA group reads the same K/V tiles
//     from shared memory (GQA native: no head copies). A decode step (q_len = 1) fills a
//     block with the G heads of its group.
//   - Q rows live in shared memory (fp32); K and V tiles of 32 keys are staged in shared
//     memory (fp32; K rows padded by 4 floats so the float4 reads below are conflict-free).
//   - 4 warps, each owning 4 rows. Scores: lane j computes q_r . k_j for key j of the tile
//     for its 4 rows (q broadcast from shared memory, float4 reads). Online softmax per row
//     with warp shuffles (running max m, sum l; masked keys score -inf). P.V: lane owns
//     output dims lane + 32c, p_j broadcast by shuffle.
//   - Split-K (flash-decoding): when the grid would have fewer blocks than multiprocessors
//     and contexts are long, grid.z splits each sequence's key range into equal chunks;
//     each block writes unnormalised (o, m, l) partials to scratch and a combine kernel
//     merges them: out = sum_s o_s e^(m_s - M) / sum_s l_s e^(m_s - M), M = max_s m_s (the
//     partials hold capped scores already: the merge is the same with or without a cap).
//   - Sequences travel as kernel parameters (a __grid_constant__ table of up to 32 per
//     launch), so the host span needs no copy and no synchronisation.
// Not yet: tensor cores (mma / wgmma) for BF16, cp.async / TMA double-buffering of the K/V
// tiles, a persistent schedule. This kernel is the correct baseline they will be checked against.
#include <algorithm>
#include <atomic>
#include <climits>
#include <string>
#include <vector>

#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using detail::bf16;
using attn::SeqTable;
using attn::find_seq;
using attn::make_tables;
using attn::row_dots;

constexpr int kWarps = 4;        // warps per attention block
constexpr int kRowsPerWarp = 4;  // (query position, head) rows per warp
constexpr int kRows = kWarps * kRowsPerWarp;
constexpr int kKeys = 32;  // keys per K/V tile: one per lane in the score step
constexpr int kThreads = kWarps * 32;
constexpr int kMaxSplits = 64;

std::atomic<int> g_forced_splits{0};

// ---------------------------------------------------------------- kv_cache_write
template <typename TI, typename TC, bool VEC>
__global__ void kv_write_kernel(const TI* __restrict__ k, const TI* __restrict__ v, TC* __restrict__ kc,
                                TC* __restrict__ vc, const __grid_constant__ SeqTable t, int hkv, int d, int tmax) {
  const int b = blockIdx.x;
  const int s = find_seq(t, b);
  const int tt = b - t.start[s];
  const std::int64_t row = static_cast<std::int64_t>(t.q_begin[s]) + tt;
  const std::int64_t pos = static_cast<std::int64_t>(t.past_len[s]) + tt;
  const std::int64_t width = static_cast<std::int64_t>(hkv) * d;
  const TI* kr = k + row * width;
  const TI* vr = v + row * width;
  const std::int64_t head0 = static_cast<std::int64_t>(t.slot[s]) * hkv;  // first (slot, head) index
  if constexpr (VEC) {
    for (std::int64_t p = threadIdx.x; p < width / 8; p += blockDim.x) {
      const std::int64_t idx = p * 8, h = idx / d, e = idx % d;
      const std::int64_t dst = ((head0 + h) * tmax + pos) * d + e;
      float f[8];
      detail::load8(kr + idx, f);
      detail::store8(kc + dst, f);
      detail::load8(vr + idx, f);
      detail::store8(vc + dst, f);
    }
  } else {
    for (std::int64_t idx = threadIdx.x; idx < width; idx += blockDim.x) {
      const std::int64_t h = idx / d, e = idx % d;
      const std::int64_t dst = ((head0 + h) * tmax + pos) * d + e;
      kc[dst] = detail::from_f32<TC>(detail::to_f32(kr[idx]));
      vc[dst] = detail::from_f32<TC>(detail::to_f32(vr[idx]));
    }
  }
}

// ---------------------------------------------------------------- attention
template <int DMAX>
constexpr std::size_t attention_smem_bytes() {
  return sizeof(float) * (kRows * DMAX + kKeys * (DMAX + 4) + kKeys * DMAX);
}

template <typename T, int DMAX>
__global__ void __launch_bounds__(kThreads) attention_kernel(const T* __restrict__ q, const T* __restrict__ kc,
                                                             const T* __restrict__ vc, T* __restrict__ out,
                                                             float* __restrict__ part_o, float* __restrict__ part_ml,
                                                             const __grid_constant__ SeqTable t, int d, int hq, int hkv,
                                                             int tmax, std::int64_t n_rows, float scale, int window,
                                                             int splits, float softcap) {
  constexpr int KS = DMAX + 4;  // padded K row (floats): float4 reads of 8 lanes hit distinct banks
  constexpr int C = DMAX / 32;  // output dims per lane
  extern __shared__ float4 smem4[];
  float* Qs = reinterpret_cast<float*>(smem4);  // [kRows][DMAX]
  float* Ks = Qs + kRows * DMAX;                // [kKeys][KS]
  float* Vs = Ks + kKeys * KS;                  // [kKeys][DMAX]

  const int kvh = blockIdx.y, split = blockIdx.z;
  const int si = find_seq(t, blockIdx.x);
  const int tile = blockIdx.x - t.start[si];
  const int group = hq / hkv;
  const int q_begin = t.q_begin[si], q_len = t.q_len[si], past = t.past_len[si];
  const int rows_total = q_len * group;
  const int row0 = tile * kRows;
  const int rows_here = min(kRows, rows_total - row0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // Q tile, zero-padded to DMAX and to kRows.
  for (int idx = threadIdx.x; idx < kRows * DMAX; idx += kThreads) {
    const int r = idx / DMAX, e = idx % DMAX;
    float val = 0.0f;
    if (r < rows_here && e < d) {
      const int gr = row0 + r, h = kvh * group + gr % group;
      val = detail::to_f32(q[(static_cast<std::int64_t>(q_begin + gr / group) * hq + h) * d + e]);
    }
    Qs[idx] = val;
  }

  // This warp's rows: local rows warp + kWarps * i (interleaved, so few rows still spread over warps).
  bool act[kRowsPerWarp];
  int pos[kRowsPerWarp], first[kRowsPerWarp];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int r = warp + kWarps * i;
    act[i] = r < rows_here;
    pos[i] = past + (row0 + r) / group;
    first[i] = window > 0 ? max(0, pos[i] - window + 1) : 0;
  }
  const bool warp_active = act[0];

  // Keys this block visits: the union of its rows' ranges, cut to its split.
  const int pos_lo = past + row0 / group, pos_hi = past + (row0 + rows_here - 1) / group;
  int kb = window > 0 ? max(0, pos_lo - window + 1) : 0;
  int ke = pos_hi + 1;
  if (splits > 1) {
    const int ctx = past + q_len;
    const int per = ((ctx + splits - 1) / splits + kKeys - 1) / kKeys * kKeys;
    kb = max(kb, split * per);
    ke = min(ke, (split + 1) * per);
  }

  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][C];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) o[i][c] = 0.0f;
  }
  const std::int64_t kv_base = (static_cast<std::int64_t>(t.slot[si]) * hkv + kvh) * tmax * d;

  for (int j0 = kb; j0 < ke; j0 += kKeys) {
    __syncthreads();  // the previous tile is consumed (first time: Q tile is written)
    for (int idx = threadIdx.x; idx < kKeys * DMAX; idx += kThreads) {
      const int jj = idx / DMAX, e = idx % DMAX, j = j0 + jj;
      float kv = 0.0f, vv = 0.0f;
      if (j < ke && e < d) {
        const std::int64_t off = kv_base + static_cast<std::int64_t>(j) * d + e;
        kv = detail::to_f32(kc[off]);
        vv = detail::to_f32(vc[off]);
      }
      Ks[jj * KS + e] = kv;
      Vs[jj * DMAX + e] = vv;
    }
    __syncthreads();
    if (!warp_active) continue;  // warp-uniform

    // Scores: lane = key j0 + lane, for each of the warp's rows.
    const int j = j0 + lane;
    float acc[kRowsPerWarp];
    row_dots<kRowsPerWarp, DMAX, kWarps>(Qs, warp, Ks + lane * KS, (d + 3) / 4, acc);

    // Online softmax (all values warp-uniform except the per-lane score and p).
    float sc[kRowsPerWarp], p[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) sc[i] = act[i] && j < ke && j >= first[i] && j <= pos[i] ? acc[i] * scale : -INFINITY;
    if (softcap > 0.0f) {  // uniform: Gemma-2's cap on the visible scores (a masked key stays -inf)
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i)
        sc[i] = act[i] && j < ke && j >= first[i] && j <= pos[i] ? detail::soft_cap(acc[i] * scale, softcap) : -INFINITY;
    }
    detail::online_softmax_step(sc, m, l, o, p);

    // o += P V: key jj's probability broadcast from lane jj; lane owns dims lane + 32c.
    detail::accumulate_broadcast(p, Vs, DMAX, min(kKeys, ke - j0), o);
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    if (!act[i]) continue;
    const int gr = row0 + warp + kWarps * i;
    const std::int64_t n = q_begin + gr / group;
    const int h = kvh * group + gr % group;
    if (splits == 1) {
      const float inv = 1.0f / l[i];
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int e = lane + 32 * c;
        if (e < d) out[(n * hq + h) * d + e] = detail::from_f32<T>(o[i][c] * inv);
      }
    } else {
      const std::int64_t pidx = (static_cast<std::int64_t>(split) * n_rows + n) * hq + h;
#pragma unroll
      for (int c = 0; c < C; ++c) {
        const int e = lane + 32 * c;
        if (e < d) part_o[pidx * d + e] = o[i][c];
      }
      if (lane == 0) {
        part_ml[pidx * 2] = m[i];
        part_ml[pidx * 2 + 1] = l[i];
      }
    }
  }
}

// Merges the split partials: one block per query row, one warp per head.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    attention_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml, T* __restrict__ out,
                             const __grid_constant__ SeqTable t, int d, int hq, std::int64_t n_rows, int splits) {
  const int si = find_seq(t, blockIdx.x);
  const std::int64_t n = static_cast<std::int64_t>(t.q_begin[si]) + (blockIdx.x - t.start[si]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int h = blockIdx.y * kWarps + warp; h < hq; h += gridDim.y * kWarps) {
    float mx = -INFINITY;
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_ml[((s * n_rows + n) * hq + h) * 2]);
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const std::int64_t pidx = (s * n_rows + n) * hq + h;
      sum += part_ml[pidx * 2 + 1] * expf(part_ml[pidx * 2] - mx);
    }
    const float inv = 1.0f / sum;
    for (int e = lane; e < d; e += 32) {
      float acc = 0.0f;
      for (int s = 0; s < splits; ++s) {
        const std::int64_t pidx = (s * n_rows + n) * hq + h;
        acc = fmaf(part_o[pidx * d + e], expf(part_ml[pidx * 2] - mx), acc);
      }
      out[(n * hq + h) * d + e] = detail::from_f32<T>(acc * inv);
    }
  }
}

// ---------------------------------------------------------------- host side

// Shapes of the cache and checks of the sequences shared by both ops.
struct CacheDims {
  std::int64_t slots, hkv, tmax, d;
};

CacheDims check_caches(const Tensor& kc, const Tensor& vc, const char* op) {
  detail::check_cuda_tensor(kc, op, "k_cache");
  detail::check_cuda_tensor(vc, op, "v_cache");
  detail::check(kc.rank() == 4, op, "k_cache must be [S, Hkv, Tmax, D]");
  detail::check_shape(vc, kc.shape(), op, "v_cache");
  detail::check_float(kc, op, "k_cache");
  detail::check(vc.dtype() == kc.dtype(), op, "k_cache and v_cache must have the same dtype");
  const CacheDims c{kc.dim(0), kc.dim(1), kc.dim(2), kc.dim(3)};
  detail::check(c.hkv > 0 && c.d > 0, op, "caches need Hkv > 0 and D > 0");
  detail::check(c.tmax < INT_MAX && c.hkv * c.d < INT_MAX && c.slots < INT_MAX && c.hkv < 65536, op,
                "cache too large for int32 indices");
  return c;
}

void check_seqs(std::span<const ops::AttentionSeq> seqs, std::int64_t n_rows, const CacheDims& c, const char* op) {
  for (const auto& s : seqs) {
    detail::check(s.q_begin >= 0 && s.q_len >= 0 && s.q_begin + s.q_len <= n_rows, op,
                  "sequence rows [" + std::to_string(s.q_begin) + ", " + std::to_string(s.q_begin + s.q_len) +
                      ") outside the " + std::to_string(n_rows) + " rows");
    detail::check(s.slot >= 0 && s.slot < c.slots, op,
                  "cache slot " + std::to_string(s.slot) + " outside [0, " + std::to_string(c.slots) + ")");
    detail::check(s.past_len >= 0 && s.past_len + s.q_len <= c.tmax, op,
                  "positions up to " + std::to_string(s.past_len + s.q_len) + " exceed the cache length " +
                      std::to_string(c.tmax));
  }
}

template <typename T, int DMAX>
void launch_attention(const Tensor& q, const Tensor& kc, const Tensor& vc, Tensor& out, const SeqTable& tiles,
                      const SeqTable& rows, int max_ctx, const CacheDims& c, int hq, float scale, int window,
                      float softcap) {
  cudaStream_t s = detail::stream();
  const int total_tiles = tiles.start[tiles.count], total_rows = rows.start[rows.count];
  const std::int64_t n_rows = q.dim(0);
  const int d = static_cast<int>(c.d), hkv = static_cast<int>(c.hkv);

  // Split the keys when the grid alone would leave multiprocessors idle (decode).
  const std::int64_t blocks = static_cast<std::int64_t>(total_tiles) * hkv;
  int splits = g_forced_splits.load();
  if (splits <= 0) {
    const int sms = detail::sm_count();
    splits = 1;
    if (blocks < sms) {
      splits = static_cast<int>((2 * sms + blocks - 1) / blocks);
      splits = std::min(splits, std::max(1, max_ctx / (2 * kKeys)));  // at least two tiles per split
    }
  }
  splits = std::clamp(splits, 1, kMaxSplits);
  const auto part_bytes = [&](int sp) { return static_cast<std::size_t>(sp) * n_rows * hq * (d + 2) * sizeof(float); };
  while (splits > 1 && part_bytes(splits) > (std::size_t{256} << 20)) splits /= 2;

  float* part_o = nullptr;
  float* part_ml = nullptr;
  if (splits > 1) {
    part_o = static_cast<float*>(detail::scratch(part_bytes(splits)));
    part_ml = part_o + static_cast<std::size_t>(splits) * n_rows * hq * d;
  }

  constexpr std::size_t smem = attention_smem_bytes<DMAX>();
  auto kernel = attention_kernel<T, DMAX>;
  if (smem > 48 * 1024)
    SPPFT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<dim3(total_tiles, hkv, splits), kThreads, smem, s>>>(q.data<T>(), kc.data<T>(), vc.data<T>(), out.data<T>(),
                                                                part_o, part_ml, tiles, d, hq, hkv,
                                                                static_cast<int>(c.tmax), n_rows, scale, window, splits,
                                                                softcap);
  detail::check_launch();
  if (splits > 1) {
    const unsigned gy = static_cast<unsigned>(std::min((hq + kWarps - 1) / kWarps, 65535));
    attention_combine_kernel<T><<<dim3(total_rows, gy), kThreads, 0, s>>>(part_o, part_ml, out.data<T>(), rows, d, hq,
                                                                          n_rows, splits);
    detail::check_launch();
  }
}

}  // namespace

void set_attention_splits_for_testing(int splits) { g_forced_splits.store(splits); }

void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache) {
  const char* op = "kv_cache_write";
  const CacheDims c = check_caches(k_cache, v_cache, op);
  detail::check_cuda_tensor(k, op, "k");
  detail::check_cuda_tensor(v, op, "v");
  detail::check(k.rank() == 2 && k.dim(1) == c.hkv * c.d, op,
                "k has shape " + shape_str(k.shape()) + ", expected [N, " + std::to_string(c.hkv * c.d) + "]");
  detail::check_shape(v, k.shape(), op, "v");
  detail::check_float(k, op, "k");
  detail::check(v.dtype() == k.dtype(), op, "k and v must have the same dtype");
  detail::check(k.dim(0) < INT_MAX, op, "too many rows for int32 indices");
  check_seqs(seqs, k.dim(0), c, op);

  const bool vec = c.d % 8 == 0 && detail::aligned16(k.raw()) && detail::aligned16(v.raw()) &&
                   detail::aligned16(k_cache.raw()) && detail::aligned16(v_cache.raw());
  const int threads = c.hkv * c.d >= 1024 ? 256 : 128;
  for (const SeqTable& t : make_tables(seqs, [](const ops::AttentionSeq& s) { return s.q_len; })) {
    const int blocks = t.start[t.count];
    detail::dispatch_float(k.dtype(), [&](auto ti) {
      using TI = typename decltype(ti)::type;
      detail::dispatch_float(k_cache.dtype(), [&](auto tc) {
        using TC = typename decltype(tc)::type;
        const int hkv = static_cast<int>(c.hkv), d = static_cast<int>(c.d), tmax = static_cast<int>(c.tmax);
        if (vec)
          kv_write_kernel<TI, TC, true><<<blocks, threads, 0, detail::stream()>>>(
              k.data<TI>(), v.data<TI>(), k_cache.data<TC>(), v_cache.data<TC>(), t, hkv, d, tmax);
        else
          kv_write_kernel<TI, TC, false><<<blocks, threads, 0, detail::stream()>>>(
              k.data<TI>(), v.data<TI>(), k_cache.data<TC>(), v_cache.data<TC>(), t, hkv, d, tmax);
        detail::check_launch();
      });
    });
  }
}

void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out,
                       float softcap) {
  const char* op = "attention_forward";
  const CacheDims c = check_caches(k_cache, v_cache, op);
  detail::check_cuda_tensor(q, op, "q");
  detail::check_cuda_tensor(out, op, "out");
  detail::check(q.rank() == 2 && q.dim(1) % c.d == 0, op,
                "q has shape " + shape_str(q.shape()) + ", expected [N, Hq * " + std::to_string(c.d) + "]");
  const std::int64_t hq = q.dim(1) / c.d;
  detail::check(hq > 0 && hq % c.hkv == 0, op, "Hq must be a positive multiple of Hkv");
  detail::check_shape(out, q.shape(), op, "out");
  detail::check(q.dtype() == k_cache.dtype() && out.dtype() == q.dtype(), op,
                "q, the caches and out must share one dtype (F32 or BF16)");
  detail::check(c.d <= 256, op, "head_dim " + std::to_string(c.d) + " > 256 has no CUDA kernel");
  detail::check(q.dim(0) < INT_MAX && hq < 65536, op, "too many rows or heads for int32 indices");
  check_seqs(seqs, q.dim(0), c, op);
  detail::check(softcap >= 0.0f, op, "softcap must be >= 0");

  const int group = static_cast<int>(hq / c.hkv);
  // window <= 0: none; a window longer than the cache changes nothing.
  const int win = window <= 0 ? 0 : static_cast<int>(std::min<std::int64_t>(window, c.tmax + 1));
  auto tiles_of = [&](const ops::AttentionSeq& s) { return (s.q_len * group + kRows - 1) / kRows; };
  const auto tile_tables = make_tables(seqs, tiles_of);
  const auto row_tables = make_tables(seqs, [](const ops::AttentionSeq& s) { return s.q_len; });

  // The two table lists hold the same sequences in the same chunks; max context per chunk.
  for (std::size_t ti = 0; ti < tile_tables.size(); ++ti) {
    const SeqTable& tiles = tile_tables[ti];
    const SeqTable& rows = row_tables[ti];
    int max_ctx = 0;
    for (int i = 0; i < tiles.count; ++i) max_ctx = std::max(max_ctx, tiles.past_len[i] + tiles.q_len[i]);
    detail::dispatch_float(q.dtype(), [&](auto tq) {
      using T = typename decltype(tq)::type;
      const int hqi = static_cast<int>(hq);
      attn::dispatch_dmax(c.d, [&](auto dmax) {
        launch_attention<T, decltype(dmax)::value>(q, k_cache, v_cache, out, tiles, rows, max_ctx, c, hqi, scale, win,
                                                   softcap);
      });
    });
  }
}

}  // namespace sppft::cuda
