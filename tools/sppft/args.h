// A small flag parser for the subcommands: positionals, `--name value`,
// `--name=value` and boolean switches. Unknown flags are errors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace sppft::cli {

class Args {
 public:
  // `valued`: flags that take a value; `switches`: boolean flags.
  Args(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& switches);

  bool help() const { return help_; }
  const std::vector<std::string>& positional() const { return positional_; }
  bool has(const std::string& flag) const { return values_.count(flag) || set_switches_.count(flag); }
  std::optional<std::string> get(const std::string& flag) const;
  std::string get_or(const std::string& flag, const std::string& fallback) const;
  std::string require(const std::string& flag) const;
  std::int64_t get_int(const std::string& flag, std::int64_t fallback, std::int64_t min, std::int64_t max) const;
  double get_double(const std::string& flag, double fallback, double min, double max) const;
  // A size in bytes: a number with an optional unit, B, KB/MB/GB/TB (powers of 1000) or
  // KiB/MiB/GiB/TiB (powers of 1024), e.g. 141GB, 80GiB, 1.5e11. Zero and negatives are refused.
  std::optional<std::size_t> get_bytes(const std::string& flag) const;

 private:
  bool help_ = false;
  std::vector<std::string> positional_;
  std::map<std::string, std::string> values_;
  std::set<std::string> set_switches_;
};

}  // namespace sppft::cli
