// SVG chart writer: structure (balanced tags, escaped text), data edge cases (NaN/inf,
// empty series, a single point), bands, errors, ticks and the atomic write. Visual checks
// were done by converting example figures with rsvg-convert and looking at the PNGs.
#include "analysis/svg.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/fs.h"

using namespace sppft;
using namespace sppft::svg;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

// A tiny XML well-formedness check: tags balanced and properly nested, attribute values
// quoted, no raw '<' in text or attributes, every '&' starts one of the five entities.
// Returns "" when fine, else what went wrong.
std::string check_xml(const std::string& s) {
  auto entity_ok = [&](std::size_t i) {
    for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"})
      if (s.compare(i, std::char_traits<char>::length(e), e) == 0) return true;
    return false;
  };
  std::vector<std::string> stack;
  std::size_t i = 0;
  bool root_seen = false;
  while (i < s.size()) {
    if (s[i] != '<') {
      if (s[i] == '&' && !entity_ok(i)) return "bad entity at " + std::to_string(i);
      if (s[i] == '>') return "raw '>' in text at " + std::to_string(i);
      if (stack.empty() && !std::isspace(static_cast<unsigned char>(s[i]))) return "text outside the root";
      ++i;
      continue;
    }
    if (s.compare(i, 5, "<?xml") == 0) {
      if (i != 0) return "xml declaration not first";
      auto end = s.find("?>", i);
      if (end == std::string::npos) return "open declaration";
      i = end + 2;
      continue;
    }
    const bool closing = i + 1 < s.size() && s[i + 1] == '/';
    std::size_t j = i + (closing ? 2 : 1);
    std::size_t name_start = j;
    while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '-' || s[j] == ':')) ++j;
    std::string name = s.substr(name_start, j - name_start);
    if (name.empty()) return "empty tag name at " + std::to_string(i);
    if (closing) {
      if (j >= s.size() || s[j] != '>') return "bad closing tag " + name;
      if (stack.empty() || stack.back() != name)
        return "closing </" + name + "> but open is <" + (stack.empty() ? "" : stack.back()) + ">";
      stack.pop_back();
      i = j + 1;
      continue;
    }
    // Attributes: name="value" pairs.
    bool self_closing = false;
    while (true) {
      while (j < s.size() && std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      if (j >= s.size()) return "unterminated tag " + name;
      if (s[j] == '>') {
        ++j;
        break;
      }
      if (s.compare(j, 2, "/>") == 0) {
        self_closing = true;
        j += 2;
        break;
      }
      std::size_t a = j;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '-' || s[j] == ':')) ++j;
      if (j == a) return "bad attribute in <" + name + ">";
      if (j + 1 >= s.size() || s[j] != '=' || s[j + 1] != '"') return "unquoted attribute in <" + name + ">";
      j += 2;
      while (j < s.size() && s[j] != '"') {
        if (s[j] == '<') return "raw '<' in an attribute of <" + name + ">";
        if (s[j] == '&' && !entity_ok(j)) return "bad entity in an attribute of <" + name + ">";
        ++j;
      }
      if (j >= s.size()) return "unterminated attribute in <" + name + ">";
      ++j;
    }
    if (stack.empty()) {
      if (root_seen) return "second root element";
      root_seen = true;
    }
    if (!self_closing) stack.push_back(name);
    i = j;
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (!root_seen) return "no root element";
  return "";
}

LinePanel cosine_panel() {
  LinePanel p;
  p.title = "Cosine similarity";
  p.x_label = "layer";
  p.y_label = "cosine";
  const char* names[] = {"N-N", "M-M", "N-M"};
  for (int s = 0; s < 3; ++s) {
    Series se;
    se.label = names[s];
    for (int l = 0; l < 32; ++l) {
      const double v = 0.95 - 0.01 * l * (s + 1) + 0.02 * std::cos(l * 0.5);
      se.x.push_back(l);
      se.y.push_back(v);
      se.band_lo.push_back(v - 0.02);
      se.band_hi.push_back(v + 0.02);
    }
    p.series.push_back(se);
  }
  p.series[2].dashed = true;
  p.shades.push_back({6, 12, "safety layers"});
  p.hlines.push_back({0.5, "threshold"});
  return p;
}

BarPanel bar_panel() {
  BarPanel b;
  b.title = "Harmful rate";
  b.y_label = "rate";
  b.series_names = {"full FT", "SPPFT"};
  b.groups = {{"AdvBench", {0.42, 0.03}}, {"HEx-PHI", {0.5, 0.06}}};
  return b;
}

}  // namespace

TEST_CASE("svg: the XML checker itself") {
  CHECK(check_xml("<svg><g a=\"1\"/><text>a &amp; b</text></svg>") == "");
  CHECK(check_xml("<svg><g></svg>") != "");
  CHECK(check_xml("<svg><text>a & b</text></svg>") != "");
  CHECK(check_xml("<svg><text a=\"<\">x</text></svg>") != "");
  CHECK(check_xml("<svg></svg><svg></svg>") != "");
}

TEST_CASE("svg: a two-panel figure is well formed and holds every label") {
  const std::string out = render("Figure title", {cosine_panel(), bar_panel()});
  CHECK(check_xml(out) == "");
  CHECK(out.rfind("<?xml", 0) == 0);
  CHECK(out.find("<svg xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos);
  CHECK(out.find("font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\"") != std::string::npos);
  for (const char* label :
       {"Figure title", "Cosine similarity", "layer", "cosine", "N-N", "M-M", "N-M", "safety layers", "threshold",
        "Harmful rate", "rate", "full FT", "SPPFT", "AdvBench", "HEx-PHI"})
    CHECK_MESSAGE(out.find(std::string(">") + label + "<") != std::string::npos, label);
  CHECK(count(out, "<polygon") == 3);                  // one band per series
  CHECK(count(out, "<polyline") == 3);                 // one line per series
  CHECK(count(out, "<circle") >= 3 * 32);              // markers
  CHECK(count(out, "stroke-dasharray=\"6 4\"") == 1);  // the dashed series
  CHECK(count(out, "fill=\"#f5c542\"") == 2);          // the shade and its legend swatch
  CHECK(count(out, "<clipPath id=\"sppft-clip-0\"") == 1);
  CHECK(count(out, "<clipPath id=\"sppft-clip-1\"") == 1);
  CHECK(count(out, "class=\"legend\"") == 2);
  CHECK(out.find(">0.42<") != std::string::npos);  // bar value labels, "%.3g"
  CHECK(out.find(">0.03<") != std::string::npos);
  // Nice ticks on the layer axis: 0, 5, ..., 30.
  for (const char* t : {">0<", ">5<", ">10<", ">30<"}) CHECK_MESSAGE(out.find(t) != std::string::npos, t);
  CHECK(out.find("nan") == std::string::npos);
  CHECK(out.find("inf") == std::string::npos);
}

TEST_CASE("svg: text is escaped, bad UTF-8 and control characters replaced") {
  LinePanel p;
  p.title = "a & b <c> \"d\" 'e'";
  Series s;
  s.label = "x<y & z>\x01w\xFF";
  s.y = {1, 2};
  s.color = "\"red";
  p.series.push_back(s);
  const std::string out = render("T&C", {p});
  CHECK(check_xml(out) == "");
  CHECK(out.find("a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;") != std::string::npos);
  CHECK(out.find("T&amp;C") != std::string::npos);
  CHECK(out.find("x&lt;y &amp; z&gt;\xEF\xBF\xBDw\xEF\xBF\xBD") != std::string::npos);
  CHECK(out.find("&quot;red") != std::string::npos);
  CHECK(escape("caf\xC3\xA9 \xE4\xB8\x96") == "caf\xC3\xA9 \xE4\xB8\x96");  // valid UTF-8 passes through
  CHECK(escape("a\tb\nc") == "a b c");
}

TEST_CASE("svg: NaN and inf points are skipped and break the line") {
  LinePanel p;
  Series a;
  a.label = "gaps";
  a.y = {1, 2, kNaN, 4, 5, kInf, -kInf};  // x = 0, 1, ...: two runs of two points
  Series b;
  b.label = "isolated";
  b.x = {0, 1, 2, 3, 4};
  b.y = {1, kNaN, 3, 4, 5};
  b.x[3] = kNaN;  // points 0, 2, 4 are isolated
  b.markers = false;
  p.series = {a, b};
  const std::string out = render("", {p});
  CHECK(check_xml(out) == "");
  CHECK(count(out, "<polyline") == 2);
  CHECK(count(out, "<circle") == 4 + 3 + 1);  // a's markers, b's isolated points, a's legend marker
  CHECK(out.find("nan") == std::string::npos);
  CHECK(out.find("inf") == std::string::npos);
  CHECK(out.find("no data") == std::string::npos);
}

TEST_CASE("svg: bands make polygons, split where lo or hi is not finite") {
  LinePanel p;
  Series s;
  s.label = "mean";
  s.y = {1, 2, 3, 4, 5};
  s.band_lo = {0.5, 1.5, kNaN, 3.5, 4.5};
  s.band_hi = {1.5, 2.5, 3.5, 4.5, 5.5};
  p.series = {s};
  std::string out = render("", {p});
  CHECK(check_xml(out) == "");
  CHECK(count(out, "<polygon") == 2);
  CHECK(count(out, "<polyline") == 1);
  p.series[0].band_lo.clear();
  p.series[0].band_hi.clear();
  out = render("", {p});
  CHECK(count(out, "<polygon") == 0);
}

TEST_CASE("svg: empty series, empty panels and a single point") {
  LinePanel empty;
  empty.title = "nothing";
  Series e;
  e.label = "empty series";
  empty.series = {e};
  LinePanel nan_only;
  Series n;
  n.y = {kNaN};
  nan_only.series = {n};
  LinePanel one;
  Series o;
  o.label = "one";
  o.x = {3};
  o.y = {0.25};
  o.markers = false;
  one.series = {o};
  BarPanel no_bars;
  no_bars.series_names = {"a"};
  const std::string out = render("edge cases", {empty, nan_only, one, no_bars, LinePanel{}, BarPanel{}});
  CHECK(check_xml(out) == "");
  CHECK(out.find(">empty series<") != std::string::npos);
  CHECK(count(out, "no data") == 5);
  CHECK(count(out, "<circle") == 2);  // the single point (even without markers) and "empty series"' legend marker
  CHECK(out.find("nan") == std::string::npos);
  CHECK(out.find(">3<") != std::string::npos);  // a tick at the point's x
}

TEST_CASE("svg: fixed y range clips, hlines, bars with negative and NaN values") {
  LinePanel p;
  p.y_min = 0;
  p.y_max = 1;
  p.integer_x_ticks = false;
  Series s;
  s.x = {0, 0.5, 1};
  s.y = {0.5, 3, -2};
  p.series = {s};
  p.hlines = {{0.25, "chance"}, {kNaN, "skipped"}, {7, "out of range"}};
  BarPanel b;
  b.series_names = {"a", "b", "c"};
  b.value_format = "%.1f%%";
  b.groups = {{"g1", {1.5, -2.25, kNaN}}, {"g2", {kInf, 0.5, 3}}};
  const std::string out = render("", {p, b});
  CHECK(check_xml(out) == "");
  CHECK(out.find(">chance<") != std::string::npos);
  CHECK(out.find("skipped") == std::string::npos);
  CHECK(out.find("out of range") == std::string::npos);  // line clipped, label not drawn
  CHECK(out.find(">1.0<") != std::string::npos);         // the fixed axis ends are ticks
  CHECK(out.find(">1.5%<") != std::string::npos);
  CHECK(out.find(">-2.2%<") != std::string::npos);
  CHECK(count(out, "fill=\"#2ca02c\"") == 2);  // series c: one bar (NaN skipped) + legend
  CHECK(out.find("nan") == std::string::npos);
  CHECK(out.find("inf") == std::string::npos);
}

TEST_CASE("svg: long labels are shortened with the full text as a tooltip") {
  BarPanel b;
  b.series_names = {std::string(300, 'w')};
  for (int i = 0; i < 12; ++i) b.groups.push_back({"a rather long group label number " + std::to_string(i), {1.0 * i}});
  const std::string out = render("", {b}, 500, 260);
  CHECK(check_xml(out) == "");
  CHECK(out.find("<title>" + std::string(300, 'w') + "</title>") != std::string::npos);
  CHECK(out.find("\xE2\x80\xA6") != std::string::npos);  // ellipsis
  CHECK(out.find("rotate(-") != std::string::npos);      // group labels turned to fit
}

TEST_CASE("svg: bad input throws InputError") {
  auto line_with = [](auto&& edit) {
    LinePanel p;
    Series s;
    s.y = {1, 2, 3};
    p.series = {s};
    edit(p);
    return p;
  };
  CHECK_THROWS_AS(render("", {line_with([](LinePanel& p) { p.series[0].x = {1, 2}; })}), InputError);
  CHECK_THROWS_AS(render("", {line_with([](LinePanel& p) { p.series[0].band_lo = {1, 2, 3}; })}), InputError);
  CHECK_THROWS_AS(render("", {line_with([](LinePanel& p) {
                           p.series[0].band_lo = {1, 2};
                           p.series[0].band_hi = {1, 2};
                         })}),
                  InputError);
  CHECK_THROWS_AS(render("", {line_with([](LinePanel& p) { p.y_min = 1, p.y_max = 1; })}), InputError);
  CHECK_THROWS_AS(render("", {line_with([](LinePanel& p) { p.y_min = kNaN; })}), InputError);
  BarPanel b = bar_panel();
  b.groups[1].values.push_back(1);
  CHECK_THROWS_AS(render("", {b}), InputError);
  for (const char* f : {"%s", "%d", "%.3g %g", "no conversion", "%n", "%.3", "%*g", "%.99999f"}) {
    BarPanel c = bar_panel();
    c.value_format = f;
    CHECK_THROWS_AS(render("", {c}), InputError);
  }
  BarPanel ok = bar_panel();
  ok.value_format = "%+.2e%%";
  CHECK_NOTHROW(render("", {ok}));
  ok.value_labels = false;
  ok.value_format = "%s";  // not used without value labels
  CHECK_NOTHROW(render("", {ok}));
  CHECK_THROWS_AS(render("", {bar_panel()}, 100), InputError);
  CHECK_THROWS_AS(render("", {bar_panel()}, 760, 20), InputError);
}

TEST_CASE("svg: nice_ticks") {
  auto t = nice_ticks(0, 1, 6);
  REQUIRE(t.size() == 6);
  for (int i = 0; i < 6; ++i) CHECK(t[i] == doctest::Approx(0.2 * i));
  t = nice_ticks(0.13, 0.97, 5);
  REQUIRE(t.size() == 4);
  CHECK(t.front() == doctest::Approx(0.2));
  CHECK(t.back() == doctest::Approx(0.8));
  t = nice_ticks(-3, 7, 6);
  REQUIRE(t.size() == 5);
  CHECK(t.front() == -2);
  CHECK(t[1] == 0);
  CHECK(t.back() == 6);
  t = nice_ticks(0, 31, 8);
  REQUIRE(t.size() == 7);
  CHECK(t[1] == 5);
  CHECK(nice_ticks(1, 1, 5).empty());
  CHECK(nice_ticks(0, kNaN, 5).empty());
}

TEST_CASE("svg: write is atomic and round-trips") {
  const auto dir = std::filesystem::temp_directory_path() / ("sppft-test-svg-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::string out = render("written", {bar_panel()});
  write(dir / "sub" / "fig.svg", out);
  CHECK(read_file(dir / "sub" / "fig.svg") == out);
  for (const auto& e : std::filesystem::directory_iterator(dir / "sub"))
    CHECK(e.path().filename() == "fig.svg");  // no temp file left behind
  std::filesystem::remove_all(dir);
}
