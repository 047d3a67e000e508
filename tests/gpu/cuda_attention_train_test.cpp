// The CUDA training attention (kernels/cuda/attention_train.cu: attention_forward_train and
// attention_backward) against the fp32 CPU reference (kernels/cpu/attention_train.cpp, called
// through kernels/ops.h with host tensors). Packed sequences of lengths 0, 1, 7, 33, 130 and
// more, GQA groups 4:1, 6:2, 3:3, 8:2, 8:1, head_dim 2 .. 256 (64, 80, 96, 128, 136, 256 included),
// windows 0, 5 and 40, more than 32 sequences (two launch tables), rows covered by no sequence.
// Every device output is poisoned with NaN before the call; uncovered rows must stay NaN and
// covered ones must be finite.
//
// Both sides see the same inputs: BF16 inputs are rounded to bf16 on the host first, and the
// backward gets the same out (the CPU forward's, rounded to bf16 for BF16) and lse on both sides.
// Tolerances (max |gpu - cpu| / max |cpu| over the covered rows, test::rel_error):
//   F32  out, dq, dk, dv:  1e-5  (fp32 both sides; only summation order, the online softmax
//                                 and libm-vs-CUDA expf/logf ulps differ)
//   BF16 out, dq, dk, dv:  2e-2  (fp32 math on identical inputs; the bf16 rounding of each
//                                 output is <= 2^-9 relative)
//   lse (F32 for both):    1e-5 of max(1, max |lse|)  (an absolute bound where lse is near 0)
//   (BF16 runs twice: on the tensor-core kernels - P and dS rounded to bf16 before their
//   products, still well inside 2e-2 - and forced onto the CUDA-core kernels.)
// Determinism: two calls with the same inputs give bitwise equal outputs.
// Gemma-2's soft-capping (softcap > 0: scores softcap * tanh(s / softcap), dS through the slope
// 1 - (c / softcap)^2): capped cases on every kernel variant, forward and backward, windows and
// GQA, with the tolerances above, and their out, dq, dk, dv at least 0.1 (relative, 5x the
// BF16 tolerance) away from the uncapped reference's, so that they cannot pass with the cap
// ignored; softcap = 0 passed explicitly gives the default's bits, a negative cap throws.
//
// Without a GPU (or without CUDA in the build) it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/error.h"
#include "kernels/ops.h"
#include "gpu_test_util.h"
#include "test_util.h"
#ifdef SPPFT_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_ops.h"
#endif

using namespace sppft;
using namespace sppft::test::gpu;

#ifndef SPPFT_HAVE_CUDA

TEST_CASE("CUDA training attention (this build has no CUDA)") { CHECK_FALSE(have_gpu()); }

#else

namespace {

std::mt19937 rng(23);  // this file's inputs: every host_random draws from it

bool same_bits(const Tensor& a_dev, const Tensor& b_dev) {
  Tensor a = cuda::to_host(a_dev, kWork), b = cuda::to_host(b_dev, kWork);
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

struct TrainCase {
  int hq, hkv, d;
  std::vector<int> lens;    // sequence lengths, packed in order (0 = an empty sequence)
  bool gaps;                // an uncovered row before the first sequence and after each one
  float sharpness = 1.0f;   // scale = sharpness / sqrt(d): larger = peakier softmax
  float softcap = 0.0f;     // Gemma-2's score cap (0: none)
};

// The sequences of a case and the total row count.
std::vector<ops::AttentionSeq> pack(const TrainCase& c, std::int64_t& n) {
  std::vector<ops::AttentionSeq> seqs;
  std::int64_t row = c.gaps ? 1 : 0;
  for (int len : c.lens) {
    seqs.push_back({row, len, 0, 0});  // {q_begin, q_len, slot (ignored), past_len}
    row += len + (c.gaps ? 1 : 0);
  }
  n = row;
  return seqs;
}

std::vector<char> covered_rows(std::span<const ops::AttentionSeq> seqs, std::int64_t n) {
  std::vector<char> covered(n, 0);
  for (const auto& s : seqs)
    for (std::int64_t r = s.q_begin; r < s.q_begin + s.q_len; ++r) covered[r] = 1;
  return covered;
}

std::vector<TrainCase> train_cases() {
  std::vector<TrainCase> cases = {
      {4, 1, 64, {1}, false},                       // N = 1, MQA
      {6, 2, 80, {7, 33}, true},                    // D = 80 (padded to 128), uncovered rows around
      {3, 3, 128, {130}, false},                    // MHA, several key and query tiles
      {4, 1, 128, {33, 0, 1, 130, 7}, true, 3.0f},  // packed, an empty sequence, peaky softmax
      {6, 2, 64, {130, 33, 1}, false},              // GQA 3, several packed
      {2, 1, 256, {70, 5}, true},                   // D = 256 (largest shared-memory tiles)
      {8, 1, 256, {70, 1}, false},                  // gemma-2b's heads: 8:1, D = 256, 9 query tiles
      {2, 2, 136, {70}, false},                     // D = 136: tensor-core output blocks of 128 + 8
      {3, 3, 96, {7, 1, 33}, false, 3.0f},          // D = 96
      {2, 2, 6, {9, 4}, true},                      // D % 4 == 2
      {1, 1, 2, {3}, false},                        // D = 2, one head
  };
  TrainCase many{8, 2, 32, {}, true};  // 40 sequences: more than one launch table
  for (int s = 0; s < 40; ++s) many.lens.push_back(1 + (s * 5) % 7);
  cases.push_back(many);
  return cases;
}

// got_dev [N, W] against want_host [N, W]: uncovered rows still NaN, covered rows finite and
// within tol (rel_error over the covered rows).
void check_rows(const Tensor& got_dev, const Tensor& want_host, const std::vector<char>& covered, double tol,
                const char* what) {
  CAPTURE(what);
  Tensor got = download(got_dev);
  REQUIRE(got.shape() == want_host.shape());
  const std::int64_t n = got.dim(0), w = got.dim(1);
  std::vector<float> g, r;
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t e = 0; e < w; ++e) {
      const float gv = got.data<float>()[i * w + e];
      if (covered[i]) {
        bad += !std::isfinite(gv);
        g.push_back(gv);
        r.push_back(want_host.data<float>()[i * w + e]);
      } else {
        bad += !std::isnan(gv);  // untouched: still the NaN poison
      }
    }
  REQUIRE(bad == 0);
  const double err = test::rel_error(g.data(), r.data(), static_cast<std::int64_t>(g.size()));
  CHECK(err < tol);
  if (err >= tol) MESSAGE(what << ": relative error " << err << " >= " << tol);
}

// Capped cases: got_dev [N, W] at least min_dist (rel_error over the covered rows) away from
// the uncapped reference plain_host, so that a kernel ignoring the cap cannot pass.
void check_far(const Tensor& got_dev, const Tensor& plain_host, const std::vector<char>& covered, double min_dist,
               const char* what) {
  CAPTURE(what);
  Tensor got = download(got_dev);
  const std::int64_t n = got.dim(0), w = got.dim(1);
  std::vector<float> g, p;
  for (std::int64_t i = 0; i < n; ++i)
    if (covered[i])
      for (std::int64_t e = 0; e < w; ++e) {
        g.push_back(got.data<float>()[i * w + e]);
        p.push_back(plain_host.data<float>()[i * w + e]);
      }
  const double dist = test::rel_error(g.data(), p.data(), static_cast<std::int64_t>(g.size()));
  CHECK(dist > min_dist);
  if (!(dist > min_dist)) MESSAGE(what << ": only " << dist << " from the uncapped result (want > " << min_dist << ")");
}

// lse: as check_rows, with the error relative to max(1, max |lse|).
void check_lse(const Tensor& got_dev, const Tensor& want_host, const std::vector<char>& covered) {
  Tensor got = download(got_dev);
  REQUIRE(got.shape() == want_host.shape());
  const std::int64_t n = got.dim(0), w = got.dim(1);
  double diff = 0, scale = 1;
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t e = 0; e < w; ++e) {
      const float gv = got.data<float>()[i * w + e], rv = want_host.data<float>()[i * w + e];
      if (!covered[i]) {
        bad += !std::isnan(gv);
        continue;
      }
      bad += !std::isfinite(gv);
      diff = std::max(diff, std::abs(static_cast<double>(gv) - rv));
      scale = std::max(scale, std::abs(static_cast<double>(rv)));
    }
  REQUIRE(bad == 0);
  CHECK(diff / scale < 1e-5);
  if (diff / scale >= 1e-5) MESSAGE("lse: error " << diff / scale << " >= 1e-5");
}

// Every kernel family: F32 (CUDA cores), BF16 on tensor cores where the shape allows
// (head_dim % 8 == 0 and <= 256, mma.sync up to 128 and WMMA above; others fall back), BF16
// forced onto CUDA cores.
// (dtype, kernels): F32 always takes the CUDA-core kernels; BF16 each path.
std::vector<std::pair<DType, cuda::AttentionKernels>> kernel_variants() {
  using K = cuda::AttentionKernels;
  return {{DType::F32, K::cuda_cores}, {DType::BF16, K::tensor_cores}, {DType::BF16, K::mma_sync}, {DType::BF16, K::cuda_cores}};
}

const char* kernels_name(cuda::AttentionKernels k) {
  return k == cuda::AttentionKernels::tensor_cores ? "tensor_cores" : k == cuda::AttentionKernels::mma_sync ? "mma_sync" : "cuda_cores";
}

// One case on every kernel variant and window against the CPU reference (with the case's
// softcap on both sides); capped cases also far from the uncapped reference (check_far).
void check_against_cpu(const TrainCase& c) {
  std::int64_t n = 0;
  const auto seqs = pack(c, n);
  const auto covered = covered_rows(seqs, n);
  const std::int64_t qw = c.hq * c.d, kw = c.hkv * c.d;
  const float scale = c.sharpness / std::sqrt(static_cast<float>(c.d)), cap = c.softcap;
  for (const auto& [t, kernels] : kernel_variants()) {
    cuda::set_attention_kernels(kernels);
    const Tensor q = host_random(rng, {n, qw}, t), k = host_random(rng, {n, kw}, t), v = host_random(rng, {n, kw}, t);
    const Tensor dout = host_random(rng, {n, qw}, t);
    const Tensor dd = upload(dout, t);
    const Tensor dqin = upload(q, t), dkin = upload(k, t), dvin = upload(v, t);
    for (std::int64_t window : {std::int64_t{0}, std::int64_t{5}, std::int64_t{40}}) {
      CAPTURE(c.hq); CAPTURE(c.hkv); CAPTURE(c.d); CAPTURE(c.lens.size()); CAPTURE(n); CAPTURE(name(t)); CAPTURE(window);
      CAPTURE(kernels_name(kernels)); CAPTURE(cap);
      const double tol = t == DType::BF16 ? 2e-2 : 1e-5;

      // Forward.
      Tensor out = host_nan({n, qw}), lse = host_nan({n, c.hq});
      ops::attention_forward_train(q, k, v, seqs, scale, window, out, lse, cap);
      Tensor gout = device_nan({n, qw}, t), glse = device_nan({n, c.hq}, DType::F32);
      cuda::attention_forward_train(dqin, dkin, dvin, seqs, scale, window, gout, glse, cap);
      check_rows(gout, out, covered, tol, "out");
      check_lse(glse, lse, covered);

      // Backward, from the CPU forward's out (as the GPU stores it) and lse on both sides.
      auto backward_input = [&](const Tensor& o) {
        Tensor out_in = host_copy(o);
        round_for(out_in, t);
        for (std::int64_t i = 0; i < out_in.numel(); ++i)  // uncovered rows: finite, not NaN
          if (std::isnan(out_in.data<float>()[i])) out_in.data<float>()[i] = 0.0f;
        return out_in;
      };
      const Tensor out_in = backward_input(out);
      Tensor dq = host_nan({n, qw}), dk = host_nan({n, kw}), dv = host_nan({n, kw});
      ops::attention_backward(q, k, v, out_in, lse, dout, seqs, scale, window, dq, dk, dv, cap);
      Tensor gdq = device_nan({n, qw}, t), gdk = device_nan({n, kw}, t), gdv = device_nan({n, kw}, t);
      cuda::attention_backward(dqin, dkin, dvin, upload(out_in, t), upload(lse, DType::F32), dd, seqs, scale, window,
                               gdq, gdk, gdv, cap);
      check_rows(gdq, dq, covered, tol, "dq");
      check_rows(gdk, dk, covered, tol, "dk");
      check_rows(gdv, dv, covered, tol, "dv");

      if (cap > 0) {  // the uncapped reference of the same inputs: the cap must have moved every output
        Tensor pout = host_nan({n, qw}), plse = host_nan({n, c.hq});
        ops::attention_forward_train(q, k, v, seqs, scale, window, pout, plse);
        Tensor pdq = host_nan({n, qw}), pdk = host_nan({n, kw}), pdv = host_nan({n, kw});
        ops::attention_backward(q, k, v, backward_input(pout), plse, dout, seqs, scale, window, pdq, pdk, pdv);
        check_far(gout, pout, covered, 0.1, "out vs uncapped");
        check_far(gdq, pdq, covered, 0.1, "dq vs uncapped");
        check_far(gdk, pdk, covered, 0.1, "dk vs uncapped");
        check_far(gdv, pdv, covered, 0.1, "dv vs uncapped");
      }
    }
  }
  cuda::set_attention_kernels(cuda::AttentionKernels::tensor_cores);
}

}  // namespace

TEST_CASE("cuda attention_forward_train and attention_backward match the CPU reference") {
  if (!have_gpu()) return;
  for (const TrainCase& c : train_cases()) check_against_cpu(c);
}

TEST_CASE("cuda training attention with Gemma-2 soft-capped scores matches the CPU reference, every kernel") {
  if (!have_gpu()) return;
  // Scores of a few units (scale 2 to 3 / sqrt(d)) against caps of 1.5 to 5. Every variant:
  // F32 and BF16 on CUDA cores, BF16 on WMMA and mma.sync (D = 64, 96; WMMA for gemma-2's
  // D = 256 8:1 heads; D = 6 falls back to CUDA cores); windows 0, 5, 40; GQA 1 to 8.
  const std::vector<TrainCase> capped = {
      {4, 1, 64, {33, 0, 1, 70}, true, 3.0f, 3.0f},  // GQA 4, packed, an empty sequence
      {6, 2, 96, {65, 7}, false, 2.5f, 2.0f},        // GQA 3, D = 96
      {8, 1, 256, {70, 1}, false, 3.0f, 5.0f},       // gemma-2's heads: 8:1, D = 256
      {2, 2, 6, {9, 4}, true, 2.0f, 1.5f},           // MHA, D % 8 != 0
  };
  for (const TrainCase& c : capped) check_against_cpu(c);
}

TEST_CASE("cuda training attention: softcap 0 is the default's bits; a negative cap throws") {
  if (!have_gpu()) return;
  const TrainCase c{4, 2, 64, {40, 7}, true};
  std::int64_t n = 0;
  const auto seqs = pack(c, n);
  const std::int64_t qw = c.hq * c.d, kw = c.hkv * c.d;
  const float scale = 2.0f / std::sqrt(static_cast<float>(c.d));
  for (const auto& [t, kernels] : kernel_variants()) {
    cuda::set_attention_kernels(kernels);
    CAPTURE(name(t)); CAPTURE(kernels_name(kernels));
    const Tensor q = upload(host_random(rng, {n, qw}, t), t), k = upload(host_random(rng, {n, kw}, t), t);
    const Tensor v = upload(host_random(rng, {n, kw}, t), t), dout = upload(host_random(rng, {n, qw}, t), t);
    Tensor out[2] = {device_nan({n, qw}, t), device_nan({n, qw}, t)};
    Tensor lse[2] = {device_nan({n, c.hq}, DType::F32), device_nan({n, c.hq}, DType::F32)};
    cuda::attention_forward_train(q, k, v, seqs, scale, 5, out[0], lse[0]);
    cuda::attention_forward_train(q, k, v, seqs, scale, 5, out[1], lse[1], 0.0f);
    CHECK(same_bits(out[0], out[1]));
    CHECK(same_bits(lse[0], lse[1]));
    Tensor o = download(out[0]);
    for (std::int64_t i = 0; i < o.numel(); ++i)
      if (std::isnan(o.data<float>()[i])) o.data<float>()[i] = 0.0f;
    const Tensor out_in = upload(o, t);
    Tensor dq[2], dk[2], dv[2];
    for (int run = 0; run < 2; ++run) {
      dq[run] = device_nan({n, qw}, t), dk[run] = device_nan({n, kw}, t), dv[run] = device_nan({n, kw}, t);
      if (run == 0)
        cuda::attention_backward(q, k, v, out_in, lse[0], dout, seqs, scale, 5, dq[run], dk[run], dv[run]);
      else
        cuda::attention_backward(q, k, v, out_in, lse[0], dout, seqs, scale, 5, dq[run], dk[run], dv[run], 0.0f);
    }
    CHECK(same_bits(dq[0], dq[1]));
    CHECK(same_bits(dk[0], dk[1]));
    CHECK(same_bits(dv[0], dv[1]));
    // Capped runs are deterministic too, and differ from the uncapped one.
    Tensor capped[2] = {device_nan({n, qw}, t), device_nan({n, qw}, t)};
    for (int run = 0; run < 2; ++run) cuda::attention_forward_train(q, k, v, seqs, scale, 5, capped[run], lse[1], 2.0f);
    CHECK(same_bits(capped[0], capped[1]));
    CHECK_FALSE(same_bits(capped[0], out[0]));
    CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, seqs, scale, 5, out[1], lse[1], -1.0f), InputError);
    CHECK_THROWS_AS(cuda::attention_backward(q, k, v, out_in, lse[0], dout, seqs, scale, 5, dq[1], dk[1], dv[1], -1.0f),
                    InputError);
  }
  cuda::set_attention_kernels(cuda::AttentionKernels::tensor_cores);
  cuda::synchronize();
}

TEST_CASE("cuda training attention is deterministic: two calls give bitwise equal outputs") {
  if (!have_gpu()) return;
  const TrainCase c{6, 2, 128, {130, 1, 33}, true};
  std::int64_t n = 0;
  const auto seqs = pack(c, n);
  const std::int64_t qw = c.hq * c.d, kw = c.hkv * c.d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  for (const auto& [t, kernels] : kernel_variants())
    for (std::int64_t window : {std::int64_t{0}, std::int64_t{5}}) {
      cuda::set_attention_kernels(kernels);
      CAPTURE(name(t)); CAPTURE(window); CAPTURE(kernels_name(kernels));
      const Tensor q = upload(host_random(rng, {n, qw}, t), t), k = upload(host_random(rng, {n, kw}, t), t);
      const Tensor v = upload(host_random(rng, {n, kw}, t), t), dout = upload(host_random(rng, {n, qw}, t), t);
      Tensor out[2], lse[2], dq[2], dk[2], dv[2];
      for (int run = 0; run < 2; ++run) {
        out[run] = device_nan({n, qw}, t);
        lse[run] = device_nan({n, c.hq}, DType::F32);
        cuda::attention_forward_train(q, k, v, seqs, scale, window, out[run], lse[run]);
      }
      CHECK(same_bits(out[0], out[1]));
      CHECK(same_bits(lse[0], lse[1]));
      // The uncovered rows of out are NaN: give the backward finite values there.
      Tensor o = download(out[0]);
      for (std::int64_t i = 0; i < o.numel(); ++i)
        if (std::isnan(o.data<float>()[i])) o.data<float>()[i] = 0.0f;
      const Tensor out_in = upload(o, t);
      for (int run = 0; run < 2; ++run) {
        dq[run] = device_nan({n, qw}, t);
        dk[run] = device_nan({n, kw}, t);
        dv[run] = device_nan({n, kw}, t);
        cuda::attention_backward(q, k, v, out_in, lse[0], dout, seqs, scale, window, dq[run], dk[run], dv[run]);
      }
      CHECK(same_bits(dq[0], dq[1]));
      CHECK(same_bits(dk[0], dk[1]));
      CHECK(same_bits(dv[0], dv[1]));
    }
  cuda::set_attention_kernels(cuda::AttentionKernels::tensor_cores);
}

TEST_CASE("cuda training attention refuses a cache offset, bad shapes, mixed dtypes and aliasing") {
  if (!have_gpu()) return;
  const DType f = DType::F32;
  const Tensor q = upload(host_random(rng, {4, 16}, f), f), k = upload(host_random(rng, {4, 8}, f), f);
  const Tensor v = upload(host_random(rng, {4, 8}, f), f);
  Tensor out = device_nan({4, 16}, f), lse = device_nan({4, 2}, f);
  const std::vector<ops::AttentionSeq> ok = {{0, 4, 0, 0}}, past = {{0, 4, 0, 1}}, too_long = {{2, 4, 0, 0}};
  CHECK_NOTHROW(cuda::attention_forward_train(q, k, v, ok, 1.0f, 0, out, lse));
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, past, 1.0f, 0, out, lse), InputError);
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, too_long, 1.0f, 0, out, lse), InputError);
  // D = 16 / 3 is not an integer; D = 16 / 16 = 1 is odd.
  Tensor lse3 = device_nan({4, 3}, f), lse16 = device_nan({4, 16}, f);
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, ok, 1.0f, 0, out, lse3), InputError);
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, ok, 1.0f, 0, out, lse16), InputError);
  // D = 512 > 256.
  const Tensor q512 = upload(host_random(rng, {2, 512}, f), f), k512 = upload(host_random(rng, {2, 512}, f), f);
  Tensor out512 = device_nan({2, 512}, f), lse1 = device_nan({2, 1}, f);
  const std::vector<ops::AttentionSeq> two = {{0, 2, 0, 0}};
  CHECK_THROWS_AS(cuda::attention_forward_train(q512, k512, k512, two, 1.0f, 0, out512, lse1), InputError);
  // Mixed dtypes, lse not F32, a CPU tensor.
  const Tensor k16 = upload(host_random(rng, {4, 8}, DType::BF16), DType::BF16);
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k16, v, ok, 1.0f, 0, out, lse), InputError);
  Tensor lse_bf16 = device_nan({4, 2}, DType::BF16);
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, ok, 1.0f, 0, out, lse_bf16), InputError);
  Tensor host_out = host_nan({4, 16});
  CHECK_THROWS_AS(cuda::attention_forward_train(q, k, v, ok, 1.0f, 0, host_out, lse), InputError);
  // Backward: an output aliasing an input, a wrong gradient shape.
  Tensor dq = device_nan({4, 16}, f), dk = device_nan({4, 8}, f), dv = device_nan({4, 8}, f);
  const Tensor dout = upload(host_random(rng, {4, 16}, f), f);
  CHECK_NOTHROW(cuda::attention_backward(q, k, v, out, lse, dout, ok, 1.0f, 0, dq, dk, dv));
  Tensor q_alias = q;
  CHECK_THROWS_AS(cuda::attention_backward(q, k, v, out, lse, dout, ok, 1.0f, 0, q_alias, dk, dv), InputError);
  Tensor dk_wrong = device_nan({4, 16}, f);
  CHECK_THROWS_AS(cuda::attention_backward(q, k, v, out, lse, dout, ok, 1.0f, 0, dq, dk_wrong, dv), InputError);
  cuda::synchronize();
}

TEST_CASE("training_attention_kernels names the path each head size takes") {
  if (!have_gpu()) return;
  using K = cuda::AttentionKernels;
  int optin = 0;  // heads of 256 need sm_90's 227 KiB of shared memory per block (190 KiB used)
  REQUIRE(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess);
  const K wide = optin >= 190 * 1024 ? K::tensor_cores : K::cuda_cores;
  cuda::set_attention_kernels(K::mma_sync);
  CHECK(cuda::training_attention_kernels(64) == K::mma_sync);
  CHECK(cuda::training_attention_kernels(96) == K::mma_sync);
  CHECK(cuda::training_attention_kernels(128) == K::mma_sync);
  CHECK(cuda::training_attention_kernels(136) == wide);  // WMMA: mma.sync stops at 128
  CHECK(cuda::training_attention_kernels(256) == wide);
  CHECK(cuda::training_attention_kernels(6) == K::cuda_cores);    // not a multiple of 8
  CHECK(cuda::training_attention_kernels(264) == K::cuda_cores);  // above 256
  cuda::set_attention_kernels(K::tensor_cores);
  CHECK(cuda::training_attention_kernels(96) == K::tensor_cores);
  CHECK(cuda::training_attention_kernels(256) == wide);
  cuda::set_attention_kernels(K::cuda_cores);
  CHECK(cuda::training_attention_kernels(128) == K::cuda_cores);
  cuda::set_attention_kernels(K::tensor_cores);
}

#endif  // SPPFT_HAVE_CUDA
