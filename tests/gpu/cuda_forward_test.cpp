// The CUDA forward ops (kernels/cuda/*.cu) against the fp32 CPU reference
// (kernels/cpu/*.cpp), called through the kernels/ops.h dispatch with device tensors.
// Random inputs at several shapes, odd ones and unaligned row views included; every
// device output is poisoned with NaN before the call.
//
// Tolerances (max |gpu - cpu| / max |cpu| over the output, test::rel_error):
//   every tensor F32:              1e-5  (fp32 both sides; only summation order and
//                                         libm-vs-CUDA ulps differ)
//   any BF16 input or output:      1e-2  (inputs are rounded to bf16 on the host first, so
//                                         the CPU sees the same values; what remains is the
//                                         bf16 rounding of the output, <= 2^-9 relative)
//   F32 linear with TF32 allowed:  1e-2
// attention_forward with Gemma-2's soft-capping (scores softcap * tanh(s / softcap)): as
// uncapped, and at least 0.1 (relative) away from the uncapped result, so that a kernel ignoring
// the cap fails; softcap 0 passed explicitly gives the default's bits, a negative cap throws.
//
// Without a GPU (or without CUDA in the build) it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/allocator.h"
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

TEST_CASE("CUDA forward ops (this build has no CUDA)") { CHECK_FALSE(have_gpu()); }

#else

namespace {

std::mt19937 rng(11);  // this file's inputs: every host_random and pick draws from it

}  // namespace

TEST_CASE("cuda linear_forward: F32 exact, BF16 with fp32 accumulation, bias fused or not, unaligned views, fallback") {
  if (!have_gpu()) return;
  for (auto [n, k, m] : {std::tuple{1, 1, 1}, {3, 7, 5}, {17, 64, 33}, {64, 256, 96}, {5, 33, 130}, {130, 96, 256}}) {
    for (DType in_t : kFloatTypes)
      for (DType out_t : kFloatTypes)
        for (int bias_mode = 0; bias_mode < 3; ++bias_mode) {  // none, bias of y's dtype, bias of the other dtype
          for (auto [view, fallback] : {std::pair{false, false}, {true, false}, {false, true}, {true, true}}) {
            if (in_t == DType::F32 && out_t == DType::BF16) continue;  // refused (cuBLASLt has no such GEMM)
            CAPTURE(n); CAPTURE(k); CAPTURE(m); CAPTURE(name(in_t)); CAPTURE(name(out_t)); CAPTURE(bias_mode); CAPTURE(view); CAPTURE(fallback);
            const DType bias_t = bias_mode == 1 ? out_t : (out_t == DType::F32 ? DType::BF16 : DType::F32);
            // view: x is rows [1, n + 1) of an [n + 1, k] tensor, so its base is only 4 * k bytes aligned.
            Tensor xall = host_random(rng, {n + 1, k}, in_t);
            Tensor x = view ? xall.rows(1, n + 1) : xall.rows(0, n);
            Tensor w = host_random(rng, {m, k}, in_t), b = host_random(rng, {m}, bias_mode ? bias_t : DType::F32);
            Tensor want = host_nan({n, m});
            ops::linear_forward(x, w, bias_mode ? &b : nullptr, want);

            Tensor dxall = upload(xall, in_t);
            Tensor dx = view ? dxall.rows(1, n + 1) : dxall.rows(0, n);
            Tensor dw = upload(w, in_t), db = upload(b, bias_t), dy = device_nan({n, m}, out_t);
            cuda::set_linear_fallback_for_testing(fallback);
            ops::linear_forward(dx, dw, bias_mode ? &db : nullptr, dy);
            cuda::set_linear_fallback_for_testing(false);
            check_close(download(dy), want, tolerance({in_t, out_t, bias_mode ? bias_t : DType::F32}));
          }
        }
  }
}

TEST_CASE("cuda linear_forward with TF32 allowed stays within TF32 accuracy") {
  if (!have_gpu()) return;
  Tensor x = host_random(rng, {40, 300}, DType::F32), w = host_random(rng, {70, 300}, DType::F32);
  Tensor want = host_nan({40, 70});
  ops::linear_forward(x, w, nullptr, want);
  Tensor dy = device_nan({40, 70}, DType::F32);
  cuda::set_linear_allow_tf32(true);
  ops::linear_forward(upload(x, DType::F32), upload(w, DType::F32), nullptr, dy);
  cuda::set_linear_allow_tf32(false);
  check_close(download(dy), want, 1e-2);
}

TEST_CASE("cuda linear_forward refuses mixed devices and dtypes") {
  if (!have_gpu()) return;
  Tensor x = host_random(rng, {3, 4}, DType::F32), w = host_random(rng, {5, 4}, DType::F32);
  Tensor dx = upload(x, DType::F32), dy = device_nan({3, 5}, DType::F32);
  CHECK_THROWS_AS(ops::linear_forward(dx, w, nullptr, dy), InputError);                      // w on the CPU
  CHECK_THROWS_AS(ops::linear_forward(dx, upload(w, DType::BF16), nullptr, dy), InputError);  // x F32, w BF16
  Tensor dy16 = device_nan({3, 5}, DType::BF16);
  CHECK_THROWS_AS(ops::linear_forward(dx, upload(w, DType::F32), nullptr, dy16), InputError);  // F32 -> BF16
  CHECK_THROWS_AS(ops::linear_forward(dx, upload(host_random(rng, {5, 3}, DType::F32), DType::F32), nullptr, dy),
                  InputError);  // K mismatch
}

TEST_CASE("cuda embedding_forward gathers and scales rows; bad ids throw before any write") {
  if (!have_gpu()) return;
  const int vocab = 50;
  for (auto [n, h] : {std::pair{1, 1}, {13, 7}, {9, 64}, {33, 256}, {4, 1000}}) {
    std::vector<std::int32_t> ids(n);
    std::uniform_int_distribution<int> pick(0, vocab - 1);
    for (auto& id : ids) id = pick(rng);
    Tensor hids = host_i32(ids);
    Tensor dids = upload_i32(ids);
    for (DType tab_t : kFloatTypes)
      for (DType out_t : kFloatTypes)
        for (float scale : {1.0f, std::sqrt(static_cast<float>(h))}) {
          CAPTURE(n); CAPTURE(h); CAPTURE(name(tab_t)); CAPTURE(name(out_t)); CAPTURE(scale);
          Tensor table = host_random(rng, {vocab, h}, tab_t);
          Tensor want = host_nan({n, h});
          ops::embedding_forward(hids, table, scale, want);
          Tensor dout = device_nan({n, h}, out_t);
          ops::embedding_forward(dids, upload(table, tab_t), scale, dout);
          check_close(download(dout), want, tolerance({tab_t, out_t}));
        }
  }
  Tensor table = upload(host_random(rng, {vocab, 8}, DType::F32), DType::F32);
  for (std::int32_t bad : {vocab, -1, 1 << 30}) {
    Tensor dout = device_nan({3, 8}, DType::F32);
    CHECK_THROWS_AS(ops::embedding_forward(upload_i32({1, bad, 2}), table, 1.0f, dout), InputError);
    Tensor got = download(dout);
    for (std::int64_t i = 0; i < got.numel(); ++i) REQUIRE(std::isnan(got.data<float>()[i]));  // nothing written
  }
}

TEST_CASE("cuda rmsnorm_forward: llama and gemma (1 + w), every dtype combination") {
  if (!have_gpu()) return;
  for (auto [n, h] : {std::pair{1, 1}, {5, 7}, {9, 256}, {3, 4096}, {2, 1000}, {70, 96}}) {
    for (DType x_t : kFloatTypes)
      for (DType w_t : kFloatTypes)
        for (DType y_t : kFloatTypes)
          for (bool unit : {false, true}) {
            CAPTURE(n); CAPTURE(h); CAPTURE(name(x_t)); CAPTURE(name(w_t)); CAPTURE(name(y_t)); CAPTURE(unit);
            Tensor x = host_random(rng, {n, h}, x_t, 3.0f), w = host_random(rng, {h}, w_t);
            Tensor want = host_nan({n, h});
            ops::rmsnorm_forward(x, w, 1e-6f, unit, want);
            Tensor dy = device_nan({n, h}, y_t);
            ops::rmsnorm_forward(upload(x, x_t), upload(w, w_t), 1e-6f, unit, dy);
            check_close(download(dy), want, tolerance({x_t, w_t, y_t}));
          }
  }
}

TEST_CASE("cuda add_rmsnorm_forward: the residual add and the norm in one kernel, as add then norm") {
  if (!have_gpu()) return;
  for (auto [n, h] : {std::pair{1, 1}, {5, 7}, {9, 256}, {3, 4096}, {70, 96}})
    for (DType x_t : kFloatTypes)
      for (DType y_t : kFloatTypes)
        for (bool unit : {false, true}) {
          CAPTURE(n); CAPTURE(h); CAPTURE(name(x_t)); CAPTURE(name(y_t)); CAPTURE(unit);
          Tensor x = host_random(rng, {n, h}, x_t, 3.0f), delta = host_random(rng, {n, h}, x_t), w = host_random(rng, {h}, x_t);
          // The reference in the stored dtype: the sum rounded to x's dtype, then the norm of it.
          Tensor sum = host_copy(x);
          ops::add_inplace(sum, delta);
          round_for(sum, x_t);
          Tensor want = host_nan({n, h});
          ops::rmsnorm_forward(sum, w, 1e-6f, unit, want);
          Tensor dx = upload(x, x_t), dy = device_nan({n, h}, y_t);
          ops::add_rmsnorm_forward(dx, upload(delta, x_t), upload(w, x_t), 1e-6f, unit, dy);
          check_close(download(dx), sum, 1e-7);  // the stored sum: exact
          check_close(download(dy), want, tolerance({x_t, y_t}));
        }
}

TEST_CASE("cuda rope_forward: half-split rotation, long positions, partial rotary dims") {
  if (!have_gpu()) return;
  // r: the rotated dimensions of each head (r < d: a partial_rotary_factor, Phi-4-mini's 96 of 128)
  for (auto [n, heads, d, r, max_pos] : {std::tuple{5, 3, 8, 8, 10}, {7, 4, 128, 128, 5000}, {3, 2, 2, 2, 3},
                                         {33, 5, 64, 64, 131072}, {7, 4, 128, 96, 5000}, {5, 3, 8, 6, 10}}) {
    std::vector<std::int32_t> pos(n);
    std::uniform_int_distribution<int> pick(0, max_pos);
    for (auto& p : pos) p = pick(rng);
    Tensor hpos = host_i32(pos);
    Tensor freq = Tensor::empty({r / 2}, DType::F32, kWork);
    for (int i = 0; i < r / 2; ++i)
      freq.data<float>()[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / r));
    for (DType x_t : kFloatTypes) {
      CAPTURE(n); CAPTURE(heads); CAPTURE(d); CAPTURE(r); CAPTURE(name(x_t));
      Tensor x = host_random(rng, {n, heads * d}, x_t);
      Tensor dx = upload(x, x_t);
      const float scale = r < d ? 1.25f : 1.0f;  // partial: LongRoPE's attention factor on cos and sin
      ops::rope_forward(x, hpos, freq, d, scale);
      ops::rope_forward(dx, upload_i32(pos), upload(freq, DType::F32), d, scale);
      check_close(download(dx), x, tolerance({x_t}));
    }
  }
}

TEST_CASE("cuda glu_forward: SiLU, GELU tanh, GELU erf; in place on gate") {
  if (!have_gpu()) return;
  using ops::GluActivation;
  for (auto [n, f] : {std::pair{1, 1}, {3, 5}, {4, 1024}, {7, 333}, {16, 2048}}) {
    for (GluActivation act : {GluActivation::SiLU, GluActivation::GeluTanh, GluActivation::GeluErf})
      for (DType in_t : kFloatTypes)
        for (DType out_t : kFloatTypes) {
          CAPTURE(n); CAPTURE(f); CAPTURE(static_cast<int>(act)); CAPTURE(name(in_t)); CAPTURE(name(out_t));
          Tensor gate = host_random(rng, {n, f}, in_t, 2.0f), up = host_random(rng, {n, f}, in_t);
          Tensor want = host_nan({n, f});
          ops::glu_forward(gate, up, act, want);
          Tensor dgate = upload(gate, in_t), dup = upload(up, in_t), dout = device_nan({n, f}, out_t);
          ops::glu_forward(dgate, dup, act, dout);
          check_close(download(dout), want, tolerance({in_t, out_t}));
          if (in_t == out_t) {  // in place, as models/model.cpp calls it
            ops::glu_forward(dgate, dup, act, dgate);
            check_close(download(dgate), want, tolerance({in_t}));
          }
        }
  }
}

TEST_CASE("cuda add_inplace, every dtype pair") {
  if (!have_gpu()) return;
  for (auto [n, f] : {std::pair{1, 1}, {3, 5}, {4, 1024}, {7, 333}}) {
    for (DType x_t : kFloatTypes)
      for (DType y_t : kFloatTypes) {
        CAPTURE(n); CAPTURE(f); CAPTURE(name(x_t)); CAPTURE(name(y_t));
        Tensor x = host_random(rng, {n, f}, x_t), y = host_random(rng, {n, f}, y_t);
        Tensor dx = upload(x, x_t);
        ops::add_inplace(x, y);
        ops::add_inplace(dx, upload(y, y_t));
        check_close(download(dx), x, tolerance({x_t, y_t}));
      }
  }
}

TEST_CASE("cuda convert: F32 <-> BF16 equals the CPU bit for bit; odd sizes, unaligned views") {
  if (!have_gpu()) return;
  for (std::int64_t n : {1, 7, 8, 1000, 4099}) {
    Tensor src = host_random(rng, {n}, DType::F32, 100.0f);
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.00390625f, 1e-40f, 3.4e38f};
    for (std::int64_t i = 0; i < n && i < 8; ++i) src.data<float>()[i] = specials[i];
    for (auto [from, to] : {std::pair{DType::F32, DType::BF16}, {DType::BF16, DType::F32}, {DType::BF16, DType::BF16}})
      for (std::int64_t offset : {0, 1}) {  // offset 1: views off the 16-byte alignment (scalar path)
        CAPTURE(n); CAPTURE(name(from)); CAPTURE(name(to)); CAPTURE(offset);
        if (offset >= n) continue;
        const std::int64_t m = n - offset;
        Tensor hs = Tensor::empty({n}, from, kWork);
        convert_from_f32(src.data<float>(), from, hs.raw(), static_cast<std::size_t>(n));
        Tensor want = Tensor::empty({m}, to, kWork);
        ops::convert(hs.view(offset, {m}), want);
        Tensor ds = upload(src, from), dd = device_nan({m + offset}, to);
        Tensor dst_view = dd.view(offset, {m});
        ops::convert(ds.view(offset, {m}), dst_view);
        const Tensor got = cuda::to_host(dst_view, kWork);
        const std::size_t es = dtype_size(to);
        for (std::int64_t i = 0; i < m; ++i) {
          const bool nan_want = to == DType::F32 ? std::isnan(want.data<float>()[i])
                                                 : std::isnan(bf16_to_f32(static_cast<const std::uint16_t*>(want.raw())[i]));
          if (nan_want) continue;  // NaN payloads may differ; NaN-ness is checked below
          CHECK(std::memcmp(static_cast<const char*>(got.raw()) + i * es, static_cast<const char*>(want.raw()) + i * es, es) == 0);
        }
        const Tensor got_f32 = download(dst_view);
        if (n > 4) CHECK(std::isnan(got_f32.data<float>()[4 - offset]));  // specials[4], NaN, stays NaN
      }
  }
}

namespace {

struct AttnCase {
  int hq, hkv, d, slots, tmax;
  std::vector<ops::AttentionSeq> seqs;
  int extra_rows;  // rows of q not covered by any sequence (must stay untouched)
};

std::int64_t rows_of(const AttnCase& c) {
  std::int64_t n = 0;
  for (const auto& s : c.seqs) n = std::max(n, s.q_begin + s.q_len);
  return n + c.extra_rows;
}

// Sequences packed one after another: {q_len, slot, past_len} each.
std::vector<ops::AttentionSeq> pack(std::initializer_list<std::tuple<int, int, int>> specs) {
  std::vector<ops::AttentionSeq> out;
  std::int64_t row = 0;
  for (auto [len, slot, past] : specs) {
    out.push_back({row, len, slot, past});
    row += len;
  }
  return out;
}

std::vector<AttnCase> attention_cases() {
  std::vector<AttnCase> cases = {
      {4, 2, 8, 2, 16, pack({{5, 1, 0}, {3, 0, 4}}), 1},                       // the CPU test's case
      {8, 2, 64, 3, 300, pack({{100, 0, 0}, {37, 2, 50}, {1, 1, 250}}), 2},   // prefill, chunked prefill, decode
      {6, 1, 80, 3, 256, pack({{1, 0, 0}, {1, 1, 17}, {1, 2, 199}}), 0},      // MQA decode, D padded 80 -> 128
      {4, 4, 128, 1, 160, pack({{70, 0, 0}}), 0},                              // MHA prefill
      {2, 1, 256, 2, 200, pack({{40, 0, 0}, {1, 1, 150}}), 1},                 // D = 256 (opt-in shared memory)
      {3, 3, 5, 2, 40, pack({{9, 1, 3}, {4, 0, 0}}), 0},                       // odd D
      {8, 8, 32, 1, 1100, pack({{1, 0, 1000}}), 0},                            // long decode, few blocks
  };
  AttnCase many{4, 2, 32, 40, 64, {}, 0};  // 40 decode sequences: more than one launch table
  std::int64_t row = 0;
  for (int s = 0; s < 40; ++s) many.seqs.push_back({row++, 1, s, (s * 7) % 60});
  cases.push_back(many);
  return cases;
}

}  // namespace

TEST_CASE("cuda kv_cache_write: every dtype pair, rows land at their positions") {
  if (!have_gpu()) return;
  for (const AttnCase& c : attention_cases()) {
    const std::int64_t n = rows_of(c);
    for (DType in_t : kFloatTypes)
      for (DType cache_t : kFloatTypes) {
        CAPTURE(c.hq); CAPTURE(c.hkv); CAPTURE(c.d); CAPTURE(name(in_t)); CAPTURE(name(cache_t));
        const DType both = in_t == DType::BF16 || cache_t == DType::BF16 ? DType::BF16 : DType::F32;
        Tensor k = host_random(rng, {n, c.hkv * c.d}, both), v = host_random(rng, {n, c.hkv * c.d}, both);
        Tensor kc = host_random(rng, {c.slots, c.hkv, c.tmax, c.d}, cache_t), vc = host_random(rng, kc.shape(), cache_t);
        Tensor dk = upload(k, in_t), dv = upload(v, in_t), dkc = upload(kc, cache_t), dvc = upload(vc, cache_t);
        ops::kv_cache_write(k, v, c.seqs, kc, vc);
        ops::kv_cache_write(dk, dv, c.seqs, dkc, dvc);
        Tensor gk = download(dkc), gv = download(dvc);
        // A copy (with at most one bf16 rounding of a value already representable): exact.
        CHECK(std::memcmp(gk.raw(), kc.raw(), kc.nbytes()) == 0);
        CHECK(std::memcmp(gv.raw(), vc.raw(), vc.nbytes()) == 0);
      }
  }
}

TEST_CASE("cuda attention_forward: causal GQA over the cache, windows, splits, packed sequences") {
  if (!have_gpu()) return;
  for (const AttnCase& c : attention_cases()) {
    const std::int64_t n = rows_of(c);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    for (DType t : kFloatTypes) {
      Tensor q = host_random(rng, {n, c.hq * c.d}, t);
      Tensor k = host_random(rng, {n, c.hkv * c.d}, t), v = host_random(rng, {n, c.hkv * c.d}, t);
      Tensor kc0 = host_random(rng, {c.slots, c.hkv, c.tmax, c.d}, t), vc0 = host_random(rng, kc0.shape(), t);
      for (std::int64_t window : {std::int64_t{0}, std::int64_t{3}, std::int64_t{64}}) {
        Tensor kc = host_copy(kc0), vc = host_copy(vc0), want = host_nan({n, c.hq * c.d});
        ops::kv_cache_write(k, v, c.seqs, kc, vc);
        ops::attention_forward(q, kc, vc, c.seqs, scale, window, want);
        for (int splits : {0, 1, 3, 7}) {
          CAPTURE(c.hq); CAPTURE(c.hkv); CAPTURE(c.d); CAPTURE(c.seqs.size()); CAPTURE(name(t)); CAPTURE(window); CAPTURE(splits);
          Tensor dkc = upload(kc0, t), dvc = upload(vc0, t), dout = device_nan({n, c.hq * c.d}, t);
          ops::kv_cache_write(upload(k, t), upload(v, t), c.seqs, dkc, dvc);
          cuda::set_attention_splits_for_testing(splits);
          ops::attention_forward(upload(q, t), dkc, dvc, c.seqs, scale, window, dout);
          cuda::set_attention_splits_for_testing(0);
          Tensor got = download(dout);
          // Covered rows against the CPU; uncovered rows still NaN.
          std::vector<char> covered(n, 0);
          for (const auto& s : c.seqs)
            for (std::int64_t r = s.q_begin; r < s.q_begin + s.q_len; ++r) covered[r] = 1;
          std::vector<float> g, w;
          const std::int64_t width = c.hq * c.d;
          for (std::int64_t r = 0; r < n; ++r) {
            for (std::int64_t e = 0; e < width; ++e) {
              const float gv = got.data<float>()[r * width + e];
              if (covered[r]) {
                g.push_back(gv);
                w.push_back(want.data<float>()[r * width + e]);
              } else {
                REQUIRE(std::isnan(gv));
              }
            }
          }
          Tensor gt = Tensor::empty({static_cast<std::int64_t>(g.size())}, DType::F32, kWork);
          Tensor wt = Tensor::empty({static_cast<std::int64_t>(w.size())}, DType::F32, kWork);
          std::copy(g.begin(), g.end(), gt.data<float>());
          std::copy(w.begin(), w.end(), wt.data<float>());
          check_close(gt, wt, tolerance({t}));
        }
      }
    }
  }
}

TEST_CASE("cuda attention_forward with Gemma-2 soft-capped scores: GQA, windows, splits, packed sequences") {
  if (!have_gpu()) return;
  // Scores of a few units (scale 3 / sqrt(d)) against caps of 1.5 to 5: the CPU test's case,
  // prefill + chunked prefill + decode (GQA 4), MQA decode (GQA 6, D 80), D = 256, a long
  // decode (split-K partials and their combine).
  const std::vector<AttnCase> all = attention_cases();
  const std::pair<std::size_t, float> picks[] = {{0, 1.5f}, {1, 3.0f}, {2, 2.0f}, {4, 5.0f}, {6, 3.0f}};
  for (auto [ci, cap] : picks) {
    const AttnCase& c = all[ci];
    const std::int64_t n = rows_of(c), width = c.hq * c.d;
    const float scale = 3.0f / std::sqrt(static_cast<float>(c.d));
    std::vector<char> covered(n, 0);
    for (const auto& s : c.seqs)
      for (std::int64_t r = s.q_begin; r < s.q_begin + s.q_len; ++r) covered[r] = 1;
    // The covered rows of a [n, width] host tensor, flat.
    auto covered_values = [&](const Tensor& x) {
      std::vector<float> v;
      for (std::int64_t r = 0; r < n; ++r)
        if (covered[r]) v.insert(v.end(), x.data<float>() + r * width, x.data<float>() + (r + 1) * width);
      return v;
    };
    for (DType t : kFloatTypes) {
      Tensor q = host_random(rng, {n, width}, t);
      Tensor k = host_random(rng, {n, c.hkv * c.d}, t), v = host_random(rng, {n, c.hkv * c.d}, t);
      Tensor kc0 = host_random(rng, {c.slots, c.hkv, c.tmax, c.d}, t), vc0 = host_random(rng, kc0.shape(), t);
      Tensor kc = host_copy(kc0), vc = host_copy(vc0);
      ops::kv_cache_write(k, v, c.seqs, kc, vc);
      Tensor dkc = upload(kc0, t), dvc = upload(vc0, t);
      ops::kv_cache_write(upload(k, t), upload(v, t), c.seqs, dkc, dvc);
      const Tensor dq = upload(q, t);
      for (std::int64_t window : {std::int64_t{0}, std::int64_t{3}, std::int64_t{64}}) {
        Tensor want = host_nan({n, width}), plain = host_nan({n, width});
        ops::attention_forward(q, kc, vc, c.seqs, scale, window, want, cap);
        ops::attention_forward(q, kc, vc, c.seqs, scale, window, plain);
        for (int splits : {0, 1, 3, 7}) {
          CAPTURE(c.hq); CAPTURE(c.hkv); CAPTURE(c.d); CAPTURE(c.seqs.size()); CAPTURE(name(t)); CAPTURE(window);
          CAPTURE(splits); CAPTURE(cap);
          Tensor dout = device_nan({n, width}, t);
          cuda::set_attention_splits_for_testing(splits);
          ops::attention_forward(dq, dkc, dvc, c.seqs, scale, window, dout, cap);
          cuda::set_attention_splits_for_testing(0);
          const Tensor got = download(dout);
          for (std::int64_t r = 0; r < n; ++r)
            if (!covered[r])
              for (std::int64_t e = 0; e < width; ++e) REQUIRE(std::isnan(got.data<float>()[r * width + e]));
          const std::vector<float> g = covered_values(got), w = covered_values(want), p = covered_values(plain);
          Tensor gt = Tensor::empty({static_cast<std::int64_t>(g.size())}, DType::F32, kWork);
          Tensor wt = Tensor::empty({static_cast<std::int64_t>(w.size())}, DType::F32, kWork);
          std::copy(g.begin(), g.end(), gt.data<float>());
          std::copy(w.begin(), w.end(), wt.data<float>());
          check_close(gt, wt, tolerance({t}));
          const double dist = test::rel_error(g.data(), p.data(), static_cast<std::int64_t>(g.size()));
          CHECK(dist > 0.1);  // the cap bends these scores: far from the uncapped result
          if (!(dist > 0.1)) MESSAGE("only " << dist << " from the uncapped result");
        }
      }
      // softcap 0 passed explicitly: the default's bits; a negative cap throws.
      Tensor a = device_nan({n, width}, t), b = device_nan({n, width}, t);
      ops::attention_forward(dq, dkc, dvc, c.seqs, scale, 3, a);
      cuda::attention_forward(dq, dkc, dvc, c.seqs, scale, 3, b, 0.0f);
      CHECK(device_bytes(a) == device_bytes(b));
      CHECK_THROWS_AS(cuda::attention_forward(dq, dkc, dvc, c.seqs, scale, 3, b, -1.0f), InputError);
    }
  }
}

TEST_CASE("cuda attention_forward refuses bad sequences and shapes") {
  if (!have_gpu()) return;
  Tensor q = upload(host_random(rng, {4, 16}, DType::F32), DType::F32), out = device_nan({4, 16}, DType::F32);
  Tensor kc = upload(host_random(rng, {1, 2, 8, 8}, DType::F32), DType::F32), vc = upload(host_random(rng, {1, 2, 8, 8}, DType::F32), DType::F32);
  const std::vector<ops::AttentionSeq> past_cache = {{0, 4, 0, 6}}, bad_slot = {{0, 4, 1, 0}}, bad_rows = {{2, 4, 0, 0}};
  CHECK_THROWS_AS(ops::attention_forward(q, kc, vc, past_cache, 1.0f, 0, out), InputError);
  CHECK_THROWS_AS(ops::attention_forward(q, kc, vc, bad_slot, 1.0f, 0, out), InputError);
  CHECK_THROWS_AS(ops::attention_forward(q, kc, vc, bad_rows, 1.0f, 0, out), InputError);
  Tensor q3 = upload(host_random(rng, {4, 24}, DType::F32), DType::F32), out3 = device_nan({4, 24}, DType::F32);
  const std::vector<ops::AttentionSeq> ok = {{0, 4, 0, 0}};
  CHECK_THROWS_AS(ops::attention_forward(q3, kc, vc, ok, 1.0f, 0, out3), InputError);  // Hq = 3 not a multiple of 2
}

TEST_CASE("cuda copies round-trip and release_cached_resources leaves ops working") {
  if (!have_gpu()) return;
  Tensor x = host_random(rng, {3, 5}, DType::F32);
  Tensor back = cuda::to_host(cuda::to_device(x, kWork), kWork);
  CHECK(std::memcmp(back.raw(), x.raw(), x.nbytes()) == 0);
  Tensor wrong = Tensor::empty({4, 5}, DType::F32, kWork);
  Tensor dx = cuda::to_device(x, kWork);
  CHECK_THROWS_AS(cuda::copy_to_host(dx, wrong), InputError);
  cuda::release_cached_resources();
  Tensor w = host_random(rng, {2, 5}, DType::F32), want = host_nan({3, 2});
  ops::linear_forward(x, w, nullptr, want);
  Tensor dy = device_nan({3, 2}, DType::F32);
  ops::linear_forward(dx, upload(w, DType::F32), nullptr, dy);
  check_close(download(dy), want, 1e-5);
  cuda::synchronize();
}

// More than any GPU has: a one-line report naming the request, the driver's free bytes and
// what sppft holds per category; the device stays usable (out of memory is not sticky).
TEST_CASE("a GPU allocation that cannot be satisfied throws a report, and the device stays usable") {
  if (!have_gpu()) return;
  Allocator& alloc = Allocator::for_device(Device::CUDA);
  try {
    alloc.allocate(std::size_t{1} << 40, MemCategory::Activations);
    FAIL("a 1 TiB allocation succeeded");
  } catch (const RuntimeFailure& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find("out of GPU memory: 1.00 TiB for activations on ") == 0);
    CHECK(msg.find(" free; sppft holds weights ") != std::string::npos);
  }
  Tensor t = Tensor::empty({1000}, DType::F32, MemCategory::Workspace, Device::CUDA);
  cuda::fill_zero(t);
  cuda::synchronize();
}

#endif  // SPPFT_HAVE_CUDA
