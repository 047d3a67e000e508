// Whitespace and field helpers shared by the readers of user files and replies. Whitespace is
// the C locale's: space, \t, \n, \v, \f, \r.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace sppft {

inline constexpr std::string_view kWhitespace = " \t\n\v\f\r";

// ASCII letters lowered, every other byte as it is (UTF-8 stays intact).
inline std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

inline bool is_blank(std::string_view s) { return s.find_first_not_of(kWhitespace) == std::string_view::npos; }

inline std::string_view trim(std::string_view s) {
  const std::size_t b = s.find_first_not_of(kWhitespace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kWhitespace) - b + 1);
}

// The fields between separators, empty ones included ("a,,b" -> a, "", b; "" -> one empty field).
inline std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> fields;
  for (std::size_t pos = 0;;) {
    const std::size_t end = s.find(sep, pos);
    fields.push_back(s.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    if (end == std::string_view::npos) return fields;
    pos = end + 1;
  }
}

// printf into a std::string (numbers in the C locale's formats).
template <typename... Args>
std::string printf_string(const char* format, Args... args) {
  const int n = std::snprintf(nullptr, 0, format, args...);
  std::string s(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  std::snprintf(s.data(), s.size() + 1, format, args...);
  return s;
}

}  // namespace sppft
