// Training attention without a cache (packed sequences, causal, GQA, optional
// sliding window) and its backward, fp32, in the manner of FlashAttention: the
// forward saves only the log-sum-exp per (row, head); the backward recomputes the
// probabilities from q, k and lse. No [T, T] matrix is ever stored.
//
// Backward in two passes so that every output row is written by exactly one task
// (no atomics, bitwise deterministic):
//   A. per (query row, query head): delta = dout . out, dq = scale sum_j dS_j k_j
//   B. per (key row, kv head): dv = sum_{t,h in group} P dout, dk = scale sum dS q
// Both recompute P and dout . v, so the backward costs about four times the forward.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

namespace {

inline float dot(const float* a, const float* b, std::int64_t d) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t e = 0; e < d; ++e) s += a[e] * b[e];
  return s;
}

inline void axpy(float alpha, const float* x, float* y, std::int64_t d) {
#pragma omp simd
  for (std::int64_t e = 0; e < d; ++e) y[e] += alpha * x[e];
}

// (sequence, row within it) for every row covered by seqs.
std::vector<std::pair<const ops::AttentionSeq*, std::int64_t>> packed_rows(std::span<const ops::AttentionSeq> seqs) {
  std::vector<std::pair<const ops::AttentionSeq*, std::int64_t>> rows;
  for (const auto& s : seqs)
    for (std::int64_t t = 0; t < s.q_len; ++t) rows.emplace_back(&s, t);
  return rows;
}

// Keys a query at sequence position t sees: [first, t].
inline std::int64_t first_key(std::int64_t t, std::int64_t window) {
  return window > 0 ? std::max<std::int64_t>(0, t - window + 1) : 0;
}

}  // namespace

void attention_forward_train(const Tensor& q, const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs,
                             float scale, std::int64_t window, Tensor& out, Tensor& lse, float softcap) {
  const auto hq = lse.dim(1), d = q.dim(1) / hq, hkv = k.dim(1) / d, group = hq / hkv;
  const auto qw = hq * d, kw = hkv * d;
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* op = out.data<float>();
  float* lp = lse.data<float>();
  const auto rows = packed_rows(seqs);
  std::int64_t tmax = 0;
  for (const auto& s : seqs) tmax = std::max(tmax, s.q_len);
  const auto tasks = static_cast<std::int64_t>(rows.size()) * hq;
#pragma omp parallel
  {
    std::vector<float> scores(tmax);
#pragma omp for schedule(dynamic, 4)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const auto& [s, t] = rows[task / hq];
      const std::int64_t h = task % hq, kvh = h / group, row = s->q_begin + t;
      const std::int64_t first = first_key(t, window);
      const float* qv = qp + row * qw + h * d;
      const float* kbase = kp + s->q_begin * kw + kvh * d;
      const float* vbase = vp + s->q_begin * kw + kvh * d;
      float mx = -INFINITY;
      for (std::int64_t j = first; j <= t; ++j) {
        scores[j] = ops::soft_cap(dot(qv, kbase + j * kw, d) * scale, softcap);
        mx = std::max(mx, scores[j]);
      }
      double sum = 0;
      for (std::int64_t j = first; j <= t; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = op + row * qw + h * d;
      std::fill_n(o, d, 0.0f);
      for (std::int64_t j = first; j <= t; ++j) axpy(scores[j] * inv, vbase + j * kw, o, d);
      lp[row * hq + h] = static_cast<float>(mx + std::log(sum));
    }
  }
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window,
                        Tensor& dq, Tensor& dk, Tensor& dv, float softcap) {
  const auto n = q.dim(0), hq = lse.dim(1), d = q.dim(1) / hq, hkv = k.dim(1) / d, group = hq / hkv;
  const auto qw = hq * d, kw = hkv * d;
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  const float* op = out.data<float>();
  const float* lp = lse.data<float>();
  const float* gp = dout.data<float>();
  float* dqp = dq.data<float>();
  float* dkp = dk.data<float>();
  float* dvp = dv.data<float>();
  const auto rows = packed_rows(seqs);
  std::vector<float> delta(n * hq);

  // A: per (query row t, query head h).
  const auto qtasks = static_cast<std::int64_t>(rows.size()) * hq;
#pragma omp parallel for schedule(dynamic, 4)
  for (std::int64_t task = 0; task < qtasks; ++task) {
    const auto& [s, t] = rows[task / hq];
    const std::int64_t h = task % hq, kvh = h / group, row = s->q_begin + t;
    const float* qv = qp + row * qw + h * d;
    const float* go = gp + row * qw + h * d;
    const float* kbase = kp + s->q_begin * kw + kvh * d;
    const float* vbase = vp + s->q_begin * kw + kvh * d;
    const float l = lp[row * hq + h];
    const float dl = dot(go, op + row * qw + h * d, d);
    delta[row * hq + h] = dl;
    float* g = dqp + row * qw + h * d;
    std::fill_n(g, d, 0.0f);
    for (std::int64_t j = first_key(t, window); j <= t; ++j) {
      const float sc = ops::soft_cap(dot(qv, kbase + j * kw, d) * scale, softcap);
      const float ds = std::exp(sc - l) * (dot(go, vbase + j * kw, d) - dl) * ops::soft_cap_slope(sc, softcap);
      axpy(ds, kbase + j * kw, g, d);
    }
    for (std::int64_t e = 0; e < d; ++e) g[e] *= scale;
  }

  // B: per (key row j, kv head g); queries t in [j, last] of the same sequence.
  const auto ktasks = static_cast<std::int64_t>(rows.size()) * hkv;
#pragma omp parallel for schedule(dynamic, 4)
  for (std::int64_t task = 0; task < ktasks; ++task) {
    const auto& [s, j] = rows[task / hkv];
    const std::int64_t kvh = task % hkv, krow = s->q_begin + j;
    const std::int64_t last = window > 0 ? std::min(s->q_len - 1, j + window - 1) : s->q_len - 1;
    const float* kv = kp + krow * kw + kvh * d;
    const float* vv = vp + krow * kw + kvh * d;
    float* gk = dkp + krow * kw + kvh * d;
    float* gv = dvp + krow * kw + kvh * d;
    std::fill_n(gk, d, 0.0f);
    std::fill_n(gv, d, 0.0f);
    for (std::int64_t t = j; t <= last; ++t) {
      const std::int64_t row = s->q_begin + t;
      for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* qv = qp + row * qw + h * d;
        const float* go = gp + row * qw + h * d;
        const float sc = ops::soft_cap(dot(qv, kv, d) * scale, softcap);
        const float p = std::exp(sc - lp[row * hq + h]);
        axpy(p, go, gv, d);
        const float ds = p * (dot(go, vv, d) - delta[row * hq + h]) * ops::soft_cap_slope(sc, softcap);
        axpy(ds, qv, gk, d);
      }
    }
    for (std::int64_t e = 0; e < d; ++e) gk[e] *= scale;
  }
}

}  // namespace sppft::cpu
