// The CPU reference ops against naive double-precision formulas on random
// inputs of several shapes, odd ones included, outputs poisoned before each call.
// Tolerance: 1e-5 relative to the output's scale (fp32 vs fp64).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/error.h"
#include "kernels/ops.h"
#include "test_util.h"

using namespace sppft;

namespace {

std::mt19937 rng(7);

Tensor random_tensor(Shape s, float scale = 1.0f) {
  Tensor t = Tensor::empty(std::move(s), DType::F32, MemCategory::Workspace);
  std::normal_distribution<float> d(0.0f, scale);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

Tensor poisoned(Shape s) {
  Tensor t = Tensor::empty(std::move(s), DType::F32, MemCategory::Workspace);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = NAN;
  return t;
}

void check_close(const Tensor& got, const std::vector<double>& want, double tol = 1e-5) {
  REQUIRE(static_cast<std::int64_t>(want.size()) == got.numel());
  std::vector<float> w(want.begin(), want.end());
  for (std::int64_t i = 0; i < got.numel(); ++i) REQUIRE(std::isfinite(got.data<float>()[i]));
  CHECK(test::rel_error(got.data<float>(), w.data(), got.numel()) < tol);
}

}  // namespace

TEST_CASE("linear_forward with and without bias") {
  for (auto [n, k, m] : {std::tuple{1, 1, 1}, {3, 7, 5}, {17, 64, 33}}) {
    Tensor x = random_tensor({n, k}), w = random_tensor({m, k}), b = random_tensor({m});
    for (bool with_bias : {false, true}) {
      Tensor y = poisoned({n, m});
      ops::linear_forward(x, w, with_bias ? &b : nullptr, y);
      std::vector<double> want(n * m);
      for (int r = 0; r < n; ++r)
        for (int c = 0; c < m; ++c) {
          double s = with_bias ? b.data<float>()[c] : 0;
          for (int i = 0; i < k; ++i) s += double(x.data<float>()[r * k + i]) * w.data<float>()[c * k + i];
          want[r * m + c] = s;
        }
      check_close(y, want);
    }
  }
}

TEST_CASE("rmsnorm_forward, llama and gemma (1 + w) variants") {
  for (auto [n, h] : {std::pair{1, 1}, {5, 7}, {9, 256}}) {
    Tensor x = random_tensor({n, h}, 3.0f), w = random_tensor({h});
    for (bool unit : {false, true}) {
      Tensor y = poisoned({n, h});
      ops::rmsnorm_forward(x, w, 1e-6f, unit, y);
      std::vector<double> want(n * h);
      for (int r = 0; r < n; ++r) {
        double ss = 0;
        for (int j = 0; j < h; ++j) ss += double(x.data<float>()[r * h + j]) * x.data<float>()[r * h + j];
        double inv = 1 / std::sqrt(ss / h + 1e-6);
        for (int j = 0; j < h; ++j) want[r * h + j] = x.data<float>()[r * h + j] * inv * (w.data<float>()[j] + (unit ? 1 : 0));
      }
      check_close(y, want);
    }
  }
}

TEST_CASE("add_rmsnorm_forward is add_inplace then rmsnorm_forward, bit for bit") {
  for (auto [n, h] : {std::pair{1, 1}, {5, 7}, {9, 256}}) {
    const Tensor x0 = random_tensor({n, h}, 3.0f), delta = random_tensor({n, h}), w = random_tensor({h});
    for (bool unit : {false, true}) {
      CAPTURE(n); CAPTURE(h); CAPTURE(unit);
      Tensor x = Tensor::empty(x0.shape(), DType::F32, MemCategory::Workspace), y = poisoned({n, h});
      std::copy_n(x0.data<float>(), x0.numel(), x.data<float>());
      ops::add_rmsnorm_forward(x, delta, w, 1e-6f, unit, y);
      Tensor xs = Tensor::empty(x0.shape(), DType::F32, MemCategory::Workspace), ys = poisoned({n, h});
      std::copy_n(x0.data<float>(), x0.numel(), xs.data<float>());
      ops::add_inplace(xs, delta);
      ops::rmsnorm_forward(xs, w, 1e-6f, unit, ys);
      CHECK(std::memcmp(x.raw(), xs.raw(), x.nbytes()) == 0);
      CHECK(std::memcmp(y.raw(), ys.raw(), y.nbytes()) == 0);
      CHECK(x.data<float>()[0] == x0.data<float>()[0] + delta.data<float>()[0]);
    }
  }
  Tensor x = random_tensor({2, 4});
  CHECK_THROWS_AS(ops::add_rmsnorm_forward(x, random_tensor({2, 3}), random_tensor({4}), 1e-6f, false, x), InputError);
}

TEST_CASE("rope_forward rotates the two halves of each head's first R dimensions") {
  const int n = 5, heads = 3, d = 8;
  for (const int r : {8, 6, 2}) {  // R < D: a partial_rotary_factor; dimensions R..D-1 pass unchanged
    const float scale = r == 6 ? 1.25f : 1.0f;  // cos and sin times it (LongRoPE's attention factor)
    CAPTURE(r);
    Tensor x = random_tensor({n, heads * d});
    std::vector<float> orig(x.data<float>(), x.data<float>() + x.numel());
    Tensor pos = Tensor::empty({n}, DType::I32, MemCategory::Workspace);
    for (int i = 0; i < n; ++i) pos.data<std::int32_t>()[i] = i * 7 + 3;
    Tensor freq = Tensor::empty({r / 2}, DType::F32, MemCategory::Workspace);
    for (int i = 0; i < r / 2; ++i) freq.data<float>()[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / r));
    ops::rope_forward(x, pos, freq, d, scale);
    std::vector<double> want(orig.begin(), orig.end());
    for (int row = 0; row < n; ++row)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < r / 2; ++i) {
          double a = double(pos.data<std::int32_t>()[row]) * freq.data<float>()[i];
          double x1 = orig[row * heads * d + h * d + i], x2 = orig[row * heads * d + h * d + i + r / 2];
          want[row * heads * d + h * d + i] = scale * (x1 * std::cos(a) - x2 * std::sin(a));
          want[row * heads * d + h * d + i + r / 2] = scale * (x2 * std::cos(a) + x1 * std::sin(a));
        }
    check_close(x, want);
  }
  // inv_freq longer than head_dim / 2, or empty: an error naming the op.
  Tensor x = random_tensor({2, 8});
  Tensor pos = Tensor::zeros({2}, DType::I32, MemCategory::Workspace);
  for (const std::int64_t len : {5, 0})
    CHECK_THROWS_WITH_AS(ops::rope_forward(x, pos, Tensor::zeros({len}, DType::F32, MemCategory::Workspace), 8),
                         doctest::Contains("rope_forward: inv_freq has shape"), InputError);
}

TEST_CASE("glu_forward: SiLU, GELU tanh and GELU erf") {
  Tensor g = random_tensor({3, 11}, 2.0f), u = random_tensor({3, 11});
  for (auto act : {ops::GluActivation::SiLU, ops::GluActivation::GeluTanh, ops::GluActivation::GeluErf}) {
    Tensor o = poisoned({3, 11});
    ops::glu_forward(g, u, act, o);
    std::vector<double> want(33);
    for (int i = 0; i < 33; ++i) {
      double x = g.data<float>()[i], a;
      if (act == ops::GluActivation::SiLU) a = x / (1 + std::exp(-x));
      else if (act == ops::GluActivation::GeluTanh) a = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
      else a = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
      want[i] = a * u.data<float>()[i];
    }
    check_close(o, want);
  }
}

TEST_CASE("embedding_forward scales rows and refuses ids outside the vocabulary") {
  Tensor table = random_tensor({10, 4});
  Tensor ids = Tensor::empty({3}, DType::I32, MemCategory::Workspace);
  ids.data<std::int32_t>()[0] = 9;
  ids.data<std::int32_t>()[1] = 0;
  ids.data<std::int32_t>()[2] = 9;
  Tensor out = poisoned({3, 4});
  ops::embedding_forward(ids, table, 2.0f, out);
  CHECK(out.data<float>()[0] == table.data<float>()[36] * 2.0f);
  CHECK(out.data<float>()[4] == table.data<float>()[0] * 2.0f);
  ids.data<std::int32_t>()[1] = 10;
  CHECK_THROWS_WITH_AS(ops::embedding_forward(ids, table, 1.0f, out), doctest::Contains("outside the vocabulary"), InputError);
  ids.data<std::int32_t>()[1] = -1;
  CHECK_THROWS_AS(ops::embedding_forward(ids, table, 1.0f, out), InputError);
}

TEST_CASE("attention over the KV cache: causal, GQA, packed sequences, sliding window") {
  const int hq = 4, hkv = 2, d = 6, tmax = 12;
  // Two sequences packed: 5 new tokens at positions 0..4 of slot 1, 3 new tokens at positions 4..6 of slot 0.
  std::vector<ops::AttentionSeq> seqs = {{0, 5, 1, 0}, {5, 3, 0, 4}};
  const int n = 8;
  for (std::int64_t window : {0, 3}) {
    Tensor kc = random_tensor({2, hkv, tmax, d}), vc = random_tensor({2, hkv, tmax, d});
    Tensor q = random_tensor({n, hq * d}), k = random_tensor({n, hkv * d}), v = random_tensor({n, hkv * d});
    ops::kv_cache_write(k, v, seqs, kc, vc);
    // The cache now holds the new keys at their positions.
    CHECK(kc.data<float>()[((1 * hkv + 1) * tmax + 2) * d + 3] == k.data<float>()[2 * hkv * d + d + 3]);
    CHECK(vc.data<float>()[((0 * hkv + 0) * tmax + 6) * d + 0] == v.data<float>()[7 * hkv * d]);
    Tensor out = poisoned({n, hq * d});
    const float scale = 0.4f;
    ops::attention_forward(q, kc, vc, seqs, scale, window, out);
    std::vector<double> want(n * hq * d);
    for (const auto& s : seqs)
      for (int t = 0; t < s.q_len; ++t) {
        const int row = s.q_begin + t, p = s.past_len + t;
        for (int h = 0; h < hq; ++h) {
          const int g = h / (hq / hkv);
          std::vector<double> w(p + 1, 0.0);
          double mx = -1e300, sum = 0;
          for (int j = 0; j <= p; ++j) {
            if (window > 0 && p - j >= window) continue;
            double dot = 0;
            for (int e = 0; e < d; ++e)
              dot += double(q.data<float>()[row * hq * d + h * d + e]) * kc.data<float>()[((s.slot * hkv + g) * tmax + j) * d + e];
            w[j] = dot * scale;
            mx = std::max(mx, w[j]);
          }
          for (int j = 0; j <= p; ++j) {
            if (window > 0 && p - j >= window) { w[j] = 0; continue; }
            w[j] = std::exp(w[j] - mx);
            sum += w[j];
          }
          for (int e = 0; e < d; ++e) {
            double o = 0;
            for (int j = 0; j <= p; ++j) o += w[j] / sum * vc.data<float>()[((s.slot * hkv + g) * tmax + j) * d + e];
            want[row * hq * d + h * d + e] = o;
          }
        }
      }
    check_close(out, want);
  }
}

TEST_CASE("convert: F32 <-> BF16 rounds to nearest even, keeps signed zeros, infinities and NaN; bad input refused") {
  // Values and the bf16 bits they must round to (worked out by hand from the fp32 bits).
  const std::vector<std::pair<float, std::uint16_t>> cases = {
      {1.0f, 0x3F80},          {-0.0f, 0x8000},          {0.0f, 0x0000},         {INFINITY, 0x7F80},
      {-INFINITY, 0xFF80},     {1.00390625f, 0x3F80},    // 1 + 2^-8: a tie, to the even 1.0
      {1.01171875f, 0x3F82},   // 1 + 3 * 2^-8: a tie between 0x3F81 and 0x3F82, to the even one
      {1.0048828125f, 0x3F81}, // 1 + 2^-8 + 2^-10: above the tie, rounds up
      {3.4e38f, 0x7F80},       // past the largest bf16 and the midpoint to 2^128: infinity
      {-2.5f, 0xC020},
  };
  const auto n = static_cast<std::int64_t>(cases.size()) + 1;
  Tensor src = Tensor::empty({n}, DType::F32, MemCategory::Workspace);
  for (std::size_t i = 0; i < cases.size(); ++i) src.data<float>()[i] = cases[i].first;
  src.data<float>()[n - 1] = NAN;
  Tensor bf = Tensor::empty({n}, DType::BF16, MemCategory::Workspace);
  ops::convert(src, bf);
  const auto* bits = static_cast<const std::uint16_t*>(bf.raw());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    CAPTURE(cases[i].first);
    CHECK(bits[i] == cases[i].second);
  }
  Tensor back = poisoned({n});
  ops::convert(bf, back);  // exact: every bf16 is an fp32
  CHECK(back.data<float>()[0] == 1.0f);
  CHECK(std::signbit(back.data<float>()[1]));
  CHECK(back.data<float>()[6] == 1.015625f);
  CHECK(std::isinf(back.data<float>()[8]));
  CHECK(std::isnan(back.data<float>()[n - 1]));
  Tensor same = poisoned({n});
  ops::convert(src, same);  // same dtype: a copy
  CHECK(same.data<float>()[5] == 1.00390625f);

  Tensor short_dst = Tensor::empty({n - 1}, DType::BF16, MemCategory::Workspace);
  CHECK_THROWS_AS(ops::convert(src, short_dst), InputError);
  Tensor ints = Tensor::empty({n}, DType::I32, MemCategory::Workspace);
  CHECK_THROWS_AS(ops::convert(src, ints), InputError);
}
