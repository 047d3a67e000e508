// The CUDA training ops (linear backward in kernels/cuda/linear.cu, cross_entropy in
// loss.cu, sum_squares / scale_inplace / AdamW in optimizer.cu) against the fp32 CPU
// reference (kernels/cpu/*.cpp, through the kernels/ops.h dispatch with host tensors).
// Fresh random inputs at several shapes, odd ones and unaligned row views included;
// overwritten device outputs are poisoned with NaN before each call, accumulated ones start
// from known random values (the same on both sides).
//
// Tolerances (max |gpu - cpu| / max |cpu| over the output, test::rel_error):
//   every tensor F32:                 1e-5  (fp32 both sides; only summation order and
//                                            libm-vs-CUDA ulps differ)
//   any BF16 input or output:         1e-2  (inputs are rounded to bf16 on the host first, so
//                                            the CPU sees the same values; what remains is the
//                                            bf16 rounding of the output, <= 2^-9 relative)
//   cross_entropy loss (a double):    1e-5 relative, any logits dtype (same input values,
//                                            fp32 math on both sides)
//   sum_squares (a double):           1e-9 relative (exact double squares on both sides;
//                                            only the order of the double additions differs)
//   scale_inplace:                    exact (one rounded product)
//   AdamW, F32 param:                 1e-6  (same float scalars, same rounded operations)
//   AdamW, BF16 param:                1e-2  (the CPU reference rounds its F32 param to bf16
//                                            after every step, like the GPU)
//   multi-tensor AdamW vs adamw_step: bitwise equal
// Determinism: two runs bitwise equal for sum_squares, cross_entropy (loss and dlogits)
// and dbias.
// cross_entropy with Gemma-2's final-logit soft-capping (logits of spread 4, cap 2): loss and
// dlogits as above against the capped CPU reference, and both at least 0.1 (relative) away
// from the uncapped result, so that a kernel ignoring the cap fails; softcap 0 passed
// explicitly gives the default's bits, a negative cap throws.
//
// Without a GPU (or without CUDA in the build) it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/device.h"
#include "engine/error.h"
#include "kernels/ops.h"
#include "gpu_test_util.h"
#include "test_util.h"
#ifdef SPPFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

using namespace sppft;
using namespace sppft::test::gpu;

#ifndef SPPFT_HAVE_CUDA

TEST_CASE("CUDA training ops (this build has no CUDA)") { CHECK_FALSE(have_gpu()); }

#else

namespace {

std::mt19937 rng(23);  // this file's inputs: every host_random and pick draws from it

void check_close_scalar(double got, double want, double tol) {
  const double err = std::abs(got - want) / std::max(1.0, std::abs(want));
  CHECK(std::isfinite(got));
  CHECK(err < tol);
  if (err >= tol) MESSAGE("got " << got << ", want " << want << ", relative error " << err << " >= " << tol);
}

// GEMM shapes {N, M, K}: dy [N, M], w [M, K], x and dx [N, K].
const std::tuple<int, int, int> kGemmShapes[] = {{1, 1, 1}, {7, 13, 5}, {17, 64, 33}, {5, 33, 130},
                                                 {130, 96, 256}, {64, 4096, 128}, {64, 128, 4096}};

}  // namespace

TEST_CASE("cuda linear_backward_input: dx (+)= dy w, F32 and BF16, overwrite and accumulate, views, fallback") {
  if (!have_gpu()) return;
  for (auto [n, m, k] : kGemmShapes) {
    for (DType in_t : kFloatTypes)
      for (DType out_t : kFloatTypes)
        for (bool accumulate : {false, true})
          for (auto [view, fallback] : {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
            if (in_t == DType::F32 && out_t == DType::BF16) continue;  // refused
            CAPTURE(n); CAPTURE(m); CAPTURE(k); CAPTURE(name(in_t)); CAPTURE(name(out_t)); CAPTURE(accumulate); CAPTURE(view); CAPTURE(fallback);
            // view: dy is rows [1, n + 1) of an [n + 1, m] tensor (base only 4 m / 2 m bytes aligned).
            Tensor dyall = host_random(rng, {n + 1, m}, in_t);
            Tensor dy = view ? dyall.rows(1, n + 1) : dyall.rows(0, n);
            Tensor w = host_random(rng, {m, k}, in_t);
            Tensor dx0 = host_random(rng, {n, k}, out_t);  // accumulate: the starting values
            Tensor want = accumulate ? host_copy(dx0) : host_fill({n, k}, 0.0f);
            ops::linear_backward_input(dy, w, want, accumulate);

            Tensor ddyall = upload(dyall, in_t);
            Tensor ddy = view ? ddyall.rows(1, n + 1) : ddyall.rows(0, n);
            Tensor ddx = accumulate ? upload(dx0, out_t) : device_nan({n, k}, out_t);
            cuda::set_linear_fallback_for_testing(fallback);
            cuda::linear_backward_input(ddy, upload(w, in_t), ddx, accumulate);
            cuda::set_linear_fallback_for_testing(false);
            check_close(download(ddx), want, tolerance({in_t, out_t}));
          }
  }
}

TEST_CASE("cuda linear_backward_weight: dw += dy^T x and deterministic dbias, F32 and BF16, views, fallback") {
  if (!have_gpu()) return;
  for (auto [n, m, k] : kGemmShapes) {
    for (DType in_t : kFloatTypes)
      for (DType out_t : kFloatTypes)
        for (bool with_bias : {false, true})
          for (auto [view, fallback] : {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
            if (in_t == DType::F32 && out_t == DType::BF16) continue;  // refused
            CAPTURE(n); CAPTURE(m); CAPTURE(k); CAPTURE(name(in_t)); CAPTURE(name(out_t)); CAPTURE(with_bias); CAPTURE(view); CAPTURE(fallback);
            Tensor dyall = host_random(rng, {n + 1, m}, in_t), xall = host_random(rng, {n + 1, k}, in_t);
            Tensor dy = view ? dyall.rows(1, n + 1) : dyall.rows(0, n);
            Tensor x = view ? xall.rows(1, n + 1) : xall.rows(0, n);
            Tensor dw0 = host_random(rng, {m, k}, out_t), db0 = host_random(rng, {m}, out_t);
            Tensor want_w = host_copy(dw0), want_b = host_copy(db0);
            ops::linear_backward_weight(dy, x, want_w, with_bias ? &want_b : nullptr);

            Tensor ddyall = upload(dyall, in_t), dxall = upload(xall, in_t);
            Tensor ddy = view ? ddyall.rows(1, n + 1) : ddyall.rows(0, n);
            Tensor dx = view ? dxall.rows(1, n + 1) : dxall.rows(0, n);
            Tensor ddw = upload(dw0, out_t), ddb = upload(db0, out_t);
            cuda::set_linear_fallback_for_testing(fallback);
            cuda::linear_backward_weight(ddy, dx, ddw, with_bias ? &ddb : nullptr);
            cuda::set_linear_fallback_for_testing(false);
            check_close(download(ddw), want_w, tolerance({in_t, out_t}));
            Tensor got_b = download(ddb);
            check_close(got_b, want_b, tolerance({in_t, out_t}));
            if (with_bias && !view && !fallback) {  // determinism: the same dbias bits from the same start
              Tensor ddw2 = upload(dw0, out_t), ddb2 = upload(db0, out_t);
              cuda::linear_backward_weight(ddy, dx, ddw2, &ddb2);
              CHECK(device_bytes(ddb2) == device_bytes(ddb));
            }
          }
  }
}

TEST_CASE("cuda linear backward: dbias over many rows (several 1024-row chunks) is bitwise reproducible") {
  if (!have_gpu()) return;
  for (auto [n, m] : {std::pair{3000, 37}, {4097, 256}}) {
    for (DType t : kFloatTypes) {
      CAPTURE(n); CAPTURE(m); CAPTURE(name(t));
      Tensor dy = host_random(rng, {n, m}, t), x = host_random(rng, {n, 8}, t);
      Tensor dw0 = host_random(rng, {m, 8}, DType::F32), db0 = host_random(rng, {m}, DType::F32);
      Tensor want_w = host_copy(dw0), want_b = host_copy(db0);
      ops::linear_backward_weight(dy, x, want_w, &want_b);
      Tensor ddy = upload(dy, t), dx = upload(x, t);
      Tensor ddw = upload(dw0, DType::F32), ddb = upload(db0, DType::F32);
      cuda::linear_backward_weight(ddy, dx, ddw, &ddb);
      check_close(download(ddb), want_b, 1e-5);
      check_close(download(ddw), want_w, t == DType::F32 ? 1e-5 : 1e-2);
      Tensor ddw2 = upload(dw0, DType::F32), ddb2 = upload(db0, DType::F32);
      cuda::linear_backward_weight(ddy, dx, ddw2, &ddb2);
      CHECK(device_bytes(ddb2) == device_bytes(ddb));
    }
  }
}

TEST_CASE("cuda linear backward: empty sums and refused arguments") {
  if (!have_gpu()) return;
  // M = 0: dx = 0 when overwriting, untouched when accumulating.
  Tensor dy = upload(host_random(rng, {3, 0}, DType::F32), DType::F32), w = upload(host_random(rng, {0, 4}, DType::F32), DType::F32);
  Tensor dx = device_nan({3, 4}, DType::F32);
  cuda::linear_backward_input(dy, w, dx, false);
  Tensor got = download(dx);
  for (std::int64_t i = 0; i < got.numel(); ++i) REQUIRE(got.data<float>()[i] == 0.0f);
  Tensor x0 = host_random(rng, {3, 4}, DType::F32), dx2 = upload(x0, DType::F32);
  cuda::linear_backward_input(dy, w, dx2, true);
  CHECK(std::memcmp(download(dx2).raw(), x0.raw(), x0.nbytes()) == 0);

  Tensor ddy = upload(host_random(rng, {3, 5}, DType::F32), DType::F32);
  Tensor dw = device_nan({5, 4}, DType::F32);
  CHECK_THROWS_AS(cuda::linear_backward_input(ddy, upload(host_random(rng, {5, 4}, DType::BF16), DType::BF16), dx, false),
                  InputError);  // dy F32, w BF16
  Tensor dx16 = device_nan({3, 4}, DType::BF16);
  CHECK_THROWS_AS(cuda::linear_backward_input(ddy, upload(host_random(rng, {5, 4}, DType::F32), DType::F32), dx16, false),
                  InputError);  // F32 -> BF16
  CHECK_THROWS_AS(cuda::linear_backward_weight(ddy, upload(host_random(rng, {4, 4}, DType::F32), DType::F32), dw, nullptr),
                  InputError);  // row mismatch
  CHECK_THROWS_AS(cuda::linear_backward_weight(ddy, host_random(rng, {3, 4}, DType::F32), dw, nullptr),
                  InputError);  // x on the CPU
}

namespace {

// Targets for n rows of vocabulary v: random, every third row ignored (-100).
std::vector<std::int32_t> ce_targets(std::int64_t n, std::int64_t v) {
  std::vector<std::int32_t> t(n);
  std::uniform_int_distribution<int> pick(0, static_cast<int>(v - 1));
  for (std::int64_t i = 0; i < n; ++i) t[i] = i % 3 == 1 ? ops::kIgnoreIndex : pick(rng);
  return t;
}

}  // namespace

TEST_CASE("cuda cross_entropy: loss and dlogits, ignored rows, in place, F32 and BF16, deterministic") {
  if (!have_gpu()) return;
  enum Mode { kNoGrad, kGradF32, kGradBf16, kInPlace };
  for (auto [n, v] : {std::pair{3, 1}, {17, 5}, {33, 1000}, {5, 32000}, {6, 32003}, {3, 128256}}) {
    const std::vector<std::int32_t> tg = ce_targets(n, v);
    std::int64_t valid = 0;
    for (auto t : tg) valid += t != ops::kIgnoreIndex;
    const float scale = valid ? 1.0f / static_cast<float>(valid) : 1.0f;
    Tensor htg = host_i32(tg), dtg = upload_i32(tg);
    for (DType lt : kFloatTypes)
      for (Mode mode : {kNoGrad, kGradF32, kGradBf16, kInPlace}) {
        CAPTURE(n); CAPTURE(v); CAPTURE(name(lt)); CAPTURE(static_cast<int>(mode));
        Tensor logits = host_random(rng, {n, v}, lt, 3.0f);
        Tensor want_g = host_nan({n, v});
        const double want = ops::cross_entropy(logits, htg, scale, &want_g);

        Tensor dl = upload(logits, lt);
        const DType gt = mode == kGradF32 ? DType::F32 : mode == kGradBf16 ? DType::BF16 : lt;
        Tensor dg = mode == kInPlace ? dl : device_nan({n, v}, gt);
        const double got = cuda::cross_entropy(dl, dtg, scale, mode == kNoGrad ? nullptr : &dg);
        check_close_scalar(got, want, 1e-5);
        if (mode == kNoGrad) {
          CHECK(std::memcmp(download(dl).raw(), logits.raw(), logits.nbytes()) == 0);  // logits untouched
          // Determinism of the loss: the same bits again.
          const double again = cuda::cross_entropy(dl, dtg, scale, nullptr);
          CHECK(std::memcmp(&again, &got, sizeof got) == 0);
          continue;
        }
        Tensor g = download(dg);
        check_close(g, want_g, tolerance({gt}));
        for (std::int64_t r = 0; r < n; ++r)
          if (tg[r] == ops::kIgnoreIndex)
            for (std::int64_t j = 0; j < v; ++j) REQUIRE(g.data<float>()[r * v + j] == 0.0f);
        if (mode == kGradF32 || mode == kGradBf16) {  // determinism of loss and dlogits
          Tensor dg2 = device_nan({n, v}, gt);
          const double again = cuda::cross_entropy(dl, dtg, scale, &dg2);
          CHECK(std::memcmp(&again, &got, sizeof got) == 0);
          CHECK(device_bytes(dg2) == device_bytes(dg));
        }
      }
  }
}

TEST_CASE("cuda cross_entropy with Gemma-2's final logit soft-capping: every path, in place, deterministic") {
  if (!have_gpu()) return;
  enum Mode { kNoGrad, kGradF32, kGradBf16, kInPlace };
  const float cap = 2.0f;
  // V = 5 (scalar), 1000 and 32000 (packs of 8), 32003 (scalar, 1024 threads).
  for (auto [n, v] : {std::pair{17, 5}, {33, 1000}, {5, 32000}, {6, 32003}}) {
    const std::vector<std::int32_t> tg = ce_targets(n, v);
    std::int64_t valid = 0;
    for (auto t : tg) valid += t != ops::kIgnoreIndex;
    const float scale = valid ? 1.0f / static_cast<float>(valid) : 1.0f;
    Tensor htg = host_i32(tg), dtg = upload_i32(tg);
    for (DType lt : kFloatTypes)
      for (Mode mode : {kNoGrad, kGradF32, kGradBf16, kInPlace}) {
        CAPTURE(n); CAPTURE(v); CAPTURE(name(lt)); CAPTURE(static_cast<int>(mode));
        Tensor logits = host_random(rng, {n, v}, lt, 4.0f);
        Tensor want_g = host_nan({n, v}), plain_g = host_nan({n, v});
        const double want = ops::cross_entropy(logits, htg, scale, &want_g, cap);
        const double plain = ops::cross_entropy(logits, htg, scale, &plain_g);

        Tensor dl = upload(logits, lt);
        const DType gt = mode == kGradF32 ? DType::F32 : mode == kGradBf16 ? DType::BF16 : lt;
        Tensor dg = mode == kInPlace ? dl : device_nan({n, v}, gt);
        const double got = cuda::cross_entropy(dl, dtg, scale, mode == kNoGrad ? nullptr : &dg, cap);
        check_close_scalar(got, want, 1e-5);
        CHECK(std::abs(got - plain) > 0.1 * std::max(1.0, std::abs(plain)));  // the cap matters here
        if (mode == kNoGrad) {
          CHECK(std::memcmp(download(dl).raw(), logits.raw(), logits.nbytes()) == 0);  // logits untouched
          const double again = cuda::cross_entropy(dl, dtg, scale, nullptr, cap);
          CHECK(std::memcmp(&again, &got, sizeof got) == 0);
          continue;
        }
        Tensor g = download(dg);
        check_close(g, want_g, tolerance({gt}));
        const double dist = test::rel_error(g.data<float>(), plain_g.data<float>(), g.numel());
        CHECK(dist > 0.1);  // far from the uncapped gradient
        if (!(dist > 0.1)) MESSAGE("dlogits only " << dist << " from the uncapped gradient");
        for (std::int64_t r = 0; r < n; ++r)
          if (tg[r] == ops::kIgnoreIndex)
            for (std::int64_t j = 0; j < v; ++j) REQUIRE(g.data<float>()[r * v + j] == 0.0f);
        if (mode == kGradF32 || mode == kGradBf16) {  // determinism of loss and dlogits
          Tensor dg2 = device_nan({n, v}, gt);
          const double again = cuda::cross_entropy(dl, dtg, scale, &dg2, cap);
          CHECK(std::memcmp(&again, &got, sizeof got) == 0);
          CHECK(device_bytes(dg2) == device_bytes(dg));
        }
      }
  }
  // softcap 0 passed explicitly: the default's bits; a negative cap throws before any write.
  const std::vector<std::int32_t> tg = ce_targets(9, 1000);
  const Tensor dtg = upload_i32(tg), dl = upload(host_random(rng, {9, 1000}, DType::F32, 4.0f), DType::F32);
  Tensor a = device_nan({9, 1000}, DType::F32), b = device_nan({9, 1000}, DType::F32);
  const double la = cuda::cross_entropy(dl, dtg, 0.5f, &a), lb = cuda::cross_entropy(dl, dtg, 0.5f, &b, 0.0f);
  CHECK(std::memcmp(&la, &lb, sizeof la) == 0);
  CHECK(device_bytes(a) == device_bytes(b));
  Tensor c = device_nan({9, 1000}, DType::F32);
  CHECK_THROWS_AS(cuda::cross_entropy(dl, dtg, 0.5f, &c, -2.0f), InputError);
  Tensor gc = download(c);
  for (std::int64_t i = 0; i < gc.numel(); ++i) REQUIRE(std::isnan(gc.data<float>()[i]));
}

TEST_CASE("cuda cross_entropy: all rows ignored, out-of-range targets throw before any write") {
  if (!have_gpu()) return;
  {
    Tensor logits = upload(host_random(rng, {4, 7}, DType::F32), DType::F32), dg = device_nan({4, 7}, DType::F32);
    const double loss = cuda::cross_entropy(logits, upload_i32({-100, -100, -100, -100}), 1.0f, &dg);
    CHECK(loss == 0.0);
    Tensor g = download(dg);
    for (std::int64_t i = 0; i < g.numel(); ++i) REQUIRE(g.data<float>()[i] == 0.0f);
  }
  const int v = 11;
  Tensor hl = host_random(rng, {3, v}, DType::F32);
  for (std::int32_t bad : {v, -1, -101, 1 << 30}) {
    CAPTURE(bad);
    Tensor dl = upload(hl, DType::F32), dg = device_nan({3, v}, DType::F32);
    CHECK_THROWS_AS(cuda::cross_entropy(dl, upload_i32({1, bad, 2}), 1.0f, &dg), InputError);
    Tensor g = download(dg);
    for (std::int64_t i = 0; i < g.numel(); ++i) REQUIRE(std::isnan(g.data<float>()[i]));  // nothing written
    CHECK_THROWS_AS(cuda::cross_entropy(dl, upload_i32({1, bad, 2}), 1.0f, &dl), InputError);  // in place
    CHECK(std::memcmp(download(dl).raw(), hl.raw(), hl.nbytes()) == 0);
  }
}

TEST_CASE("cuda sum_squares: exact double squares, deterministic, alignment-independent bits") {
  if (!have_gpu()) return;
  for (std::int64_t n : {1, 7, 8, 1000, 4099, 1000003}) {
    for (DType t : kFloatTypes) {
      CAPTURE(n); CAPTURE(name(t));
      Tensor x = host_random(rng, {n}, t, 2.0f);
      const double want = ops::sum_squares(x);
      Tensor dx = upload(x, t);
      const double got = cuda::sum_squares(dx);
      check_close_scalar(got, want, 1e-9);
      const double again = cuda::sum_squares(dx);
      CHECK(std::memcmp(&again, &got, sizeof got) == 0);
      // The same values one element into a bigger tensor (scalar loads instead of 16-byte packs).
      Tensor big = host_random(rng, {n + 1}, t);
      std::memcpy(big.data<float>() + 1, x.raw(), x.nbytes());
      Tensor dbig = upload(big, t);
      const double shifted = cuda::sum_squares(dbig.view(1, {n}));
      CHECK(std::memcmp(&shifted, &got, sizeof got) == 0);
    }
  }
  CHECK(cuda::sum_squares(upload(host_random(rng, {0}, DType::F32), DType::F32)) == 0.0);
}

TEST_CASE("cuda scale_inplace: one rounded product per element") {
  if (!have_gpu()) return;
  for (std::int64_t n : {1, 1000, 1000003}) {
    for (DType t : kFloatTypes) {
      CAPTURE(n); CAPTURE(name(t));
      const float s = 0.37f;
      Tensor x = host_random(rng, {n}, t);
      Tensor dx = upload(x, t);
      cuda::scale_inplace(dx, s);
      Tensor want = host_copy(x);
      ops::scale_inplace(want, s);
      if (t == DType::BF16) round_for(want, DType::BF16);
      CHECK(std::memcmp(download(dx).raw(), want.raw(), want.nbytes()) == 0);
    }
  }
}

namespace {

// One AdamW tensor on both sides: host F32 copies (the CPU reference) and device tensors.
struct AdamState {
  DType param_t, grad_t;
  bool with_master;
  float wd;
  Tensor p, m, v;              // host F32: param (bf16 values when param_t is BF16), moments
  Tensor master;               // host F32 (with_master): the fp32 weights
  Tensor dp, dm, dv, dmaster;  // device
};

AdamState make_state(std::int64_t n, DType param_t, DType grad_t, bool with_master, float wd) {
  AdamState s{param_t, grad_t, with_master, wd, {}, {}, {}, {}, {}, {}, {}, {}};
  Tensor w = host_random(rng, {n}, DType::F32, 0.5f);
  s.m = host_random(rng, {n}, DType::F32, 0.01f);
  s.v = host_random(rng, {n}, DType::F32, 0.01f);
  for (std::int64_t i = 0; i < n; ++i) s.v.data<float>()[i] = std::abs(s.v.data<float>()[i]);
  if (with_master) {
    s.master = host_copy(w);
    s.dmaster = upload(s.master, DType::F32);
  }
  s.p = host_copy(w);
  if (param_t == DType::BF16) round_for(s.p, DType::BF16);
  s.dp = upload(s.p, param_t);
  s.dm = upload(s.m, DType::F32);
  s.dv = upload(s.v, DType::F32);
  return s;
}

// The CPU reference step: the update on the master (or param), then param rounded to bf16 if stored so.
void cpu_step(AdamState& s, const Tensor& grad, ops::AdamWParams hp, std::int64_t step) {
  hp.weight_decay = static_cast<double>(s.wd);
  if (s.with_master) {
    ops::adamw_step(s.master, grad, s.m, s.v, hp, step);
    std::memcpy(s.p.raw(), s.master.raw(), s.p.nbytes());
  } else {
    ops::adamw_step(s.p, grad, s.m, s.v, hp, step);
  }
  if (s.param_t == DType::BF16) round_for(s.p, DType::BF16);
}

void check_state(const AdamState& s) {
  const double ptol = s.param_t == DType::BF16 ? 1e-2 : 1e-6;
  check_close(download(s.dp), s.p, ptol);
  check_close(download(s.dm), s.m, 1e-6);
  check_close(download(s.dv), s.v, 1e-6);
  if (s.with_master) check_close(download(s.dmaster), s.master, 1e-6);
}

}  // namespace

TEST_CASE("cuda adamw_step: several steps with weight decay, F32 and BF16 param and grad") {
  if (!have_gpu()) return;
  ops::AdamWParams hp;
  hp.lr = 1e-2;
  for (std::int64_t n : {1, 1000, 70001, 131072}) {
    for (DType param_t : kFloatTypes)
      for (DType grad_t : kFloatTypes) {
        CAPTURE(n); CAPTURE(name(param_t)); CAPTURE(name(grad_t));
        AdamState s = make_state(n, param_t, grad_t, false, 0.01f);
        for (std::int64_t step = 1; step <= 5; ++step) {
          CAPTURE(step);
          Tensor g = host_random(rng, {n}, grad_t, 0.1f);
          cpu_step(s, g, hp, step);
          ops::AdamWParams dhp = hp;
          dhp.weight_decay = static_cast<double>(s.wd);
          cuda::adamw_step(s.dp, upload(g, grad_t), s.dm, s.dv, dhp, step);
          check_state(s);
        }
      }
  }
  Tensor p = upload(host_random(rng, {4}, DType::F32), DType::F32), g = upload(host_random(rng, {4}, DType::F32), DType::F32);
  Tensor m = upload(host_fill({4}, 0.0f), DType::F32), v = upload(host_fill({4}, 0.0f), DType::F32);
  Tensor m16 = upload(host_fill({4}, 0.0f), DType::BF16), g5 = upload(host_random(rng, {5}, DType::F32), DType::F32);
  CHECK_THROWS_AS(cuda::adamw_step(p, g, m, v, hp, 0), InputError);    // step counts from 1
  CHECK_THROWS_AS(cuda::adamw_step(p, g, m16, v, hp, 1), InputError);  // m must be F32
  CHECK_THROWS_AS(cuda::adamw_step(p, g5, m, v, hp, 1), InputError);   // shape mismatch
}

TEST_CASE("cuda adamw_multi_tensor: equals adamw_step bit for bit and the CPU reference; masters; many launches") {
  if (!have_gpu()) return;
  const double lr = 2e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  ops::AdamWParams hp;
  hp.lr = lr, hp.beta1 = beta1, hp.beta2 = beta2, hp.eps = eps;
  // A mix: sizes around the 65536-element chunk, every dtype pair, with and without master,
  // three weight decays; then 70 small tensors, so more than one launch (64 per launch).
  std::vector<AdamState> multi, single;
  std::vector<std::int64_t> sizes = {1, 3, 1000, 65536, 65537, 70001, 131073};
  std::uniform_int_distribution<int> small(1, 300);
  for (int i = 0; i < 70; ++i) sizes.push_back(small(rng));
  const float decays[] = {0.0f, 0.01f, 0.1f};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const DType param_t = i % 2 ? DType::BF16 : DType::F32;
    const DType grad_t = (i / 2) % 2 ? DType::BF16 : DType::F32;
    const bool with_master = param_t == DType::BF16 && i % 4 == 1;
    multi.push_back(make_state(sizes[i], param_t, grad_t, with_master, decays[i % 3]));
    // The same starting values for the single-tensor run.
    AdamState s = multi.back();
    s.dp = upload(s.p, param_t);
    s.dm = upload(s.m, DType::F32);
    s.dv = upload(s.v, DType::F32);
    if (with_master) s.dmaster = upload(s.master, DType::F32);
    single.push_back(std::move(s));
  }
  for (std::int64_t step = 1; step <= 4; ++step) {
    CAPTURE(step);
    std::vector<Tensor> grads;
    std::vector<cuda::AdamWTensor> list;
    grads.reserve(multi.size());
    for (AdamState& s : multi) {
      Tensor g = host_random(rng, s.p.shape(), s.grad_t, 0.1f);
      cpu_step(s, g, hp, step);
      grads.push_back(upload(g, s.grad_t));
    }
    for (std::size_t i = 0; i < multi.size(); ++i) {
      AdamState& s = multi[i];
      list.push_back({&s.dp, &grads[i], &s.dm, &s.dv, s.with_master ? &s.dmaster : nullptr, s.wd});
    }
    cuda::adamw_multi_tensor(list, lr, beta1, beta2, eps, step);
    for (std::size_t i = 0; i < multi.size(); ++i) {
      CAPTURE(i); CAPTURE(sizes[i]);
      AdamState& s = single[i];
      ops::AdamWParams one = hp;
      one.weight_decay = static_cast<double>(s.wd);
      if (s.with_master) {  // the update on the master, then param = bf16(master)
        cuda::adamw_step(s.dmaster, grads[i], s.dm, s.dv, one, step);
        Tensor master = download(s.dmaster);
        round_for(master, DType::BF16);
        s.dp = upload(master, s.param_t);
      } else {
        cuda::adamw_step(s.dp, grads[i], s.dm, s.dv, one, step);
      }
      CHECK(device_bytes(multi[i].dp) == device_bytes(s.dp));
      CHECK(device_bytes(multi[i].dm) == device_bytes(s.dm));
      CHECK(device_bytes(multi[i].dv) == device_bytes(s.dv));
      if (s.with_master) CHECK(device_bytes(multi[i].dmaster) == device_bytes(s.dmaster));
      check_state(multi[i]);
    }
  }
  // Refusals happen before any update.
  AdamState a = make_state(10, DType::F32, DType::F32, false, 0.0f);
  Tensor g = upload(host_random(rng, {10}, DType::F32), DType::F32), g9 = upload(host_random(rng, {9}, DType::F32), DType::F32);
  const std::vector<cuda::AdamWTensor> bad = {{&a.dp, &g, &a.dm, &a.dv, nullptr, 0.0f},
                                              {&a.dp, &g9, &a.dm, &a.dv, nullptr, 0.0f}};
  CHECK_THROWS_AS(cuda::adamw_multi_tensor(bad, lr, beta1, beta2, eps, 1), InputError);
  CHECK(std::memcmp(download(a.dp).raw(), a.p.raw(), a.p.nbytes()) == 0);  // the first tensor was not updated
  const std::vector<cuda::AdamWTensor> none;
  cuda::adamw_multi_tensor(none, lr, beta1, beta2, eps, 1);  // nothing to do
  cuda::synchronize();
}

#endif  // SPPFT_HAVE_CUDA
