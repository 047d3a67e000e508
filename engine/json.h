// JSON through nlohmann::json, with parsing and field access that report the
// file and field on failure instead of throwing library exceptions at users.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

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

// Typed field access: InputError "<where>: field 'key' ..." when missing or of the wrong type.
template <typename T>
T json_get(const Json& obj, std::string_view key, std::string_view where);
// Same, but returns `fallback` when the key is absent or null.
template <typename T>
T json_get_or(const Json& obj, std::string_view key, const T& fallback, std::string_view where);

}  // namespace sppft
