#include "analysis/rouge.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>

namespace sppft {

std::vector<std::string> rouge_tokenize(std::string_view text) {
  std::vector<std::string> tokens;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) tokens.push_back(std::move(cur));
    cur.clear();
  };
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 'a' && c <= 'z') {
      cur.push_back(static_cast<char>(c));
      ++i;
    } else if (c >= 'A' && c <= 'Z') {
      cur.push_back(static_cast<char>(c - 'A' + 'a'));
      ++i;
    } else if (c >= '0' && c <= '9') {
      cur.push_back(static_cast<char>(c));
      ++i;
    } else if (c == 0xC4 && i + 1 < n && static_cast<unsigned char>(text[i + 1]) == 0xB0) {
      // U+0130 lowercases to "i" U+0307: the "i" joins the token, the combining dot splits.
      cur.push_back('i');
      flush();
      i += 2;
    } else if (c == 0xE2 && i + 2 < n && static_cast<unsigned char>(text[i + 1]) == 0x84 &&
               static_cast<unsigned char>(text[i + 2]) == 0xAA) {
      // U+212A KELVIN SIGN lowercases to ASCII "k".
      cur.push_back('k');
      i += 3;
    } else {
      // Anything else (ASCII punctuation/space, any other code point, stray bytes) separates.
      // Lead bytes 0xC4 / 0xE2 never occur inside another UTF-8 sequence, so skipping one
      // byte at a time cannot misread the two special cases.
      flush();
      ++i;
    }
  }
  flush();
  return tokens;
}

std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  if (a.empty() || b.empty()) return 0;
  // Map tokens to small integers so the inner loop compares ints.
  std::unordered_map<std::string_view, std::uint32_t> ids;
  auto intern = [&](const std::vector<std::string>& v) {
    std::vector<std::uint32_t> out;
    out.reserve(v.size());
    for (const auto& t : v) out.push_back(ids.try_emplace(t, static_cast<std::uint32_t>(ids.size())).first->second);
    return out;
  };
  std::vector<std::uint32_t> x = intern(a), y = intern(b);
  if (x.size() < y.size()) std::swap(x, y);  // y is the shorter: one row of |y| + 1
  std::vector<std::size_t> row(y.size() + 1, 0);
  for (std::uint32_t xi : x) {
    std::size_t diag = 0;  // row[j - 1] of the previous row
    for (std::size_t j = 1; j <= y.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = xi == y[j - 1] ? diag + 1 : std::max(up, row[j - 1]);
      diag = up;
    }
  }
  return row.back();
}

RougeL rouge_l(std::string_view candidate, std::string_view reference) {
  const auto c = rouge_tokenize(candidate);
  const auto r = rouge_tokenize(reference);
  RougeL out;
  if (c.empty() || r.empty()) return out;
  const double lcs = static_cast<double>(lcs_length(c, r));
  out.precision = lcs / static_cast<double>(c.size());
  out.recall = lcs / static_cast<double>(r.size());
  out.f1 = out.precision + out.recall > 0 ? 2 * out.precision * out.recall / (out.precision + out.recall) : 0.0;
  return out;
}

}  // namespace sppft
