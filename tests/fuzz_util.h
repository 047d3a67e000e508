// Mutation testing of the files users hand sppft, and of those it reads back: seeded mutators
// for JSON documents, text and safetensors files, and the check every read must pass (success,
// or an InputError of one line naming the file). Used by tests/engine/malformed_input_test.cpp
// and tests/analysis/malformed_outputs_test.cpp.
//
// SPPFT_FUZZ_ITERATIONS=N sets the mutations per target (default 300); SPPFT_FUZZ_SEED=S the seed.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include "engine/error.h"
#include "engine/fs.h"
#include "engine/json.h"

namespace sppft::test {

namespace fs = std::filesystem;

inline int iterations() {
  const char* v = std::getenv("SPPFT_FUZZ_ITERATIONS");
  return v && *v ? std::max(1, std::atoi(v)) : 300;
}

inline std::uint64_t base_seed() {
  const char* v = std::getenv("SPPFT_FUZZ_SEED");
  return v && *v ? std::strtoull(v, nullptr, 10) : 20261130;
}

inline const std::vector<std::string> kJsonTokens = {"{", "}", "[", "]", ",", ":", "\"", "\\", "-", "0", "1e999",
                                              "null", "true", "\\u0000", "\xff", "\xc3"};

// Structural and byte-level mutations of JSON documents and text.
class Mutator {
 public:
  explicit Mutator(std::uint64_t seed) : rng_(seed) {}

  std::size_t below(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
  bool chance(int percent) { return static_cast<int>(below(100)) < percent; }

  // Values that break assumptions: wrong types, zero, negatives, limits of every integer width.
  Json nasty_value() {
    static const Json kValues = Json::parse(R"([
      null, false, true, 0, -1, 1, 2, 3, 7, 65536, 2147483647, 2147483648, 4294967296,
      9223372036854775807, -9223372036854775808, 18446744073709551615, 1e300, -1e300, 0.5, -0.0, 1e-300,
      "", "x", "F32", "BF16", "I64", "<s>", "{{", [], [0], [1, 2], [-1], [[]], {}, {"a": 1}, {"type": null}
    ])");
    if (chance(3)) return Json(std::string(100000, 'a'));  // a long string
    return kValues[below(kValues.size())];
  }

  // One change at a random node of `doc`: replaced by a nasty value or by a copy of another node
  // (type confusion with realistic shapes), erased, or duplicated inside its array.
  void mutate_json(Json& doc) {
    std::vector<Json*> nodes;
    collect(doc, nodes);
    Json* node = nodes[below(nodes.size())];
    const std::size_t op = below(4);
    if (op == 0 || node == &doc) {
      *node = nasty_value();
    } else if (op == 1) {
      *node = Json(*nodes[below(nodes.size())]);
    } else if (op == 2 || op == 3) {
      // Erase an entry, or duplicate one, of the node's parent container.
      Json* parent = parent_of(doc, node);
      if (parent && parent->is_object()) {
        for (auto it = parent->begin(); it != parent->end(); ++it)
          if (&*it == node) {
            if (op == 2) {
              parent->erase(it);
            } else {
              (*parent)[it.key() + "_"] = *node;
            }
            break;
          }
      } else if (parent && parent->is_array()) {
        for (std::size_t i = 0; i < parent->size(); ++i)
          if (&(*parent)[i] == node) {
            if (op == 2) {
              parent->erase(i);
            } else {
              parent->insert(parent->begin() + static_cast<std::ptrdiff_t>(i), Json(*node));
            }
            break;
          }
      } else {
        *node = nasty_value();
      }
    }
  }

  // One byte-level change: flip, insert, delete or duplicate a span, insert a structural token,
  // or truncate.
  std::string mutate_text(std::string s, const std::vector<std::string>& tokens) {
    const std::size_t op = below(6);
    const std::size_t at = below(s.size() + 1);
    if (op == 0 && !s.empty()) {
      s[std::min(at, s.size() - 1)] = static_cast<char>(below(256));
    } else if (op == 1) {
      s.insert(at, tokens[below(tokens.size())]);
    } else if (op == 2) {
      s.erase(at, 1 + below(16));
    } else if (op == 3) {
      const std::size_t len = 1 + below(32);
      s.insert(at, s.substr(below(s.size() + 1), len));
    } else if (op == 4) {
      s.resize(at);
    } else {
      s.insert(at, std::to_string(static_cast<std::int64_t>(rng_())));
    }
    return s;
  }

  // 1-3 structural changes to `doc` (`structural_percent` of the time), else one byte-level
  // change to its text, after which `doc` is discarded (the text no longer is that document).
  std::string mutate_document(Json& doc, int structural_percent) {
    if (chance(structural_percent)) {
      for (std::size_t k = 0, n = 1 + below(3); k < n; ++k) mutate_json(doc);
      return doc.dump();
    }
    std::string text = mutate_text(doc.dump(), kJsonTokens);
    doc = Json(Json::value_t::discarded);
    return text;
  }

 private:
  static void collect(Json& j, std::vector<Json*>& out) {
    out.push_back(&j);
    if (j.is_structured())
      for (auto& child : j) collect(child, out);
  }
  static Json* parent_of(Json& j, const Json* node) {
    if (!j.is_structured()) return nullptr;
    for (auto& child : j) {
      if (&child == node) return &j;
      if (Json* p = parent_of(child, node)) return p;
    }
    return nullptr;
  }
  std::mt19937_64 rng_;
};

// What the reads of one target came to.
struct Tally {
  int accepted = 0, rejected = 0;
};

// Runs `read` on one mutated input (in file `input`); an InputError must be one line and mention
// `needle` (the file's name). Anything else thrown fails. A failing input is kept as
// `input`.failed-N.
template <typename Read>
void expect_input_error_or_success(Tally& tally, const std::string& target, int iteration,
                                   const fs::path& input, const std::string& needle, Read&& read) {
  std::string problem;
  try {
    read();
    ++tally.accepted;
  } catch (const InputError& e) {
    ++tally.rejected;
    const std::string what = e.what();
    if (what.find('\n') != std::string::npos) problem = "error message over several lines: " + what;
    if (what.find(needle) == std::string::npos) problem = "error does not name '" + needle + "': " + what;
  } catch (const std::exception& e) {
    ++tally.rejected;
    problem = std::string(typeid(e).name()) + " instead of an InputError: " + e.what();
  }
  if (problem.empty()) return;
  const fs::path kept = input.string() + ".failed-" + std::to_string(iteration);
  fs::copy_file(input, kept, fs::copy_options::overwrite_existing);
  FAIL_CHECK(target << " #" << iteration << ": " << problem << " (input: " << kept.string() << ")");
}

inline std::string bytes_of(const fs::path& p) { return sppft::read_file(p); }

inline void write_bytes(const fs::path& p, const std::string& bytes) { sppft::atomic_write_text(p, bytes); }

// A safetensors file's pieces: the JSON header and the data after it.
struct SafetensorsParts {
  Json header;
  std::string data;
};

inline SafetensorsParts split_safetensors(const std::string& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {Json::parse(file.substr(8, n)), file.substr(8 + n)};
}

inline std::string join_safetensors(const std::string& header, const std::string& data) {
  const std::uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

}  // namespace sppft::test
