// Tokenizers against transformers.
//
// With SPPFT_TOKENIZER_FIXTURES=DIR (made by `tests/engine/make_tokenizer_fixtures.py DIR`), every
// DIR/NAME/expected.json is checked: ids of tokenizer(text) with and without special tokens, decode
// with and without skip_special_tokens, vocab size, BOS/EOS, and encode speed is reported. Directories
// made by tests/parity/make_fixtures.py (NAME/parity/reference.json) under the same root, or under
// SPPFT_PARITY_FIXTURES, are checked too (prompt ids, multilingual ids and decode, edge strings).
// Without fixtures those cases print a message and pass; the checks below them (hand-written
// tokenizer.json, Unicode helpers, bad inputs) always run.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "engine/fs.h"
#include "engine/json.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_impl.h"
#include "test_util.h"

namespace {

using sppft::Json;
using sppft::InputError;
namespace fs = std::filesystem;

std::optional<fs::path> env_dir(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return fs::path(v);
}

std::vector<std::int32_t> to_ids(const Json& j) {
  std::vector<std::int32_t> out;
  for (const Json& x : j) out.push_back(x.get<std::int32_t>());
  return out;
}

std::string show(const std::vector<std::int32_t>& v) {
  std::ostringstream s;
  s << '[';
  for (std::size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  s << ']';
  return s.str();
}

std::string escaped(const std::string& s) { return Json(s).dump(); }

// A scratch directory removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("sppft_tok_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream f(path / name, std::ios::binary);
    f << text;
  }
};

std::string repeat_to(const std::string& s, std::size_t bytes) {
  std::string out;
  while (out.size() < bytes) out += s;
  return out;
}

// Encode speed on `text` in MB/s: the first call (word caches empty) and the best of 3 more.
std::pair<double, double> encode_mb_per_s(const sppft::Tokenizer& tok, const std::string& text) {
  double first = 0, best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    auto ids = tok.encode(text);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double mbs = text.size() / 1e6 / std::max(s, 1e-9);
    if (rep == 0)
      first = mbs;
    else
      best = std::max(best, mbs);
    CHECK(!ids.empty());
  }
  return {first, best};
}

std::string multilingual_text() {
  const char* src = std::getenv("SPPFT_SOURCE_DIR");
  fs::path p = fs::path(src ? src : ".") / "tests/parity/multilingual.txt";
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) return {};
  return sppft::read_file(p);
}

}  // namespace

TEST_CASE("tokenizers match transformers on the tokenizer fixtures") {
  auto root = env_dir("SPPFT_TOKENIZER_FIXTURES");
  if (!root) {
    MESSAGE("SPPFT_TOKENIZER_FIXTURES not set: skipping the transformers comparison "
            "(make fixtures with tests/engine/make_tokenizer_fixtures.py DIR)");
    return;
  }
  REQUIRE(fs::is_directory(*root));
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(*root))
    if (fs::is_regular_file(e.path() / "expected.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  REQUIRE_MESSAGE(!dirs.empty(), "no */expected.json under " << root->string());
  const std::string multi = multilingual_text();
  for (const fs::path& dir : dirs) {
    const Json exp = sppft::read_json_file(dir / "expected.json");
    const std::string name = dir.filename().string();
    CAPTURE(name);
    auto tok = sppft::load_tokenizer(dir);
    CHECK(tok->kind() == (fs::exists(dir / "tokenizer.model") ? "sentencepiece" : "bpe"));
    CHECK(tok->vocab_size() == exp["vocab_size"].get<std::int32_t>());
    if (exp["bos_id"].is_null())
      CHECK(!tok->bos_id());
    else
      CHECK(tok->bos_id() == std::optional<std::int32_t>(exp["bos_id"].get<std::int32_t>()));
    CHECK(tok->eos_ids() == to_ids(exp["eos_ids"]));
    for (std::int32_t e : to_ids(exp["eos_ids"])) CHECK(tok->is_eos(e));
    CHECK(tok->add_bos() == exp["add_bos"].get<bool>());
    int failures = 0;
    for (const Json& c : exp["cases"]) {
      const std::string text = c["text"].get<std::string>();
      const auto ids = to_ids(c["ids"]);
      const auto got = tok->encode(text);
      const auto got_plain = tok->encode(text, false);
      const bool ok = got == ids && got_plain == to_ids(c["ids_plain"]) &&
                      tok->decode(ids, false) == c["decoded"].get<std::string>() &&
                      tok->decode(ids, true) == c["decoded_skip"].get<std::string>();
      if (!ok && ++failures <= 5) {
        FAIL_CHECK(name << ": text " << escaped(text.substr(0, 200)) << "\n  want " << show(ids) << "\n  got  "
                        << show(got) << "\n  plain want " << show(to_ids(c["ids_plain"])) << " got "
                        << show(got_plain) << "\n  decode want " << escaped(c["decoded"].get<std::string>())
                        << " got " << escaped(tok->decode(ids, false)) << "\n  decode(skip) want "
                        << escaped(c["decoded_skip"].get<std::string>()) << " got "
                        << escaped(tok->decode(ids, true)));
      }
    }
    for (const Json& c : exp["decode_cases"]) {
      const auto ids = to_ids(c["ids"]);
      const bool ok = tok->decode(ids, false) == c["decoded"].get<std::string>() &&
                      tok->decode(ids, true) == c["decoded_skip"].get<std::string>();
      if (!ok && ++failures <= 5)
        FAIL_CHECK(name << ": decode " << show(ids).substr(0, 200) << "\n  want "
                        << escaped(c["decoded"].get<std::string>()).substr(0, 300) << "\n  got  "
                        << escaped(tok->decode(ids, false)).substr(0, 300) << "\n  skip want "
                        << escaped(c["decoded_skip"].get<std::string>()).substr(0, 300) << "\n  got  "
                        << escaped(tok->decode(ids, true)).substr(0, 300));
    }
    CHECK_MESSAGE(failures == 0, name << ": " << failures << " mismatching cases");
    if (!multi.empty()) {
      auto [first, best] = encode_mb_per_s(*tok, repeat_to(multi, 1 << 20));
      MESSAGE(name << ": encode " << first << " MB/s first call, " << best
                   << " MB/s after, on tests/parity/multilingual.txt repeated to 1 MiB");
    }
    // Out-of-vocabulary ids are input errors, naming the id and the size.
    std::vector<std::int32_t> bad = {tok->vocab_size()};
    CHECK_THROWS_AS(tok->decode(bad), InputError);
    bad = {-1};
    CHECK_THROWS_AS(tok->decode(bad), InputError);
  }
}

TEST_CASE("tokenizers match the parity fixtures of tests/parity/make_fixtures.py") {
  std::vector<fs::path> roots;
  for (const char* var : {"SPPFT_TOKENIZER_FIXTURES", "SPPFT_PARITY_FIXTURES"})
    if (auto r = env_dir(var)) roots.push_back(*r);
  std::vector<fs::path> dirs;
  for (const fs::path& root : roots) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) continue;
    for (const auto& e : fs::directory_iterator(root))
      if (fs::is_regular_file(e.path() / "parity" / "reference.json")) dirs.push_back(e.path());
  }
  if (dirs.empty()) {
    MESSAGE("no parity fixtures (NAME/parity/reference.json) under SPPFT_TOKENIZER_FIXTURES or "
            "SPPFT_PARITY_FIXTURES: skipping");
    return;
  }
  const std::string multi = multilingual_text();
  for (const fs::path& dir : dirs) {
    const std::string name = dir.filename().string();
    CAPTURE(name);
    const Json ref = sppft::read_json_file(dir / "parity" / "reference.json");
    auto tok = sppft::load_tokenizer(dir);
    if (ref.contains("prompts"))
      for (const Json& p : ref["prompts"])
        if (p.contains("text") && p.contains("input_ids"))
          CHECK_MESSAGE(tok->encode(p["text"].get<std::string>()) == to_ids(p["input_ids"]),
                        name << ": prompt " << escaped(p["text"].get<std::string>()));
    if (ref.contains("edge_tokenization"))
      for (const Json& e : ref["edge_tokenization"])
        CHECK_MESSAGE(tok->encode(e["text"].get<std::string>()) == to_ids(e["input_ids"]),
                      name << ": edge string " << escaped(e["text"].get<std::string>()));
    if (ref.contains("multilingual_ids") && !multi.empty()) {
      const auto ids = to_ids(ref["multilingual_ids"]);
      CHECK_MESSAGE(tok->encode(multi) == ids, name << ": multilingual ids");
      if (ref.contains("multilingual_decoded"))
        CHECK(tok->decode(ids, true) == ref["multilingual_decoded"].get<std::string>());
    }
    if (ref.contains("eos_token_ids") && !ref["eos_token_ids"].is_null()) {
      const Json& e = ref["eos_token_ids"];
      CHECK(tok->eos_ids() == (e.is_array() ? to_ids(e) : std::vector<std::int32_t>{e.get<std::int32_t>()}));
    }
    if (ref.contains("add_bos")) CHECK(tok->add_bos() == ref["add_bos"].get<bool>());
  }
}

// ---- checks that need no fixtures -------------------------------------------

TEST_CASE("hand-written byte-level BPE tokenizer.json") {
  TempDir d;
  d.write("tokenizer.json", sppft::test::tiny_bpe_tokenizer_json());
  d.write("tokenizer_config.json", R"({"bos_token": "<|bos|>", "eos_token": "<|eot|>"})");
  d.write("generation_config.json", R"({"eos_token_id": [267, 266]})");
  auto tok = sppft::load_tokenizer(d.path);
  CHECK(tok->kind() == "bpe");
  CHECK(tok->vocab_size() == 269);
  CHECK(tok->bos_id() == std::optional<std::int32_t>(266));
  CHECK(tok->add_bos());
  CHECK(tok->eos_ids() == std::vector<std::int32_t>{267, 266});
  CHECK(tok->is_eos(267));
  CHECK(!tok->is_eos(0));
  CHECK(tok->token_to_id("hello") == std::optional<std::int32_t>(259));
  CHECK(tok->token_to_id("<|eot|>") == std::optional<std::int32_t>(267));
  CHECK(!tok->token_to_id("nope"));
  // "hello" -> he+ll -> hell+o; " world" -> Ġw, Ġwo, Ġwor, Ġworld
  CHECK(tok->encode("hello world") == std::vector<std::int32_t>{266, 259, 265});
  CHECK(tok->encode("hello world", false) == std::vector<std::int32_t>{259, 265});
  CHECK(tok->encode("") == std::vector<std::int32_t>{266});
  CHECK(tok->encode("hello<|eot|>", false) == std::vector<std::int32_t>{259, 267});
  // lstrip: the spaces before <x> belong to it.
  CHECK(tok->encode("hello  <x>", false) == std::vector<std::int32_t>{259, 268});
  std::vector<std::int32_t> ids = {266, 259, 265, 267};
  CHECK(tok->decode(ids) == "hello world");
  CHECK(tok->decode(ids, false) == "<|bos|>hello world<|eot|>");
  // Arbitrary bytes survive a round trip; broken UTF-8 decodes to U+FFFD.
  const std::string text = "Zoë 東京 🍮\t\n  x";
  CHECK(tok->decode(tok->encode(text)) == text);
  std::vector<std::int32_t> lone = {0xE4};  // byte E4 alone
  CHECK(tok->decode(lone) == "\xEF\xBF\xBD");
  // Invalid UTF-8 in the input is replaced by U+FFFD, as Python strings would carry it.
  CHECK(tok->decode(tok->encode("a\xFF" "b", false)) == "a\xEF\xBF\xBD" "b");
  std::vector<std::int32_t> bad = {269};
  try {
    (void)tok->decode(bad);
    FAIL("no exception");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == "token id 269 outside the vocabulary (size 269)");
  }
}

TEST_CASE("encode is safe to call from several threads") {
  TempDir d;
  d.write("tokenizer.json", sppft::test::tiny_bpe_tokenizer_json());
  auto tok = sppft::load_tokenizer(d.path);
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "hello world <x> Zoë " + std::to_string(i) + "\n";
  const auto want = tok->encode(text);
  std::vector<std::vector<std::int32_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&, t] { got[static_cast<std::size_t>(t)] = tok->encode(text); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) CHECK(g == want);
}

TEST_CASE("Unicode helpers") {
  using sppft::tok::nfc;
  using sppft::tok::nfd;
  CHECK(nfc("Cafe\xCC\x81") == "Caf\xC3\xA9");                    // e + U+0301 -> é
  CHECK(nfd("Caf\xC3\xA9") == "Cafe\xCC\x81");
  CHECK(nfc("A\xCC\x8A") == "\xC3\x85");                          // A + ring -> Å
  CHECK(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // jamo -> 각
  CHECK(nfd("\xEA\xB0\x81") == "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");
  CHECK(nfc("\xE2\x84\xAB") == "\xC3\x85");                       // U+212B ANGSTROM SIGN -> Å (singleton)
  CHECK(nfc("q\xCC\xA3\xCC\x87") == "q\xCC\xA3\xCC\x87");         // no composite; order kept
  CHECK(nfc("q\xCC\x87\xCC\xA3") == "q\xCC\xA3\xCC\x87");         // canonical reordering
  CHECK(nfc("\xE1\xB8\x8B\xCC\xA3") == "\xE1\xB8\x8D\xCC\x87");   // ḋ + dot below -> ḍ + dot above
  CHECK(nfc("plain ascii") == "plain ascii");
  CHECK(sppft::tok::utf8_lossy("a\xC3" "b") == "a\xEF\xBF\xBD" "b");
  CHECK(sppft::tok::utf8_lossy("\xF0\x9F\x98") == "\xEF\xBF\xBD");  // truncated 4-byte sequence: one U+FFFD
  CHECK(sppft::tok::utf8_lossy("\xED\xA0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST_CASE("bad tokenizer inputs are InputErrors naming the file") {
  auto throws_with = [](const fs::path& dir, const std::string& needle) {
    try {
      (void)sppft::load_tokenizer(dir);
      FAIL("no exception for " << dir.string());
    } catch (const InputError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
  };
  TempDir d;
  throws_with(d.path / "missing", "not found");
  throws_with(d.path, "no tokenizer.model or tokenizer.json");

  d.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  throws_with(d.path, "tokenizer.json: malformed JSON");

  Json j = Json::parse(sppft::test::tiny_bpe_tokenizer_json());
  j["model"].erase("merges");
  d.write("tokenizer.json", j.dump());
  throws_with(d.path, "field 'model.merges' missing");

  j = Json::parse(sppft::test::tiny_bpe_tokenizer_json(R"(["h e", "x yz"])"));
  d.write("tokenizer.json", j.dump());
  throws_with(d.path, "model.merges[1]");

  j = Json::parse(sppft::test::tiny_bpe_tokenizer_json());
  j["model"]["type"] = "Unigram";
  d.write("tokenizer.json", j.dump());
  throws_with(d.path, "'model.type' is 'Unigram'");

  j = Json::parse(sppft::test::tiny_bpe_tokenizer_json());
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  d.write("tokenizer.json", j.dump());
  throws_with(d.path, "bad regex");

  j = Json::parse(sppft::test::tiny_bpe_tokenizer_json());
  j["normalizer"] = {{"type", "Lowercase"}};
  d.write("tokenizer.json", j.dump());
  throws_with(d.path, "normalizer type 'Lowercase'");

  d.write("tokenizer.json", sppft::test::tiny_bpe_tokenizer_json());
  d.write("tokenizer_config.json", "[1, 2");
  throws_with(d.path, "tokenizer_config.json: malformed JSON");
  fs::remove(d.path / "tokenizer_config.json");

  d.write("tokenizer.model", "this is not a protobuf");
  throws_with(d.path, "tokenizer.model: not a sentencepiece model");
}
