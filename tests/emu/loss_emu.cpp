// Emulated runs of check_targets_kernel, ce_row_kernel and sum_rows_kernel (kernels/cuda/loss.cu,
// extracted unchanged by tests/emu/extract.py into the build's emu_gen/) against the fp32 CPU
// reference (kernels/ops.h on host tensors). Registered with ctest as kernels.loss_emu. The
// launcher mirrors cuda::cross_entropy (flag reset, target check and its read-back, VEC choice,
// threads per row, scratch of device_scratch::cross_entropy(n) bytes, the final sum).
// Tolerances as tests/gpu/cuda_training_ops_test.cpp: loss |emu - ref| / max(1, |ref|) <= 1e-5
// (F32 and BF16 logits); dlogits max |emu - ref| / max |ref| <= 1e-5 (F32 dlogits) or 1e-2
// (BF16). Ignored rows' gradient exactly 0, logits (unless in place) and targets bitwise
// unchanged; bad targets: the flag, its value, nothing written. Each case runs as A, B (A again:
// bitwise determinism of loss and dlogits) and a variant (random fiber order, zeroed shared
// memory, buffers after a guard page) that must equal A bit for bit (emu_harness.h).
// Gemma-2's final-logit soft-capping (softcap > 0: the loss of z' = softcap * tanh(z / softcap),
// dlogits times 1 - (z' / softcap)^2): capped cases (logits spread 4, cap 2; every path - scalar
// and packs of 8, F32 and BF16, in place, -inf-masked logits, the grid-stride loop) against the
// capped CPU reference, and loss and dlogits far from the uncapped reference's (loss more than
// kBent relative, dlogits more than kBent of max |dlogits|), so that they cannot pass with the
// cap ignored.
// Usage: loss_emu [--no-variant] [--only SUBSTRING]
#include "loss_emu.h"  // from emu_gen/ (or a mutant dir), via -I
// (the extracted header first: it brings emu_cuda.h, which the harness header uses)
#include <chrono>

#include "emu_harness.h"

namespace cu = sppft::cuda;
using namespace emuh;
using std::int64_t;


// ---------------------------------------------------------------- emulated launcher (as cuda::cross_entropy)
struct CeResult {
  double loss = 0;
  bool threw = false;  // the host would throw InputError (a bad target): nothing else launched
  int flag[2] = {0, 0};
  bool ok = true;  // launches completed, scratch and flag canaries intact
};
// grid_override > 0: ce_row_kernel on that many blocks instead of min(n, 2^20) (a probe of its
// grid-stride loop over rows, which the host's grid reaches only for n > 2^20).
static CeResult emu_cross_entropy(Dev& logits, Dev& targets, float grad_scale, Dev* dlogits, int64_t n, int64_t vocab,
                                  unsigned grid_override = 0, float softcap = 0.0f) {
  CeResult r;
  if (n == 0) return r;
  Dev flag(DType::I32, 2);  // detail::error_flag(), then cudaMemsetAsync(flag, 0, 8)
  int* fp = flag.as<int>();
  fp[0] = fp[1] = 0;
  const std::int32_t* tp = targets.as<std::int32_t>();
  r.ok = emu::launch("check_targets_kernel", grid_blocks(n, 256, 1024), 256, 0,
                     [=] { cu::check_targets_kernel(tp, n, vocab, fp); });
  r.flag[0] = fp[0], r.flag[1] = fp[1];
  r.ok = r.ok && flag.m.canaries_ok();
  if (fp[0]) {
    r.threw = true;
    return r;
  }
  if (vocab == 0) return r;
  Dev scratch(DType::F32, sppft::device_scratch::cross_entropy(n) / 4);  // n row losses, then the total
  scratch.fill_nan();
  auto* row_loss = reinterpret_cast<double*>(scratch.raw());
  double* total = row_loss + n;
  const bool vec = vocab % 8 == 0 && aligned16(logits.raw()) && (!dlogits || aligned16(dlogits->raw()));
  const int64_t items = vec ? vocab / 8 : vocab;
  const int threads = items >= 8192 ? 1024 : items >= 2048 ? 512 : items >= 512 ? 256 : 128;
  unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 1 << 20));
  if (grid_override) blocks = grid_override;
  with_type(logits.t, [&](auto tl) {
    using TL = typename decltype(tl)::type;
    with_type(dlogits ? dlogits->t : logits.t, [&](auto td) {
      using TD = typename decltype(td)::type;
      const TL* lp = logits.as<TL>();
      TD* g = dlogits ? dlogits->as<TD>() : nullptr;
      if (vec)
        r.ok = emu::launch("ce_row_kernel<VEC>", blocks, threads, 0, [=] {
                 cu::ce_row_kernel<TL, TD, true>(lp, tp, g, row_loss, n, vocab, grad_scale, softcap);
               }) && r.ok;
      else
        r.ok = emu::launch("ce_row_kernel", blocks, threads, 0, [=] {
                 cu::ce_row_kernel<TL, TD, false>(lp, tp, g, row_loss, n, vocab, grad_scale, softcap);
               }) && r.ok;
    });
  });
  r.ok = emu::launch("sum_rows_kernel", 1, cu::kSumThreads, 0, [=] { cu::sum_rows_kernel(row_loss, n, total); }) && r.ok;
  r.loss = *total;
  r.ok = r.ok && scratch.m.canaries_ok();
  return r;
}

// ---------------------------------------------------------------- report

enum Mode { kNoGrad, kGradF32, kGradBf16, kInPlace };
static const char* mode_name(Mode m) {
  return m == kNoGrad ? "loss only" : m == kGradF32 ? "dlogits F32" : m == kGradBf16 ? "dlogits BF16" : "in place";
}

static std::vector<std::int32_t> make_targets(std::mt19937& rng, int64_t n, int64_t v, bool all_ignored) {
  std::vector<std::int32_t> t(n);
  std::uniform_int_distribution<int> pick(0, static_cast<int>(std::max<int64_t>(v, 1) - 1));
  for (int64_t i = 0; i < n; ++i) t[i] = all_ignored || i % 3 == 1 ? sppft::ops::kIgnoreIndex : pick(rng);
  if (!all_ignored && n > 2) t[n - 1] = static_cast<std::int32_t>(v - 1), t[0] = 0;  // both ends of the row
  return t;
}

// Capped cases: loss and dlogits must be at least this far from the uncapped reference's
// (loss: relative; dlogits: rel_error) - 10x the BF16 tolerance - or the cap could be ignored.
constexpr double kBent = 0.1;
static double g_least_bent = INFINITY;  // the smallest such distance seen

// masked: every 5th logit of each row (never the target) is -inf, as a vocabulary mask would.
// softcap > 0: Gemma-2's cap, with logits of spread 4 (3 otherwise).
static void ce_case(const Args& args, int64_t n, int64_t v, DType lt, Mode mode, bool all_ignored,
                    std::size_t offset, unsigned grid_override, unsigned seed, bool masked = false, float softcap = 0.0f) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  char nm[160], cap[32] = "";
  if (softcap > 0) std::snprintf(cap, sizeof cap, " cap=%g", softcap);
  std::snprintf(nm, sizeof nm, "ce N=%" PRId64 " V=%" PRId64 " logits %s %s%s%s%s%s%s", n, v,
                lt == DType::BF16 ? "BF16" : "F32", mode_name(mode), all_ignored ? " all-ignored" : "",
                offset ? " unaligned" : "", grid_override ? " grid-stride-probe" : "", masked ? " -inf-masked" : "", cap);
  if (args.skip(nm)) return;
  const std::vector<std::int32_t> tg = make_targets(rng, n, v, all_ignored);
  int64_t valid = 0;
  for (auto t : tg) valid += t != sppft::ops::kIgnoreIndex;
  const float scale = valid ? 1.0f / static_cast<float>(valid) : 1.0f;
  std::vector<float> logits = randn(rng, static_cast<std::size_t>(n * v), lt, softcap > 0 ? 4.0f : 3.0f);
  if (masked)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = r % 5; j < v; j += 5)
        if (j != tg[r]) logits[r * v + j] = -INFINITY;
  sppft::Tensor htg = sppft::Tensor::empty({n}, DType::I32, sppft::MemCategory::Workspace);
  std::copy(tg.begin(), tg.end(), htg.data<std::int32_t>());
  sppft::Tensor want_g = host_tensor(std::vector<float>(n * v, NAN), {n, v});
  const double want = sppft::ops::cross_entropy(host_tensor(logits, {n, v}), htg, scale, &want_g, softcap);
  const std::vector<float> g_ref = to_vec(want_g);
  double plain = 0;  // capped: the uncapped reference's loss and dlogits
  std::vector<float> g_plain;
  if (softcap > 0) {
    sppft::Tensor plain_g = host_tensor(std::vector<float>(n * v, NAN), {n, v});
    plain = sppft::ops::cross_entropy(host_tensor(logits, {n, v}), htg, scale, &plain_g);
    g_plain = to_vec(plain_g);
  }
  const DType gt = mode == kGradF32 ? DType::F32 : mode == kGradBf16 ? DType::BF16 : lt;
  const std::size_t nv = static_cast<std::size_t>(n * v);

  CeResult res;
  auto run = [&] {
    Snapshot s;
    Dev dl(lt, nv, offset), dt(DType::I32, n);
    dl.upload(logits);
    std::copy(tg.begin(), tg.end(), dt.as<std::int32_t>());
    std::unique_ptr<Dev> dg;
    if (mode == kGradF32 || mode == kGradBf16) dg = std::make_unique<Dev>(gt, nv, offset), dg->fill_nan();
    Dev* out = mode == kNoGrad ? nullptr : mode == kInPlace ? &dl : dg.get();
    res = emu_cross_entropy(dl, dt, scale, out, n, v, grid_override, softcap);
    if (!res.ok) s.ok = false, s.why += " deadlock-or-scratch-canary";
    if (res.threw) s.ok = false, s.why += " target-check-flagged";
    s.add_bytes("loss", &res.loss, sizeof res.loss);
    s.add("logits", dl), s.add("targets", dt);
    s.check_canaries("logits", dl), s.check_canaries("targets", dt);
    if (dg) s.add("dlogits", *dg), s.check_canaries("dlogits", *dg);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double e_loss = scalar_error(res.loss, want);
  bool ok = a.ok && e_loss <= 1e-5;
  std::string why = a.why;
  char errs[160];
  int len = std::snprintf(errs, sizeof errs, "loss %8.2e/1e-05", e_loss);
  double bent = softcap > 0 ? scalar_error(res.loss, plain) : INFINITY;  // capped: distance from the uncapped result
  Dev l_want(lt, nv);
  l_want.upload(logits);
  if (mode != kInPlace && a.get("logits") != l_want.bytes()) ok = false, why += " logits-modified";
  if (a.get("targets") != std::vector<unsigned char>(reinterpret_cast<const unsigned char*>(tg.data()),
                                                     reinterpret_cast<const unsigned char*>(tg.data() + n)))
    ok = false, why += " targets-modified";
  if (mode != kNoGrad) {
    const std::vector<float> g = floats_of(a.get(mode == kInPlace ? "logits" : "dlogits"), gt);
    const double tol = tolerance({gt});
    const double e = rel_error(g, g_ref);
    ok = ok && e <= tol;
    len += std::snprintf(errs + len, sizeof errs - len, " dlogits %8.2e/%.0e", e, tol);
    if (softcap > 0) bent = std::min(bent, rel_error(g, g_plain));
    for (int64_t r = 0; r < n; ++r)
      if (tg[r] == sppft::ops::kIgnoreIndex)
        for (int64_t j = 0; j < v; ++j)
          if (g[r * v + j] != 0.0f) {
            ok = false, why += " ignored-row-not-zero";
            r = n;
            break;
          }
  }
  if (softcap > 0) {
    g_least_bent = std::min(g_least_bent, bent);
    if (!(bent >= kBent)) ok = false, why += " too-close-to-uncapped";
    std::snprintf(errs + len, sizeof errs - len, " vs uncapped %.2f", bent);
  }
  report_case(nm, errs, ok, why);
}

// Out-of-range targets: flagged (the host throws) before anything is written.
static void bad_target_case(const Args& args, std::int32_t bad, bool in_place, unsigned seed) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  const int64_t n = 3, v = 11;
  char nm[96];
  std::snprintf(nm, sizeof nm, "ce bad target %d%s", bad, in_place ? " in place" : "");
  if (args.skip(nm)) return;
  const std::vector<std::int32_t> tg = {1, bad, 2};
  const std::vector<float> logits = randn(rng, n * v, DType::F32);
  CeResult res;
  auto run = [&] {
    Snapshot s;
    Dev dl(DType::F32, n * v), dt(DType::I32, n), dg(DType::F32, n * v);
    dl.upload(logits), dg.fill_nan();
    std::copy(tg.begin(), tg.end(), dt.as<std::int32_t>());
    res = emu_cross_entropy(dl, dt, 1.0f, in_place ? &dl : &dg, n, v);
    if (!res.ok) s.ok = false, s.why += " deadlock-or-canary";
    s.add_bytes("flag", res.flag, sizeof res.flag), s.add("logits", dl), s.add("dlogits", dg);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok && res.threw && res.flag[0] == 1 && res.flag[1] == bad;
  std::string why = a.why;
  if (!res.threw) why += " not-flagged";
  Dev l_want(DType::F32, n * v), g_want(DType::F32, n * v);
  l_want.upload(logits), g_want.fill_nan();
  if (a.get("logits") != l_want.bytes() || a.get("dlogits") != g_want.bytes()) ok = false, why += " written";
  char errs[64];
  std::snprintf(errs, sizeof errs, "flag {%d, %d}", res.flag[0], res.flag[1]);
  report_case(nm, errs, ok, why);
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  unsigned seed = 300;
  // V = 1 (every softmax is 1: zero gradient), 7 (scalar), 1000 (packs of 8, 128 threads),
  // 32000 (packs, 512 threads), 32003 (scalar, 1024 threads); N = 1100 > 1024 rows (the final
  // sum's strided loop).
  const std::pair<int64_t, int64_t> shapes[] = {{3, 1}, {17, 7}, {33, 1000}, {5, 32000}, {3, 32003}, {1100, 7}};
  for (auto [n, v] : shapes)
    for (DType lt : {DType::F32, DType::BF16})
      for (Mode m : {kNoGrad, kGradF32, kGradBf16, kInPlace}) ce_case(args, n, v, lt, m, false, 0, 0, seed++);
  // Unaligned bases (scalar path with V % 8 == 0), all rows ignored, V = 0 (all ignored: no
  // row kernel), and the grid-stride loop over rows (2 blocks for 9 rows; in place: the barrier
  // before the next row's target_logit).
  ce_case(args, 9, 1000, DType::F32, kGradF32, false, 1, 0, seed++);
  ce_case(args, 9, 1000, DType::BF16, kInPlace, false, 1, 0, seed++);
  ce_case(args, 4, 7, DType::F32, kGradF32, true, 0, 0, seed++);
  ce_case(args, 4, 1000, DType::BF16, kInPlace, true, 0, 0, seed++);
  ce_case(args, 3, 0, DType::F32, kGradF32, true, 0, 0, seed++);
  for (Mode m : {kGradF32, kInPlace}) {
    ce_case(args, 9, 1000, DType::F32, m, false, 0, 2, seed++);
    ce_case(args, 9, 37, DType::BF16, m, false, 0, 2, seed++);
    ce_case(args, 5, 32000, DType::BF16, m, false, 0, 2, seed++);
  }
  ce_case(args, 17, 7, DType::F32, kNoGrad, false, 0, 0, seed++, true);
  ce_case(args, 33, 1000, DType::F32, kGradF32, false, 0, 0, seed++, true);
  ce_case(args, 5, 32000, DType::BF16, kInPlace, false, 0, 0, seed++, true);
  ce_case(args, 3, 32003, DType::BF16, kGradBf16, false, 0, 0, seed++, true);
  for (std::int32_t bad : {11, -1, -101, 1 << 30}) bad_target_case(args, bad, bad == -1, seed++);
  // Gemma-2's final-logit soft-capping (logits of spread 4, cap 2): the scalar path (V = 7,
  // 32003, unaligned), packs of 8 (V = 1000, 32000), every output mode, in place, -inf-masked
  // logits, the grid-stride loop over rows.
  for (auto [n, v] : {std::pair<int64_t, int64_t>{17, 7}, {33, 1000}, {5, 32000}, {3, 32003}})
    for (DType lt : {DType::F32, DType::BF16})
      for (Mode m : {kNoGrad, kGradF32, kGradBf16, kInPlace}) ce_case(args, n, v, lt, m, false, 0, 0, seed++, false, 2.0f);
  ce_case(args, 9, 1000, DType::BF16, kInPlace, false, 1, 0, seed++, false, 2.0f);
  ce_case(args, 9, 1000, DType::F32, kInPlace, false, 0, 2, seed++, false, 2.0f);
  ce_case(args, 33, 1000, DType::F32, kGradF32, false, 0, 0, seed++, true, 2.0f);
  ce_case(args, 5, 32000, DType::BF16, kInPlace, false, 0, 0, seed++, true, 2.0f);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("capped cases: least distance of loss / dlogits from the uncapped reference %.2f (>= %.2f)\n", g_least_bent,
              kBent);
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
