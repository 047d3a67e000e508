#include "analysis/plots.h"

#include <string>

#include "analysis/svg.h"

namespace sppft {

namespace {

std::vector<double> to_x(const std::vector<std::int64_t>& v) { return std::vector<double>(v.begin(), v.end()); }

svg::Series curve(const std::string& label, const std::vector<double>& x, const std::vector<double>& mean,
                  const std::vector<double>& sd, const std::string& color) {
  svg::Series s{label, x, mean, {}, {}, color};
  for (std::size_t i = 0; i < mean.size(); ++i) {
    s.band_lo.push_back(mean[i] - sd[i]);
    s.band_hi.push_back(mean[i] + sd[i]);
  }
  return s;
}

}  // namespace

void write_cossim_svg(const CosSimResult& r, const fs::path& path, const std::string& title) {
  const auto x = to_x(r.layers);
  svg::LinePanel cos;
  cos.title = "Cosine similarity of last-token states (mean +- std over pairs)";
  cos.x_label = "decoder block";
  cos.y_label = "cosine";
  cos.series = {curve("N-N", x, r.nn_mean, r.nn_std, "#1f77b4"), curve("M-M", x, r.mm_mean, r.mm_std, "#2ca02c"),
                curve("N-M", x, r.nm_mean, r.nm_std, "#d62728")};
  svg::LinePanel gap;
  gap.title = "Angle gap: mean angle(N-M) - mean angle(N-N)";
  gap.x_label = "decoder block";
  gap.y_label = "degrees";
  gap.series = {svg::Series{"gap", x, r.gap_deg, {}, {}, "#9467bd"}};
  if (r.found) {
    const svg::Shade shade{static_cast<double>(r.initial.first) - 0.5, static_cast<double>(r.initial.last) + 0.5,
                           "initial range " + layer_range_label(r.initial)};
    cos.shades.push_back(shade);
    gap.shades.push_back(shade);
  }
  gap.hlines.push_back({0.0, ""});
  svg::write(path, svg::render(title, {cos, gap}));
}

void write_locate_svg(const LocateResult& r, const fs::path& path, const std::string& title) {
  auto bars = [&](const std::string& panel_title, const std::vector<SweepPoint>& pts) {
    svg::BarPanel p{panel_title, "refused (R_o)", {"R_o"}, {}};
    for (const auto& s : pts) p.groups.push_back({layer_range_label(s.range), {static_cast<double>(s.refusals)}});
    p.value_format = "%.0f";
    return p;
  };
  char up[160], low[160];
  std::snprintf(up, sizeof up, "Upper bound: scale [i, j+k] by alpha %.2f (baseline R_o %lld of %lld)", r.alpha,
                (long long)r.baseline, (long long)r.queries);
  std::snprintf(low, sizeof low, "Lower bound: scale [i-k, j'] -> safety layers %s", layer_range_label(r.final_range).c_str());
  std::vector<svg::Panel> panels = {bars(up, r.upper), bars(low, r.lower)};
  svg::write(path, svg::render(title + " (judge " + r.judge + ")", panels));
}

}  // namespace sppft
