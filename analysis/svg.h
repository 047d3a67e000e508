// A small SVG chart writer with no dependencies: line panels (curves, optional shaded
// +-std bands, vertical shaded ranges, labelled horizontal reference lines) and grouped
// bar panels, stacked vertically in one figure with a title.
//
// Output is plain SVG 1.1 (no CSS, no scripts, no external fonts) that browsers and
// librsvg (`rsvg-convert -o plot.png plot.svg`) render the same way. Text uses
// "Helvetica, Arial, sans-serif" at 12 px; label widths are estimated from Helvetica's
// metrics to lay out legends and margins.
//
// Data rules: points whose x or y is NaN/inf are skipped and break the line there (the
// same for bands, where lo or hi is not finite); an empty x means x = 0, 1, 2, ...; a
// series with no finite point draws nothing but keeps its legend entry; a panel with no
// data draws empty axes saying "no data". Sizes that disagree (x vs y, band vs y, bar
// values vs series names), y_min >= y_max, a bad value_format or a figure too small
// throw sppft::InputError. All text is XML-escaped and invalid UTF-8 is replaced.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace sppft::svg {

namespace fs = std::filesystem;

struct Series {
  std::string label;                     // legend text ("" = not in the legend)
  std::vector<double> x, y;              // x empty: 0, 1, ..., y.size() - 1
  std::vector<double> band_lo, band_hi;  // optional shaded band, same length as y
  std::string color;                     // any SVG color; "" = palette (matplotlib tab10) by index
  bool dashed = false;
  bool markers = true;
};

// Vertical shaded region from x0 to x1 (e.g. the safety-layer range), in the legend by label.
struct Shade {
  double x0, x1;
  std::string label;
  std::string color = "#f5c542";
};

struct LinePanel {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::vector<Shade> shades;
  std::optional<double> y_min, y_max;                  // fixed axis ends; otherwise nice numbers around the data
  bool integer_x_ticks = true;                         // ticks at whole numbers only (layers)
  std::vector<std::pair<double, std::string>> hlines;  // horizontal reference lines (y, label)
};

// One group of bars: one value per series (NaN = no bar).
struct Bar {
  std::string label;
  std::vector<double> values;
};

struct BarPanel {
  std::string title, y_label;
  std::vector<std::string> series_names;
  std::vector<Bar> groups;
  bool value_labels = true;           // value printed above (below, if negative) each bar
  std::string value_format = "%.3g";  // one printf conversion of a double: %[flags][width][.prec]{f,F,e,E,g,G}
};

using Panel = std::variant<LinePanel, BarPanel>;

// The whole figure: `title` on top, then each panel `width` x `panel_height` px, each with
// its own legend (right of the plot), nice-number ticks and light grid lines.
std::string render(const std::string& title, const std::vector<Panel>& panels, int width = 760, int panel_height = 320);

// Writes `svg` to `path` atomically (temp file + rename); creates the parent directory.
void write(const fs::path& path, const std::string& svg);

// Helpers exposed for tests and for other writers of SVG/XML text.
std::string escape(std::string_view text);  // & < > " ' escaped; bad UTF-8 / control chars replaced
std::vector<double> nice_ticks(double lo, double hi, int target_count);  // 1-2-5 x 10^k steps in [lo, hi]

}  // namespace sppft::svg
