// Emulated runs of rmsnorm_kernel (rmsnorm_forward, add_rmsnorm_forward), rmsnorm_backward_kernel
// and rmsnorm_dw_kernel (kernels/cuda/rmsnorm.cu, extracted unchanged by tests/emu/extract.py
// into the build's emu_gen/) against the fp32 CPU reference (kernels/ops.h on host tensors).
// Registered with ctest as kernels.rmsnorm_emu. Launchers mirror launch_rmsnorm /
// rmsnorm_backward (VEC choice, threads, blocks, dw blocks and scratch, shared memory).
// Tolerances as tests/gpu/cuda_forward_test.cpp and cuda_backward_test.cpp: max |emu - ref| /
// max |ref| <= 1e-5 with every tensor F32, 1e-2 with any BF16 (dx: x, w, dy, dx; dw: x, dy,
// dw; y: x, w, y); add_rmsnorm's stored sum x + delta exact. Additionally an F32 output is held
// to 1e-5 whatever its inputs' dtypes (inputs are rounded to bf16 before the reference sees
// them, so only fp32 arithmetic differs: the rule the GPU test applies to cross_entropy's
// dlogits); this catches e.g. a norm of the unrounded x + delta, which 1e-2 lets through. Inputs the op does not write are
// checked bitwise unchanged, outputs are NaN-poisoned, scratch too. Each case runs as A, B (A
// again: bitwise determinism) and a variant (random fiber order, zeroed shared memory, buffers
// after a guard page) that must equal A bit for bit (emu_harness.h).
// Usage: rmsnorm_emu [--no-variant] [--only SUBSTRING]
#include "rmsnorm_emu.h"  // from emu_gen/ (or a mutant dir), via -I
// (the extracted header first: it brings emu_cuda.h, which the harness header uses)
#include <chrono>
#include <tuple>
#include <utility>

#include "emu_harness.h"

namespace cu = sppft::cuda;
using namespace emuh;
using std::int64_t;

// The GPU test's bound for these dtypes, and 1e-5 whenever the output itself is F32.
static double bound(std::initializer_list<DType> dts, DType out) {
  return out == DType::F32 ? 1e-5 : tolerance(dts);
}

// ---------------------------------------------------------------- emulated launchers
// As launch_rmsnorm. grid_override > 0: that many blocks instead of the host's (a probe of the
// kernel's grid-stride loop over rows, which the host grid reaches only for N > 2^20).
template <typename TX, typename TW, typename TY>
bool emu_rmsnorm(Dev& x, Dev* delta, Dev& w, float eps, bool unit_offset, Dev& y, int64_t n, int64_t h,
                 unsigned grid_override = 0) {
  if (n == 0 || h == 0) return true;
  const bool vec = h % 8 == 0 && aligned16(x.raw()) && aligned16(w.raw()) && aligned16(y.raw()) &&
                   (!delta || aligned16(delta->raw()));
  const int64_t per_thread_items = vec ? h / 8 : h;
  const int threads = static_cast<int>(std::clamp<int64_t>((per_thread_items + 31) / 32 * 32, 32, 256));
  unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 1 << 20));
  if (grid_override) blocks = grid_override;
  const float offset = unit_offset ? 1.0f : 0.0f;
  TX* xp = x.as<TX>();
  const TX* dp = delta ? delta->as<TX>() : nullptr;
  const TW* wp = w.as<TW>();
  TY* yp = y.as<TY>();
  if (vec)
    return emu::launch("rmsnorm_kernel<VEC>", blocks, threads, 0,
                       [=] { cu::rmsnorm_kernel<TX, TW, TY, true>(xp, dp, wp, yp, n, h, eps, offset); });
  return emu::launch("rmsnorm_kernel", blocks, threads, 0,
                     [=] { cu::rmsnorm_kernel<TX, TW, TY, false>(xp, dp, wp, yp, n, h, eps, offset); });
}

// As rmsnorm_backward: dx may be dy (the same Dev); scratch is allocated here (the host's
// detail::scratch, NaN-poisoned: it holds an earlier op's data on the GPU), exactly
// device_scratch::rmsnorm_backward(n, h, true) bytes.
template <typename TX, typename TW, typename TG, typename TD, typename TDW>
bool emu_rmsnorm_backward(Dev& x, Dev& w, Dev& dy, float eps, bool unit_offset, Dev& dx, Dev* dw, bool accumulate_dx,
                          int64_t n, int64_t h, int64_t* blocks_used, bool* shared_used) {
  if (n == 0 || h == 0) return true;
  const bool vec = h % 8 == 0 && aligned16(x.raw()) && aligned16(w.raw()) && aligned16(dy.raw()) && aligned16(dx.raw());
  const int64_t per_thread_items = vec ? h / 8 : h;
  const int threads = static_cast<int>(std::clamp<int64_t>((per_thread_items + 31) / 32 * 32, 32, 256));
  const float offset = unit_offset ? 1.0f : 0.0f;
  int64_t blocks = std::min<int64_t>(n, 1 << 20);
  float* part = nullptr;
  bool acc_shared = false;
  std::size_t shmem = 0;
  std::unique_ptr<Dev> scratch;
  if (dw) {
    blocks = std::min(n, cu::kDwBlocks);
    scratch = std::make_unique<Dev>(DType::F32, sppft::device_scratch::rmsnorm_backward(n, h, true) / 4);
    scratch->fill_nan();
    part = scratch->as<float>();
    acc_shared = h <= cu::kDwSharedMaxH;
    shmem = acc_shared ? static_cast<std::size_t>(h) * sizeof(float) : 0;
  }
  *blocks_used = blocks;
  *shared_used = acc_shared;
  const auto grid = static_cast<unsigned>(blocks);
  const TX* xp = x.as<TX>();
  const TW* wp = w.as<TW>();
  const TG* gp = dy.as<TG>();
  TD* dp = dx.as<TD>();
  bool ok;
  if (vec)
    ok = emu::launch("rmsnorm_backward_kernel<VEC>", grid, threads, shmem, [=] {
      cu::rmsnorm_backward_kernel<TX, TW, TG, TD, true>(xp, wp, gp, dp, part, acc_shared, accumulate_dx, n, h, eps,
                                                        offset);
    });
  else
    ok = emu::launch("rmsnorm_backward_kernel", grid, threads, shmem, [=] {
      cu::rmsnorm_backward_kernel<TX, TW, TG, TD, false>(xp, wp, gp, dp, part, acc_shared, accumulate_dx, n, h, eps,
                                                         offset);
    });
  if (dw) {
    const auto dgrid = static_cast<unsigned>((h + 31) / 32);
    TDW* dwp = dw->as<TDW>();
    ok = emu::launch("rmsnorm_dw_kernel", dgrid, dim3(32, 8), 0,
                     [=] { cu::rmsnorm_dw_kernel<TDW>(part, dwp, blocks, h); }) &&
         ok;
    if (!scratch->m.canaries_ok()) {
      emu::report("scratch canary overwritten");
      ok = false;
    }
  }
  return ok;
}

// ---------------------------------------------------------------- dtype combinations (a subset of the 8 / 32)
template <typename... T>
struct Types {};
struct FwdCombo {
  DType x, w, y;
};
using FwdTypes = std::tuple<Types<float, float, float>, Types<bf16, bf16, bf16>, Types<bf16, float, bf16>,
                            Types<bf16, bf16, float>, Types<float, bf16, float>>;
constexpr FwdCombo kFwd[] = {{DType::F32, DType::F32, DType::F32},
                             {DType::BF16, DType::BF16, DType::BF16},
                             {DType::BF16, DType::F32, DType::BF16},
                             {DType::BF16, DType::BF16, DType::F32},
                             {DType::F32, DType::BF16, DType::F32}};
struct BwdCombo {
  DType x, w, g, dx, dw;
};
using BwdTypes =
    std::tuple<Types<float, float, float, float, float>, Types<bf16, bf16, bf16, bf16, bf16>,
               Types<bf16, float, bf16, bf16, float>, Types<bf16, bf16, bf16, float, float>,
               Types<float, bf16, float, bf16, bf16>, Types<bf16, float, float, float, bf16>>;
constexpr BwdCombo kBwd[] = {{DType::F32, DType::F32, DType::F32, DType::F32, DType::F32},
                             {DType::BF16, DType::BF16, DType::BF16, DType::BF16, DType::BF16},
                             {DType::BF16, DType::F32, DType::BF16, DType::BF16, DType::F32},
                             {DType::BF16, DType::BF16, DType::BF16, DType::F32, DType::F32},
                             {DType::F32, DType::BF16, DType::F32, DType::BF16, DType::BF16},
                             {DType::BF16, DType::F32, DType::F32, DType::F32, DType::BF16}};

// f(Types<...>{}) for combination i of the tuple List.
template <typename List, typename F, std::size_t... I>
void with_combo_impl(std::size_t i, F&& f, std::index_sequence<I...>) {
  ((i == I ? (f(std::tuple_element_t<I, List>{}), 0) : 0), ...);
}
template <typename List, typename F>
void with_combo(std::size_t i, F&& f) {
  with_combo_impl<List>(i, f, std::make_index_sequence<std::tuple_size_v<List>>{});
}

// ---------------------------------------------------------------- report
static std::string fmt(const char* label, double e, double tol) {
  char b[64];
  std::snprintf(b, sizeof b, "%s %8.2e/%.0e", label, e, tol);
  return b;
}

// ---------------------------------------------------------------- forward cases
static void forward_case(const Args& args, int64_t n, int64_t h, std::size_t combo, bool unit,
                         bool with_delta, std::size_t x_offset, unsigned grid_override, unsigned seed) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  const FwdCombo c = kFwd[combo];
  char nm[128];
  std::snprintf(nm, sizeof nm, "fwd%s N=%" PRId64 " H=%" PRId64 " x%s w%s y%s%s%s%s", with_delta ? "+add" : "", n, h,
                dt_name(c.x), dt_name(c.w), dt_name(c.y), unit ? " unit" : "", x_offset ? " x-unaligned" : "",
                grid_override ? " grid-stride-probe" : "");
  if (args.skip(nm)) return;
  const std::size_t nh = static_cast<std::size_t>(n * h);
  const float eps = 1e-6f;
  const std::vector<float> x = randn(rng, nh, c.x, 3.0f), w = randn(rng, h, c.w);
  const std::vector<float> delta = with_delta ? randn(rng, nh, c.x) : std::vector<float>();
  // Reference: the sum rounded to x's dtype (what the kernel stores and then normalises).
  std::vector<float> sum = x;
  if (with_delta)
    for (std::size_t i = 0; i < nh; ++i) sum[i] = c.x == DType::BF16 ? round_bf16(x[i] + delta[i]) : x[i] + delta[i];
  sppft::Tensor ty = host_tensor(std::vector<float>(nh, NAN), {n, h});
  sppft::ops::rmsnorm_forward(host_tensor(sum, {n, h}), host_tensor(w, {h}), eps, unit, ty);
  const std::vector<float> y_ref = to_vec(ty);

  auto run = [&] {
    Snapshot s;
    Dev dx(c.x, nh, x_offset), dw(c.w, h), dy(c.y, nh);
    std::unique_ptr<Dev> dd;
    dx.upload(x), dw.upload(w), dy.fill_nan();
    if (with_delta) dd = std::make_unique<Dev>(c.x, nh), dd->upload(delta);
    with_combo<FwdTypes>(combo, [&](auto types) {
      [&]<typename TX, typename TW, typename TY>(Types<TX, TW, TY>) {
        s.launched(emu_rmsnorm<TX, TW, TY>(dx, dd.get(), dw, eps, unit, dy, n, h, grid_override));
      }(types);
    });
    s.add("y", dy), s.add("x", dx), s.add("w", dw);
    s.check_canaries("x", dx), s.check_canaries("w", dw), s.check_canaries("y", dy);
    if (dd) s.add("delta", *dd), s.check_canaries("delta", *dd);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double tol = bound({c.x, c.w, c.y}, c.y);
  const double e = rel_error(floats_of(a.get("y"), c.y), y_ref);
  bool ok = a.ok && e <= tol;
  std::string why = a.why;
  // x: untouched (plain) or exactly the rounded sum (add); w, delta untouched.
  Dev x_want(c.x, nh), w_want(c.w, h);
  x_want.upload(sum), w_want.upload(w);
  if (a.get("x") != x_want.bytes()) ok = false, why += with_delta ? " x!=rounded-sum" : " x-modified";
  if (a.get("w") != w_want.bytes()) ok = false, why += " w-modified";
  if (with_delta) {
    Dev d_want(c.x, nh);
    d_want.upload(delta);
    if (a.get("delta") != d_want.bytes()) ok = false, why += " delta-modified";
  }
  report_case(nm, fmt("y", e, tol), ok, why);
}

// ---------------------------------------------------------------- backward cases
enum BwdMode { kPlain, kAcc, kInPlace, kDw, kDwAcc, kDwInPlace };
static const char* mode_name(BwdMode m) {
  switch (m) {
    case kPlain: return "dx";
    case kAcc: return "dx+=";
    case kInPlace: return "dx=dy";
    case kDw: return "dx,dw";
    case kDwAcc: return "dx+=,dw";
    case kDwInPlace: return "dx=dy,dw";
  }
  return "?";
}

static void backward_case(const Args& args, int64_t n, int64_t h, std::size_t combo, bool unit,
                          BwdMode mode, std::size_t x_offset, unsigned seed) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  BwdCombo c = kBwd[combo];
  const bool with_dw = mode == kDw || mode == kDwAcc || mode == kDwInPlace;
  const bool acc = mode == kAcc || mode == kDwAcc;
  const bool inplace = mode == kInPlace || mode == kDwInPlace;
  if (inplace && c.dx != c.g) return;  // the host refuses an alias of different dtypes
  char nm[128];
  std::snprintf(nm, sizeof nm, "bwd %-8s N=%" PRId64 " H=%" PRId64 " x%s w%s dy%s dx%s dw%s%s%s", mode_name(mode), n,
                h, dt_name(c.x), dt_name(c.w), dt_name(c.g), dt_name(c.dx), dt_name(c.dw), unit ? " unit" : "",
                x_offset ? " x-unaligned" : "");
  if (args.skip(nm)) return;
  const std::size_t nh = static_cast<std::size_t>(n * h);
  const float eps = 1e-6f;
  const std::vector<float> x = randn(rng, nh, c.x, 3.0f), w = randn(rng, h, c.w), dy = randn(rng, nh, c.g);
  const std::vector<float> dx0 = acc ? randn(rng, nh, c.dx) : std::vector<float>(nh, NAN);
  const std::vector<float> dw0 = randn(rng, h, c.dw);
  sppft::Tensor tdx = host_tensor(dx0, {n, h}), tdw = host_tensor(dw0, {h});
  sppft::ops::rmsnorm_backward(host_tensor(x, {n, h}), host_tensor(w, {h}), host_tensor(dy, {n, h}), eps, unit, tdx,
                               with_dw ? &tdw : nullptr, acc);
  const std::vector<float> dx_ref = to_vec(tdx), dw_ref = to_vec(tdw);

  int64_t blocks = 0;
  bool shared = false;
  auto run = [&] {
    Snapshot s;
    Dev dx_(c.x, nh, x_offset), dw_(c.w, h), dg(c.g, nh);
    dx_.upload(x), dw_.upload(w), dg.upload(dy);
    std::unique_ptr<Dev> ddx, ddw;
    if (!inplace) {
      ddx = std::make_unique<Dev>(c.dx, nh);
      if (acc)
        ddx->upload(dx0);
      else
        ddx->fill_nan();
    }
    Dev& out = inplace ? dg : *ddx;
    if (with_dw) ddw = std::make_unique<Dev>(c.dw, h), ddw->upload(dw0);
    with_combo<BwdTypes>(combo, [&](auto types) {
      [&]<typename TX, typename TW, typename TG, typename TD, typename TDW>(Types<TX, TW, TG, TD, TDW>) {
        s.launched(emu_rmsnorm_backward<TX, TW, TG, TD, TDW>(dx_, dw_, dg, eps, unit, out, ddw.get(), acc, n, h, &blocks,
                                                              &shared));
      }(types);
    });
    s.add("dx", out), s.add("x", dx_), s.add("w", dw_), s.add("dy", dg);
    s.check_canaries("x", dx_), s.check_canaries("w", dw_), s.check_canaries("dy", dg);
    if (ddx) s.check_canaries("dx", *ddx);
    if (ddw) s.add("dw", *ddw), s.check_canaries("dw", *ddw);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double tol_dx = bound({c.x, c.w, c.g, c.dx}, c.dx), tol_dw = bound({c.x, c.g, c.dw}, c.dw);
  const double e_dx = rel_error(floats_of(a.get("dx"), c.dx), dx_ref);
  bool ok = a.ok && e_dx <= tol_dx;
  std::string errs = fmt("dx", e_dx, tol_dx), why = a.why;
  if (with_dw) {
    const double e_dw = rel_error(floats_of(a.get("dw"), c.dw), dw_ref);
    ok = ok && e_dw <= tol_dw;
    errs += " " + fmt("dw", e_dw, tol_dw);
    char b[64];
    std::snprintf(b, sizeof b, " [%" PRId64 " blk, partials in %s]", blocks, shared ? "smem" : "global");
    errs += b;
  }
  Dev x_want(c.x, nh), w_want(c.w, h), g_want(c.g, nh);
  x_want.upload(x), w_want.upload(w), g_want.upload(dy);
  if (a.get("x") != x_want.bytes()) ok = false, why += " x-modified";
  if (a.get("w") != w_want.bytes()) ok = false, why += " w-modified";
  if (!inplace && a.get("dy") != g_want.bytes()) ok = false, why += " dy-modified";
  report_case(nm, errs, ok, why);
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  unsigned seed = 100;
  const int64_t kN[] = {1, 3, 600};
  const int64_t kH[] = {8, 37, 96, 4096, 9000};
  // Forward: every (N, H); all-F32 and all-BF16, plain and with the residual add, with both
  // offsets; the mixed combinations in rotation. N = 600 (more rows only add blocks): one
  // offset each; with H >= 4096 (256 threads x 600 blocks, the slowest to emulate) F32 plain
  // and BF16 with the add only.
  std::size_t rot = 0;
  for (int64_t n : kN)
    for (int64_t h : kH) {
      const bool many = n > 3, heavy = many && h >= 4096;
      if (heavy) {
        forward_case(args, n, h, 0, false, false, 0, 0, seed++);
        forward_case(args, n, h, 1, true, true, 0, 0, seed++);
        continue;
      }
      for (std::size_t combo : {std::size_t{0}, std::size_t{1}})
        for (bool unit : {false, true}) {
          if (many && unit != (combo == 1)) continue;
          forward_case(args, n, h, combo, unit, false, 0, 0, seed++);
          forward_case(args, n, h, combo, !unit, true, 0, 0, seed++);
        }
      forward_case(args, n, h, 2 + rot % 3, rot % 2, false, 0, 0, seed++);
      if (!many) forward_case(args, n, h, 2 + (rot + 1) % 3, rot % 2 == 0, true, 0, 0, seed++);
      ++rot;
    }
  // Unaligned x (scalar path with H % 8 == 0) and the grid-stride loop over rows (2 blocks).
  forward_case(args, 3, 96, 0, false, false, 1, 0, seed++);
  forward_case(args, 3, 96, 1, true, true, 1, 0, seed++);
  forward_case(args, 7, 96, 1, true, true, 0, 2, seed++);
  forward_case(args, 7, 37, 0, false, true, 0, 2, seed++);
  forward_case(args, 5, 4096, 2, false, false, 0, 2, seed++);

  // Backward: every (N, H) with every mode for all-F32 and all-BF16 (unit_offset alternating),
  // mixed combinations in rotation; N = 600 > 512 dw blocks (grid-stride rows), H = 9000 > 8192
  // (partials in global scratch). N = 600: the three dw modes and one without dw per dtype;
  // with H >= 4096 the three dw modes once each (F32, BF16, mixed).
  const BwdMode modes[] = {kPlain, kAcc, kInPlace, kDw, kDwAcc, kDwInPlace};
  for (int64_t n : kN)
    for (int64_t h : kH) {
      const bool many = n > 3, heavy = many && h >= 4096;
      if (heavy) {
        backward_case(args, n, h, 0, true, kDw, 0, seed++);
        backward_case(args, n, h, 1, false, kDwInPlace, 0, seed++);
        backward_case(args, n, h, 2 + rot++ % 4, h % 2 == 0, kDwAcc, 0, seed++);
        continue;
      }
      for (std::size_t combo : {std::size_t{0}, std::size_t{1}})
        for (std::size_t mi = 0; mi < 6; ++mi) {
          if (many && mi < 3 && mi != (combo == 0 ? 2u : 0u)) continue;
          backward_case(args, n, h, combo, (mi + combo) % 2 == 1, modes[mi], 0, seed++);
        }
      for (int k = 0; k < (many ? 1 : 2); ++k, ++rot)
        backward_case(args, n, h, 2 + rot % 4, rot % 2, modes[many ? 3 + rot % 3 : (rot * 5 + 3) % 6], 0, seed++);
    }
  backward_case(args, 3, 96, 0, true, kDw, 1, seed++);
  backward_case(args, 600, 96, 1, false, kDwAcc, 1, seed++);
  backward_case(args, 4, 8200, 2, true, kDw, 0, seed++);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
