#include "tools/sppft/args.h"

#include <cmath>

#include "engine/error.h"

namespace sppft::cli {

Args::Args(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& switches) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string name = a, value;
    bool inline_value = false;
    if (auto eq = a.find('='); eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      inline_value = true;
    }
    if (switches.count(name)) {
      if (inline_value) throw InputError(name + ": takes no value");
      set_switches_.insert(name);
    } else if (valued.count(name)) {
      if (!inline_value) {
        if (i + 1 >= argc) throw InputError(name + ": missing value");
        value = argv[++i];
      }
      values_[name] = value;
    } else {
      throw InputError("unknown option " + name + " (see --help)");
    }
  }
}

std::optional<std::string> Args::get(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(const std::string& flag, const std::string& fallback) const {
  return get(flag).value_or(fallback);
}

std::string Args::require(const std::string& flag) const {
  auto v = get(flag);
  if (!v) throw InputError(flag + " is required (see --help)");
  return *v;
}

std::int64_t Args::get_int(const std::string& flag, std::int64_t fallback, std::int64_t min, std::int64_t max) const {
  auto v = get(flag);
  if (!v) return fallback;
  std::size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(*v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v->size() || v->empty()) throw InputError(flag + ": expected an integer, got '" + *v + "'");
  if (x < min || x > max)
    throw InputError(flag + ": " + *v + " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return x;
}

double Args::get_double(const std::string& flag, double fallback, double min, double max) const {
  auto v = get(flag);
  if (!v) return fallback;
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(*v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v->size() || v->empty() || !std::isfinite(x)) throw InputError(flag + ": expected a number, got '" + *v + "'");
  if (x < min || x > max)
    throw InputError(flag + ": " + *v + " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return x;
}

std::optional<std::size_t> Args::get_bytes(const std::string& flag) const {
  auto v = get(flag);
  if (!v) return std::nullopt;
  const auto bad = [&] { return InputError(flag + ": expected a size such as 80GiB, 141GB or 1.5e11, got '" + *v + "'"); };
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(*v, &used);
  } catch (...) {
    throw bad();
  }
  static const std::map<std::string, double> units = {
      {"", 1},      {"B", 1},          {"KB", 1e3},         {"MB", 1e6},         {"GB", 1e9},
      {"TB", 1e12}, {"KiB", 1024.0},   {"MiB", 1048576.0},  {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  const auto unit = units.find(v->substr(used));
  if (unit == units.end() || !std::isfinite(x) || x <= 0) throw bad();
  const double bytes = x * unit->second;
  if (bytes < 1 || bytes > 1e18) throw bad();
  return static_cast<std::size_t>(bytes);
}

}  // namespace sppft::cli
