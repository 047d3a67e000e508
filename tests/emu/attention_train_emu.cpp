// Emulated runs of the CUDA-core training attention (kernels/cuda/attention_train.cu:
// forward_kernel with lse, delta_kernel, dkdv_kernel, dq_kernel; F32 and BF16, every DMAX
// bucket; extracted unchanged by tests/emu/extract.py into the build's emu_gen/) against the
// fp32 CPU reference (sppft::ops::attention_forward_train / attention_backward on host tensors).
// Registered with ctest as kernels.attention_train_emu. The launchers mirror the host code of
// cuda::attention_forward_train and attention_backward on their CUDA-core path (tables of
// 32-row query tiles, of rows and of 32-key tiles, the window clamp, the DMAX dispatch, the
// delta scratch of device_scratch::attention_backward(N, Hq) bytes, NaN-poisoned: it holds an
// earlier op's data on the GPU). BF16 runs here as the host's "tensor cores off" (or a shape
// the tensor-core path does not take); attention_train_tc.cu has kernels.tc_attention_emu.
// As tests/gpu/cuda_attention_train_test.cpp: the backward gets the CPU forward's out (rounded
// to bf16 for BF16, 0 in uncovered rows) and lse on both sides; tolerances (max |emu - ref| /
// max |ref| over the covered rows) 1e-5 F32 and 2e-2 BF16 for out, dq, dk, dv; lse within 1e-5
// of max(1, max |lse|); delta (fp32, internal) within 1e-5 of max |dout . out| (double
// reference). Rows covered by no sequence keep their NaN poison bit for bit in every output
// and in the delta scratch; inputs unchanged; no canary touched. Each case runs as A, B (A
// again: bitwise determinism) and a variant (random fiber order and warp speeds, zeroed shared
// memory, buffers after a guard page) that must equal A bit for bit, delta included
// (emu_harness.h).
// Gemma-2's soft-capping (softcap > 0: scores softcap * tanh(s / softcap), dS through the
// slope 1 - (c / softcap)^2): capped cases with scores of a few units against caps of 1.5 to 3,
// checked against the capped CPU reference as above and, so that they cannot pass with the
// cap ignored, out, dq, dk, dv each at least kBent (relative) away from the uncapped
// reference's (forward and backward of the same inputs with softcap = 0).
// Usage: attention_train_emu [--no-variant] [--only SUBSTRING]
#include "attention_train_emu.h"  // from emu_gen/ (or a mutant dir), via -I
// (the extracted header first: it brings emu_cuda.h, which the harness header uses)
#include <chrono>
#include <span>

#include "emu_harness.h"

namespace cu = sppft::cuda;
namespace attn = sppft::cuda::attn;
using namespace emuh;
using std::int64_t;
using Seq = sppft::ops::AttentionSeq;
using attn::SeqTable;

using attn::dispatch_dmax;

// ---------------------------------------------------------------- emulated launchers
// As cuda::attention_forward_train (CUDA-core path, after its checks).
static bool emu_forward(Dev& q, Dev& k, Dev& v, std::span<const Seq> seqs, float scale, int64_t window, Dev& out, Dev& lse,
                        int64_t n, int hq, int hkv, int d, float softcap) {
  const int group = hq / hkv, win = attn::clamp_window(window, n);
  const auto tables = attn::make_tables(seqs, [&](const Seq& s) { return (s.q_len * group + cu::kRows - 1) / cu::kRows; });
  bool ok = true;
  for (const SeqTable& t : tables) {
    const dim3 grid(static_cast<unsigned>(t.start[t.count]), static_cast<unsigned>(hkv));
    with_type(q.t, [&](auto tag) {
      using T = typename decltype(tag)::type;
      dispatch_dmax(d, [&](auto dmax) {
        constexpr int DMAX = decltype(dmax)::value;
        constexpr std::size_t smem = cu::forward_smem_bytes<DMAX>();
        const T *qp = q.as<T>(), *kp = k.as<T>(), *vp = v.as<T>();
        T* op = out.as<T>();
        float* lp = lse.as<float>();
        ok = emu::launch("forward_kernel", grid, cu::kThreads, smem, [=] {
               cu::forward_kernel<T, DMAX>(qp, kp, vp, op, lp, t, d, hq, hkv, scale, win, softcap);
             }) && ok;
      });
    });
  }
  return ok;
}

// As cuda::attention_backward (CUDA-core path, after its checks): per table delta, dK/dV, dQ.
static bool emu_backward(Dev& q, Dev& k, Dev& v, Dev& out, Dev& lse, Dev& dout, std::span<const Seq> seqs, float scale,
                         int64_t window, Dev& dq, Dev& dk, Dev& dv, int64_t n, int hq, int hkv, int d, float softcap,
                         Snapshot* snap) {
  const int group = hq / hkv, win = attn::clamp_window(window, n);
  const auto row_tables = attn::make_tables(seqs, [](const Seq& s) { return s.q_len; });
  if (row_tables.empty()) return true;
  const int q_tile = cu::kRows, k_tile = cu::kKeys;
  const auto qtile_tables = attn::make_tables(seqs, [&](const Seq& s) { return (s.q_len * group + q_tile - 1) / q_tile; });
  const auto ktile_tables = attn::make_tables(seqs, [&](const Seq& s) { return (s.q_len + k_tile - 1) / k_tile; });
  Dev scratch(DType::F32, sppft::device_scratch::attention_backward(n, hq) / sizeof(float));
  scratch.fill_nan();
  float* delta = scratch.as<float>();
  bool ok = true;
  for (std::size_t ti = 0; ti < row_tables.size(); ++ti) {
    const SeqTable& rows = row_tables[ti];
    const SeqTable& qtiles = qtile_tables[ti];
    const SeqTable& ktiles = ktile_tables[ti];
    with_type(q.t, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T *qp = q.as<T>(), *kp = k.as<T>(), *vp = v.as<T>(), *op = out.as<T>(), *gp = dout.as<T>();
      const float* lp = lse.as<float>();
      T *dqp = dq.as<T>(), *dkp = dk.as<T>(), *dvp = dv.as<T>();
      ok = emu::launch("delta_kernel", static_cast<unsigned>(rows.start[rows.count]), cu::kThreads, 0,
                       [=] { cu::delta_kernel<T>(op, gp, delta, rows, d, hq); }) && ok;
      dispatch_dmax(d, [&](auto dmax) {
        constexpr int DMAX = decltype(dmax)::value;
        ok = emu::launch("dkdv_kernel", dim3(static_cast<unsigned>(ktiles.start[ktiles.count]), static_cast<unsigned>(hkv)),
                         cu::kThreads, cu::dkdv_smem_bytes<DMAX>(), [=] {
                           cu::dkdv_kernel<T, DMAX>(qp, kp, vp, gp, lp, delta, dkp, dvp, ktiles, d, hq, hkv, scale, win,
                                                    softcap);
                         }) && ok;
        ok = emu::launch("dq_kernel", dim3(static_cast<unsigned>(qtiles.start[qtiles.count]), static_cast<unsigned>(hkv)),
                         cu::kThreads, cu::dq_smem_bytes<DMAX>(), [=] {
                           cu::dq_kernel<T, DMAX>(qp, kp, vp, gp, lp, delta, dqp, qtiles, d, hq, hkv, scale, win, softcap);
                         }) && ok;
      });
    });
  }
  snap->add("delta", scratch);
  snap->check_canaries("delta", scratch);
  return ok;
}

// ---------------------------------------------------------------- report
enum Out { kOut, kLse, kDq, kDk, kDv, kDelta, kNumOut };
static const char* const kOutName[kNumOut] = {"out", "lse", "dq", "dk", "dv", "delta"};
static double g_worst[kNumOut][2] = {};  // per output, F32 / BF16
// Capped cases: out, dq, dk, dv must be at least this far (rel_error) from the uncapped
// reference - 5x the BF16 tolerance - or the cap could be ignored unnoticed.
constexpr double kBent = 0.1;
static double g_least_bent = INFINITY;  // the smallest such distance seen

// ---------------------------------------------------------------- cases
struct TrainCase {
  int hq, hkv, d;
  std::vector<int> lens;   // sequence lengths, packed in order (0 = an empty sequence)
  bool gaps;               // an uncovered row before the first sequence and after each one
  float sharpness = 1.0f;  // scale = sharpness / sqrt(d)
  float softcap = 0.0f;    // Gemma-2's score cap (0: none)
};

static std::string lens_str(const std::vector<int>& l) {
  if (l.size() > 6) return std::to_string(l.size()) + " seqs";
  std::string s = "{";
  for (std::size_t i = 0; i < l.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(l[i]);
  }
  return s + "}";
}

static void train_case(const Args& args, const TrainCase& c, DType dt, const std::vector<int>& windows, unsigned seed) {
  std::vector<Seq> seqs;
  int64_t row = c.gaps ? 1 : 0;
  for (int len : c.lens) {
    seqs.push_back(Seq{row, len, 0, 0});
    row += len + (c.gaps ? 1 : 0);
  }
  const int64_t n = std::max<int64_t>(row, 1);
  std::vector<char> covered(n, 0);
  for (const Seq& s : seqs)
    for (int64_t t = 0; t < s.q_len; ++t) covered[s.q_begin + t] = 1;
  const int hq = c.hq, hkv = c.hkv, d = c.d;
  const int64_t qw = static_cast<int64_t>(hq) * d, kw = static_cast<int64_t>(hkv) * d;
  const float scale = c.sharpness / std::sqrt(static_cast<float>(d));
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  const std::vector<float> q = randn(rng, n * qw, dt), k = randn(rng, n * kw, dt), v = randn(rng, n * kw, dt),
                           g = randn(rng, n * qw, dt);
  const sppft::Tensor tq = host_tensor(q, {n, qw}), tk = host_tensor(k, {n, kw}), tv = host_tensor(v, {n, kw}),
                      tg = host_tensor(g, {n, qw});
  Dev q_want(dt, n * qw), k_want(dt, n * kw), v_want(dt, n * kw), g_want(dt, n * qw);
  q_want.upload(q), k_want.upload(k), v_want.upload(v), g_want.upload(g);

  for (int window : windows) {
    char nm[160];
    char sharp[32] = "", cap[32] = "";
    if (c.sharpness != 1.0f) std::snprintf(sharp, sizeof sharp, " s*%g", c.sharpness);
    if (c.softcap > 0) std::snprintf(cap, sizeof cap, " cap=%g", c.softcap);
    std::snprintf(nm, sizeof nm, "(%d,%d,%d) %s%s%s%s %s win=%d", hq, hkv, d, lens_str(c.lens).c_str(),
                  c.gaps ? " gaps" : "", sharp, cap, dt == DType::BF16 ? "BF16" : "F32", window);
    if (args.skip(nm)) continue;
    // Reference forward and backward; the backward's inputs: the forward's out (out_in: rounded
    // to dt, 0 in uncovered rows) and lse.
    auto reference = [&](float softcap, std::vector<float>& out_r, std::vector<float>& lse_r, std::vector<float>& out_in,
                         std::vector<float>& dq_r, std::vector<float>& dk_r, std::vector<float>& dv_r) {
      sppft::Tensor tout = host_tensor(std::vector<float>(n * qw, NAN), {n, qw});
      sppft::Tensor tlse = host_tensor(std::vector<float>(n * hq, NAN), {n, hq});
      sppft::ops::attention_forward_train(tq, tk, tv, seqs, scale, window, tout, tlse, softcap);
      out_r = to_vec(tout), lse_r = to_vec(tlse);
      out_in = out_r;
      for (float& x : out_in) x = std::isnan(x) ? 0.0f : dt == DType::BF16 ? round_bf16(x) : x;
      sppft::Tensor tdq = host_tensor(std::vector<float>(n * qw, NAN), {n, qw});
      sppft::Tensor tdk = host_tensor(std::vector<float>(n * kw, NAN), {n, kw});
      sppft::Tensor tdv = host_tensor(std::vector<float>(n * kw, NAN), {n, kw});
      sppft::ops::attention_backward(tq, tk, tv, host_tensor(out_in, {n, qw}), tlse, tg, seqs, scale, window, tdq, tdk,
                                     tdv, softcap);
      dq_r = to_vec(tdq), dk_r = to_vec(tdk), dv_r = to_vec(tdv);
    };
    std::vector<float> out_ref, lse_ref, out_in, dq_ref, dk_ref, dv_ref;
    reference(c.softcap, out_ref, lse_ref, out_in, dq_ref, dk_ref, dv_ref);
    std::vector<float> plain[kNumOut];  // capped cases: the uncapped reference (out, lse, dq, dk, dv)
    if (c.softcap > 0) {
      std::vector<float> plain_in;
      reference(0.0f, plain[kOut], plain[kLse], plain_in, plain[kDq], plain[kDk], plain[kDv]);
    }
    std::vector<float> delta_ref(n * hq, 0.0f);
    for (int64_t r = 0; r < n; ++r)
      for (int h = 0; h < hq; ++h) {
        double s = 0;
        for (int e = 0; e < d; ++e) s += static_cast<double>(g[(r * hq + h) * d + e]) * out_in[(r * hq + h) * d + e];
        delta_ref[r * hq + h] = static_cast<float>(s);
      }

    auto run = [&] {
      Snapshot s;
      Dev dq_(dt, n * qw), dk_(dt, n * kw), dv_(dt, n * kw), dg(dt, n * qw), dout_in(dt, n * qw), dlse_in(DType::F32, n * hq);
      Dev out(dt, n * qw), lse(DType::F32, n * hq), gq(dt, n * qw), gk(dt, n * kw), gv(dt, n * kw);
      dq_.upload(q), dk_.upload(k), dv_.upload(v), dg.upload(g), dout_in.upload(out_in), dlse_in.upload(lse_ref);
      out.fill_nan(), lse.fill_nan(), gq.fill_nan(), gk.fill_nan(), gv.fill_nan();
      s.launched(emu_forward(dq_, dk_, dv_, seqs, scale, window, out, lse, n, hq, hkv, d, c.softcap));
      s.launched(emu_backward(dq_, dk_, dv_, dout_in, dlse_in, dg, seqs, scale, window, gq, gk, gv, n, hq, hkv, d, c.softcap,
                              &s));
      s.add("out", out), s.add("lse", lse), s.add("dq", gq), s.add("dk", gk), s.add("dv", gv);
      s.add("q", dq_), s.add("k", dk_), s.add("v", dv_), s.add("dout", dg), s.add("out_in", dout_in), s.add("lse_in", dlse_in);
      for (auto [nm2, dev] : {std::pair<const char*, Dev*>{"q", &dq_}, {"k", &dk_}, {"v", &dv_}, {"dout", &dg},
                              {"out_in", &dout_in}, {"lse_in", &dlse_in}, {"out", &out}, {"lse", &lse}, {"dq", &gq},
                              {"dk", &gk}, {"dv", &gv}})
        s.check_canaries(nm2, *dev);
      return s;
    };
    Snapshot a = run_three(run, seed * 13 + window, args.variant);
    bool ok = a.ok;
    std::string why = a.why;
    const double tol = dt == DType::BF16 ? 2e-2 : 1e-5;
    const int bi = dt == DType::BF16;
    // Covered rows of width w against the reference (rel_error), uncovered rows still poison.
    auto check = [&](Out o, const std::vector<unsigned char>& bytes, DType t, const std::vector<float>& ref, int64_t w,
                     bool lse_rule) {
      const std::vector<float> got = floats_of(bytes, t);
      std::vector<float> gs, rs;
      long touched = 0;
      double diff = 0, mx = 1;
      for (int64_t r = 0; r < n; ++r)
        for (int64_t e = 0; e < w; ++e) {
          const std::size_t i = static_cast<std::size_t>(r * w + e);
          if (!covered[r]) {
            touched += !is_poison(bytes, i, t);
            continue;
          }
          gs.push_back(got[i]), rs.push_back(ref[i]);
          const double dd = std::fabs(static_cast<double>(got[i]) - ref[i]);
          diff = std::isnan(dd) ? INFINITY : std::max(diff, dd);
          mx = std::max(mx, std::fabs(static_cast<double>(ref[i])));
        }
      const double err = lse_rule ? diff / mx : rel_error(gs, rs);
      const double bound = o == kLse || o == kDelta ? 1e-5 : tol;
      g_worst[o][bi] = std::max(g_worst[o][bi], err);
      if (!(err <= bound)) ok = false, why += std::string(" ") + kOutName[o] + "-error";
      if (touched) ok = false, why += std::string(" ") + kOutName[o] + "-uncovered-rows-written(" + std::to_string(touched) + ")";
      return err;
    };
    const double e_out = check(kOut, a.get("out"), dt, out_ref, qw, false);
    const double e_lse = check(kLse, a.get("lse"), DType::F32, lse_ref, hq, true);
    const double e_dq = check(kDq, a.get("dq"), dt, dq_ref, qw, false);
    const double e_dk = check(kDk, a.get("dk"), dt, dk_ref, kw, false);
    const double e_dv = check(kDv, a.get("dv"), dt, dv_ref, kw, false);
    const double e_delta = check(kDelta, a.get("delta"), DType::F32, delta_ref, hq, false);
    double bent = INFINITY;  // capped: the least distance of out, dq, dk, dv from the uncapped reference
    if (c.softcap > 0) {
      for (auto [o, w] : {std::pair<Out, int64_t>{kOut, qw}, {kDq, qw}, {kDk, kw}, {kDv, kw}}) {
        const std::vector<float> got = floats_of(a.get(kOutName[o]), dt);
        std::vector<float> gs, ps;
        for (int64_t r = 0; r < n; ++r)
          if (covered[r])
            for (int64_t e = 0; e < w; ++e) gs.push_back(got[r * w + e]), ps.push_back(plain[o][r * w + e]);
        bent = std::min(bent, rel_error(gs, ps));
      }
      g_least_bent = std::min(g_least_bent, bent);
      if (!(bent >= kBent)) ok = false, why += " too-close-to-uncapped";
    }
    Dev oi_want(dt, n * qw), li_want(DType::F32, n * hq);
    oi_want.upload(out_in), li_want.upload(lse_ref);
    if (a.get("q") != q_want.bytes() || a.get("k") != k_want.bytes() || a.get("v") != v_want.bytes() ||
        a.get("dout") != g_want.bytes() || a.get("out_in") != oi_want.bytes() || a.get("lse_in") != li_want.bytes())
      ok = false, why += " input-modified";
    char errs[192];
    int len = std::snprintf(errs, sizeof errs, "out %8.2e lse %8.2e dq %8.2e dk %8.2e dv %8.2e delta %8.2e (tol %.0e)",
                            e_out, e_lse, e_dq, e_dk, e_dv, e_delta, tol);
    if (c.softcap > 0) std::snprintf(errs + len, sizeof errs - len, " vs uncapped >= %.2f", bent);
    report_case(nm, errs, ok, why);
  }
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  unsigned seed = 700;
  // {Hq, Hkv, D, lens, gaps, sharpness}: the shapes of tests/gpu/cuda_attention_train_test.cpp
  // and tc_attention_emu, D from 2 to 256 (every DMAX bucket, D % 4 == 2), GQA 1 to 4 (and 3).
  std::vector<TrainCase> cases = {
      {4, 1, 64, {1}, false},                       // N = 1, MQA (GQA 4)
      {6, 2, 80, {7, 33}, true},                    // D = 80 (DMAX 128), GQA 3, uncovered rows around
      {3, 3, 128, {130}, false},                    // MHA, several key and query tiles
      {4, 1, 128, {33, 0, 1, 130, 7}, true, 3.0f},  // packed, an empty sequence, peaky softmax
      {6, 2, 64, {130, 33, 1}, false},              // GQA 3, several packed
      {2, 1, 256, {70, 5}, true},                   // D = 256 (largest shared-memory tiles), GQA 2
      {3, 3, 96, {7, 1, 33}, false, 3.0f},          // D = 96
      {2, 2, 6, {9, 4}, true},                      // D % 4 == 2
      {1, 1, 2, {3}, false},                        // D = 2, one head
      {4, 2, 8, {20, 3}, true},                     // D = 8, GQA 2
      {4, 4, 24, {50}, false},                      // D = 24, MHA
  };
  TrainCase many{8, 2, 32, {}, true};  // 40 sequences: more than one launch table, GQA 4
  for (int s = 0; s < 40; ++s) many.lens.push_back(1 + (s * 5) % 7);
  cases.push_back(many);
  // Gemma-2 soft-capping: scores of a few units (scale 2 to 3 / sqrt(d)) against caps of 1.5 to 3,
  // every DMAX bucket, GQA 1 to 4, packed with gaps and an empty sequence, windows as above.
  const std::vector<TrainCase> capped = {
      {4, 1, 64, {33, 0, 1, 40}, true, 3.0f, 3.0f},  // GQA 4, DMAX 64, two key tiles
      {6, 2, 80, {70, 7}, false, 2.5f, 2.0f},        // GQA 3, D = 80 (DMAX 128)
      {2, 1, 256, {40, 3}, true, 3.0f, 3.0f},        // DMAX 256, GQA 2
      {3, 3, 6, {9, 4}, true, 2.0f, 1.5f},           // MHA, D % 4 == 2 (DMAX 32)
  };
  cases.insert(cases.end(), capped.begin(), capped.end());
  const std::vector<int> windows = {0, 5, 40};
  for (const TrainCase& c : cases)
    for (DType dt : {DType::F32, DType::BF16}) train_case(args, c, dt, windows, seed++);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("worst errors (F32 / BF16):");
  for (int o = 0; o < kNumOut; ++o) std::printf(" %s %.2e / %.2e%s", kOutName[o], g_worst[o][0], g_worst[o][1], o + 1 < kNumOut ? "," : "\n");
  std::printf("capped cases: least distance of out, dq, dk, dv from the uncapped reference %.2f (>= %.2f)\n",
              g_least_bent, kBent);
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
