// Step 1 of the method: cosine similarity of per-layer last-token hidden states
// over pairs of queries (N-N, M-M, N-M), the angle gap, and the initial
// safety-layer range.
//
// Sampler (documented, seeded): draw d of a pair type with start seed s (N-N 10,
// M-M 100, N-M 1000, as the authors; plus --seed) seeds std::mt19937_64 with
// s + d and takes indices as rng() % n (same-pool pairs: the second index from
// the n - 1 others). This reproduces the authors' structure (reseeded per draw,
// seed + 1 each time), not Python's exact Mersenne-Twister draws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/json.h"
#include "engine/tensor.h"
#include "trainer/freeze.h"

namespace sppft {

struct CosSimOptions {
  std::int64_t pairs = 500;
  std::uint64_t seed = 0;  // added to the start seeds 10 / 100 / 1000
  double threshold = 0.05;  // mean_NN - mean_NM that marks the start of the gap
  // Use the final-normed state for the last block, as the authors' HF tuple did.
  bool authors_final_norm = false;
};

struct CosSimResult {
  std::vector<std::int64_t> layers;  // decoder blocks 0 .. L-1
  std::vector<double> nn_mean, nn_std, mm_mean, mm_std, nm_mean, nm_std, gap_deg;
  std::vector<std::pair<std::int64_t, std::int64_t>> nn_pairs, mm_pairs, nm_pairs;  // the draws, for audits
  bool found = false;
  LayerRange initial{0, 0};
  std::string reasoning;
  Json to_json(const CosSimOptions& o) const;
  std::string to_csv() const;
};

// `normal`, `malicious`: hidden_states [P, L+1, H] (HF indexing) and the
// final-normed states [P, H]. Needs at least 2 queries in each set.
CosSimResult cosine_analysis(const Tensor& normal, const Tensor& normal_final, const Tensor& malicious,
                             const Tensor& malicious_final, const CosSimOptions& o);

// cos(a, b) of two states of length h, in double; 0 when either is zero.
double cosine_similarity(const float* a, const float* b, std::int64_t h);
// The angle between them in degrees.
double angle_degrees(const float* a, const float* b, std::int64_t h);

// The initial_range of a cossim.json read back (`where` names the file): nullopt when the
// analysis found no gap (null); InputError when it is missing or not [first, last].
std::optional<LayerRange> initial_range_of(const Json& cossim, const std::string& where);

// The heuristic of METHOD.md: i = first layer where mean_NN - mean_NM > threshold
// and stays positive after; j = first layer after i where the gap stops
// increasing. Fills found / initial / reasoning.
void choose_initial_range(CosSimResult& r, double threshold);

}  // namespace sppft
