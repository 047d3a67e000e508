#include "engine/json.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "engine/error.h"
#include "engine/text.h"

namespace sppft {

namespace {
// nlohmann's message without its "[json.exception.out_of_range.406] " prefix.
std::string json_error_text(const Json::exception& e) {
  const std::string what = e.what();
  const std::size_t close = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && close != std::string::npos ? what.substr(close + 2) : what;
}
}  // namespace

Json parse_json(std::string_view text, std::string_view where) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    throw InputError(std::string(where) + ": malformed JSON (byte " + std::to_string(e.byte) + ")");
  } catch (const Json::exception& e) {  // a number too large for a double
    throw InputError(std::string(where) + ": malformed JSON (" + json_error_text(e) + ")");
  }
}

Json read_json_file(const fs::path& path) { return parse_json(read_file(path), path.string()); }

std::vector<JsonLine> parse_json_lines(std::string_view text, std::string_view where) {
  std::vector<JsonLine> out;
  std::size_t start = 0, line = 0;
  while (start < text.size()) {
    const std::size_t end = std::min(text.find('\n', start), text.size());
    ++line;
    const std::string_view l = text.substr(start, end - start);
    if (!is_blank(l))
      out.push_back({line, parse_json(l, std::string(where) + ": line " + std::to_string(line))});
    start = end + 1;
  }
  return out;
}

namespace {
// The value as JSON for an error message, cut to about 40 characters.
std::string json_excerpt(const Json& v) {
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// `v` (field `field` of `where`) as T. Integer types take whole numbers inside their range;
// numbers are not taken from booleans (nlohmann would read true as 1).
template <typename T>
T json_as(const Json& v, std::string_view field, std::string_view where) {
  const auto wrong_type = [&] {
    return InputError(std::string(where) + ": field '" + std::string(field) + "' has the wrong type (" + v.type_name() + ")");
  };
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (auto i = json_integer<T>(v)) return *i;
    if (!v.is_number()) throw wrong_type();
    throw InputError(std::string(where) + ": field '" + std::string(field) + "' must be an integer from " +
                     std::to_string(std::numeric_limits<T>::min()) + " to " +
                     std::to_string(std::numeric_limits<T>::max()) + ", got " + json_excerpt(v));
  } else {
    if constexpr (std::is_floating_point_v<T>)
      if (!v.is_number()) throw wrong_type();
    try {
      return v.get<T>();
    } catch (const Json::exception&) {
      throw wrong_type();
    }
  }
}
}  // namespace

template <typename T>
T json_get(const Json& obj, std::string_view key, std::string_view where) {
  if (!obj.is_object()) throw InputError(std::string(where) + ": expected a JSON object");
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null())
    throw InputError(std::string(where) + ": missing field '" + std::string(key) + "'");
  return json_as<T>(*it, key, where);
}

template <typename T>
T json_at(const Json& doc, std::string_view pointer, std::string_view where) {
  const Json::json_pointer path{std::string(pointer)};
  const std::string field(pointer.substr(pointer.empty() ? 0 : 1));
  if (!doc.contains(path) || doc.at(path).is_null()) throw InputError(std::string(where) + ": missing field '" + field + "'");
  return json_as<T>(doc.at(path), field, where);
}

template <typename T>
T json_get_or(const Json& obj, std::string_view key, const T& fallback, std::string_view where) {
  if (!obj.is_object()) throw InputError(std::string(where) + ": expected a JSON object");
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return fallback;
  return json_get<T>(obj, key, where);
}

#define SPPFT_JSON_INSTANTIATE(T)                                                   \
  template T json_get<T>(const Json&, std::string_view, std::string_view);         \
  template T json_get_or<T>(const Json&, std::string_view, const T&, std::string_view); \
  template T json_at<T>(const Json&, std::string_view, std::string_view);
SPPFT_JSON_INSTANTIATE(bool)
SPPFT_JSON_INSTANTIATE(int)
SPPFT_JSON_INSTANTIATE(std::int64_t)
SPPFT_JSON_INSTANTIATE(double)
SPPFT_JSON_INSTANTIATE(std::string)
SPPFT_JSON_INSTANTIATE(Json)
SPPFT_JSON_INSTANTIATE(std::vector<std::int64_t>)
SPPFT_JSON_INSTANTIATE(std::vector<double>)
SPPFT_JSON_INSTANTIATE(std::vector<std::string>)
#undef SPPFT_JSON_INSTANTIATE

}  // namespace sppft
