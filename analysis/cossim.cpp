#include "analysis/cossim.h"

#include <cmath>
#include <cstdio>
#include <random>

#include "engine/error.h"

namespace sppft {

namespace {

struct Stats {
  double sum = 0, sq = 0, angle = 0;
  void add(double c) {
    sum += c;
    sq += c * c;
    angle += std::acos(std::max(-1.0, std::min(1.0, c))) * 180.0 / M_PI;
  }
};

}  // namespace

double cosine_similarity(const float* a, const float* b, std::int64_t h) {
  double dot = 0, na = 0, nb = 0;
  for (std::int64_t i = 0; i < h; ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

double angle_degrees(const float* a, const float* b, std::int64_t h) {
  return std::acos(std::max(-1.0, std::min(1.0, cosine_similarity(a, b, h)))) * 180.0 / M_PI;
}

void choose_initial_range(CosSimResult& r, double threshold) {
  const auto L = static_cast<std::int64_t>(r.layers.size());
  char buf[256];
  std::int64_t i = -1;
  for (std::int64_t k = 0; k < L && i < 0; ++k) {
    if (r.nn_mean[k] - r.nm_mean[k] <= threshold) continue;
    bool stays = true;
    for (std::int64_t m = k; m < L; ++m) stays = stays && r.nn_mean[m] - r.nm_mean[m] > 0;
    if (stays) i = k;
  }
  if (i < 0) {
    r.found = false;
    std::snprintf(buf, sizeof buf, "no layer where mean_NN - mean_NM exceeds %.3g and stays positive: no N-M gap "
                  "(a base, non-aligned model shows none)", threshold);
    r.reasoning = buf;
    return;
  }
  std::int64_t j = L - 1;
  for (std::int64_t k = i; k + 1 < L; ++k)
    if (r.gap_deg[k + 1] <= r.gap_deg[k]) {
      j = k;
      break;
    }
  r.found = true;
  r.initial = {i, j};
  std::snprintf(buf, sizeof buf,
                "i = %lld: first layer where mean_NN - mean_NM = %.4f > %.3g and stays positive; "
                "j = %lld: first layer from i where the gap stops increasing (%.2f deg -> %.2f deg)",
                (long long)i, r.nn_mean[i] - r.nm_mean[i], threshold, (long long)j, r.gap_deg[j],
                j + 1 < L ? r.gap_deg[j + 1] : r.gap_deg[j]);
  r.reasoning = buf;
}

CosSimResult cosine_analysis(const Tensor& normal, const Tensor& normal_final, const Tensor& malicious,
                             const Tensor& malicious_final, const CosSimOptions& o) {
  const std::int64_t nn = normal.dim(0), nm = malicious.dim(0), L = normal.dim(1) - 1, h = normal.dim(2);
  if (nn < 2) throw InputError("cossim: the normal set has " + std::to_string(nn) + " queries, need at least 2");
  if (nm < 2) throw InputError("cossim: the malicious set has " + std::to_string(nm) + " queries, need at least 2");
  if (o.pairs < 1) throw InputError("--pairs must be at least 1");
  auto state = [&](const Tensor& s, const Tensor& fin, std::int64_t q, std::int64_t block) -> const float* {
    if (o.authors_final_norm && block == L - 1) return fin.data<float>() + q * h;
    return s.data<float>() + (q * (L + 1) + block + 1) * h;
  };
  CosSimResult r;
  for (std::int64_t k = 0; k < L; ++k) r.layers.push_back(k);
  std::vector<Stats> snn(L), smm(L), snm(L);
  for (int type = 0; type < 3; ++type) {
    const std::uint64_t start = (type == 0 ? 10 : type == 1 ? 100 : 1000) + o.seed;
    for (std::int64_t d = 0; d < o.pairs; ++d) {
      std::mt19937_64 rng(start + static_cast<std::uint64_t>(d));
      std::int64_t a, b;
      if (type == 2) {
        a = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(nn));
        b = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(nm));
      } else {
        const std::int64_t n = type == 0 ? nn : nm;
        a = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n));
        b = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n - 1));
        if (b >= a) ++b;
      }
      (type == 0 ? r.nn_pairs : type == 1 ? r.mm_pairs : r.nm_pairs).emplace_back(a, b);
      for (std::int64_t k = 0; k < L; ++k) {
        double c;
        if (type == 0) c = cosine_similarity(state(normal, normal_final, a, k), state(normal, normal_final, b, k), h);
        else if (type == 1) c = cosine_similarity(state(malicious, malicious_final, a, k), state(malicious, malicious_final, b, k), h);
        else c = cosine_similarity(state(normal, normal_final, a, k), state(malicious, malicious_final, b, k), h);
        (type == 0 ? snn : type == 1 ? smm : snm)[k].add(c);
      }
    }
  }
  const double n = static_cast<double>(o.pairs);
  auto mean_std = [&](const Stats& s, std::vector<double>& mean, std::vector<double>& sd) {
    const double m = s.sum / n;
    mean.push_back(m);
    sd.push_back(std::sqrt(std::max(0.0, s.sq / n - m * m)));  // population std, as numpy's default
  };
  for (std::int64_t k = 0; k < L; ++k) {
    mean_std(snn[k], r.nn_mean, r.nn_std);
    mean_std(smm[k], r.mm_mean, r.mm_std);
    mean_std(snm[k], r.nm_mean, r.nm_std);
    r.gap_deg.push_back(snm[k].angle / n - snn[k].angle / n);
  }
  choose_initial_range(r, o.threshold);
  return r;
}

std::optional<LayerRange> initial_range_of(const Json& cossim, const std::string& where) {
  if (cossim.is_object() && cossim.contains("initial_range") && cossim["initial_range"].is_null()) return std::nullopt;
  return layer_range_at(cossim, "/initial_range", where);
}

Json CosSimResult::to_json(const CosSimOptions& o) const {
  Json j = {{"layers", layers}, {"nn_mean", nn_mean}, {"nn_std", nn_std}, {"mm_mean", mm_mean}, {"mm_std", mm_std},
            {"nm_mean", nm_mean}, {"nm_std", nm_std}, {"gap_deg", gap_deg}, {"reasoning", reasoning}};
  j["pairs"] = {{"nn", nn_pairs}, {"mm", mm_pairs}, {"nm", nm_pairs}};
  j["initial_range"] = found ? Json{initial.first, initial.last} : Json(nullptr);
  j["settings"] = {{"pairs", o.pairs}, {"seed", o.seed}, {"threshold", o.threshold},
                   {"start_seeds", {{"nn", 10 + o.seed}, {"mm", 100 + o.seed}, {"nm", 1000 + o.seed}}},
                   {"state", o.authors_final_norm ? "raw block outputs, final-normed last block (authors')"
                                                  : "raw block outputs (HF hidden_states[k+1], no final norm)"},
                   {"std", "population"}};
  return j;
}

std::string CosSimResult::to_csv() const {
  std::string out = "layer,nn_mean,nn_std,mm_mean,mm_std,nm_mean,nm_std,gap_deg\n";
  char buf[256];
  for (std::size_t k = 0; k < layers.size(); ++k) {
    std::snprintf(buf, sizeof buf, "%lld,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.4f\n", (long long)layers[k], nn_mean[k], nn_std[k],
                  mm_mean[k], mm_std[k], nm_mean[k], nm_std[k], gap_deg[k]);
    out += buf;
  }
  return out;
}

}  // namespace sppft
