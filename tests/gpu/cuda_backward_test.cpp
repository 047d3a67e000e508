// The CUDA backward ops rmsnorm_backward, rope_backward, glu_backward and
// embedding_backward (kernels/cuda/*.cu, called directly through kernels/cuda/cuda_ops.h)
// against the fp32 CPU reference (sppft::cpu, kernels/cpu/*_backward.cpp). Fresh random
// inputs at several shapes, odd ones included; overwritten device outputs are poisoned
// with NaN before each call, accumulated ones (dw, dtable) start from known random values.
// Also: the allowed aliasings (dx = dy; dgate / dup on gate, up or dout), repeated ids,
// run-to-run bitwise determinism of the accumulating ops, and bad ids that throw before
// anything is written.
//
// Tolerances (max |gpu - cpu| / max |cpu| over the output, test::rel_error):
//   every tensor F32:              1e-5  (fp32 both sides; only summation order, FMA
//                                         contraction and libm-vs-CUDA ulps differ)
//   any BF16 input or output:      1e-2  (inputs are rounded to bf16 on the host first, so
//                                         the CPU sees the same values; what remains is the
//                                         bf16 rounding of the output, <= 2^-9 relative)
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
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#endif

using namespace sppft;
using namespace sppft::test::gpu;

#ifndef SPPFT_HAVE_CUDA

TEST_CASE("CUDA backward ops (this build has no CUDA)") { CHECK_FALSE(have_gpu()); }

#else

namespace {

std::mt19937 rng(23);  // this file's inputs: every host_random and pick draws from it

}  // namespace

// ---- rmsnorm_backward ----

TEST_CASE("cuda rmsnorm_backward: dx and accumulated dw, llama and gemma, every dtype combination") {
  if (!have_gpu()) return;
  // {3, 4096}, {37, 4096}: wide rows; {600, 96}: more rows than dw partial blocks (512);
  // {5, 9000}, {4, 8195}: H > 8192 (dw partials in global scratch); H = 37, 8195: scalar paths.
  // No H = 1: dx is w' dy with its component along x removed (scaled), which for H = 1 is
  // all of it: dx = r w' dy (1 - x^2 r^2) ~ eps / x^2, pure fp32 cancellation on both sides.
  for (auto [n, h] : {std::pair{1, 64}, {3, 8}, {7, 37}, {37, 40}, {3, 4096}, {37, 4096}, {600, 96}, {5, 9000},
                      {4, 8195}}) {
    for (DType x_t : kFloatTypes)
      for (DType w_t : kFloatTypes)
        for (DType g_t : kFloatTypes)
          for (DType dx_t : kFloatTypes)
            for (DType dw_t : kFloatTypes)
              for (bool unit : {false, true}) {
                CAPTURE(n); CAPTURE(h); CAPTURE(name(x_t)); CAPTURE(name(w_t)); CAPTURE(name(g_t));
                CAPTURE(name(dx_t)); CAPTURE(name(dw_t)); CAPTURE(unit);
                Tensor x = host_random(rng, {n, h}, x_t, 3.0f), w = host_random(rng, {h}, w_t), dy = host_random(rng, {n, h}, g_t);
                Tensor dw0 = host_random(rng, {h}, dw_t);
                Tensor want_dx = host_nan({n, h}), want_dw = host_copy(dw0);
                cpu::rmsnorm_backward(x, w, dy, 1e-6f, unit, want_dx, &want_dw);

                Tensor ddx = device_nan({n, h}, dx_t), ddw = upload(dw0, dw_t);
                cuda::rmsnorm_backward(upload(x, x_t), upload(w, w_t), upload(dy, g_t), 1e-6f, unit, ddx, &ddw);
                check_close(download(ddx), want_dx, tolerance({x_t, w_t, g_t, dx_t}));
                check_close(download(ddw), want_dw, tolerance({x_t, g_t, dw_t}));
              }
  }
}

TEST_CASE("cuda rmsnorm_backward: frozen weight (dw null), dx in place on dy, dx aliasing x refused") {
  if (!have_gpu()) return;
  for (auto [n, h] : {std::pair{1, 64}, {3, 40}, {37, 4096}, {600, 96}, {5, 9000}}) {
    for (DType t : kFloatTypes)
      for (bool with_dw : {false, true}) {
        CAPTURE(n); CAPTURE(h); CAPTURE(name(t)); CAPTURE(with_dw);
        Tensor x = host_random(rng, {n, h}, t, 3.0f), w = host_random(rng, {h}, t), dy = host_random(rng, {n, h}, t);
        Tensor dw0 = host_random(rng, {h}, DType::F32);
        Tensor want_dx = host_nan({n, h}), want_dw = host_copy(dw0);
        cpu::rmsnorm_backward(x, w, dy, 1e-5f, false, want_dx, with_dw ? &want_dw : nullptr);

        // Not in place, without dw.
        Tensor x_dev = upload(x, t), w_dev = upload(w, t), ddx = device_nan({n, h}, t);
        if (!with_dw) {
          cuda::rmsnorm_backward(x_dev, w_dev, upload(dy, t), 1e-5f, false, ddx, nullptr);
          check_close(download(ddx), want_dx, tolerance({t}));
        }
        // In place: dx is dy.
        Tensor ddy = upload(dy, t), ddw = upload(dw0, DType::F32);
        cuda::rmsnorm_backward(x_dev, w_dev, ddy, 1e-5f, false, ddy, with_dw ? &ddw : nullptr);
        check_close(download(ddy), want_dx, tolerance({t}));
        if (with_dw) check_close(download(ddw), want_dw, tolerance({t}));
        // Accumulated into the residual stream's gradient (one rounding of the sum).
        Tensor acc0 = host_random(rng, {n, h}, t), want_acc = host_copy(acc0);
        ops::add_inplace(want_acc, want_dx);
        Tensor dacc = upload(acc0, t);
        cuda::rmsnorm_backward(x_dev, w_dev, upload(dy, t), 1e-5f, false, dacc, nullptr, /*accumulate_dx=*/true);
        check_close(download(dacc), want_acc, tolerance({t}));
      }
  }
  Tensor x = upload(host_random(rng, {3, 8}, DType::F32), DType::F32), w = upload(host_random(rng, {8}, DType::F32), DType::F32);
  Tensor dy = upload(host_random(rng, {3, 8}, DType::F32), DType::F32);
  CHECK_THROWS_AS(cuda::rmsnorm_backward(x, w, dy, 1e-6f, false, x, nullptr), InputError);
  Tensor host_dx = host_nan({3, 8});
  CHECK_THROWS_AS(cuda::rmsnorm_backward(x, w, dy, 1e-6f, false, host_dx, nullptr), InputError);  // dx on the CPU
}

TEST_CASE("cuda rmsnorm_backward: dw is bitwise reproducible run to run") {
  if (!have_gpu()) return;
  for (auto [n, h] : {std::pair{600, 96}, {1100, 4096}, {700, 9000}}) {
    for (DType t : kFloatTypes) {
      CAPTURE(n); CAPTURE(h); CAPTURE(name(t));
      Tensor x = upload(host_random(rng, {n, h}, t, 3.0f), t), w = upload(host_random(rng, {h}, t), t);
      Tensor dy = upload(host_random(rng, {n, h}, t), t), dw0 = host_random(rng, {h}, t);
      std::vector<unsigned char> first, first_dx;
      for (int run = 0; run < 2; ++run) {
        Tensor ddx = device_nan({n, h}, t), ddw = upload(dw0, t);
        cuda::rmsnorm_backward(x, w, dy, 1e-6f, true, ddx, &ddw);
        if (run == 0) {
          first = device_bytes(ddw);
          first_dx = device_bytes(ddx);
        } else {
          CHECK(device_bytes(ddw) == first);
          CHECK(device_bytes(ddx) == first_dx);
        }
      }
    }
  }
}

// ---- rope_backward ----

TEST_CASE("cuda rope_backward: inverse half-split rotation, long positions, partial rotary dims; forward then backward is the identity") {
  if (!have_gpu()) return;
  // r: the rotated dimensions of each head (r < d: a partial_rotary_factor)
  for (auto [n, heads, d, r, max_pos] : {std::tuple{1, 2, 64, 64, 10}, {3, 8, 128, 128, 131072}, {37, 4, 128, 128, 5000},
                                         {33, 5, 64, 64, 131072}, {5, 3, 8, 8, 10}, {3, 2, 2, 2, 3},
                                         {37, 4, 128, 96, 5000}, {5, 3, 8, 2, 10}}) {
    std::vector<std::int32_t> pos(n);
    std::uniform_int_distribution<int> pick(0, max_pos);
    for (auto& p : pos) p = pick(rng);
    Tensor hpos = host_i32(pos), dpos = upload_i32(pos);
    Tensor freq = Tensor::empty({r / 2}, DType::F32, kWork);
    for (int i = 0; i < r / 2; ++i)
      freq.data<float>()[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / r));
    Tensor dfreq = upload(freq, DType::F32);
    for (DType t : kFloatTypes) {
      CAPTURE(n); CAPTURE(heads); CAPTURE(d); CAPTURE(r); CAPTURE(name(t));
      Tensor g = host_random(rng, {n, heads * d}, t);
      Tensor dg = upload(g, t);
      Tensor want = host_copy(g);
      const float scale = r < d ? 1.25f : 1.0f;  // partial: LongRoPE's attention factor on cos and sin
      cpu::rope_backward(want, hpos, freq, d, scale);
      cuda::rope_backward(dg, dpos, dfreq, d, scale);
      check_close(download(dg), want, tolerance({t}));
      if (t == DType::F32) {  // the rotations are orthogonal: forward then backward gives g back
        Tensor dr = upload(g, t);
        cuda::rope_forward(dr, dpos, dfreq, d, scale);
        cuda::rope_backward(dr, dpos, dfreq, d, 1.0f / scale);
        check_close(download(dr), g, 1e-5);
      }
    }
  }
}

// ---- glu_backward ----

TEST_CASE("cuda glu_backward: SiLU, GELU tanh, GELU erf, every dtype pair, allowed aliasings") {
  if (!have_gpu()) return;
  using ops::GluActivation;
  for (auto [n, f] : {std::pair{1, 1}, {3, 5}, {37, 40}, {4, 1024}, {7, 333}, {8, 4096}}) {
    for (GluActivation act : {GluActivation::SiLU, GluActivation::GeluTanh, GluActivation::GeluErf})
      for (DType in_t : kFloatTypes)
        for (DType g_t : kFloatTypes) {
          CAPTURE(n); CAPTURE(f); CAPTURE(static_cast<int>(act)); CAPTURE(name(in_t)); CAPTURE(name(g_t));
          Tensor gate = host_random(rng, {n, f}, in_t, 2.0f), up = host_random(rng, {n, f}, in_t), dout = host_random(rng, {n, f}, g_t);
          Tensor want_dg = host_nan({n, f}), want_du = host_nan({n, f});
          cpu::glu_backward(gate, up, dout, act, want_dg, want_du);
          const double tol = tolerance({in_t, g_t});

          Tensor dgate = upload(gate, in_t), dup = upload(up, in_t), ddout = upload(dout, g_t);
          Tensor ddg = device_nan({n, f}, g_t), ddu = device_nan({n, f}, g_t);
          cuda::glu_backward(dgate, dup, ddout, act, ddg, ddu);
          check_close(download(ddg), want_dg, tol);
          check_close(download(ddu), want_du, tol);

          {  // dgate in place on dout, dup separate
            Tensor dd = upload(dout, g_t), du = device_nan({n, f}, g_t);
            cuda::glu_backward(dgate, dup, dd, act, dd, du);
            check_close(download(dd), want_dg, tol);
            check_close(download(du), want_du, tol);
          }
          {  // dup in place on dout, dgate separate
            Tensor dd = upload(dout, g_t), dg = device_nan({n, f}, g_t);
            cuda::glu_backward(dgate, dup, dd, act, dg, dd);
            check_close(download(dg), want_dg, tol);
            check_close(download(dd), want_du, tol);
          }
          if (in_t == g_t) {
            {  // dgate on gate, dup on up
              Tensor gg = upload(gate, in_t), uu = upload(up, in_t);
              cuda::glu_backward(gg, uu, ddout, act, gg, uu);
              check_close(download(gg), want_dg, tol);
              check_close(download(uu), want_du, tol);
            }
            {  // dgate on gate, dup on dout
              Tensor gg = upload(gate, in_t), dd = upload(dout, g_t);
              cuda::glu_backward(gg, dup, dd, act, gg, dd);
              check_close(download(gg), want_dg, tol);
              check_close(download(dd), want_du, tol);
            }
          }
        }
  }
  // dgate and dup on one buffer is refused.
  Tensor g = upload(host_random(rng, {2, 8}, DType::F32), DType::F32), u = upload(host_random(rng, {2, 8}, DType::F32), DType::F32);
  Tensor d = upload(host_random(rng, {2, 8}, DType::F32), DType::F32), out = device_nan({2, 8}, DType::F32);
  CHECK_THROWS_AS(cuda::glu_backward(g, u, d, GluActivation::SiLU, out, out), InputError);
}

// ---- embedding_backward ----

TEST_CASE("cuda embedding_backward: scatter-add with repeated ids, every dtype pair, bitwise reproducible") {
  if (!have_gpu()) return;
  struct Case {
    int n, h, vocab;
    bool all_same;  // every id equal (one long run)
  };
  const Case cases[] = {
      {1, 1, 50, false},       {3, 7, 50, false},   {37, 40, 50, false},  {37, 64, 10, false},
      {37, 300, 50, false},    {9, 4096, 50, false}, {300, 96, 50, false}, {100, 40, 50, true},
      {200, 64, 1, true},      {500, 24, 131075, false},                  {1000, 16, 7, false},
  };
  for (const Case& c : cases) {
    std::vector<std::int32_t> ids(c.n);
    std::uniform_int_distribution<int> pick(0, c.vocab - 1);
    const std::int32_t same = pick(rng);
    for (auto& id : ids) id = c.all_same ? same : pick(rng);
    if (c.vocab > 1000)  // a large vocabulary: force some repeats anyway (and the top id)
      for (int i = 0; i < c.n; i += 7) ids[i] = i % 2 ? c.vocab - 1 : ids[0];
    Tensor hids = host_i32(ids), dids = upload_i32(ids);
    for (DType g_t : kFloatTypes)
      for (DType tab_t : kFloatTypes)
        for (float scale : {1.0f, std::sqrt(static_cast<float>(c.h))}) {
          CAPTURE(c.n); CAPTURE(c.h); CAPTURE(c.vocab); CAPTURE(c.all_same); CAPTURE(name(g_t)); CAPTURE(name(tab_t));
          CAPTURE(scale);
          Tensor dout = host_random(rng, {c.n, c.h}, g_t), table0 = host_random(rng, {c.vocab, c.h}, tab_t);
          Tensor want = host_copy(table0);
          cpu::embedding_backward(hids, dout, scale, want);

          Tensor ddout = upload(dout, g_t);
          Tensor dtab = upload(table0, tab_t);
          cuda::embedding_backward(dids, ddout, scale, dtab);
          check_close(download(dtab), want, tolerance({g_t, tab_t}));

          // A second run from the same starting table: bitwise the same result.
          const std::vector<unsigned char> first = device_bytes(dtab);
          Tensor dtab2 = upload(table0, tab_t);
          cuda::embedding_backward(dids, ddout, scale, dtab2);
          CHECK(device_bytes(dtab2) == first);
        }
  }
}

TEST_CASE("cuda embedding_backward: bad ids throw before any write") {
  if (!have_gpu()) return;
  const int vocab = 50;
  for (DType tab_t : kFloatTypes) {
    Tensor table0 = host_random(rng, {vocab, 8}, tab_t);
    Tensor dout = upload(host_random(rng, {3, 8}, DType::F32), DType::F32);
    for (std::int32_t bad : {vocab, -1, 1 << 30}) {
      CAPTURE(name(tab_t)); CAPTURE(bad);
      Tensor dtab = upload(table0, tab_t);
      const std::vector<unsigned char> before = device_bytes(dtab);
      CHECK_THROWS_AS(cuda::embedding_backward(upload_i32({1, bad, 2}), dout, 1.0f, dtab), InputError);
      CHECK(device_bytes(dtab) == before);  // nothing written, not even rows 1 and 2
    }
  }
}

#endif  // SPPFT_HAVE_CUDA
