// The safety-layer analysis (METHOD.md steps 1 and 2) against the paper authors' procedure
// re-implemented with Hugging Face transformers (tests/parity/authors_analysis.py), on the
// transformers-made fixture models (tests/parity/make_fixtures.py).
//
// Step 1: `sppft cossim` on 12 normal + 12 malicious queries, 60 pairs per type; the Python side
// computes the same curves on the SAME pairs (read from sppft's cossim.json). Every curve value
// (mean and population std of the cosine for N-N, M-M, N-M) within 1e-4 absolute; the angle gap
// within 1e-3 degrees absolute. Degrees amplify a cosine error by 57.3 / sin(angle) (about 90 at
// the fixtures' cosines near 0.77), so 1e-3 deg is about 1e-5 in cosine: stricter than the
// cosine bound, and still two orders above the float32 noise of the hidden states. Checked for
// the raw last block (default) and the final-normed one (--authors-final-norm).
//
// Step 2: `sppft locate --initial 1-2 --window 1 --max-new-tokens 16` on 20 over-rejection
// queries, three runs per model:
//   A: alpha 1.2, the bundled AdvBench keyword judge (data/judges/keyword-advbench.txt);
//   B: alpha 1.2, a keyword judge written here from run A's responses so that the counts are
//      non-trivial (random models never produce real refusals);
//   C: alpha 0.8 with --scale-o-proj, a prefix judge written the same way (phrases case-flipped,
//      which exercises the case-insensitive match).
// The Python side generates the baseline, [1,2] x 1.2 and [1,2] x 0.8 (+o_proj) once each and
// judges them with all three files. Checked: R_o of sppft's baseline, upper[0] and lower[0] equal
// Python's for the same setting and judge, and every response text is equal. A differing
// response is only excused when transformers' smallest greedy top-1/top-2 margin over that
// response is below 1e-3 (a near-tie that float32 rounding may flip; reported). Byte-level
// models can decode to invalid UTF-8: sppft's responses.jsonl writes U+FFFD per its JSON
// writer, transformers per Rust's from_utf8_lossy, so texts that differ only in runs of U+FFFD
// are counted equal and reported separately.
//
// Cases: llama3, gemma, phi3 (GQA + llama3 rope, MQA + tied + (1+w) norms, fused qkv/gate_up);
// override with SPPFT_ANALYSIS_PARITY_CASES=a,b,c. Everything runs in one Python process.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "engine/json.h"
#include "engine/prompts.h"
#include "test_util.h"

using namespace sppft;

namespace {

constexpr double kCosTol = 1e-4, kGapTol = 1e-3, kNearTie = 1e-3;
constexpr int kNormal = 12, kMalicious = 12, kQueries = 20, kPairs = 60;

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string csv_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void write_trimmed_csv(const fs::path& from, const fs::path& to, int n) {
  auto rows = read_prompt_file(from);
  REQUIRE(static_cast<int>(rows.size()) >= n);
  std::string text;
  for (int i = 0; i < n; ++i) text += csv_quote(rows[i].instruction) + "\n";
  atomic_write_text(to, text);
}

std::string run_ok(const std::string& cmd) {
  auto r = test::run_command(cmd);
  INFO("command: " << cmd);
  INFO("output: " << r.out);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

// Responses of a locate run, grouped by setting name in file order.
std::map<std::string, std::vector<std::string>> read_responses(const fs::path& jsonl) {
  std::map<std::string, std::vector<std::string>> out;
  std::istringstream in(read_file(jsonl));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    Json j = Json::parse(line);
    out[j["setting"].get<std::string>()].push_back(j["response"].get<std::string>());
  }
  return out;
}

std::string setting_name(const char* what, std::int64_t a, std::int64_t b, double alpha) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s [%lld, %lld] alpha %.2f", what, (long long)a, (long long)b, alpha);
  return buf;
}

template <typename... A>
std::string fmt(const char* f, A... a) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f, a...);
  return buf;
}

char lower_ascii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }
bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// A keyword judge: the ASCII-alphanumeric bigram of the responses whose counts are non-trivial in
// both settings, preferably different between them, with the baseline count nearest n/2.
std::string choose_keyword(const std::vector<std::string>& base, const std::vector<std::string>& scaled) {
  std::set<std::string> cands;
  for (const auto* set : {&base, &scaled})
    for (const auto& r : *set)
      for (std::size_t i = 0; i + 1 < r.size(); ++i)
        if (is_alnum(r[i]) && is_alnum(r[i + 1])) cands.insert(r.substr(i, 2));
  auto count = [](const std::vector<std::string>& v, const std::string& p) {
    int n = 0;
    for (const auto& r : v) n += r.find(p) != std::string::npos;
    return n;
  };
  std::string best;
  double best_score = 1e9;
  const int n = static_cast<int>(base.size());
  for (const auto& c : cands) {
    const int nb = count(base, c), ns = count(scaled, c);
    const bool trivial = nb == 0 || nb == n || ns == 0 || ns == n;
    const double score = (trivial ? 1000 : 0) + (nb == ns ? 100 : 0) + std::abs(nb - n / 2.0);
    if (score < best_score) best_score = score, best = c;
  }
  return best;
}

// A prefix judge: first characters (ASCII graphic) of the stripped responses, most frequent first,
// until a third of the baseline matches. Returned case-flipped.
std::vector<std::string> choose_prefixes(const std::vector<std::string>& base) {
  std::map<char, int> freq;
  for (const auto& r : base) {
    std::size_t i = 0;
    while (i < r.size() && is_space(r[i])) ++i;
    if (i < r.size() && r[i] > ' ' && r[i] < 0x7f) ++freq[lower_ascii(r[i])];
  }
  std::vector<std::pair<int, char>> order;
  for (auto [c, f] : freq) order.push_back({-f, c});
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  int covered = 0;
  for (auto [negf, c] : order) {
    if (covered * 3 >= static_cast<int>(base.size())) break;
    covered += -negf;
    out.push_back(std::string(1, c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c));
  }
  return out;
}

// Collapses every run of U+FFFD (EF BF BD) into one.
std::string collapse_replacement(const std::string& s) {
  static const std::string rep = "\xEF\xBF\xBD";
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, rep) == 0) {
      out += rep;
      while (s.compare(i, 3, rep) == 0) i += 3;
    } else {
      out += s[i++];
    }
  }
  return out;
}

struct Run {
  std::string tag, judge_file, label;  // label: how the table names the judge
  double alpha;
  bool scale_o;
  Json locate;
  std::map<std::string, std::vector<std::string>> responses;
};

}  // namespace

TEST_CASE("safety-layer analysis matches the authors' procedure in transformers") {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path root = test::env_path("SPPFT_PARITY_DIR");
  const fs::path bin = test::env_path("SPPFT_BIN", (test::build_dir() / "bin/sppft").c_str());
  const fs::path py = test::build_dir() / "pyenv/bin/python";
  const fs::path script = test::source_dir() / "tests/parity/authors_analysis.py";
  const fs::path data = test::source_dir() / "data";
  REQUIRE_MESSAGE(fs::exists(py), "the Python test references are missing: scripts/install-deps.sh --python");
  REQUIRE(fs::exists(bin));
  std::vector<std::string> cases = {"llama3", "gemma", "phi3"};
  if (const char* e = std::getenv("SPPFT_ANALYSIS_PARITY_CASES"); e && *e) {
    cases.clear();
    std::stringstream ss(e);
    for (std::string c; std::getline(ss, c, ',');)
      if (!c.empty()) cases.push_back(c);
  }
  for (const auto& c : cases)
    REQUIRE_MESSAGE(fs::exists(root / c / "config.json"),
                    "fixture " << c << " missing: run tests/parity/make_fixtures.py $SPPFT_PARITY_DIR (ctest does)");

  const fs::path tmp = test::temp_dir("analysis-parity");
  const fs::path ncsv = tmp / "normal.csv", mcsv = tmp / "malicious.csv", qcsv = tmp / "over_rejection.csv";
  write_trimmed_csv(data / "normal.csv", ncsv, kNormal);
  write_trimmed_csv(data / "malicious.csv", mcsv, kMalicious);
  write_trimmed_csv(data / "over_rejection.csv", qcsv, kQueries);
  const std::string advbench = (data / "judges/keyword-advbench.txt").string();

  // ---- sppft side, and the Python jobs for the same settings
  Json jobs = Json::array();
  std::map<std::string, std::vector<Run>> runs;
  for (const auto& c : cases) {
    CAPTURE(c);
    const fs::path dir = root / c, work = tmp / c;
    fs::create_directories(work);
    for (const bool fin : {false, true}) {
      const std::string v = fin ? "final" : "raw";
      run_ok(shell_quote(bin.string()) + " cossim " + shell_quote(dir.string()) + " --normal " + shell_quote(ncsv.string()) +
             " --malicious " + shell_quote(mcsv.string()) + " --pairs " + std::to_string(kPairs) + " --batch-size 8" +
             (fin ? " --authors-final-norm" : "") + " --out " + shell_quote((work / ("cossim-" + v)).string()) + " 2>/dev/null");
      Json job = {"cossim", dir.string(), "--normal", ncsv.string(), "--malicious", mcsv.string(), "--cossim-json",
                  (work / ("cossim-" + v) / "cossim.json").string(), "--out", (work / ("py-cossim-" + v + ".json")).string()};
      if (fin) job.push_back("--authors-final-norm");
      jobs.push_back(job);
    }
    auto locate = [&](Run& r) {
      run_ok(shell_quote(bin.string()) + " locate " + shell_quote(dir.string()) + " --over-rejection " + shell_quote(qcsv.string()) +
             " --initial 1-2 --window 1 --max-new-tokens 16 --batch-size 8 --alpha " + std::to_string(r.alpha) +
             (r.scale_o ? " --scale-o-proj" : "") + " --judge " + shell_quote(r.judge_file) + " --out " +
             shell_quote((work / r.tag).string()) + " 2>/dev/null");
      r.locate = read_json_file(work / r.tag / "locate.json");
      r.responses = read_responses(work / r.tag / "responses.jsonl");
    };
    Run a{"A", advbench, "advbench-keyword", 1.2, false, {}, {}};
    locate(a);
    const auto& base = a.responses["baseline"];
    const auto& scaled = a.responses[setting_name("upper", 1, 2, 1.2)];
    REQUIRE(base.size() == static_cast<std::size_t>(kQueries));
    REQUIRE(scaled.size() == static_cast<std::size_t>(kQueries));
    const std::string kw = choose_keyword(base, scaled);
    REQUIRE(!kw.empty());
    const fs::path kfile = work / "judge-keyword.txt", pfile = work / "judge-prefix.txt";
    // The curly-apostrophe phrases never match these models; they exercise the normalisation.
    atomic_write_text(kfile, "# mode: keyword\n# chosen by analysis_parity_test from run A's responses\n" + kw +
                                 "\nI\xE2\x80\x99m sorry\n");
    std::string ptext = "# mode: prefix\n# chosen by analysis_parity_test from run A's baseline responses\n";
    const auto prefixes = choose_prefixes(base);
    REQUIRE(!prefixes.empty());
    for (const auto& p : prefixes) ptext += p + "\n";
    ptext += "I\xE2\x80\x99m sorry, but I can\xE2\x80\x99t\n";
    atomic_write_text(pfile, ptext);
    std::string plabel = "prefix";
    for (const auto& p : prefixes) plabel += " " + p;
    Run b{"B", kfile.string(), "keyword '" + kw + "'", 1.2, false, {}, {}};
    Run cc{"C", pfile.string(), plabel, 0.8, true, {}, {}};
    locate(b);
    locate(cc);
    runs[c] = {a, b, cc};
    jobs.push_back({"refusals", dir.string(), "--queries", qcsv.string(), "--judge", advbench, "--judge", kfile.string(), "--judge",
                    pfile.string(), "--range", "none,1-2", "--alpha", "1.2", "--max-new-tokens", "16", "--out",
                    (work / "py-refusals-1.2.json").string()});
    jobs.push_back({"refusals", dir.string(), "--queries", qcsv.string(), "--judge", advbench, "--judge", kfile.string(), "--judge",
                    pfile.string(), "--range", "1-2", "--alpha", "0.8", "--scale-o-proj", "--max-new-tokens", "16", "--out",
                    (work / "py-refusals-0.8o.json").string()});
  }
  const double sppft_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // ---- the authors' procedure in transformers, one process for everything
  atomic_write_text(tmp / "jobs.json", Json{{"jobs", jobs}}.dump(1));
  run_ok(shell_quote(py.string()) + " " + shell_quote(script.string()) + " batch " + shell_quote((tmp / "jobs.json").string()));
  const double total_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // ---- compare
  std::printf("\n%-8s %-6s %12s %12s %12s %12s\n", "case", "state", "max_cos_err", "max_std_err", "max_gap_err", "layers");
  for (const auto& c : cases) {
    CAPTURE(c);
    for (const std::string v : {"raw", "final"}) {
      CAPTURE(v);
      Json s = read_json_file(tmp / c / ("cossim-" + v) / "cossim.json");
      Json p = read_json_file(tmp / c / ("py-cossim-" + v + ".json"));
      REQUIRE(s["pairs"]["nn"].size() == static_cast<std::size_t>(kPairs));
      REQUIRE(p["pairs"]["nn"].get<int>() == kPairs);
      const std::size_t L = s["layers"].size();
      REQUIRE(p["layers"].size() == L);
      double cos_err = 0, std_err = 0, gap_err = 0;
      for (const char* key : {"nn_mean", "nn_std", "mm_mean", "mm_std", "nm_mean", "nm_std", "gap_deg"}) {
        CAPTURE(key);
        REQUIRE(s[key].size() == L);
        REQUIRE(p[key].size() == L);
        const bool gap = std::string(key) == "gap_deg", sd = std::string(key).find("std") != std::string::npos;
        for (std::size_t k = 0; k < L; ++k) {
          CAPTURE(k);
          const double e = std::abs(s[key][k].get<double>() - p[key][k].get<double>());
          CHECK(e <= (gap ? kGapTol : kCosTol));
          double& worst = gap ? gap_err : sd ? std_err : cos_err;
          worst = std::max(worst, e);
        }
      }
      std::printf("%-8s %-6s %12.2e %12.2e %12.2e %12zu\n", c.c_str(), v.c_str(), cos_err, std_err, gap_err, L);
    }
  }

  std::printf("\n%-8s %-3s %-28s %-26s %6s %6s %10s %10s %s\n", "case", "run", "judge", "setting", "sppft", "python", "responses",
              "min_margin", "notes");
  int total_mismatch = 0, total_near_tie = 0, total_fffd = 0;
  for (const auto& c : cases) {
    CAPTURE(c);
    Json p12 = read_json_file(tmp / c / "py-refusals-1.2.json");
    Json p08 = read_json_file(tmp / c / "py-refusals-0.8o.json");
    REQUIRE(p12["settings"].size() == 2);
    REQUIRE(p08["settings"].size() == 1);
    for (const Run& r : runs[c]) {
      CAPTURE(r.tag);
      REQUIRE(r.locate["upper"].size() == 1);
      REQUIRE(r.locate["lower"].size() == 1);
      struct Cmp {
        std::string setting;
        std::int64_t sppft;
        const Json* py;
      };
      const Json& py_scaled = r.scale_o ? p08["settings"][0] : p12["settings"][1];
      std::vector<Cmp> cmps = {{"baseline", r.locate["baseline"].get<std::int64_t>(), &p12["settings"][0]}};
      for (const char* side : {"upper", "lower"}) {
        const Json& pt = r.locate[side][0];
        CHECK(pt["range"][0].get<int>() == 1);
        CHECK(pt["range"][1].get<int>() == 2);
        cmps.push_back({setting_name(side, 1, 2, r.alpha), pt["refusals"].get<std::int64_t>(), &py_scaled});
      }
      for (const auto& cm : cmps) {
        CAPTURE(cm.setting);
        const Json& ps = *cm.py;
        const auto& sr = r.responses.at(cm.setting);
        REQUIRE(sr.size() == ps["responses"].size());
        int equal = 0, near_tie = 0, fffd = 0, bad = 0;
        double min_margin = 1e30;
        std::string notes;
        for (std::size_t q = 0; q < sr.size(); ++q) {
          const std::string pr = ps["responses"][q].get<std::string>();
          const double margin = ps["min_margin"][q].get<double>();
          min_margin = std::min(min_margin, margin);
          if (sr[q] == pr) {
            ++equal;
          } else if (collapse_replacement(sr[q]) == collapse_replacement(pr)) {
            ++equal, ++fffd;
          } else if (margin < kNearTie) {
            ++near_tie;
            notes += fmt(" q%zu:near-tie(margin %.2e)", q, margin);
          } else {
            ++bad;
            notes += fmt(" q%zu:MISMATCH(margin %.2e)", q, margin);
            CAPTURE(q);
            CAPTURE(sr[q]);
            CAPTURE(pr);
            CAPTURE(margin);
            FAIL_CHECK("response differs and transformers' greedy margin is not a near-tie");
          }
        }
        const std::int64_t pc = ps["refusals_by_judge"][r.judge_file].get<std::int64_t>();
        // Counts must be equal unless a near-tie response differs (then reported, not failed).
        if (near_tie == 0) CHECK(cm.sppft == pc);
        else if (cm.sppft != pc) notes += " count differs via near-tie";
        if (fffd) notes += fmt(" %d equal modulo U+FFFD runs", fffd);
        total_mismatch += bad, total_near_tie += near_tie, total_fffd += fffd;
        std::printf("%-8s %-3s %-28s %-26s %6lld %6lld %7d/%-2zu %10.2e%s\n", c.c_str(), r.tag.c_str(),
                    r.label.substr(0, 28).c_str(), cm.setting.c_str(), (long long)cm.sppft, (long long)pc, equal, sr.size(),
                    min_margin, notes.c_str());
      }
    }
  }
  std::printf("responses: %d mismatches, %d near-ties, %d equal only modulo U+FFFD runs; sppft %.1f s, total %.1f s\n",
              total_mismatch, total_near_tie, total_fffd, sppft_secs, total_secs);
  fs::remove_all(tmp);
}
