#include "analysis/svg.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <string_view>

#include "engine/error.h"
#include "engine/fs.h"

namespace sppft::svg {

namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr double kFont = 12;         // base font size, px
constexpr double kTitleFont = 16;    // figure title
constexpr double kPanelFont = 14;    // panel title
constexpr double kSmallFont = 11;    // reference-line labels
constexpr double kValueFont = 10;    // bar value labels
constexpr double kLegendRow = 18;    // legend row height
constexpr double kCoordLimit = 1e5;  // pixel coordinates are clamped to +-this

std::string palette(std::size_t i) { return kPalette[i % std::size(kPalette)]; }

// ---- numbers ---------------------------------------------------------------------------

// Pixel coordinate: at most 2 decimals, trailing zeros trimmed, locale independent.
std::string num(double v) {
  if (!std::isfinite(v)) v = 0;
  v = std::clamp(v, -kCoordLimit, kCoordLimit);
  if (std::abs(v) < 0.005) v = 0;
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 2);
  std::string s(buf, res.ptr);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  return s;
}

// ---- text --------------------------------------------------------------------------------

// Decodes one UTF-8 code point at s[i]; returns its length, or 0 for an invalid sequence.
std::size_t utf8_next(std::string_view s, std::size_t i, char32_t& cp) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  std::size_t len;
  if (c < 0x80) {
    cp = c;
    return 1;
  } else if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    if ((b(k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

// Code points of `s` (invalid bytes become U+FFFD).
std::vector<std::pair<char32_t, std::string_view>> code_points(std::string_view s) {
  std::vector<std::pair<char32_t, std::string_view>> out;
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp;
    std::size_t len = utf8_next(s, i, cp);
    if (len == 0) {
      out.emplace_back(0xFFFD, std::string_view("\xEF\xBF\xBD"));
      ++i;
    } else {
      out.emplace_back(cp, s.substr(i, len));
      i += len;
    }
  }
  return out;
}

// Helvetica advance widths (1/1000 em) for ASCII 32..126, from the standard AFM.
// clang-format off
constexpr std::array<short, 95> kHelvetica = {
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,  // ' '../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556,                                // 0..9
    278, 278, 584, 584, 584, 556, 1015,                                              // :..@
    667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,                 // A..M
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611,                 // N..Z
    278, 278, 278, 469, 556, 333,                                                    // [..`
    556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833,                 // a..m
    556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500,                 // n..z
    334, 260, 334, 584};                                                             // {..~
// clang-format on

double char_width(char32_t cp) {
  if (cp >= 32 && cp <= 126) return kHelvetica[cp - 32] / 1000.0;
  if (cp >= 0x1100 && (cp <= 0x115F || (cp >= 0x2E80 && cp <= 0xA4CF) || (cp >= 0xAC00 && cp <= 0xD7A3) ||
                       (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFF00 && cp <= 0xFF60) || cp >= 0x1F300))
    return 1.0;  // CJK, Hangul, fullwidth, emoji
  return 0.6;
}

// Estimated rendered width in px (DejaVu, librsvg's usual fallback, is a little wider than
// Helvetica; the 4% margin covers it for typical labels).
double text_width(std::string_view s, double size, bool bold = false) {
  double w = 0;
  for (const auto& [cp, bytes] : code_points(s)) w += char_width(cp);
  return w * size * (bold ? 1.10 : 1.04);
}

// Shortens `s` with a trailing ellipsis until it fits `max_px`.
std::string fit(std::string_view s, double max_px, double size, bool bold = false) {
  if (text_width(s, size, bold) <= max_px) return std::string(s);
  const double ell = char_width(0x2026) * size * (bold ? 1.10 : 1.04);
  std::string out;
  double w = 0;
  for (const auto& [cp, bytes] : code_points(s)) {
    double cw = char_width(cp) * size * (bold ? 1.10 : 1.04);
    if (w + cw + ell > max_px) break;
    out += bytes;
    w += cw;
  }
  return out + "\xE2\x80\xA6";
}

// ---- axes ----------------------------------------------------------------------------------

// Nice number near x (Heckbert): 1, 2, 5 x 10^k (round) or the next one up (ceil).
double nice_num(double x, bool round) {
  const double e = std::floor(std::log10(x));
  const double f = x / std::pow(10.0, e);
  double nf;
  if (round)
    nf = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  else
    nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return nf * std::pow(10.0, e);
}

double nice_step(double lo, double hi, int target_count) {
  const double range = hi - lo;
  if (!(range > 0) || !std::isfinite(range)) return 1;
  return nice_num(range / std::max(1, target_count - 1), true);
}

struct Axis {
  double lo = 0, hi = 1;      // axis range
  double step = 0.2;          // tick step
  std::vector<double> ticks;  // tick values within [lo, hi]
  bool integer = false;

  double span() const { return hi - lo; }
};

std::vector<double> ticks_for(double lo, double hi, double step) {
  std::vector<double> t;
  if (!(step > 0) || !std::isfinite(lo) || !std::isfinite(hi)) return t;
  const double eps = step * 1e-6;
  const double first = std::ceil((lo - eps) / step);
  const double last = std::floor((hi + eps) / step);
  if (last - first > 200) return t;  // cannot happen with nice steps; guard anyway
  for (double k = first; k <= last; ++k) {
    double v = k * step;
    if (std::abs(v) < step * 1e-9) v = 0;
    t.push_back(v);
  }
  return t;
}

// Tick label: enough decimals for the step, %g for extreme magnitudes, never "-0".
std::string tick_label(double v, const Axis& a) {
  if (std::abs(v) < a.step * 1e-9) v = 0;
  char buf[64];
  const double mag = std::max(std::abs(a.lo), std::abs(a.hi));
  const int k = static_cast<int>(std::floor(std::log10(a.step) + 1e-9));
  if (a.integer && mag < 1e9) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (mag >= 1e6 || a.step < 1e-4) {
    int digits = std::clamp(static_cast<int>(std::floor(std::log10(std::max(mag, a.step)))) - k + 1, 1, 10);
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  } else {
    std::snprintf(buf, sizeof buf, "%.*f", std::max(0, -k), v);
  }
  std::string s(buf);
  for (char& c : s)
    if (c == ',') c = '.';  // a comma decimal locale must not leak into the figure
  if (s == "-0") s = "0";
  for (const char* e : {"e+0", "e+", "e-0"}) {  // 3.1e+06 -> 3.1e6, 2e-05 -> 2e-5
    auto at = s.find(e);
    if (at != std::string::npos) {
      s.replace(at, std::string_view(e).size(), e[1] == '-' ? "e-" : "e");
      break;
    }
  }
  return s;
}

// Axis around data [lo, hi]: padded, ends on nice numbers unless fixed.
Axis make_axis(double lo, double hi, bool have_data, std::optional<double> fix_lo, std::optional<double> fix_hi,
               int target_count, double pad_frac, bool loose, bool integer) {
  Axis a;
  a.integer = integer;
  if (!have_data) {
    lo = 0;
    hi = 1;
  }
  if (fix_lo) lo = *fix_lo;
  if (fix_hi) hi = *fix_hi;
  if (hi < lo) {  // one end fixed beyond all the data
    if (fix_lo)
      hi = lo + 1;
    else
      lo = hi - 1;
  }
  if (hi == lo) {
    double d = integer ? 1 : (lo != 0 ? std::abs(lo) * 0.1 : 0.5);
    if (!fix_lo) lo -= d;
    if (!fix_hi) hi += d;
    if (hi == lo) hi = lo + 1;
  }
  const double pad = have_data ? (hi - lo) * pad_frac : 0;
  if (!fix_lo) lo -= pad;
  if (!fix_hi) hi += pad;
  a.step = nice_step(lo, hi, target_count);
  if (integer) a.step = std::max(1.0, std::round(a.step));
  if (loose) {
    if (!fix_lo) lo = std::floor(lo / a.step + 1e-9) * a.step;
    if (!fix_hi) hi = std::ceil(hi / a.step - 1e-9) * a.step;
  }
  a.lo = lo;
  a.hi = hi;
  a.ticks = ticks_for(lo, hi, a.step);
  return a;
}

// ---- output helpers ----------------------------------------------------------------------

struct Writer {
  std::string s;
  Writer& operator<<(std::string_view v) {
    s += v;
    return *this;
  }
  Writer& operator<<(double v) {
    s += num(v);
    return *this;
  }
  Writer& operator<<(int v) {
    s += std::to_string(v);
    return *this;
  }
  Writer& operator<<(std::size_t v) {
    s += std::to_string(v);
    return *this;
  }
};

// <text> with escaped content; anchor: start / middle / end.
void text(Writer& w, double x, double y, std::string_view content, std::string_view anchor = "start",
          double size = kFont, bool bold = false, std::string_view fill = "#222", std::string_view extra = "") {
  w << "<text x=\"" << x << "\" y=\"" << y << "\"";
  if (anchor != "start") w << " text-anchor=\"" << anchor << "\"";
  if (size != kFont) w << " font-size=\"" << size << "\"";
  if (bold) w << " font-weight=\"bold\"";
  w << " fill=\"" << fill << "\"";
  if (!extra.empty()) w << " " << extra;
  w << ">" << escape(content) << "</text>\n";
}

// Text that may have been shortened: the full string goes into a <title> tooltip.
void text_fit(Writer& w, double x, double y, std::string_view full, double max_px, std::string_view anchor, double size,
              bool bold = false, std::string_view fill = "#222", std::string_view extra = "") {
  std::string shown = fit(full, max_px, size, bold);
  if (shown == full) return text(w, x, y, full, anchor, size, bold, fill, extra);
  w << "<text x=\"" << x << "\" y=\"" << y << "\"";
  if (anchor != "start") w << " text-anchor=\"" << anchor << "\"";
  if (size != kFont) w << " font-size=\"" << size << "\"";
  if (bold) w << " font-weight=\"bold\"";
  w << " fill=\"" << fill << "\"";
  if (!extra.empty()) w << " " << extra;
  w << "><title>" << escape(full) << "</title>" << escape(shown) << "</text>\n";
}

void line(Writer& w, double x1, double y1, double x2, double y2, std::string_view stroke, double width = 1,
          std::string_view extra = "") {
  w << "<line x1=\"" << x1 << "\" y1=\"" << y1 << "\" x2=\"" << x2 << "\" y2=\"" << y2 << "\" stroke=\"" << stroke
    << "\" stroke-width=\"" << width << "\"";
  if (!extra.empty()) w << " " << extra;
  w << "/>\n";
}

struct Rect {
  double left, top, right, bottom;
  double width() const { return right - left; }
  double height() const { return bottom - top; }
};

struct Scale {
  Axis ax, ay;
  Rect r;
  double x(double v) const { return r.left + (v - ax.lo) / ax.span() * r.width(); }
  double y(double v) const { return r.bottom - (v - ay.lo) / ay.span() * r.height(); }
};

// Legend entries and the box on the right of the plot.
struct LegendItem {
  enum Kind { kLine, kShade, kBox } kind;
  std::string label, color;
  bool dashed = false, markers = false, band = false;
};

double legend_width(const std::vector<LegendItem>& items, int width) {
  double w = 0;
  for (const auto& it : items) w = std::max(w, text_width(it.label, kFont));
  return std::min(w + 46, 0.38 * width);
}

void draw_legend(Writer& w, const std::vector<LegendItem>& items, double x, double y, double lw) {
  if (items.empty()) return;
  const double h = items.size() * kLegendRow + 8;
  w << "<g class=\"legend\">\n";
  w << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << lw << "\" height=\"" << h
    << "\" rx=\"3\" fill=\"#ffffff\" stroke=\"#bbbbbb\"/>\n";
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    const double cy = y + 4 + kLegendRow * (i + 0.5);
    const double sx0 = x + 8, sx1 = x + 32;
    const std::string color = escape(it.color);
    switch (it.kind) {
      case LegendItem::kLine:
        if (it.band)
          w << "<rect x=\"" << sx0 << "\" y=\"" << cy - 5 << "\" width=\"" << sx1 - sx0 << "\" height=\"10\" fill=\""
            << color << "\" fill-opacity=\"0.18\"/>\n";
        line(w, sx0, cy, sx1, cy, color, 2, it.dashed ? "stroke-dasharray=\"5 3\"" : "");
        if (it.markers)
          w << "<circle cx=\"" << (sx0 + sx1) / 2 << "\" cy=\"" << cy << "\" r=\"3\" fill=\"" << color
            << "\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n";
        break;
      case LegendItem::kShade:
        w << "<rect x=\"" << sx0 << "\" y=\"" << cy - 6 << "\" width=\"" << sx1 - sx0 << "\" height=\"12\" fill=\""
          << color << "\" fill-opacity=\"0.3\"/>\n";
        break;
      case LegendItem::kBox:
        w << "<rect x=\"" << sx0 + 6 << "\" y=\"" << cy - 6 << "\" width=\"12\" height=\"12\" fill=\"" << color
          << "\"/>\n";
        break;
    }
    text_fit(w, x + 38, cy + 4, it.label, lw - 44, "start", kFont);
  }
  w << "</g>\n";
}

// Grid, frame, ticks and tick labels; the x labels are drawn by the caller for bar panels.
void draw_y_axis(Writer& w, const Scale& s) {
  for (double t : s.ay.ticks) {
    const double y = s.y(t);
    line(w, s.r.left, y, s.r.right, y, "#e6e6e6");
    line(w, s.r.left - 4, y, s.r.left, y, "#333333");
    text(w, s.r.left - 7, y + 4, tick_label(t, s.ay), "end");
  }
}

void draw_frame(Writer& w, const Rect& r) {
  w << "<rect x=\"" << r.left << "\" y=\"" << r.top << "\" width=\"" << r.width() << "\" height=\"" << r.height()
    << "\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n";
}

void clip_def(Writer& w, const std::string& id, const Rect& r) {
  w << "<defs><clipPath id=\"" << id << "\"><rect x=\"" << r.left << "\" y=\"" << r.top << "\" width=\"" << r.width()
    << "\" height=\"" << r.height() << "\"/></clipPath></defs>\n";
}

double max_tick_label_width(const Axis& a) {
  double m = 0;
  for (double t : a.ticks) m = std::max(m, text_width(tick_label(t, a), kFont));
  return m;
}

int count_for(double px, double per) { return std::clamp(static_cast<int>(px / per), 3, 12); }

// Panel title and y-axis label, common to both panel kinds.
void draw_titles(Writer& w, const std::string& title, const std::string& y_label, const Rect& r, double y0, int width) {
  if (!title.empty()) text_fit(w, (r.left + r.right) / 2, y0 + 20, title, width - 20, "middle", kPanelFont, true);
  if (!y_label.empty()) {
    const double cx = 16, cy = (r.top + r.bottom) / 2;
    text_fit(w, cx, cy, y_label, r.height(), "middle", kFont, false, "#222",
             "transform=\"rotate(-90 " + num(cx) + " " + num(cy) + ")\"");
  }
}

// Left edge of the plot: room for the rotated y label and the widest tick label.
double left_margin(const Axis& ay, bool has_y_label) { return (has_y_label ? 30 : 10) + max_tick_label_width(ay) + 8; }

// ---- line panel --------------------------------------------------------------------------

void render_line(Writer& w, const LinePanel& p, std::size_t index, double y0, int width, int height) {
  const std::string where = "svg: panel " + std::to_string(index + 1) + (p.title.empty() ? "" : " (" + p.title + ")");
  SPPFT_CHECK_INPUT(!p.y_min || std::isfinite(*p.y_min), where + ": y_min is not finite");
  SPPFT_CHECK_INPUT(!p.y_max || std::isfinite(*p.y_max), where + ": y_max is not finite");
  SPPFT_CHECK_INPUT(
      !(p.y_min && p.y_max) || *p.y_min < *p.y_max,
      where + ": y_min must be below y_max, got " + std::to_string(*p.y_min) + " >= " + std::to_string(*p.y_max));
  for (const auto& s : p.series) {
    SPPFT_CHECK_INPUT(s.x.empty() || s.x.size() == s.y.size(),
                      where + ": series '" + s.label + "' has " + std::to_string(s.x.size()) + " x values and " +
                          std::to_string(s.y.size()) + " y values, expected the same number");
    SPPFT_CHECK_INPUT(s.band_lo.size() == s.band_hi.size() && (s.band_lo.empty() || s.band_lo.size() == s.y.size()),
                      where + ": series '" + s.label + "' band has " + std::to_string(s.band_lo.size()) + " lo and " +
                          std::to_string(s.band_hi.size()) + " hi values, expected none or " +
                          std::to_string(s.y.size()) + " each");
  }
  auto xs = [](const Series& s, std::size_t i) { return s.x.empty() ? static_cast<double>(i) : s.x[i]; };

  // Data ranges.
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  bool have_x = false, have_y = false;
  auto add_x = [&](double v) {
    if (!std::isfinite(v)) return;
    xlo = std::min(xlo, v), xhi = std::max(xhi, v), have_x = true;
  };
  auto add_y = [&](double v) {
    if (!std::isfinite(v)) return;
    ylo = std::min(ylo, v), yhi = std::max(yhi, v), have_y = true;
  };
  bool any_point = false;
  for (const auto& s : p.series) {
    for (std::size_t i = 0; i < s.y.size(); ++i) {
      const double x = xs(s, i);
      if (!std::isfinite(x)) continue;
      if (std::isfinite(s.y[i])) add_x(x), add_y(s.y[i]), any_point = true;
      if (!s.band_lo.empty() && std::isfinite(s.band_lo[i]) && std::isfinite(s.band_hi[i]))
        add_x(x), add_y(s.band_lo[i]), add_y(s.band_hi[i]), any_point = true;
    }
  }
  for (const auto& sh : p.shades)
    if (std::isfinite(sh.x0) && std::isfinite(sh.x1)) add_x(sh.x0), add_x(sh.x1);
  for (const auto& [v, label] : p.hlines) add_y(v);

  // Legend.
  std::vector<LegendItem> legend;
  for (std::size_t i = 0; i < p.series.size(); ++i) {
    const auto& s = p.series[i];
    if (s.label.empty()) continue;
    legend.push_back(
        {LegendItem::kLine, s.label, s.color.empty() ? palette(i) : s.color, s.dashed, s.markers, !s.band_lo.empty()});
  }
  for (const auto& sh : p.shades)
    if (!sh.label.empty()) legend.push_back({LegendItem::kShade, sh.label, sh.color});
  const double lw = legend.empty() ? 0 : legend_width(legend, width);

  // Plot rectangle and axes (the y ticks decide the left margin, which decides the x ticks).
  Rect r;
  r.top = y0 + (p.title.empty() ? 14 : 34);
  r.bottom = y0 + height - (p.x_label.empty() ? 28 : 46);
  Axis ay = make_axis(ylo, yhi, have_y, p.y_min, p.y_max, count_for(r.bottom - r.top, 42), 0.04, true, false);
  r.left = left_margin(ay, !p.y_label.empty());
  r.right = width - 14 - (legend.empty() ? 0 : lw + 10);
  // x: tight around the data, padded ~10 px so end markers are not cut in half.
  Axis ax = make_axis(xlo, xhi, have_x, std::nullopt, std::nullopt, count_for(r.width(), 70),
                      std::max(0.02, 10 / std::max(r.width(), 1.0)), false, p.integer_x_ticks);
  const Scale sc{ax, ay, r};
  const std::string clip = "sppft-clip-" + std::to_string(index);

  w << "<g class=\"panel line-panel\">\n";
  clip_def(w, clip, r);
  draw_titles(w, p.title, p.y_label, r, y0, width);
  draw_y_axis(w, sc);
  for (double t : ax.ticks) {
    const double x = sc.x(t);
    line(w, x, r.top, x, r.bottom, "#f0f0f0");
    line(w, x, r.bottom, x, r.bottom + 4, "#333333");
    text(w, x, r.bottom + 17, tick_label(t, ax), "middle");
  }
  if (!p.x_label.empty()) text_fit(w, (r.left + r.right) / 2, r.bottom + 36, p.x_label, r.width(), "middle", kFont);

  w << "<g clip-path=\"url(#" << clip << ")\">\n";
  for (const auto& sh : p.shades) {
    if (!std::isfinite(sh.x0) || !std::isfinite(sh.x1)) continue;
    const double a = sc.x(std::min(sh.x0, sh.x1)), b = sc.x(std::max(sh.x0, sh.x1));
    w << "<rect x=\"" << a << "\" y=\"" << r.top << "\" width=\"" << std::max(b - a, 1.0) << "\" height=\""
      << r.height() << "\" fill=\"" << escape(sh.color) << "\" fill-opacity=\"0.3\"/>\n";
  }
  // Bands: one polygon per run of points where x, lo and hi are all finite.
  for (std::size_t si = 0; si < p.series.size(); ++si) {
    const auto& s = p.series[si];
    if (s.band_lo.empty()) continue;
    const std::string color = escape(s.color.empty() ? palette(si) : s.color);
    std::size_t i = 0;
    const std::size_t n = s.y.size();
    auto ok = [&](std::size_t k) {
      return std::isfinite(xs(s, k)) && std::isfinite(s.band_lo[k]) && std::isfinite(s.band_hi[k]);
    };
    while (i < n) {
      if (!ok(i)) {
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < n && ok(j)) ++j;
      std::string pts;
      for (std::size_t k = i; k < j; ++k) pts += num(sc.x(xs(s, k))) + "," + num(sc.y(s.band_hi[k])) + " ";
      for (std::size_t k = j; k-- > i;) pts += num(sc.x(xs(s, k))) + "," + num(sc.y(s.band_lo[k])) + " ";
      pts.pop_back();
      if (j - i == 1) {  // a single point: a short vertical bar
        const double x = sc.x(xs(s, i));
        pts = num(x - 3) + "," + num(sc.y(s.band_hi[i])) + " " + num(x + 3) + "," + num(sc.y(s.band_hi[i])) + " " +
              num(x + 3) + "," + num(sc.y(s.band_lo[i])) + " " + num(x - 3) + "," + num(sc.y(s.band_lo[i]));
      }
      w << "<polygon points=\"" << pts << "\" fill=\"" << color << "\" fill-opacity=\"0.18\" stroke=\"none\"/>\n";
      i = j;
    }
  }
  for (const auto& [v, label] : p.hlines) {
    if (!std::isfinite(v)) continue;
    const double y = sc.y(v);
    line(w, r.left, y, r.right, y, "#555555", 1.2, "stroke-dasharray=\"4 3\"");
  }
  // Lines: one polyline per run of finite points; markers on every finite point.
  for (std::size_t si = 0; si < p.series.size(); ++si) {
    const auto& s = p.series[si];
    const std::string color = escape(s.color.empty() ? palette(si) : s.color);
    const std::size_t n = s.y.size();
    auto ok = [&](std::size_t k) { return std::isfinite(xs(s, k)) && std::isfinite(s.y[k]); };
    std::size_t i = 0;
    while (i < n) {
      if (!ok(i)) {
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < n && ok(j)) ++j;
      if (j - i >= 2) {
        w << "<polyline points=\"";
        for (std::size_t k = i; k < j; ++k) w << (k > i ? " " : "") << sc.x(xs(s, k)) << "," << sc.y(s.y[k]);
        w << "\" fill=\"none\" stroke=\"" << color
          << "\" stroke-width=\"2\" stroke-linejoin=\"round\" stroke-linecap=\"round\"";
        if (s.dashed) w << " stroke-dasharray=\"6 4\"";
        w << "/>\n";
      }
      for (std::size_t k = i; k < j; ++k)
        if (s.markers || j - i == 1)  // an isolated point is always drawn
          w << "<circle cx=\"" << sc.x(xs(s, k)) << "\" cy=\"" << sc.y(s.y[k]) << "\" r=\"3\" fill=\"" << color
            << "\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n";
      i = j;
    }
  }
  w << "</g>\n";
  // Reference-line labels last, with a white halo, so curves never hide them.
  for (const auto& [v, label] : p.hlines) {
    if (!std::isfinite(v) || label.empty() || v < ay.lo || v > ay.hi) continue;
    text_fit(w, r.right - 5, sc.y(v) - 4, label, r.width() * 0.6, "end", kSmallFont, false, "#444",
             "stroke=\"#ffffff\" stroke-width=\"3\" stroke-linejoin=\"round\" paint-order=\"stroke\"");
  }
  if (!any_point)
    text(w, (r.left + r.right) / 2, (r.top + r.bottom) / 2 + 4, "no data", "middle", kFont, false, "#888");
  draw_frame(w, r);
  draw_legend(w, legend, r.right + 10, r.top, lw);
  w << "</g>\n";
}

// ---- bar panel ---------------------------------------------------------------------------

// Accepts exactly one conversion %[-+ #0]*[0-9]*(\.[0-9]*)?[fFeEgG] plus literal text and %%.
void check_value_format(const std::string& f, const std::string& where) {
  int conversions = 0;
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%') continue;
    if (i + 1 < f.size() && f[i + 1] == '%') {
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < f.size() && std::string_view("-+ #0").find(f[j]) != std::string_view::npos) ++j;
    std::size_t digits = 0;
    while (j < f.size() && std::isdigit(static_cast<unsigned char>(f[j]))) ++j, ++digits;
    if (j < f.size() && f[j] == '.') {
      ++j;
      while (j < f.size() && std::isdigit(static_cast<unsigned char>(f[j]))) ++j, ++digits;
    }
    SPPFT_CHECK_INPUT(j < f.size() && std::string_view("fFeEgG").find(f[j]) != std::string_view::npos && digits <= 4,
                      where + ": value_format '" + f + "' must hold one conversion of a double like %.3g or %.1f%%");
    ++conversions;
    i = j;
  }
  SPPFT_CHECK_INPUT(conversions == 1, where + ": value_format '" + f + "' must hold exactly one conversion like %.3g");
}

std::string format_value(const std::string& f, double v) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f.c_str(), v);
  return buf;
}

void render_bar(Writer& w, const BarPanel& p, std::size_t index, double y0, int width, int height) {
  const std::string where = "svg: panel " + std::to_string(index + 1) + (p.title.empty() ? "" : " (" + p.title + ")");
  const std::size_t ns = p.series_names.size();
  for (const auto& g : p.groups)
    SPPFT_CHECK_INPUT(g.values.size() == ns, where + ": group '" + g.label + "' has " +
                                                 std::to_string(g.values.size()) +
                                                 " values, expected one per series (" + std::to_string(ns) + ")");
  if (p.value_labels) check_value_format(p.value_format, where);

  double vlo = 0, vhi = 0;  // bars start at 0
  bool any = false;
  for (const auto& g : p.groups)
    for (double v : g.values)
      if (std::isfinite(v)) vlo = std::min(vlo, v), vhi = std::max(vhi, v), any = true;

  std::vector<LegendItem> legend;
  for (std::size_t i = 0; i < ns; ++i)
    if (!p.series_names[i].empty()) legend.push_back({LegendItem::kBox, p.series_names[i], palette(i)});
  const double lw = legend.empty() ? 0 : legend_width(legend, width);

  // Horizontal layout first (independent of the y axis but for the left margin; use a
  // provisional margin, then fix it).
  const std::size_t ng = std::max<std::size_t>(p.groups.size(), 1);
  Rect r;
  r.top = y0 + (p.title.empty() ? 14 : 34);
  r.left = 70;
  r.right = width - 14 - (legend.empty() ? 0 : lw + 10);
  // Group labels: horizontal when they fit their slot, else turned just enough (30 .. 90
  // degrees) that neighbouring labels, gw * sin(angle) apart, do not overlap.
  double gw = (r.right - r.left) / ng;
  double max_label = 0;
  for (const auto& g : p.groups) max_label = std::max(max_label, text_width(g.label, kFont));
  const bool rotate_labels = max_label > gw - 6;
  const double angle =
      std::clamp(std::asin(std::min(1.0, 15.0 / std::max(gw, 1.0))), std::numbers::pi / 6, std::numbers::pi / 2);
  const double sin_a = std::sin(angle), cos_a = std::cos(angle);
  const double max_drop = height * 0.35;
  const double label_px = rotate_labels ? std::min(max_label * sin_a + kFont * cos_a + 8, max_drop) : 14;
  r.bottom = y0 + height - 10 - label_px - 6;

  // Value labels: above bars (below negative ones); vertical when wider than the bar.
  const double bw_est = gw * 0.8 / std::max<std::size_t>(ns, 1);
  double max_value_w = 0;
  if (p.value_labels)
    for (const auto& g : p.groups)
      for (double v : g.values)
        if (std::isfinite(v))
          max_value_w = std::max(max_value_w, text_width(format_value(p.value_format, v), kValueFont));
  const bool rotate_values = max_value_w > bw_est + 4;
  const double room =
      !p.value_labels || !any ? 0 : std::min(rotate_values ? max_value_w + 6 : 15.0, (r.bottom - r.top) * 0.4);
  // Grow the data range so `room` px remain beyond the extreme bars.
  const double plot_h = r.bottom - r.top;
  double lo = vlo, hi = vhi;
  const double span = std::max(hi - lo, 1e-300);
  const double frac = room / std::max(plot_h - 2 * room, 1.0);
  if (hi > 0) hi += span * frac;
  if (lo < 0) lo -= span * frac;
  Axis ay = make_axis(lo, hi, any, vlo >= 0 && any ? std::optional<double>(0.0) : std::nullopt,
                      vhi <= 0 && any && vlo < 0 ? std::optional<double>(0.0) : std::nullopt, count_for(plot_h, 42),
                      0.0, true, false);
  r.left = left_margin(ay, !p.y_label.empty());
  gw = r.width() / ng;
  const Axis ax;  // unused for bars beyond the scale's x mapping
  const Scale sc{ax, ay, r};
  const std::string clip = "sppft-clip-" + std::to_string(index);

  w << "<g class=\"panel bar-panel\">\n";
  clip_def(w, clip, r);
  draw_titles(w, p.title, p.y_label, r, y0, width);
  draw_y_axis(w, sc);
  for (std::size_t gi = 0; gi < p.groups.size(); ++gi) {
    const double cx = r.left + gw * (gi + 0.5);
    line(w, cx, r.bottom, cx, r.bottom + 4, "#333333");
    const auto& label = p.groups[gi].label;
    if (rotate_labels) {
      // Text ends at the tick; the baseline is shifted half a cap height so the glyphs centre on it.
      const double tx = cx + 4.3 * sin_a, ty = r.bottom + 8 + 4.3 * cos_a;
      // Cut so the label stays inside the panel's bottom and the figure's left edge.
      double max_len = (max_drop - kFont * cos_a - 8) / sin_a;
      if (cos_a > 0.01) max_len = std::min(max_len, (cx - 8) / cos_a);
      text_fit(w, tx, ty, label, max_len, "end", kFont, false, "#222",
               "transform=\"rotate(" + num(-angle * 180 / std::numbers::pi) + " " + num(tx) + " " + num(ty) + ")\"");
    } else {
      text(w, cx, r.bottom + 17, label, "middle");
    }
  }

  const double bw = gw * 0.8 / std::max<std::size_t>(ns, 1);
  const double y_zero = sc.y(std::clamp(0.0, ay.lo, ay.hi));
  w << "<g clip-path=\"url(#" << clip << ")\">\n";
  for (std::size_t gi = 0; gi < p.groups.size(); ++gi) {
    for (std::size_t si = 0; si < ns; ++si) {
      const double v = p.groups[gi].values[si];
      if (!std::isfinite(v)) continue;
      const double x = r.left + gw * gi + gw * 0.1 + bw * si;
      const double yv = sc.y(v);
      const double top = std::min(yv, y_zero), h = std::abs(yv - y_zero);
      const double gap = bw > 6 ? 1 : 0;
      w << "<rect x=\"" << x + gap / 2 << "\" y=\"" << top << "\" width=\"" << std::max(bw - gap, 0.5) << "\" height=\""
        << std::max(h, 0.0) << "\" fill=\"" << palette(si) << "\"/>\n";
    }
  }
  w << "</g>\n";
  if (p.value_labels) {
    for (std::size_t gi = 0; gi < p.groups.size(); ++gi) {
      for (std::size_t si = 0; si < ns; ++si) {
        const double v = p.groups[gi].values[si];
        if (!std::isfinite(v)) continue;
        const double cx = r.left + gw * gi + gw * 0.1 + bw * (si + 0.5);
        const double yv = std::clamp(sc.y(v), r.top, r.bottom);
        const std::string s = format_value(p.value_format, v);
        if (rotate_values) {
          const double ty = v >= 0 ? yv - 4 : yv + 4;
          text(w, cx + 3.5, ty, s, v >= 0 ? "start" : "end", kValueFont, false, "#222",
               "transform=\"rotate(-90 " + num(cx + 3.5) + " " + num(ty) + ")\"");
        } else {
          text(w, cx, v >= 0 ? yv - 4 : yv + 11, s, "middle", kValueFont);
        }
      }
    }
  }
  if (ay.lo < 0 && ay.hi > 0) line(w, r.left, y_zero, r.right, y_zero, "#333333", 1);
  if (!any) text(w, (r.left + r.right) / 2, (r.top + r.bottom) / 2 + 4, "no data", "middle", kFont, false, "#888");
  draw_frame(w, r);
  draw_legend(w, legend, r.right + 10, r.top, lw);
  w << "</g>\n";
}

}  // namespace

std::string escape(std::string_view t) {
  std::string out;
  out.reserve(t.size());
  for (const auto& [cp, bytes] : code_points(t)) {
    switch (cp) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '\t':
      case '\n':
      case '\r':
        out += ' ';
        break;
      default:
        if (cp < 0x20 || cp == 0x7F || cp == 0xFFFE || cp == 0xFFFF)
          out += "\xEF\xBF\xBD";  // not allowed in XML 1.0
        else
          out += bytes;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || hi <= lo) return {};
  return ticks_for(lo, hi, nice_step(lo, hi, std::max(target_count, 2)));
}

std::string render(const std::string& title, const std::vector<Panel>& panels, int width, int panel_height) {
  SPPFT_CHECK_INPUT(width >= 240 && width <= 20000,
                    "svg: width " + std::to_string(width) + " px is out of range, expected 240 .. 20000");
  SPPFT_CHECK_INPUT(panel_height >= 140 && panel_height <= 20000,
                    "svg: panel height " + std::to_string(panel_height) + " px is out of range, expected 140 .. 20000");
  const double title_h = title.empty() ? 6 : 36;
  const double total_h = title_h + static_cast<double>(panels.size()) * panel_height + 6;
  Writer w;
  w << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  w << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << width << "\" height=\"" << total_h
    << "\" viewBox=\"0 0 " << width << " " << total_h
    << "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  w << "<rect x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << total_h << "\" fill=\"#ffffff\"/>\n";
  if (!title.empty()) text_fit(w, width / 2.0, 25, title, width - 20, "middle", kTitleFont, true, "#111");
  for (std::size_t i = 0; i < panels.size(); ++i) {
    const double y0 = title_h + static_cast<double>(i) * panel_height;
    if (const auto* lp = std::get_if<LinePanel>(&panels[i]))
      render_line(w, *lp, i, y0, width, panel_height);
    else
      render_bar(w, std::get<BarPanel>(panels[i]), i, y0, width, panel_height);
  }
  w << "</svg>\n";
  return std::move(w.s);
}

void write(const fs::path& path, const std::string& svg) { atomic_write_text(path, svg); }

}  // namespace sppft::svg
