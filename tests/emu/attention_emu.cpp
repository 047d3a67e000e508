// Emulated runs of kv_write_kernel, attention_kernel (F32 and BF16, every DMAX bucket) and the
// split-K path with attention_combine_kernel (kernels/cuda/attention.cu, extracted unchanged
// by tests/emu/extract.py into the build's emu_gen/) against the fp32 CPU reference
// (sppft::ops::kv_cache_write and attention_forward on host tensors). Registered with ctest as
// kernels.attention_emu. The launchers mirror the host code of cuda::kv_cache_write (VEC
// choice, threads, one launch per table of up to 32 sequences) and launch_attention (tables of
// 16-row tiles and of rows, the max context per table, the split count - forced as
// set_attention_splits_for_testing does, or the automatic choice for a 132-SM GPU - clamped
// and halved under the 256 MiB scratch cap, the partials' scratch, grid (tiles, Hkv, splits),
// the combine grid).
// Each case is one decode / prefill step: the cache slots hold random past keys and values at
// positions < past_len and NaN everywhere else (positions at or past a sequence's context and
// unused slots are never read: a read shows up as NaN), kv_write_kernel writes the new rows,
// then attention runs on the cache. Checks: the caches bitwise equal to the reference's (a copy,
// with at most one rounding to bf16: exact); out within the tolerance of tests/gpu/
// cuda_forward_test.cpp (max |emu - ref| / max |ref| over the covered rows: 1e-5 F32, 1e-2
// BF16); rows covered by no sequence still hold their NaN poison bit for bit; q, k, v
// unchanged; no canary of a buffer or of the split scratch (NaN-poisoned) touched. Each run
// goes as A, B (A again: bitwise determinism) and a variant (random fiber order and warp
// speeds, zeroed shared memory, buffers after a guard page) that must equal A bit for bit,
// split partials included (emu_harness.h).
// kv-only cases: every (k/v dtype, cache dtype) pair, the 16-byte path and the scalar one
// (unaligned k or odd D), F32 inputs rounded to a BF16 cache.
// Gemma-2's soft-capping (softcap > 0: each visible score s -> softcap * tanh(s / softcap)):
// capped cases (scores of a few units against caps of 1.5 to 5; prefill, chunked prefill and
// decode, split-K partials and their combine, windows, GQA) against the capped CPU reference,
// and their out at least kBent (relative) away from the uncapped reference's, so that they
// cannot pass with the cap ignored.
// Usage: attention_emu [--no-variant] [--only SUBSTRING]
#include "attention_emu.h"  // from emu_gen/ (or a mutant dir), via -I
// (the extracted header first: it brings emu_cuda.h, which the harness header uses)
#include <array>
#include <chrono>
#include <span>

#include "emu_harness.h"

namespace cu = sppft::cuda;
namespace attn = sppft::cuda::attn;
using namespace emuh;
using std::int64_t;
using Seq = sppft::ops::AttentionSeq;
using attn::SeqTable;

constexpr int kSms = 132;  // the automatic split choice as on an H100 / H200

// ---------------------------------------------------------------- emulated launchers
// As cuda::kv_cache_write (after its checks).
static bool emu_kv_cache_write(Dev& k, Dev& v, std::span<const Seq> seqs, Dev& kc, Dev& vc, int hkv, int d, int tmax,
                               bool* vec_used) {
  const bool vec = d % 8 == 0 && aligned16(k.raw()) && aligned16(v.raw()) && aligned16(kc.raw()) && aligned16(vc.raw());
  *vec_used = vec;
  const int threads = static_cast<int64_t>(hkv) * d >= 1024 ? 256 : 128;
  bool ok = true;
  for (const SeqTable& t : attn::make_tables(seqs, [](const Seq& s) { return s.q_len; })) {
    const int blocks = t.start[t.count];
    with_type(k.t, [&](auto ti) {
      using TI = typename decltype(ti)::type;
      with_type(kc.t, [&](auto tc) {
        using TC = typename decltype(tc)::type;
        const TI* kp = k.as<TI>();
        const TI* vp = v.as<TI>();
        TC* kcp = kc.as<TC>();
        TC* vcp = vc.as<TC>();
        if (vec)
          ok = emu::launch("kv_write_kernel<VEC>", blocks, threads, 0,
                           [=] { cu::kv_write_kernel<TI, TC, true>(kp, vp, kcp, vcp, t, hkv, d, tmax); }) && ok;
        else
          ok = emu::launch("kv_write_kernel", blocks, threads, 0,
                           [=] { cu::kv_write_kernel<TI, TC, false>(kp, vp, kcp, vcp, t, hkv, d, tmax); }) && ok;
      });
    });
  }
  return ok;
}

// As launch_attention: forced > 0 is set_attention_splits_for_testing(forced), 0 the automatic
// choice for kSms multiprocessors. The split scratch (exactly the requested bytes, NaN: it
// holds an earlier op's data on the GPU) goes into the snapshot.
template <typename T, int DMAX>
static bool emu_launch_attention(const T* q, const T* kc, const T* vc, T* out, const SeqTable& tiles, const SeqTable& rows,
                                 int max_ctx, int64_t n_rows, int d, int hkv, int tmax, int hq, float scale, int window,
                                 float softcap, int forced, int* splits_used, Snapshot* snap, const std::string& tag) {
  const int total_tiles = tiles.start[tiles.count], total_rows = rows.start[rows.count];
  const int64_t blocks = static_cast<int64_t>(total_tiles) * hkv;
  int splits = forced;
  if (splits <= 0) {
    const int sms = kSms;
    splits = 1;
    if (blocks < sms) {
      splits = static_cast<int>((2 * sms + blocks - 1) / blocks);
      splits = std::min(splits, std::max(1, max_ctx / (2 * cu::kKeys)));  // at least two tiles per split
    }
  }
  splits = std::clamp(splits, 1, cu::kMaxSplits);
  const auto part_bytes = [&](int sp) { return static_cast<std::size_t>(sp) * n_rows * hq * (d + 2) * sizeof(float); };
  while (splits > 1 && part_bytes(splits) > (std::size_t{256} << 20)) splits /= 2;
  *splits_used = splits;

  std::unique_ptr<Dev> scratch;
  float* part_o = nullptr;
  float* part_ml = nullptr;
  if (splits > 1) {
    scratch = std::make_unique<Dev>(DType::F32, part_bytes(splits) / sizeof(float));
    scratch->fill_nan();
    part_o = scratch->as<float>();
    part_ml = part_o + static_cast<std::size_t>(splits) * n_rows * hq * d;
  }
  constexpr std::size_t smem = cu::attention_smem_bytes<DMAX>();
  bool ok = emu::launch("attention_kernel", dim3(total_tiles, hkv, splits), cu::kThreads, smem, [=] {
    cu::attention_kernel<T, DMAX>(q, kc, vc, out, part_o, part_ml, tiles, d, hq, hkv, tmax, n_rows, scale, window, splits,
                                  softcap);
  });
  if (splits > 1) {
    const unsigned gy = static_cast<unsigned>(std::min((hq + cu::kWarps - 1) / cu::kWarps, 65535));
    ok = emu::launch("attention_combine_kernel", dim3(total_rows, gy), cu::kThreads, 0,
                     [=] { cu::attention_combine_kernel<T>(part_o, part_ml, out, rows, d, hq, n_rows, splits); }) &&
         ok;
    snap->add("partials" + tag, *scratch);
    snap->check_canaries("partials" + tag, *scratch);
  }
  return ok;
}

// As cuda::attention_forward (after its checks): one launch_attention per table.
static bool emu_attention_forward(Dev& q, Dev& kc, Dev& vc, std::span<const Seq> seqs, float scale, int64_t window,
                                  float softcap, Dev& out, int64_t n_rows, int hq, int hkv, int tmax, int d, int forced,
                                  std::vector<int>* splits_used, Snapshot* snap) {
  const int group = hq / hkv;
  const int win = window <= 0 ? 0 : static_cast<int>(std::min<int64_t>(window, tmax + 1));
  auto tiles_of = [&](const Seq& s) { return (s.q_len * group + cu::kRows - 1) / cu::kRows; };
  const auto tile_tables = attn::make_tables(seqs, tiles_of);
  const auto row_tables = attn::make_tables(seqs, [](const Seq& s) { return s.q_len; });
  bool ok = true;
  splits_used->clear();
  for (std::size_t ti = 0; ti < tile_tables.size(); ++ti) {
    const SeqTable& tiles = tile_tables[ti];
    const SeqTable& rows = row_tables[ti];
    int max_ctx = 0;
    for (int i = 0; i < tiles.count; ++i) max_ctx = std::max(max_ctx, tiles.past_len[i] + tiles.q_len[i]);
    int sp = 0;
    std::string tag = "[";
    tag += std::to_string(ti);
    tag += ']';
    with_type(q.t, [&](auto tq) {
      using T = typename decltype(tq)::type;
      const T* qp = q.as<T>();
      const T* kp = kc.as<T>();
      const T* vp = vc.as<T>();
      T* op = out.as<T>();
      attn::dispatch_dmax(d, [&](auto dmax) {
        ok = emu_launch_attention<T, decltype(dmax)::value>(qp, kp, vp, op, tiles, rows, max_ctx, n_rows, d, hkv, tmax, hq,
                                                            scale, win, softcap, forced, &sp, snap, tag) && ok;
      });
    });
    splits_used->push_back(sp);
  }
  return ok;
}

// ---------------------------------------------------------------- report
// Worst error per (output, dtype) over the whole run, for the summary.
static double g_worst[2] = {0, 0};  // out: F32, BF16
// Capped cases: out must be at least this far (rel_error) from the uncapped reference - 10x
// the BF16 tolerance - or the cap could be ignored unnoticed.
constexpr double kBent = 0.1;
static double g_least_bent = INFINITY;  // the smallest such distance seen

// ---------------------------------------------------------------- attention cases
struct AttnCase {
  int hq, hkv, d, slots, tmax;
  std::vector<std::array<int, 3>> seqs;  // {q_len, slot, past_len}, packed in order
  bool gaps;                             // an uncovered row before the first sequence and after each
  std::vector<int> windows;
  std::vector<int> splits;  // forced split counts; 0 = the host's automatic choice
  float sharpness = 1.0f;   // scale = sharpness / sqrt(d)
  float softcap = 0.0f;     // Gemma-2's score cap (0: none)
};

static std::string seqs_str(const AttnCase& c) {
  if (c.seqs.size() > 4) return std::to_string(c.seqs.size()) + " seqs";
  std::string s = "{";
  for (std::size_t i = 0; i < c.seqs.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(c.seqs[i][0]);
    s += '@';
    s += std::to_string(c.seqs[i][2]);
  }
  return s + "}";
}

static void attention_case(const Args& args, const AttnCase& c, DType dt, unsigned seed) {
  // Rows and sequences.
  std::vector<Seq> seqs;
  int64_t row = c.gaps ? 1 : 0;
  for (const auto& [len, slot, past] : c.seqs) {
    seqs.push_back(Seq{row, len, slot, past});
    row += len + (c.gaps ? 1 : 0);
  }
  const int64_t n = std::max<int64_t>(row, 1);
  std::vector<char> covered(n, 0);
  for (const Seq& s : seqs)
    for (int64_t t = 0; t < s.q_len; ++t) covered[s.q_begin + t] = 1;
  const int hq = c.hq, hkv = c.hkv, d = c.d, tmax = c.tmax;
  const int64_t qw = static_cast<int64_t>(hq) * d, kw = static_cast<int64_t>(hkv) * d;
  const std::size_t cache_n = static_cast<std::size_t>(c.slots) * hkv * tmax * d;
  const float scale = c.sharpness / std::sqrt(static_cast<float>(d));

  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  const std::vector<float> q = randn(rng, n * qw, dt), k = randn(rng, n * kw, dt), v = randn(rng, n * kw, dt);
  // Cache: random past keys / values, NaN at every position no sequence has in its past.
  std::vector<float> kc0(cache_n, NAN), vc0(cache_n, NAN);
  for (const Seq& s : seqs)
    for (int h = 0; h < hkv; ++h)
      for (int64_t p = 0; p < s.past_len; ++p)
        for (int e = 0; e < d; ++e) {
          const std::size_t i = ((static_cast<std::size_t>(s.slot) * hkv + h) * tmax + p) * d + e;
          kc0[i] = dt == DType::BF16 ? round_bf16(std::normal_distribution<float>()(rng)) : std::normal_distribution<float>()(rng);
          vc0[i] = dt == DType::BF16 ? round_bf16(std::normal_distribution<float>()(rng)) : std::normal_distribution<float>()(rng);
        }
  const sppft::Shape cshape{c.slots, hkv, tmax, d};
  sppft::Tensor tkc = host_tensor(kc0, cshape), tvc = host_tensor(vc0, cshape);
  sppft::ops::kv_cache_write(host_tensor(k, {n, kw}), host_tensor(v, {n, kw}), seqs, tkc, tvc);
  const std::vector<float> kc_ref = to_vec(tkc), vc_ref = to_vec(tvc);
  Dev kc_want(dt, cache_n), vc_want(dt, cache_n);
  kc_want.upload(kc_ref), vc_want.upload(vc_ref);
  const auto kc_bytes = kc_want.bytes(), vc_bytes = vc_want.bytes();
  Dev q_want(dt, n * qw), k_want(dt, n * kw), v_want(dt, n * kw);
  q_want.upload(q), k_want.upload(k), v_want.upload(v);
  const auto q_bytes = q_want.bytes(), k_bytes = k_want.bytes(), v_bytes = v_want.bytes();

  for (int window : c.windows) {
    sppft::Tensor tout = host_tensor(std::vector<float>(n * qw, NAN), {n, qw});
    sppft::ops::attention_forward(host_tensor(q, {n, qw}), tkc, tvc, seqs, scale, window, tout, c.softcap);
    const std::vector<float> out_ref = to_vec(tout);
    std::vector<float> out_plain;  // capped cases: the uncapped reference
    if (c.softcap > 0) {
      sppft::Tensor tplain = host_tensor(std::vector<float>(n * qw, NAN), {n, qw});
      sppft::ops::attention_forward(host_tensor(q, {n, qw}), tkc, tvc, seqs, scale, window, tplain);
      out_plain = to_vec(tplain);
    }
    for (int forced : c.splits) {
      char nm[160];
      char cap[48] = "";
      if (c.softcap > 0) std::snprintf(cap, sizeof cap, " cap=%g s*%g", c.softcap, c.sharpness);
      std::snprintf(nm, sizeof nm, "attn (%d,%d,%d) %s%s%s %s win=%d splits=%s", hq, hkv, d, seqs_str(c).c_str(),
                    c.gaps ? " gaps" : "", cap, dt == DType::BF16 ? "BF16" : "F32", window,
                    forced ? std::to_string(forced).c_str() : "auto");
      if (args.skip(nm)) continue;
      std::vector<int> used;
      bool vec = false;
      auto run = [&] {
        Snapshot s;
        Dev dq(dt, n * qw), dk(dt, n * kw), dv(dt, n * kw), dkc(dt, cache_n), dvc(dt, cache_n), dout(dt, n * qw);
        dq.upload(q), dk.upload(k), dv.upload(v), dkc.upload(kc0), dvc.upload(vc0), dout.fill_nan();
        s.launched(emu_kv_cache_write(dk, dv, seqs, dkc, dvc, hkv, d, tmax, &vec));
        s.launched(emu_attention_forward(dq, dkc, dvc, seqs, scale, window, c.softcap, dout, n, hq, hkv, tmax, d, forced,
                                         &used, &s));
        s.add("out", dout), s.add("k_cache", dkc), s.add("v_cache", dvc), s.add("q", dq), s.add("k", dk), s.add("v", dv);
        for (auto [nm2, dev] : {std::pair<const char*, Dev*>{"q", &dq}, {"k", &dk}, {"v", &dv}, {"k_cache", &dkc},
                                {"v_cache", &dvc}, {"out", &dout}})
          s.check_canaries(nm2, *dev);
        return s;
      };
      Snapshot a = run_three(run, seed * 31 + forced * 7 + window, args.variant);
      bool ok = a.ok;
      std::string why = a.why;
      // out: covered rows against the reference, uncovered rows still poison.
      const auto& ob = a.get("out");
      const std::vector<float> got = floats_of(ob, dt);
      std::vector<float> g, w, pl;
      long touched = 0;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t e = 0; e < qw; ++e) {
          const std::size_t i = static_cast<std::size_t>(r * qw + e);
          if (covered[r]) {
            g.push_back(got[i]), w.push_back(out_ref[i]);
            if (c.softcap > 0) pl.push_back(out_plain[i]);
          } else {
            touched += !is_poison(ob, i, dt);
          }
        }
      const double tol = tolerance({dt});
      const double err = rel_error(g, w);
      g_worst[dt == DType::BF16] = std::max(g_worst[dt == DType::BF16], err);
      if (!(err <= tol)) ok = false;
      if (touched) ok = false, why += " uncovered-rows-written(" + std::to_string(touched) + ")";
      if (a.get("k_cache") != kc_bytes) ok = false, why += " k_cache!=ref";
      if (a.get("v_cache") != vc_bytes) ok = false, why += " v_cache!=ref";
      if (a.get("q") != q_bytes || a.get("k") != k_bytes || a.get("v") != v_bytes) ok = false, why += " input-modified";
      double bent = INFINITY;
      if (c.softcap > 0) {
        bent = rel_error(g, pl);
        g_least_bent = std::min(g_least_bent, bent);
        if (!(bent >= kBent)) ok = false, why += " too-close-to-uncapped";
      }
      char errs[128];
      std::string sp;
      for (std::size_t i = 0; i < used.size(); ++i) {
        if (i) sp += ',';
        sp += std::to_string(used[i]);
      }
      const int len =
          std::snprintf(errs, sizeof errs, "out %8.2e/%.0e [splits %s, kv %s]", err, tol, sp.c_str(), vec ? "vec" : "scalar");
      if (c.softcap > 0) std::snprintf(errs + len, sizeof errs - len, " vs uncapped %.2f", bent);
      report_case(nm, errs, ok, why);
    }
  }
}

// ---------------------------------------------------------------- kv_cache_write alone: dtype pairs, both paths
static void kv_case(const Args& args, int hkv, int d, DType ti, DType tc, std::size_t k_offset, unsigned seed) {
  char nm[160];
  std::snprintf(nm, sizeof nm, "kv Hkv=%d D=%d k/v %s cache %s%s", hkv, d, ti == DType::BF16 ? "BF16" : "F32",
                tc == DType::BF16 ? "BF16" : "F32", k_offset ? " k-unaligned" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const int slots = 3, tmax = 40;
  // Packed: a prefill, a chunked prefill, two decodes, an empty sequence; gaps between them.
  const std::vector<Seq> seqs = {{1, 9, 2, 0}, {11, 20, 0, 17}, {32, 1, 1, 30}, {34, 0, 0, 0}, {34, 1, 0, 37}};
  const int64_t n = 36, kw = static_cast<int64_t>(hkv) * d;
  const std::size_t cache_n = static_cast<std::size_t>(slots) * hkv * tmax * d;
  const std::vector<float> k = randn(rng, n * kw, ti), v = randn(rng, n * kw, ti);  // F32: not bf16-representable
  const std::vector<float> kc0 = randn(rng, cache_n, tc), vc0 = randn(rng, cache_n, tc);
  const sppft::Shape cshape{slots, hkv, tmax, d};
  sppft::Tensor tkc = host_tensor(kc0, cshape), tvc = host_tensor(vc0, cshape);
  sppft::ops::kv_cache_write(host_tensor(k, {n, kw}), host_tensor(v, {n, kw}), seqs, tkc, tvc);
  Dev kc_want(tc, cache_n), vc_want(tc, cache_n);  // the reference's values in the cache dtype (one RNE rounding)
  kc_want.upload(to_vec(tkc)), vc_want.upload(to_vec(tvc));
  Dev k_want(ti, n * kw), v_want(ti, n * kw);
  k_want.upload(k), v_want.upload(v);
  bool vec = false;
  auto run = [&] {
    Snapshot s;
    Dev dk(ti, n * kw, k_offset), dv(ti, n * kw), dkc(tc, cache_n), dvc(tc, cache_n);
    dk.upload(k), dv.upload(v), dkc.upload(kc0), dvc.upload(vc0);
    s.launched(emu_kv_cache_write(dk, dv, seqs, dkc, dvc, hkv, d, tmax, &vec));
    s.add("k_cache", dkc), s.add("v_cache", dvc), s.add("k", dk), s.add("v", dv);
    s.check_canaries("k", dk), s.check_canaries("v", dv), s.check_canaries("k_cache", dkc),
        s.check_canaries("v_cache", dvc);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why;
  if (a.get("k_cache") != kc_want.bytes()) ok = false, why += " k_cache!=ref";
  if (a.get("v_cache") != vc_want.bytes()) ok = false, why += " v_cache!=ref";
  if (a.get("k") != k_want.bytes() || a.get("v") != v_want.bytes()) ok = false, why += " input-modified";
  report_case(nm, std::string("caches bitwise ") + (ok ? "equal" : "DIFFER") + " [" + (vec ? "vec" : "scalar") + "]", ok,
              why);
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  unsigned seed = 500;

  // kv_cache_write: every dtype pair on the 16-byte path, the scalar path (unaligned k, odd D),
  // 256 threads (Hkv * D >= 1024).
  for (DType ti : {DType::F32, DType::BF16})
    for (DType tc : {DType::F32, DType::BF16}) {
      kv_case(args, 2, 40, ti, tc, 0, seed++);
      kv_case(args, 2, 40, ti, tc, 1, seed++);
    }
  kv_case(args, 3, 5, DType::F32, DType::BF16, 0, seed++);
  kv_case(args, 8, 128, DType::BF16, DType::BF16, 0, seed++);
  kv_case(args, 8, 128, DType::F32, DType::F32, 0, seed++);

  // Attention: {Hq, Hkv, D, slots, Tmax, {q_len, slot, past_len}..., gaps, windows, forced splits}.
  std::vector<AttnCase> cases = {
      // the CPU test's case: GQA 2, D = 8 (DMAX 32), a chunked prefill
      {4, 2, 8, 2, 16, {{5, 1, 0}, {3, 0, 4}}, true, {0, 3}, {1, 2, 7, 0}},
      // prefill, chunked prefill and decode packed; GQA 4, D = 64
      {8, 2, 64, 3, 300, {{100, 0, 0}, {37, 2, 50}, {1, 1, 250}}, true, {0, 3}, {1, 2, 3, 7, 0}},
      // MQA decode (GQA 6), D = 80 padded to 128
      {6, 1, 80, 3, 256, {{1, 0, 0}, {1, 1, 17}, {1, 2, 199}}, false, {0, 3}, {1, 7, 0}},
      // MHA prefill (GQA 1), D = 128, a window larger than the cache
      {4, 4, 128, 1, 160, {{70, 0, 0}}, false, {0, 5, 400}, {1, 0}},
      // D = 256 (DMAX 256), GQA 2: prefill and a long decode
      {2, 1, 256, 2, 200, {{40, 0, 0}, {1, 1, 150}}, true, {0, 3}, {1, 3, 5, 0}},
      // odd D = 5, MHA, chunked prefill
      {3, 3, 5, 2, 40, {{9, 1, 3}, {4, 0, 0}}, false, {0, 3}, {1, 2}},
      // D = 40 (DMAX 64), GQA 4, peaky softmax: chunked prefill and decode
      {4, 1, 40, 2, 80, {{20, 0, 30}, {1, 1, 40}}, true, {0, 4}, {1, 2, 3, 0}, 3.0f},
      // D = 96 (DMAX 128), GQA 2: a chunked prefill over 3 tiles with a short past
      {4, 2, 96, 1, 64, {{33, 0, 10}}, false, {0, 6}, {1, 2, 0}},
      // long decode, few blocks (GQA 1, D = 32): the automatic split and the 64 cap
      {8, 8, 32, 1, 1100, {{1, 0, 1000}}, false, {0, 100}, {1, 64, 0}},
  };
  AttnCase many{4, 2, 32, 40, 64, {}, false, {0, 3}, {1, 3, 0}};  // 40 decode sequences: two launch tables
  for (int s = 0; s < 40; ++s) many.seqs.push_back({1, s, (s * 7) % 60});
  cases.push_back(many);
  // Gemma-2 soft-capping: scores of a few units (scale 2 to 3 / sqrt(d)) against caps of 1.5 to 5.
  const std::vector<AttnCase> capped = {
      // prefill, chunked prefill and decode packed; GQA 4, D = 64; split-K and its combine
      {8, 2, 64, 3, 300, {{40, 0, 0}, {37, 2, 50}, {1, 1, 250}}, true, {0, 3}, {1, 3, 0}, 3.0f, 3.0f},
      // MQA decode (GQA 6), D = 80 padded to 128, long contexts split
      {6, 1, 80, 3, 256, {{1, 0, 0}, {1, 1, 17}, {1, 2, 199}}, false, {0, 5}, {1, 7, 0}, 2.5f, 2.0f},
      // D = 256, GQA 2: prefill and a long decode
      {2, 1, 256, 2, 200, {{20, 0, 0}, {1, 1, 150}}, true, {0, 3}, {1, 5, 0}, 3.0f, 5.0f},
      // odd D = 5, MHA, chunked prefill, a sharp cap
      {3, 3, 5, 2, 40, {{9, 1, 3}, {4, 0, 0}}, false, {0, 3}, {1, 2}, 2.0f, 1.5f},
  };
  cases.insert(cases.end(), capped.begin(), capped.end());
  for (const AttnCase& c : cases)
    for (DType dt : {DType::F32, DType::BF16}) attention_case(args, c, dt, seed++);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("worst out error: F32 %.2e (tol 1e-5), BF16 %.2e (tol 1e-2); caches bitwise\n", g_worst[0], g_worst[1]);
  std::printf("capped cases: least distance of out from the uncapped reference %.2f (>= %.2f)\n", g_least_bent, kBent);
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
