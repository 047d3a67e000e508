// Causal GQA attention over the KV cache, fp32, one (query row, head) per task.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void kv_cache_write(const Tensor& k, const Tensor& v, std::span<const ops::AttentionSeq> seqs, Tensor& k_cache,
                    Tensor& v_cache) {
  const auto hkv = k_cache.dim(1), tmax = k_cache.dim(2), d = k_cache.dim(3);
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* kc = k_cache.data<float>();
  float* vc = v_cache.data<float>();
  for (const auto& s : seqs) {
    for (std::int64_t t = 0; t < s.q_len; ++t) {
      const std::int64_t row = s.q_begin + t, pos = s.past_len + t;
      for (std::int64_t h = 0; h < hkv; ++h) {
        const std::int64_t dst = ((s.slot * hkv + h) * tmax + pos) * d;
        std::copy_n(kp + row * hkv * d + h * d, d, kc + dst);
        std::copy_n(vp + row * hkv * d + h * d, d, vc + dst);
      }
    }
  }
}

void attention_forward(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                       std::span<const ops::AttentionSeq> seqs, float scale, std::int64_t window, Tensor& out,
                       float softcap) {
  const auto hkv = k_cache.dim(1), tmax = k_cache.dim(2), d = k_cache.dim(3);
  const auto hq = q.dim(1) / d, group = hq / hkv;
  const float* qp = q.data<float>();
  const float* kc = k_cache.data<float>();
  const float* vc = v_cache.data<float>();
  float* op = out.data<float>();
  // Flatten (sequence, row, head) into one parallel loop.
  std::vector<std::pair<const ops::AttentionSeq*, std::int64_t>> rows;
  for (const auto& s : seqs)
    for (std::int64_t t = 0; t < s.q_len; ++t) rows.emplace_back(&s, t);
  const auto tasks = static_cast<std::int64_t>(rows.size()) * hq;
#pragma omp parallel
  {
    std::vector<float> scores(tmax);
#pragma omp for schedule(dynamic, 4)
    for (std::int64_t task = 0; task < tasks; ++task) {
      const auto& [s, t] = rows[task / hq];
      const std::int64_t h = task % hq, kvh = h / group;
      const std::int64_t row = s->q_begin + t, pos = s->past_len + t;
      const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, pos - window + 1) : 0;
      const float* qv = qp + row * hq * d + h * d;
      const float* kbase = kc + (s->slot * hkv + kvh) * tmax * d;
      const float* vbase = vc + (s->slot * hkv + kvh) * tmax * d;
      float mx = -INFINITY;
      for (std::int64_t j = first; j <= pos; ++j) {
        const float* kv = kbase + j * d;
        float dot = 0;
        for (std::int64_t e = 0; e < d; ++e) dot += qv[e] * kv[e];
        scores[j] = ops::soft_cap(dot * scale, softcap);
        mx = std::max(mx, scores[j]);
      }
      double sum = 0;
      for (std::int64_t j = first; j <= pos; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* o = op + row * hq * d + h * d;
      std::fill_n(o, d, 0.0f);
      for (std::int64_t j = first; j <= pos; ++j) {
        const float p = scores[j] * inv;
        const float* vv = vbase + j * d;
        for (std::int64_t e = 0; e < d; ++e) o[e] += p * vv[e];
      }
    }
  }
}

}  // namespace sppft::cpu
