// JSON through nlohmann::json, with parsing and field access that report the
// file and field on failure instead of throwing library exceptions at users.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.h"
#include "engine/fs.h"

namespace sppft {

using Json = nlohmann::json;

// Parses `text`; InputError "<where>: malformed JSON: ..." on failure.
Json parse_json(std::string_view text, std::string_view where);
// read_file + parse_json.
Json read_json_file(const fs::path& path);

// JSON Lines: one value per line, blank lines skipped, each with its 1-based line number;
// InputError "<where>: line N: malformed JSON ..." on failure.
struct JsonLine {
  std::size_t line;
  Json value;
};
std::vector<JsonLine> parse_json_lines(std::string_view text, std::string_view where);

// The value as integer type T: a JSON integer, or a float that is a whole number, inside T's
// range; nullopt otherwise (nlohmann's get<T> would wrap or truncate silently).
template <typename T>
std::optional<T> json_integer(const Json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return std::nullopt;
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if (i < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
        i > static_cast<std::int64_t>(std::numeric_limits<T>::max()))
      return std::nullopt;
    return static_cast<T>(i);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // Whole and strictly inside the range (the bounds as doubles may round up past it).
    if (!(d == std::floor(d) && d >= static_cast<double>(std::numeric_limits<T>::min()) &&
          d < static_cast<double>(std::numeric_limits<T>::max())))
      return std::nullopt;
    return static_cast<T>(d);
  }
  return std::nullopt;
}

// Token ids as Hugging Face configs write them (eos_token_id, bos_token_id): absent (null) for
// none, one integer, or a list of integers, each as json_integer<T> takes it. InputError
// "<where>: field '<field>' must be an integer or a list of integers" otherwise.
template <typename T>
std::vector<T> json_integer_list(const Json& v, std::string_view where, std::string_view field) {
  std::vector<T> out;
  if (v.is_null()) return out;
  for (const Json& x : v.is_array() ? v : Json::array({v})) {
    const auto id = json_integer<T>(x);
    if (!id)
      throw InputError(std::string(where) + ": field '" + std::string(field) + "' must be an integer or a list of integers");
    out.push_back(*id);
  }
  return out;
}

// Typed field access: InputError "<where>: field 'key' ..." when missing or of the wrong type.
// Integer types take JSON integers (and floats that are whole numbers) inside their range only.
template <typename T>
T json_get(const Json& obj, std::string_view key, std::string_view where);
// Same, but returns `fallback` when the key is absent or null.
template <typename T>
T json_get_or(const Json& obj, std::string_view key, const T& fallback, std::string_view where);
// The value at a JSON pointer ("/measured_peak/grads", "/initial_range/0") with json_get's checks,
// for documents read back whole (sppft's own outputs): InputError "<where>: missing field
// 'measured_peak/grads'" when any step of the path is absent or null, or of the wrong type.
template <typename T>
T json_at(const Json& doc, std::string_view pointer, std::string_view where);

}  // namespace sppft
