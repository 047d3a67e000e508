// The backward ops of kernels/ops.h against central finite differences in fp64.
// Each test re-implements the forward math in double, takes L = sum(out * R) for
// a random R (so the incoming gradient is R), and compares the fp32 analytic
// gradient from the op against (L(x + h) - L(x - h)) / 2h, h = 1e-5, of the fp64
// forward. Inputs are drawn in fp32 and the fp64 forward reads exactly those values.
// Tolerance: 1e-5 of the gradient's largest magnitude (fp32 vs fp64; the largest
// error seen is 3.5e-7, the FD error itself is ~1e-10). Outputs that are overwritten
// are poisoned with NaN first; outputs that accumulate start from random values.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "engine/error.h"
#include "kernels/ops.h"

using namespace sppft;

namespace {

using Vec = std::vector<double>;
std::mt19937 rng(11);

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

Tensor copy_of(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), MemCategory::Workspace);
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

Tensor i32_tensor(const std::vector<std::int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<std::int64_t>(v.size())}, DType::I32, MemCategory::Workspace);
  std::copy(v.begin(), v.end(), t.data<std::int32_t>());
  return t;
}

Vec vec(const Tensor& t) { return Vec(t.data<float>(), t.data<float>() + t.numel()); }

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of `loss` at x, for every coordinate or for `only` ones.
Vec fd_grad(Vec x, const std::function<double(const Vec&)>& loss, const std::vector<std::size_t>* only = nullptr) {
  const double h = 1e-5;
  Vec g(x.size(), 0.0);
  auto one = [&](std::size_t i) {
    const double o = x[i];
    x[i] = o + h;
    const double lp = loss(x);
    x[i] = o - h;
    const double lm = loss(x);
    x[i] = o;
    g[i] = (lp - lm) / (2 * h);
  };
  if (only)
    for (auto i : *only) one(i);
  else
    for (std::size_t i = 0; i < x.size(); ++i) one(i);
  return g;
}

// max |got - want| / max |want| over all coordinates (or `only` ones).
double rel_err(const Tensor& got, const Vec& want, const std::vector<std::size_t>* only = nullptr) {
  double diff = 0, scale = 0;
  auto one = [&](std::size_t i) {
    diff = std::max(diff, std::abs(double(got.data<float>()[i]) - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  };
  if (only)
    for (auto i : *only) one(i);
  else
    for (std::size_t i = 0; i < want.size(); ++i) one(i);
  return scale > 0 ? diff / scale : diff;
}

void check_grad(const Tensor& got, const Vec& want, const char* what, double tol = 1e-5,
                const std::vector<std::size_t>* only = nullptr) {
  INFO(std::string(what));
  REQUIRE(static_cast<std::int64_t>(want.size()) == got.numel());
  for (std::int64_t i = 0; i < got.numel(); ++i) REQUIRE(std::isfinite(got.data<float>()[i]));
  CHECK(rel_err(got, want, only) < tol);
}

Vec plus(Vec a, const Vec& b) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

}  // namespace

// ---------------------------------------------------------------------------
TEST_CASE("linear_backward_input and linear_backward_weight vs finite differences (bias, accumulate, odd shapes)") {
  for (auto [n, k, m] : {std::tuple{1, 1, 1}, {3, 7, 5}, {17, 33, 20}}) {
    Tensor x = random_tensor({n, k}), w = random_tensor({m, k}), b = random_tensor({m}), r = random_tensor({n, m});
    const Vec X = vec(x), W = vec(w), B = vec(b), R = vec(r);
    // L = sum_{r,c} R[r,c] (sum_i x[r,i] w[c,i] + bias[c])
    auto loss = [&](const Vec& X, const Vec& W, const Vec* B) {
      double l = 0;
      for (int row = 0; row < n; ++row)
        for (int c = 0; c < m; ++c) {
          double y = B ? (*B)[c] : 0.0;
          for (int i = 0; i < k; ++i) y += X[row * k + i] * W[c * k + i];
          l += R[row * m + c] * y;
        }
      return l;
    };
    for (bool with_bias : {false, true}) {
      const Vec* bp = with_bias ? &B : nullptr;
      const Vec gx = fd_grad(X, [&](const Vec& v) { return loss(v, W, bp); });
      const Vec gw = fd_grad(W, [&](const Vec& v) { return loss(X, v, bp); });
      const Vec gb = fd_grad(B, [&](const Vec& v) { return loss(X, W, &v); });
      for (bool accumulate : {false, true}) {
        CAPTURE(n); CAPTURE(k); CAPTURE(m); CAPTURE(with_bias); CAPTURE(accumulate);
        Tensor dx = accumulate ? random_tensor({n, k}) : poisoned({n, k});
        const Vec dx0 = vec(dx);
        ops::linear_backward_input(r, w, dx, accumulate);
        check_grad(dx, accumulate ? plus(gx, dx0) : gx, "dx");
      }
      Tensor dw = random_tensor({m, k}), db = random_tensor({m});
      const Vec dw0 = vec(dw), db0 = vec(db);
      ops::linear_backward_weight(r, x, dw, with_bias ? &db : nullptr);
      check_grad(dw, plus(gw, dw0), "dw (accumulated)");
      if (with_bias) check_grad(db, plus(gb, db0), "dbias (accumulated)");
      else CHECK(vec(db) == db0);
    }
  }
  // Zero rows: the weight gradient is left as it was.
  Tensor x = random_tensor({0, 4}), r = random_tensor({0, 3}), dw = random_tensor({3, 4}), db = random_tensor({3});
  const Tensor dw0 = copy_of(dw), db0 = copy_of(db);
  ops::linear_backward_weight(r, x, dw, &db);
  CHECK(same_bits(dw, dw0));
  CHECK(same_bits(db, db0));
}

TEST_CASE("linear_backward_weight dbias over many rows and columns (parallel, several blocks)") {
  const int n = 300, k = 3, m = 600;
  Tensor x = random_tensor({n, k}), r = random_tensor({n, m}), dw = Tensor::zeros({m, k}, DType::F32, MemCategory::Grads);
  Tensor db = Tensor::zeros({m}, DType::F32, MemCategory::Grads);
  ops::linear_backward_weight(r, x, dw, &db);
  Vec want(m, 0.0);
  for (int row = 0; row < n; ++row)
    for (int c = 0; c < m; ++c) want[c] += r.data<float>()[row * m + c];
  check_grad(db, want, "dbias", 1e-6);
}

// ---------------------------------------------------------------------------
TEST_CASE("embedding_backward: repeated ids add up, scale, accumulate, bad ids throw") {
  const int vocab = 6, h = 5;
  const std::vector<std::int32_t> id = {3, 1, 3, 3, 0, 5, 1};
  const int n = static_cast<int>(id.size());
  const float scale = 1.7f;
  Tensor ids = i32_tensor(id), r = random_tensor({n, h}), table = random_tensor({vocab, h});
  const Vec R = vec(r);
  auto loss = [&](const Vec& T) {
    double l = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < h; ++j) l += R[i * h + j] * T[id[i] * h + j] * double(scale);
    return l;
  };
  const Vec g = fd_grad(vec(table), loss);
  Tensor dtable = random_tensor({vocab, h});
  const Vec d0 = vec(dtable);
  ops::embedding_backward(ids, r, scale, dtable);
  check_grad(dtable, plus(g, d0), "dtable");
  // Row 2 and 4 of the vocabulary are never used: untouched bit for bit.
  for (int j = 0; j < h; ++j) {
    CHECK(dtable.data<float>()[2 * h + j] == float(d0[2 * h + j]));
    CHECK(dtable.data<float>()[4 * h + j] == float(d0[4 * h + j]));
  }

  const Tensor before = copy_of(dtable);
  Tensor bad = i32_tensor({0, 6, 1});
  CHECK_THROWS_WITH_AS(ops::embedding_backward(bad, random_tensor({3, h}), 1.0f, dtable),
                       doctest::Contains("outside the vocabulary"), InputError);
  bad.data<std::int32_t>()[1] = -1;
  CHECK_THROWS_AS(ops::embedding_backward(bad, random_tensor({3, h}), 1.0f, dtable), InputError);
  CHECK(same_bits(dtable, before));  // nothing written before the throw
}

TEST_CASE("embedding_backward on a large batch (parallel path) matches a double scatter-add") {
  const int vocab = 50, h = 300, n = 400;
  std::vector<std::int32_t> id(n);
  for (int i = 0; i < n; ++i) id[i] = static_cast<std::int32_t>((i * 7) % vocab);
  Tensor ids = i32_tensor(id), r = random_tensor({n, h}), dtable = Tensor::zeros({vocab, h}, DType::F32, MemCategory::Grads);
  ops::embedding_backward(ids, r, 0.5f, dtable);
  Vec want(vocab * h, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < h; ++j) want[id[i] * h + j] += 0.5 * r.data<float>()[i * h + j];
  check_grad(dtable, want, "dtable", 1e-5);
}

// ---------------------------------------------------------------------------
namespace {
// L = sum R * rmsnorm(X; W), in double.
double rmsnorm_loss(const Vec& X, const Vec& W, const Vec& R, int n, int h, double eps, bool unit) {
  double l = 0;
  for (int row = 0; row < n; ++row) {
    double ss = 0;
    for (int j = 0; j < h; ++j) ss += X[row * h + j] * X[row * h + j];
    const double inv = 1 / std::sqrt(ss / h + eps);
    for (int j = 0; j < h; ++j) l += R[row * h + j] * X[row * h + j] * inv * (W[j] + (unit ? 1 : 0));
  }
  return l;
}
}  // namespace

TEST_CASE("rmsnorm_backward vs finite differences: llama and gemma (1 + w), frozen weight, dx aliasing dy") {
  // H = 1 needs a large eps: with a tiny one the gradient is ~eps/x^3, all cancellation.
  for (auto [n, h, eps] : {std::tuple{2, 1, 0.5f}, {1, 3, 1e-6f}, {5, 7, 1e-6f}, {3, 300, 1e-5f}}) {
    Tensor x = random_tensor({n, h}), w = random_tensor({h}, 0.5f), r = random_tensor({n, h});
    const Vec X = vec(x), W = vec(w), R = vec(r);
    for (bool unit : {false, true}) {
      CAPTURE(n); CAPTURE(h); CAPTURE(unit);
      const Vec gx = fd_grad(X, [&](const Vec& v) { return rmsnorm_loss(v, W, R, n, h, eps, unit); });
      const Vec gw = fd_grad(W, [&](const Vec& v) { return rmsnorm_loss(X, v, R, n, h, eps, unit); });
      Tensor dx = poisoned({n, h}), dw = random_tensor({h});
      const Vec dw0 = vec(dw);
      ops::rmsnorm_backward(x, w, r, eps, unit, dx, &dw);
      check_grad(dx, gx, "dx");
      check_grad(dw, plus(gw, dw0), "dw (accumulated)");

      // Frozen weight (dw null): the same dx.
      Tensor dx2 = poisoned({n, h});
      ops::rmsnorm_backward(x, w, r, eps, unit, dx2, nullptr);
      CHECK(same_bits(dx2, dx));

      // In place on the incoming gradient: dx aliases dy, same dx and dw.
      Tensor g = copy_of(r), dw2 = Tensor::empty({h}, DType::F32, MemCategory::Grads);
      std::copy(dw0.begin(), dw0.end(), dw2.data<float>());
      ops::rmsnorm_backward(x, w, g, eps, unit, g, &dw2);
      CHECK(same_bits(g, dx));
      CHECK(same_bits(dw2, dw));

      // accumulate_dx: the residual stream's gradient gets the value added, exactly as the
      // separate add_inplace did (the training graph's fused form).
      Tensor acc = random_tensor({n, h}), want = copy_of(acc);
      ops::add_inplace(want, dx);
      ops::rmsnorm_backward(x, w, r, eps, unit, acc, nullptr, /*accumulate_dx=*/true);
      CHECK(same_bits(acc, want));
    }
  }
  Tensor x = random_tensor({2, 4});
  CHECK_THROWS_AS(ops::rmsnorm_backward(x, random_tensor({4}), random_tensor({2, 4}), 1e-6f, false, x, nullptr),
                  InputError);
  Tensor g = random_tensor({2, 4});
  CHECK_THROWS_AS(ops::rmsnorm_backward(x, random_tensor({4}), g, 1e-6f, false, g, nullptr, true), InputError);
}

// ---------------------------------------------------------------------------
TEST_CASE("rope_backward is the gradient of rope_forward (finite differences)") {
  // rd: the rotated dimensions (rd < d: a partial rotary, the rest passes through); scale on cos and sin.
  for (auto [n, heads, d, rd, scale] : {std::tuple{5, 3, 8, 8, 1.0f}, {2, 1, 2, 2, 1.0f}, {4, 2, 6, 6, 1.0f},
                                        {4, 2, 8, 6, 1.25f}, {3, 2, 6, 2, 0.75f}}) {
    CAPTURE(n); CAPTURE(heads); CAPTURE(d); CAPTURE(rd); CAPTURE(scale);
    const int w = heads * d, half = rd / 2;
    Tensor x = random_tensor({n, w}), r = random_tensor({n, w});
    Tensor pos = Tensor::empty({n}, DType::I32, MemCategory::Workspace);
    for (int i = 0; i < n; ++i) pos.data<std::int32_t>()[i] = i * 7 + 3;
    Tensor freq = Tensor::empty({half}, DType::F32, MemCategory::Workspace);
    for (int i = 0; i < half; ++i) freq.data<float>()[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / rd));
    const Vec R = vec(r);
    auto loss = [&](const Vec& X) {
      double l = 0;
      for (int row = 0; row < n; ++row)
        for (int hh = 0; hh < heads; ++hh) {
          const int o = row * w + hh * d;
          for (int i = 0; i < half; ++i) {
            // The op's angle is fp32 (as transformers); use that same angle here.
            const double a = static_cast<float>(pos.data<std::int32_t>()[row]) * freq.data<float>()[i];
            const double x1 = X[o + i], x2 = X[o + i + half];
            l += scale * (R[o + i] * (x1 * std::cos(a) - x2 * std::sin(a)) + R[o + i + half] * (x2 * std::cos(a) + x1 * std::sin(a)));
          }
          for (int i = rd; i < d; ++i) l += R[o + i] * X[o + i];
        }
      return l;
    };
    const Vec g = fd_grad(vec(x), loss);
    Tensor dx = copy_of(r);
    ops::rope_backward(dx, pos, freq, d, scale);
    check_grad(dx, g, "dx");
    // Inverse of the forward: rotating back and forth (by the inverse scale) returns the input.
    Tensor y = copy_of(x);
    ops::rope_forward(y, pos, freq, d, scale);
    ops::rope_backward(y, pos, freq, d, 1.0f / scale);
    check_grad(y, vec(x), "backward(forward(x)) == x", 1e-6);
  }
}

// ---------------------------------------------------------------------------
namespace {
double act64(double x, ops::GluActivation act) {
  switch (act) {
    case ops::GluActivation::SiLU: return x / (1 + std::exp(-x));
    case ops::GluActivation::GeluTanh: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case ops::GluActivation::GeluErf: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  }
  return 0;
}
}  // namespace

TEST_CASE("glu_backward vs finite differences: SiLU, GELU tanh, GELU erf; allowed aliasing") {
  for (auto [n, f] : {std::pair{1, 1}, {3, 11}}) {
    Tensor g = random_tensor({n, f}, 2.5f), u = random_tensor({n, f}), r = random_tensor({n, f});
    const Vec G = vec(g), U = vec(u), R = vec(r);
    for (auto act : {ops::GluActivation::SiLU, ops::GluActivation::GeluTanh, ops::GluActivation::GeluErf}) {
      CAPTURE(static_cast<int>(act)); CAPTURE(n); CAPTURE(f);
      auto loss = [&](const Vec& G, const Vec& U) {
        double l = 0;
        for (int i = 0; i < n * f; ++i) l += R[i] * act64(G[i], act) * U[i];
        return l;
      };
      const Vec gg = fd_grad(G, [&](const Vec& v) { return loss(v, U); });
      const Vec gu = fd_grad(U, [&](const Vec& v) { return loss(G, v); });
      Tensor dg = poisoned({n, f}), du = poisoned({n, f});
      ops::glu_backward(g, u, r, act, dg, du);
      check_grad(dg, gg, "dgate");
      check_grad(du, gu, "dup");

      // dgate over gate and dup over up (in place on the saved activations).
      Tensor g2 = copy_of(g), u2 = copy_of(u);
      ops::glu_backward(g2, u2, r, act, g2, u2);
      CHECK(same_bits(g2, dg));
      CHECK(same_bits(u2, du));
      // dgate over dout.
      Tensor r2 = copy_of(r), du2 = poisoned({n, f});
      ops::glu_backward(g, u, r2, act, r2, du2);
      CHECK(same_bits(r2, dg));
      CHECK(same_bits(du2, du));
    }
  }
}

// ---------------------------------------------------------------------------
namespace {
struct AttnShape {
  int hq, hkv, d;
};

// fp64 training attention over packed sequences (k/v rows are the query rows).
void attention64(const Vec& Q, const Vec& K, const Vec& V, std::span<const ops::AttentionSeq> seqs, AttnShape s,
                 double scale, std::int64_t window, Vec& out, Vec* lse, double softcap = 0) {
  const int qw = s.hq * s.d, kw = s.hkv * s.d, group = s.hq / s.hkv;
  for (const auto& seq : seqs)
    for (int t = 0; t < seq.q_len; ++t) {
      const int row = static_cast<int>(seq.q_begin) + t;
      for (int h = 0; h < s.hq; ++h) {
        const int g = h / group;
        std::vector<double> sc(t + 1, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          if (window > 0 && t - j >= window) continue;
          const int krow = static_cast<int>(seq.q_begin) + j;
          double dd = 0;
          for (int e = 0; e < s.d; ++e) dd += Q[row * qw + h * s.d + e] * K[krow * kw + g * s.d + e];
          sc[j] = softcap > 0 ? softcap * std::tanh(dd * scale / softcap) : dd * scale;
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (int j = 0; j <= t; ++j) sum += std::exp(sc[j] - mx);
        for (int e = 0; e < s.d; ++e) {
          double o = 0;
          for (int j = 0; j <= t; ++j)
            o += std::exp(sc[j] - mx) / sum * V[(static_cast<int>(seq.q_begin) + j) * kw + g * s.d + e];
          out[row * qw + h * s.d + e] = o;
        }
        if (lse) (*lse)[row * s.hq + h] = mx + std::log(sum);
      }
    }
}

// Forward vs fp64, then dq/dk/dv vs finite differences (on `samples` random
// coordinates of each, or all of them when samples == 0).
void check_attention(std::vector<ops::AttentionSeq> seqs, AttnShape s, float scale, std::int64_t window,
                     std::size_t samples = 0, float softcap = 0) {
  std::int64_t n = 0;
  for (const auto& q : seqs) n = std::max(n, q.q_begin + q.q_len);
  const int qw = s.hq * s.d, kw = s.hkv * s.d;
  Tensor q = random_tensor({n, qw}), k = random_tensor({n, kw}), v = random_tensor({n, kw}), r = random_tensor({n, qw});
  const Vec Q = vec(q), K = vec(k), V = vec(v), R = vec(r);
  Tensor out = poisoned({n, qw}), lse = poisoned({n, s.hq});
  ops::attention_forward_train(q, k, v, seqs, scale, window, out, lse, softcap);
  Vec out64(n * qw), lse64(n * s.hq);
  attention64(Q, K, V, seqs, s, scale, window, out64, &lse64, softcap);
  check_grad(out, out64, "out", 1e-5);
  check_grad(lse, lse64, "lse", 1e-5);

  Tensor dq = poisoned({n, qw}), dk = poisoned({n, kw}), dv = poisoned({n, kw});
  ops::attention_backward(q, k, v, out, lse, r, seqs, scale, window, dq, dk, dv, softcap);
  auto loss = [&](const Vec& Q, const Vec& K, const Vec& V) {
    Vec o(n * qw);
    attention64(Q, K, V, seqs, s, scale, window, o, nullptr, softcap);
    return dot(o, R);
  };
  auto pick = [&](std::size_t size) {
    std::vector<std::size_t> idx(size);
    for (std::size_t i = 0; i < size; ++i) idx[i] = i;
    if (samples && samples < size) {
      std::shuffle(idx.begin(), idx.end(), rng);
      idx.resize(samples);
    }
    return idx;
  };
  const auto iq = pick(Q.size()), ik = pick(K.size()), iv = pick(V.size());
  check_grad(dq, fd_grad(Q, [&](const Vec& x) { return loss(x, K, V); }, &iq), "dq", 1e-5, &iq);
  check_grad(dk, fd_grad(K, [&](const Vec& x) { return loss(Q, x, V); }, &ik), "dk", 1e-5, &ik);
  check_grad(dv, fd_grad(V, [&](const Vec& x) { return loss(Q, K, x); }, &iv), "dv", 1e-5, &iv);
}
}  // namespace

TEST_CASE("attention_forward_train and attention_backward vs fp64 and finite differences: GQA, packing, window") {
  // Two packed sequences of different lengths (5 and 3 rows); slots are ignored.
  const std::vector<ops::AttentionSeq> seqs = {{0, 5, 1, 0}, {5, 3, 0, 0}};
  for (int hkv : {4, 2, 1})
    for (std::int64_t window : {0, 3}) {
      CAPTURE(hkv); CAPTURE(window);
      check_attention(seqs, {4, hkv, 5}, 0.45f, window);
    }
  // A single row, a single head.
  check_attention({{0, 1, 0, 0}}, {1, 1, 3}, 0.7f, 0);
  // Window 1: each row only sees itself.
  check_attention(seqs, {2, 1, 4}, 0.5f, 1);
}

TEST_CASE("attention with Gemma-2 soft-capped scores vs fp64 and finite differences") {
  // Scores of a few units against a cap of 1.5: tanh is far from linear there.
  const std::vector<ops::AttentionSeq> seqs = {{0, 5, 1, 0}, {5, 3, 0, 0}};
  for (int hkv : {4, 2})
    for (std::int64_t window : {0, 3}) {
      CAPTURE(hkv); CAPTURE(window);
      check_attention(seqs, {4, hkv, 5}, 1.2f, window, 0, 1.5f);
    }
  // The cap changes the result (the test above cannot pass with it ignored).
  Tensor q = random_tensor({8, 20}), k = random_tensor({8, 10}), v = random_tensor({8, 10});
  Tensor capped = poisoned({8, 20}), plain = poisoned({8, 20}), lse = poisoned({8, 4});
  ops::attention_forward_train(q, k, v, seqs, 1.2f, 0, capped, lse, 1.5f);
  ops::attention_forward_train(q, k, v, seqs, 1.2f, 0, plain, lse);
  CHECK_FALSE(same_bits(capped, plain));
  // Over a cache, the same capped scores.
  Tensor kc = poisoned({2, 2, 8, 5}), vc = poisoned({2, 2, 8, 5}), cached = poisoned({8, 20});
  ops::kv_cache_write(k, v, seqs, kc, vc);
  ops::attention_forward(q, kc, vc, seqs, 1.2f, 0, cached, 1.5f);
  check_grad(cached, vec(capped), "cached vs train, capped", 1e-6);
  // A negative cap is refused.
  CHECK_THROWS_WITH_AS(ops::attention_forward_train(q, k, v, seqs, 1.2f, 0, plain, lse, -1.0f),
                       doctest::Contains("softcap"), InputError);
}

TEST_CASE("attention backward on longer packed sequences (parallel, sampled finite differences)") {
  const std::vector<ops::AttentionSeq> seqs = {{0, 37, 0, 0}, {37, 29, 1, 0}, {66, 2, 2, 0}};
  for (std::int64_t window : {0, 16}) {
    CAPTURE(window);
    check_attention(seqs, {4, 2, 16}, 0.25f, window, 60);
  }
}

TEST_CASE("attention_forward_train equals attention_forward over a cache filled by kv_cache_write") {
  const int hq = 4, hkv = 2, d = 6, tmax = 12, n = 8;
  const std::vector<ops::AttentionSeq> seqs = {{0, 5, 1, 0}, {5, 3, 0, 0}};
  for (std::int64_t window : {0, 3}) {
    CAPTURE(window);
    Tensor q = random_tensor({n, hq * d}), k = random_tensor({n, hkv * d}), v = random_tensor({n, hkv * d});
    Tensor kc = poisoned({2, hkv, tmax, d}), vc = poisoned({2, hkv, tmax, d});
    ops::kv_cache_write(k, v, seqs, kc, vc);
    Tensor cached = poisoned({n, hq * d}), train = poisoned({n, hq * d}), lse = poisoned({n, hq});
    ops::attention_forward(q, kc, vc, seqs, 0.4f, window, cached);
    ops::attention_forward_train(q, k, v, seqs, 0.4f, window, train, lse);
    check_grad(train, vec(cached), "train vs cached", 1e-6);
  }
}

TEST_CASE("training attention refuses a cache offset and mismatched shapes") {
  Tensor q = random_tensor({4, 8}), k = random_tensor({4, 4}), v = random_tensor({4, 4});
  Tensor out = poisoned({4, 8}), lse = poisoned({4, 2});
  const std::vector<ops::AttentionSeq> past = {{0, 4, 0, 1}};
  CHECK_THROWS_WITH_AS(ops::attention_forward_train(q, k, v, past, 1.0f, 0, out, lse), doctest::Contains("past_len"),
                       InputError);
  const std::vector<ops::AttentionSeq> too_long = {{2, 4, 0, 0}};
  CHECK_THROWS_AS(ops::attention_forward_train(q, k, v, too_long, 1.0f, 0, out, lse), InputError);
  Tensor lse3 = poisoned({4, 3});
  const std::vector<ops::AttentionSeq> ok = {{0, 4, 0, 0}};
  CHECK_THROWS_AS(ops::attention_forward_train(q, k, v, ok, 1.0f, 0, out, lse3), InputError);
}

// ---------------------------------------------------------------------------
namespace {
// sum over non-ignored rows of -log softmax(logits)[target], in double.
// With softcap > 0 the logits are first capped: softcap * tanh(l / softcap).
double xent64(const Vec& L, const std::vector<std::int32_t>& tg, int vocab, double softcap = 0) {
  double total = 0;
  for (std::size_t i = 0; i < tg.size(); ++i) {
    if (tg[i] == -100) continue;
    std::vector<double> z(L.begin() + i * vocab, L.begin() + (i + 1) * vocab);
    if (softcap > 0)
      for (auto& x : z) x = softcap * std::tanh(x / softcap);
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < vocab; ++j) mx = std::max(mx, z[j]);
    for (int j = 0; j < vocab; ++j) sum += std::exp(z[j] - mx);
    total += mx + std::log(sum) - z[tg[i]];
  }
  return total;
}
}  // namespace

TEST_CASE("cross_entropy: loss and gradient vs finite differences, ignored rows, in place, bad targets") {
  const int vocab = 13;
  const std::vector<std::int32_t> tg = {4, -100, 0, 12, -100, 7};
  const int n = static_cast<int>(tg.size());
  const float grad_scale = 0.25f;
  for (float spread : {3.0f, 50.0f}) {  // 50: large logits, exercises the max subtraction
    CAPTURE(spread);
    Tensor logits = random_tensor({n, vocab}, spread), targets = i32_tensor(tg);
    const Vec L = vec(logits);
    const double want = xent64(L, tg, vocab);
    Vec g = fd_grad(L, [&](const Vec& x) { return xent64(x, tg, vocab); });
    for (auto& x : g) x *= grad_scale;

    Tensor dl = poisoned({n, vocab});
    const double loss = ops::cross_entropy(logits, targets, grad_scale, &dl);
    CHECK(std::abs(loss - want) < 1e-6 * std::max(1.0, std::abs(want)));
    check_grad(dl, g, "dlogits");
    for (int j = 0; j < vocab; ++j) {  // ignored rows: exactly zero
      CHECK(dl.data<float>()[1 * vocab + j] == 0.0f);
      CHECK(dl.data<float>()[4 * vocab + j] == 0.0f);
    }
    // Loss only.
    CHECK(ops::cross_entropy(logits, targets, grad_scale, nullptr) == loss);
    // In place: dlogits aliases logits; same loss and bits.
    Tensor inplace = copy_of(logits);
    CHECK(ops::cross_entropy(inplace, targets, grad_scale, &inplace) == loss);
    CHECK(same_bits(inplace, dl));
  }

  Tensor logits = random_tensor({n, vocab});
  // All rows ignored: zero loss, zero gradient.
  Tensor none = i32_tensor(std::vector<std::int32_t>(n, -100)), dl = poisoned({n, vocab});
  CHECK(ops::cross_entropy(logits, none, 1.0f, &dl) == 0.0);
  for (std::int64_t i = 0; i < dl.numel(); ++i) REQUIRE(dl.data<float>()[i] == 0.0f);

  // Targets outside [0, V) other than -100 throw before anything is written (even in place).
  for (std::int32_t bad : {13, -1, -99, 1000}) {
    CAPTURE(bad);
    std::vector<std::int32_t> t = tg;
    t[3] = bad;
    Tensor targets = i32_tensor(t), inplace = copy_of(logits);
    CHECK_THROWS_WITH_AS(ops::cross_entropy(inplace, targets, 1.0f, &inplace), doctest::Contains("outside the vocabulary"),
                         InputError);
    CHECK(same_bits(inplace, logits));
  }
}

TEST_CASE("cross_entropy with Gemma-2's final logit soft-capping: loss and gradient vs finite differences") {
  const int vocab = 11;
  const std::vector<std::int32_t> tg = {4, -100, 0, 10, 7};
  const int n = static_cast<int>(tg.size());
  const float grad_scale = 0.5f, softcap = 2.0f;
  Tensor logits = random_tensor({n, vocab}, 4.0f), targets = i32_tensor(tg);
  const Vec L = vec(logits);
  const double want = xent64(L, tg, vocab, softcap);
  CHECK(std::abs(want - xent64(L, tg, vocab)) > 0.1);  // the cap matters at this spread
  Vec g = fd_grad(L, [&](const Vec& x) { return xent64(x, tg, vocab, softcap); });
  for (auto& x : g) x *= grad_scale;
  Tensor dl = poisoned({n, vocab});
  const double loss = ops::cross_entropy(logits, targets, grad_scale, &dl, softcap);
  CHECK(std::abs(loss - want) < 1e-6 * std::max(1.0, std::abs(want)));
  check_grad(dl, g, "dlogits (capped)");
  CHECK(ops::cross_entropy(logits, targets, grad_scale, nullptr, softcap) == loss);
  Tensor inplace = copy_of(logits);
  CHECK(ops::cross_entropy(inplace, targets, grad_scale, &inplace, softcap) == loss);
  CHECK(same_bits(inplace, dl));
  CHECK_THROWS_WITH_AS(ops::cross_entropy(logits, targets, 1.0f, nullptr, -2.0f), doctest::Contains("softcap"),
                       InputError);
}

TEST_CASE("cross_entropy on a large batch (parallel path) vs fp64 softmax") {
  const int n = 40, vocab = 2000;
  std::vector<std::int32_t> tg(n);
  for (int i = 0; i < n; ++i) tg[i] = i % 5 == 2 ? -100 : static_cast<std::int32_t>((i * 131) % vocab);
  Tensor logits = random_tensor({n, vocab}, 4.0f), targets = i32_tensor(tg);
  const Vec L = vec(logits);
  int counted = 0;
  for (auto t : tg) counted += t != -100;
  const float grad_scale = 1.0f / counted;
  Vec want(n * vocab, 0.0);
  for (int i = 0; i < n; ++i) {
    if (tg[i] == -100) continue;
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < vocab; ++j) mx = std::max(mx, L[i * vocab + j]);
    for (int j = 0; j < vocab; ++j) sum += std::exp(L[i * vocab + j] - mx);
    for (int j = 0; j < vocab; ++j) want[i * vocab + j] = grad_scale * (std::exp(L[i * vocab + j] - mx) / sum - (j == tg[i]));
  }
  Tensor dl = logits;  // in place
  const double loss = ops::cross_entropy(logits, targets, grad_scale, &dl);
  const double ref = xent64(L, tg, vocab);
  CHECK(std::abs(loss - ref) < 1e-6 * ref);
  check_grad(dl, want, "dlogits", 1e-5);
}

// ---------------------------------------------------------------------------
TEST_CASE("backward ops give the same bits with 1 and 3 threads (deterministic reductions, no atomics)") {
  const int saved = omp_get_max_threads();
  // Large enough to take every parallel path.
  const std::vector<ops::AttentionSeq> seqs = {{0, 150, 0, 0}, {150, 90, 0, 0}};
  const int n = 240, hq = 4, hkv = 2, d = 16, h = 320, vocab = 300;
  Tensor q = random_tensor({n, hq * d}), k = random_tensor({n, hkv * d}), v = random_tensor({n, hkv * d});
  Tensor r = random_tensor({n, hq * d}), x = random_tensor({n, h}), w = random_tensor({h}), dy = random_tensor({n, h});
  Tensor logits = random_tensor({n, vocab}, 3.0f);
  std::vector<std::int32_t> id(n), tg(n);
  for (int i = 0; i < n; ++i) id[i] = i % 17, tg[i] = i % 7 == 0 ? -100 : (i * 13) % vocab;
  Tensor ids = i32_tensor(id), targets = i32_tensor(tg);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor out = poisoned({n, hq * d}), lse = poisoned({n, hq});
    ops::attention_forward_train(q, k, v, seqs, 0.25f, 0, out, lse);
    Tensor dq = poisoned({n, hq * d}), dk = poisoned({n, hkv * d}), dv = poisoned({n, hkv * d});
    ops::attention_backward(q, k, v, out, lse, r, seqs, 0.25f, 0, dq, dk, dv);
    Tensor dx = poisoned({n, h}), dw = Tensor::zeros({h}, DType::F32, MemCategory::Grads);
    ops::rmsnorm_backward(x, w, dy, 1e-6f, true, dx, &dw);
    Tensor dtable = Tensor::zeros({17, h}, DType::F32, MemCategory::Grads);
    ops::embedding_backward(ids, dy, 1.0f, dtable);
    Tensor dl = poisoned({n, vocab});
    const double l = ops::cross_entropy(logits, targets, 0.01f, &dl);
    const double ss = ops::sum_squares(logits);
    std::vector<Tensor> outs = {out, lse, dq, dk, dv, dx, dw, dtable, dl};
    return std::pair{outs, std::pair{l, ss}};
  };
  const auto [a, la] = run(1);
  const auto [b, lb] = run(3);
  omp_set_num_threads(saved);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(same_bits(a[i], b[i]));
  }
  CHECK(la.first == lb.first);
  CHECK(la.second == lb.second);
}
