// Emulated runs of linear.cu's own kernels - broadcast_bias_kernel, gemm_fallback_kernel,
// colsum_partial_kernel + colsum_finish_kernel (kernels/cuda/linear.cu, extracted by
// tests/emu/extract.py into the build's emu_gen/ with the cuBLASLt code between and after them
// cut) - against the fp32 CPU reference (kernels/ops.h on host tensors) and plain host math.
// Registered with ctest as kernels.linear_emu. cuBLASLt cannot run here, so the three linear
// ops run as the host code runs them with set_linear_fallback_for_testing(true) (or when the
// heuristic has no algorithm): linear_forward (K == 0: the bias broadcast alone; a bias: the
// broadcast, then the fallback GEMM with beta = 1), linear_backward_input (beta 0 or 1),
// linear_backward_weight (beta 1, then the dbias column sums into a NaN-poisoned scratch of
// device_scratch::bias_backward(N, M) bytes); the launch configurations mirror gemm_fallback,
// fill_bias and column_sums_into. Also: the fallback GEMM with every transpose pair and other
// alpha / beta, its grid.y loop (grid.y forced below the tile count), and the bias broadcast
// alone with every dtype pair and its grid-stride loop.
// Tolerances as tests/gpu/cuda_forward_test.cpp and cuda_training_ops_test.cpp (max |emu - ref|
// / max |ref|): 1e-5 with every tensor F32, 1e-2 with any BF16; dbias additionally bit for bit
// equal to a host replay of the documented order (1024-row chunks, 8 row lanes per column in
// double, lanes then chunks in order, one fp32 add into dbias); the bias broadcast exact.
// Outputs that are overwritten start as NaN (beta = 0 must never read them); inputs must stay
// unchanged. Each case runs as A, B (A again: bitwise determinism) and a variant (random fiber
// order and warp speeds, zeroed shared memory, buffers after a guard page) that must equal A
// bit for bit (emu_harness.h).
// Usage: linear_emu [--no-variant] [--only SUBSTRING]
#include "linear_emu.h"  // from emu_gen/ (or a mutant dir), via -I
// (the extracted header first: it brings emu_cuda.h, which the harness header uses)
#include <chrono>

#include "emu_harness.h"

namespace cu = sppft::cuda;
using namespace emuh;
using std::int64_t;


// ---------------------------------------------------------------- emulated launchers
// As fill_bias: y[n, :] = bias (or 0). grid_override > 0: that many blocks (grid-stride probe).
static bool emu_fill_bias(Dev* bias, Dev& y, int64_t n, int64_t m, unsigned grid_override = 0) {
  bool ok = true;
  const unsigned blocks = grid_override ? grid_override : grid_blocks(n * m, 256);
  with_type(y.t, [&](auto ty) {
    using TY = typename decltype(ty)::type;
    with_type(bias ? bias->t : y.t, [&](auto tb) {
      using TB = typename decltype(tb)::type;
      const TB* bp = bias ? bias->as<TB>() : nullptr;
      TY* yp = y.as<TY>();
      ok = emu::launch("broadcast_bias_kernel", blocks, 256, 0, [=] { cu::broadcast_bias_kernel<TB, TY>(bp, yp, n, m); });
    });
  });
  return ok;
}

// linear.cu's Gemm: D (m x n, ld m) = alpha op(A) op(B) + beta D, column-major.
struct Gemm {
  bool trans_a, trans_b;
  int64_t m, n, k;
  Dev* a;
  Dev* b;
  Dev* d;
  float alpha, beta;
};

// As gemm_fallback. gy_override > 0: grid.y that many tiles of n (a probe of the loop over
// n-tiles, which the host's grid reaches only past 65535 tiles).
static bool emu_gemm_fallback(const Gemm& g, unsigned gy_override = 0) {
  const dim3 grid(static_cast<unsigned>((g.m + cu::kFallbackTile - 1) / cu::kFallbackTile),
                  gy_override ? gy_override
                              : static_cast<unsigned>(std::min<int64_t>((g.n + cu::kFallbackTile - 1) / cu::kFallbackTile, 65535)));
  bool ok = true;
  with_type(g.a->t, [&](auto ta) {
    using TA = typename decltype(ta)::type;
    with_type(g.d->t, [&](auto td) {
      using TD = typename decltype(td)::type;
      const TA* ap = g.a->as<TA>();
      const TA* bp = g.b->as<TA>();
      TD* dp = g.d->as<TD>();
      const int64_t m = g.m, n = g.n, k = g.k;
      const bool tra = g.trans_a, trb = g.trans_b;
      const float alpha = g.alpha, beta = g.beta;
      ok = emu::launch("gemm_fallback_kernel", grid, dim3(cu::kFallbackTile, cu::kFallbackTile), 0, [=] {
        cu::gemm_fallback_kernel<TA, TD>(ap, bp, dp, m, n, k, tra, trb, alpha, beta);
      });
    });
  });
  return ok;
}

// As column_sums_into; the scratch (exactly the requested bytes, NaN) goes into the snapshot.
static bool emu_column_sums_into(Dev& g, Dev& dbias, int64_t n, int64_t m, Snapshot* snap) {
  const int64_t chunks = (n + cu::kBiasRows - 1) / cu::kBiasRows;
  Dev scratch(DType::F32, sppft::device_scratch::bias_backward(n, m) / sizeof(float));
  scratch.fill_nan();
  auto* partial = reinterpret_cast<double*>(scratch.raw());
  const dim3 grid(static_cast<unsigned>((m + cu::kBiasCols - 1) / cu::kBiasCols), static_cast<unsigned>(chunks));
  bool ok = true;
  with_type(g.t, [&](auto tg) {
    using TG = typename decltype(tg)::type;
    const TG* gp = g.as<TG>();
    ok = emu::launch("colsum_partial_kernel", grid, dim3(cu::kBiasCols, cu::kBiasLanes), 0,
                     [=] { cu::colsum_partial_kernel<TG>(gp, partial, n, m); }) && ok;
  });
  with_type(dbias.t, [&](auto tb) {
    using TB = typename decltype(tb)::type;
    TB* bp = dbias.as<TB>();
    ok = emu::launch("colsum_finish_kernel", grid_blocks(m, 256), 256, 0,
                     [=] { cu::colsum_finish_kernel<TB>(partial, bp, chunks, m); }) && ok;
  });
  snap->add("partials", scratch);
  snap->check_canaries("partials", scratch);
  return ok;
}

// linear_forward with cuBLASLt unavailable: y = x w^T (+ bias).
static bool emu_linear_forward(Dev& x, Dev& w, Dev* bias, Dev& y, int64_t n, int64_t k, int64_t m) {
  if (n == 0 || m == 0) return true;
  if (k == 0) return emu_fill_bias(bias, y, n, m);
  Gemm g{true, false, m, n, k, &w, &x, &y, 1.0f, 0.0f};
  bool ok = true;
  if (bias) {  // unfused: y = bias, then y += x w^T
    ok = emu_fill_bias(bias, y, n, m);
    g.beta = 1.0f;
  }
  return emu_gemm_fallback(g) && ok;
}
// linear_backward_input (m > 0): dx (+)= dy w.
static bool emu_linear_backward_input(Dev& dy, Dev& w, Dev& dx, bool accumulate, int64_t n, int64_t m, int64_t k) {
  if (n == 0 || k == 0 || m == 0) return true;
  return emu_gemm_fallback(Gemm{false, false, k, n, m, &w, &dy, &dx, 1.0f, accumulate ? 1.0f : 0.0f});
}
// linear_backward_weight: dw += dy^T x, dbias += column sums of dy.
static bool emu_linear_backward_weight(Dev& dy, Dev& x, Dev& dw, Dev* dbias, int64_t n, int64_t m, int64_t k,
                                       Snapshot* snap) {
  if (n == 0 || m == 0) return true;
  bool ok = true;
  if (k > 0) ok = emu_gemm_fallback(Gemm{false, true, k, m, n, &x, &dy, &dw, 1.0f, 1.0f});
  if (dbias) ok = emu_column_sums_into(dy, *dbias, n, m, snap) && ok;
  return ok;
}

// ---------------------------------------------------------------- report
static double g_worst[2] = {0, 0};  // GEMM outputs: all-F32, any BF16
static std::string fmt(const char* label, double e, double tol) {
  char b[64];
  std::snprintf(b, sizeof b, "%s %8.2e/%.0e", label, e, tol);
  return b;
}
static void note(double e, double tol) { g_worst[tol > 1e-5] = std::max(g_worst[tol > 1e-5], e); }
static const char* dn(DType t) { return t == DType::BF16 ? "B" : "F"; }
static std::vector<unsigned char> bytes_of(const std::vector<float>& v, DType t) {
  Dev d(t, v.size());
  d.upload(v);
  return d.bytes();
}

// ---------------------------------------------------------------- forward
static void forward_case(const Args& args, int64_t n, int64_t k, int64_t m, DType in_t, DType out_t, int bias_mode,
                         bool view, unsigned seed) {
  const DType bias_t = bias_mode == 1 ? out_t : (out_t == DType::F32 ? DType::BF16 : DType::F32);
  char nm[128];
  std::snprintf(nm, sizeof nm, "fwd N=%" PRId64 " K=%" PRId64 " M=%" PRId64 " x,w %s y %s%s%s%s", n, k, m, dn(in_t),
                dn(out_t), bias_mode ? " bias " : "", bias_mode ? dn(bias_t) : "", view ? " x-view" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::vector<float> x = randn(rng, n * k, in_t), w = randn(rng, m * k, in_t), b = randn(rng, m, bias_t);
  sppft::Tensor ty = host_tensor(std::vector<float>(n * m, NAN), {n, m});
  const sppft::Tensor tb = host_tensor(b, {m});
  sppft::ops::linear_forward(host_tensor(x, {n, k}), host_tensor(w, {m, k}), bias_mode ? &tb : nullptr, ty);
  const std::vector<float> y_ref = to_vec(ty);
  auto run = [&] {
    Snapshot s;
    Dev dx(in_t, n * k, view ? k : 0), dw(in_t, m * k), db(bias_t, m), dy(out_t, n * m);
    dx.upload(x), dw.upload(w), db.upload(b), dy.fill_nan();
    s.launched(emu_linear_forward(dx, dw, bias_mode ? &db : nullptr, dy, n, k, m));
    s.add("y", dy), s.add("x", dx), s.add("w", dw), s.add("bias", db);
    s.check_canaries("y", dy), s.check_canaries("x", dx), s.check_canaries("w", dw), s.check_canaries("bias", db);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double tol = bias_mode ? tolerance({in_t, out_t, bias_t}) : tolerance({in_t, out_t});
  const double e = rel_error(floats_of(a.get("y"), out_t), y_ref);
  note(e, tol);
  bool ok = a.ok && e <= tol;
  std::string why = a.why;
  if (a.get("x") != bytes_of(x, in_t) || a.get("w") != bytes_of(w, in_t) || a.get("bias") != bytes_of(b, bias_t))
    ok = false, why += " input-modified";
  report_case(nm, fmt("y", e, tol), ok, why);
}

// ---------------------------------------------------------------- backward input
static void backward_input_case(const Args& args, int64_t n, int64_t m, int64_t k, DType in_t, DType out_t,
                                bool accumulate, bool view, unsigned seed) {
  char nm[128];
  std::snprintf(nm, sizeof nm, "bwd-input N=%" PRId64 " M=%" PRId64 " K=%" PRId64 " dy,w %s dx %s%s%s", n, m, k,
                dn(in_t), dn(out_t), accumulate ? " accumulate" : "", view ? " dy-view" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::vector<float> dy = randn(rng, n * m, in_t), w = randn(rng, m * k, in_t);
  const std::vector<float> dx0 = accumulate ? randn(rng, n * k, out_t) : std::vector<float>(n * k, NAN);
  sppft::Tensor tdx = host_tensor(dx0, {n, k});
  sppft::ops::linear_backward_input(host_tensor(dy, {n, m}), host_tensor(w, {m, k}), tdx, accumulate);
  const std::vector<float> dx_ref = to_vec(tdx);
  auto run = [&] {
    Snapshot s;
    Dev ddy(in_t, n * m, view ? m : 0), dw(in_t, m * k), ddx(out_t, n * k);
    ddy.upload(dy), dw.upload(w);
    if (accumulate)
      ddx.upload(dx0);
    else
      ddx.fill_nan();
    s.launched(emu_linear_backward_input(ddy, dw, ddx, accumulate, n, m, k));
    s.add("dx", ddx), s.add("dy", ddy), s.add("w", dw);
    s.check_canaries("dx", ddx), s.check_canaries("dy", ddy), s.check_canaries("w", dw);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double tol = tolerance({in_t, out_t});
  const double e = rel_error(floats_of(a.get("dx"), out_t), dx_ref);
  note(e, tol);
  bool ok = a.ok && e <= tol;
  std::string why = a.why;
  if (a.get("dy") != bytes_of(dy, in_t) || a.get("w") != bytes_of(w, in_t)) ok = false, why += " input-modified";
  report_case(nm, fmt("dx", e, tol), ok, why);
}

// ---------------------------------------------------------------- backward weight (and dbias)
// dbias as the kernels sum it: per 1024-row chunk, lane y of 8 sums rows y, y + 8, ... in
// double, the lanes added in order; the chunks added in order; one fp32 add into dbias.
static std::vector<unsigned char> dbias_replay(const std::vector<float>& g, const std::vector<float>& b0, int64_t n,
                                               int64_t m, DType bt) {
  std::vector<float> out(m);
  for (int64_t col = 0; col < m; ++col) {
    double total = 0.0;
    for (int64_t r0 = 0; r0 < n; r0 += cu::kBiasRows) {
      const int64_t r1 = std::min(n, r0 + cu::kBiasRows);
      double t = 0.0;
      for (int y = 0; y < cu::kBiasLanes; ++y) {
        double s = 0.0;
        for (int64_t r = r0 + y; r < r1; r += cu::kBiasLanes) s += static_cast<double>(g[r * m + col]);
        t += s;
      }
      total += t;
    }
    out[col] = emu::opaque(b0[col] + static_cast<float>(total));
  }
  return bytes_of(out, bt);
}

static void backward_weight_case(const Args& args, int64_t n, int64_t m, int64_t k, DType in_t, DType out_t,
                                 bool with_bias, bool view, unsigned seed) {
  char nm[128];
  std::snprintf(nm, sizeof nm, "bwd-weight N=%" PRId64 " M=%" PRId64 " K=%" PRId64 " dy,x %s dw%s %s%s", n, m, k,
                dn(in_t), with_bias ? ",dbias" : "", dn(out_t), view ? " views" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::vector<float> dy = randn(rng, n * m, in_t), x = randn(rng, n * k, in_t);
  const std::vector<float> dw0 = randn(rng, m * k, out_t), db0 = randn(rng, m, out_t);
  sppft::Tensor tdw = host_tensor(dw0, {m, k}), tdb = host_tensor(db0, {m});
  sppft::ops::linear_backward_weight(host_tensor(dy, {n, m}), host_tensor(x, {n, k}), tdw, with_bias ? &tdb : nullptr);
  const std::vector<float> dw_ref = to_vec(tdw), db_ref = to_vec(tdb);
  auto run = [&] {
    Snapshot s;
    Dev ddy(in_t, n * m, view ? m : 0), dx(in_t, n * k, view ? k : 0), ddw(out_t, m * k), ddb(out_t, m);
    ddy.upload(dy), dx.upload(x), ddw.upload(dw0), ddb.upload(db0);
    s.launched(emu_linear_backward_weight(ddy, dx, ddw, with_bias ? &ddb : nullptr, n, m, k, &s));
    s.add("dw", ddw), s.add("dbias", ddb), s.add("dy", ddy), s.add("x", dx);
    s.check_canaries("dw", ddw), s.check_canaries("dbias", ddb), s.check_canaries("dy", ddy), s.check_canaries("x", dx);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double tol = tolerance({in_t, out_t});
  const double e = rel_error(floats_of(a.get("dw"), out_t), dw_ref);
  note(e, tol);
  bool ok = a.ok && e <= tol;
  std::string why = a.why, errs = fmt("dw", e, tol);
  if (with_bias) {
    const double eb = rel_error(floats_of(a.get("dbias"), out_t), db_ref);
    ok = ok && eb <= tol;
    errs += " " + fmt("dbias", eb, tol);
    if (a.get("dbias") != dbias_replay(dy, db0, n, m, out_t)) ok = false, why += " dbias-bits!=documented-order";
  } else if (a.get("dbias") != bytes_of(db0, out_t)) {
    ok = false, why += " dbias-modified";
  }
  if (a.get("dy") != bytes_of(dy, in_t) || a.get("x") != bytes_of(x, in_t)) ok = false, why += " input-modified";
  report_case(nm, errs, ok, why);
}

// ---------------------------------------------------------------- the fallback GEMM directly
// Every transpose pair, alpha / beta other than 0 / 1, against double host math.
static void gemm_case(const Args& args, int64_t m, int64_t n, int64_t k, bool ta, bool tb, DType in_t, DType out_t,
                      float alpha, float beta, unsigned gy_override, unsigned seed) {
  char nm[128];
  std::snprintf(nm, sizeof nm, "gemm %s%s m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " a,b %s d %s alpha=%g beta=%g%s",
                ta ? "T" : "N", tb ? "T" : "N", m, n, k, dn(in_t), dn(out_t), alpha, beta,
                gy_override ? " grid.y-loop-probe" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::vector<float> av = randn(rng, m * k, in_t), bv = randn(rng, k * n, in_t);
  const std::vector<float> d0 = beta != 0.0f ? randn(rng, m * n, out_t) : std::vector<float>(m * n, NAN);
  // op(A)(i, l): A stored m x k (column-major: a[l * m + i]) or, transposed, k x m (a[i * k + l]);
  // op(B)(l, j): B stored k x n (b[j * k + l]) or n x k (b[l * n + j]).
  std::vector<float> want(m * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0;
      for (int64_t l = 0; l < k; ++l)
        acc += static_cast<double>(ta ? av[i * k + l] : av[l * m + i]) * (tb ? bv[l * n + j] : bv[j * k + l]);
      want[j * m + i] = static_cast<float>(alpha * acc + (beta != 0.0f ? beta * static_cast<double>(d0[j * m + i]) : 0.0));
    }
  auto run = [&] {
    Snapshot s;
    Dev da(in_t, m * k), db(in_t, k * n), dd(out_t, m * n);
    da.upload(av), db.upload(bv);
    if (beta != 0.0f)
      dd.upload(d0);
    else
      dd.fill_nan();
    s.launched(emu_gemm_fallback(Gemm{ta, tb, m, n, k, &da, &db, &dd, alpha, beta}, gy_override));
    s.add("d", dd), s.add("a", da), s.add("b", db);
    s.check_canaries("d", dd), s.check_canaries("a", da), s.check_canaries("b", db);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double tol = tolerance({in_t, out_t});
  const double e = rel_error(floats_of(a.get("d"), out_t), want);
  note(e, tol);
  bool ok = a.ok && e <= tol;
  std::string why = a.why;
  if (a.get("a") != bytes_of(av, in_t) || a.get("b") != bytes_of(bv, in_t)) ok = false, why += " input-modified";
  report_case(nm, fmt("d", e, tol), ok, why);
}

// ---------------------------------------------------------------- the bias broadcast alone (exact)
static void bias_case(const Args& args, int64_t n, int64_t m, DType bt, DType yt, bool null_bias, unsigned grid_override,
                      unsigned seed) {
  char nm[128];
  std::snprintf(nm, sizeof nm, "bias N=%" PRId64 " M=%" PRId64 " bias %s y %s%s", n, m, null_bias ? "null" : dn(bt),
                dn(yt), grid_override ? " grid-stride-probe" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::vector<float> b = randn(rng, m, DType::F32);  // F32 bias values not representable in bf16
  std::vector<float> want(n * m);
  for (int64_t i = 0; i < n * m; ++i) want[i] = null_bias ? 0.0f : bt == DType::BF16 ? round_bf16(b[i % m]) : b[i % m];
  auto run = [&] {
    Snapshot s;
    Dev db(bt, m), dy(yt, n * m);
    db.upload(b), dy.fill_nan();
    s.launched(emu_fill_bias(null_bias ? nullptr : &db, dy, n, m, grid_override));
    s.add("y", dy), s.add("bias", db);
    s.check_canaries("y", dy), s.check_canaries("bias", db);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why;
  if (a.get("y") != bytes_of(want, yt)) ok = false, why += " y!=bias";
  if (a.get("bias") != bytes_of(b, bt)) ok = false, why += " input-modified";
  report_case(nm, ok ? "y exact" : "y DIFFERS", ok, why);
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  unsigned seed = 900;
  const std::pair<DType, DType> kDtypes[] = {{DType::F32, DType::F32}, {DType::BF16, DType::F32}, {DType::BF16, DType::BF16}};

  // Bias broadcast: every (bias, y) dtype pair, no bias, the grid-stride loop.
  for (DType bt : {DType::F32, DType::BF16})
    for (DType yt : {DType::F32, DType::BF16}) {
      bias_case(args, 3, 7, bt, yt, false, 0, seed++);
      bias_case(args, 130, 33, bt, yt, false, 0, seed++);
    }
  bias_case(args, 5, 9, DType::F32, DType::F32, true, 0, seed++);
  bias_case(args, 5, 9, DType::F32, DType::BF16, true, 0, seed++);
  bias_case(args, 130, 33, DType::BF16, DType::F32, false, 2, seed++);

  // linear_forward (the GPU test's shapes {N, K, M}; K = 0: the broadcast alone).
  const std::tuple<int64_t, int64_t, int64_t> kFwd[] = {{1, 1, 1},    {3, 7, 5},    {17, 64, 33},
                                                         {5, 33, 130}, {64, 256, 96}, {130, 96, 256}};
  int rot = 0;
  for (auto [n, k, m] : kFwd)
    for (auto [in_t, out_t] : kDtypes)
      for (int bias_mode = 0; bias_mode < 3; ++bias_mode) forward_case(args, n, k, m, in_t, out_t, bias_mode, rot++ % 2, seed++);
  forward_case(args, 3, 0, 5, DType::F32, DType::F32, 1, false, seed++);
  forward_case(args, 3, 0, 5, DType::BF16, DType::BF16, 0, false, seed++);

  // linear_backward_input / linear_backward_weight ({N, M, K} of cuda_training_ops_test.cpp).
  const std::tuple<int64_t, int64_t, int64_t> kBwd[] = {{1, 1, 1}, {7, 13, 5}, {17, 64, 33}, {5, 33, 130}, {130, 96, 256}};
  for (auto [n, m, k] : kBwd)
    for (auto [in_t, out_t] : kDtypes)
      for (bool flag : {false, true}) {
        backward_input_case(args, n, m, k, in_t, out_t, flag, rot % 3 == 0, seed++);
        backward_weight_case(args, n, m, k, in_t, out_t, flag, rot++ % 3 == 1, seed++);
      }
  // dbias over several 1024-row chunks; K = 0 (dbias alone).
  backward_weight_case(args, 3000, 37, 8, DType::F32, DType::F32, true, false, seed++);
  backward_weight_case(args, 3000, 37, 8, DType::BF16, DType::BF16, true, false, seed++);
  backward_weight_case(args, 2049, 256, 8, DType::BF16, DType::F32, true, true, seed++);
  backward_weight_case(args, 1025, 40, 0, DType::F32, DType::F32, true, false, seed++);

  // The fallback GEMM: every transpose pair, alpha 0.5 with beta -2 (D read) or 0 (D NaN, never
  // read); the loop over n-tiles past grid.y.
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [in_t, out_t] : kDtypes) {
        gemm_case(args, 37, 21, 19, ta, tb, in_t, out_t, 0.5f, -2.0f, 0, seed++);
        gemm_case(args, 20, 35, 40, ta, tb, in_t, out_t, 0.5f, 0.0f, 0, seed++);
      }
  gemm_case(args, 20, 70, 17, false, true, DType::F32, DType::F32, 1.0f, 1.0f, 1, seed++);
  gemm_case(args, 33, 50, 9, true, false, DType::BF16, DType::BF16, 1.0f, 0.0f, 2, seed++);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("worst GEMM output error: all-F32 %.2e (tol 1e-5), with BF16 %.2e (tol 1e-2); bias broadcast and dbias bits exact\n",
              g_worst[0], g_worst[1]);
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
