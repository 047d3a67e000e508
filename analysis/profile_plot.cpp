#include "analysis/profile_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "analysis/svg.h"

namespace sppft {

namespace {
constexpr double kNoBar = std::numeric_limits<double>::quiet_NaN();

// Enough digits that a 0.2 ms bar does not read "0" and a 1366 ms one not "1.37e+03".
const char* value_format(double max_ms) { return max_ms >= 1000 ? "%.4g" : "%.3g"; }

// "full", "sppft, blocks 6-12 frozen", "forward only": short enough for a panel title.
std::string short_description(const ProfileRun& r) {
  if (!r.train) return r.label + ", forward only";
  std::vector<LayerRange> frozen;
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(r.plan.block_frozen.size()); ++k) {
    if (!r.plan.block_frozen[k]) continue;
    if (!frozen.empty() && frozen.back().last == k - 1) frozen.back().last = k;
    else frozen.push_back({k, k});
  }
  return frozen.empty() ? r.label : r.label + ", blocks " + format_layer_ranges(frozen) + " frozen";
}
}  // namespace

std::string profile_svg(const std::vector<const ProfileRun*>& runs, const std::string& title) {
  std::vector<svg::Panel> panels;
  std::size_t groups = 0;
  double max_ms = 0;  // one value format for the per-run panels
  for (const ProfileRun* r : runs)
    for (const auto& part : r->parts)
      for (int k = 0; k < kStepPhases; ++k) max_ms = std::max(max_ms, part.median(static_cast<StepPhase>(k)) * 1e3);
  for (const ProfileRun* r : runs) {
    svg::BarPanel p;
    p.title = short_description(*r) + ": median time per step (" + std::to_string(r->steps) + " steps)";
    p.y_label = "ms";
    // The four phases always; recompute only in a run that recomputed.
    const int phases = r->recomputes() ? kStepPhases : static_cast<int>(StepPhase::Recompute);
    p.series_names = {"forward", "backward dX", "backward dW", "optimizer", "recompute"};
    p.series_names.resize(phases);
    for (const auto& part : r->parts) {
      svg::Bar b{part.name, {}};
      for (int k = 0; k < phases; ++k) {
        const double ms = part.median(static_cast<StepPhase>(k)) * 1e3;
        b.values.push_back(ms > 0 ? ms : kNoBar);  // a phase that did not run (frozen dW): no bar
      }
      p.groups.push_back(b);
    }
    groups = p.groups.size();
    p.value_labels = groups * phases <= 40;
    p.value_format = value_format(max_ms);
    panels.push_back(p);
  }
  if (runs.size() == 2) {
    svg::BarPanel p;
    p.title = "time per part and step: " + runs[0]->label + " vs " + runs[1]->label;
    p.y_label = "ms";
    p.series_names = {runs[0]->label, runs[1]->label};
    double m = 0;
    for (std::size_t i = 0; i < runs[0]->parts.size() && i < runs[1]->parts.size(); ++i) {
      const double a = runs[0]->parts[i].median_total() * 1e3, b = runs[1]->parts[i].median_total() * 1e3;
      m = std::max({m, a, b});
      p.groups.push_back({runs[0]->parts[i].name, {a > 0 ? a : kNoBar, b > 0 ? b : kNoBar}});
    }
    p.value_labels = p.groups.size() * 2 <= 40;
    p.value_format = value_format(m);
    panels.push_back(p);
  }
  // Enough room for 4 bars per part to stay a few pixels wide.
  const int width = static_cast<int>(std::clamp<std::size_t>(260 + groups * 40, 760, 4000));
  return svg::render(title, panels, width, 340);
}

void write_profile_svg(const std::vector<const ProfileRun*>& runs, const fs::path& path, const std::string& title) {
  svg::write(path, profile_svg(runs, title));
}

}  // namespace sppft
