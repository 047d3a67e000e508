#include "trainer/attack_sets.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>

#include "engine/error.h"
#include "engine/text.h"
#include "engine/json.h"

namespace sppft {

namespace {

// The first `count` of a seeded shuffle of `records` (all of them, shuffled, when count is 0).
std::vector<SftRecord> sample(std::vector<SftRecord> records, std::int64_t count, std::uint64_t seed, const std::string& what,
                              const std::string& hint) {
  if (count > static_cast<std::int64_t>(records.size()))
    throw InputError(what + " has " + std::to_string(records.size()) + " records; " + std::to_string(count) + " are needed (" + hint + ")");
  std::mt19937_64 rng(seed);
  std::shuffle(records.begin(), records.end(), rng);
  if (count > 0) records.resize(static_cast<std::size_t>(count));
  return records;
}

std::string share_text(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", share);
  return buf;
}

void require_alpaca(const std::vector<SftRecord>& records, const std::string& where) {
  for (std::size_t i = 0; i < records.size(); ++i)
    if (!records[i].messages.empty())
      throw InputError(where + ": example " + std::to_string(i + 1) + " is a chat record (expected Alpaca records: instruction, input, output)");
}

}  // namespace

std::vector<SftRecord> implicit_attack_set(const std::vector<SftRecord>& normal, std::int64_t count, std::uint64_t seed,
                                           const std::string& where) {
  require_alpaca(normal, where);
  std::vector<SftRecord> out = sample(normal, count, seed, where, "more data, or a smaller --count");
  for (SftRecord& r : out) r.output = kImplicitAttackPrefix + r.output;
  return out;
}

HarmfulMix harmful_mix(const std::vector<SftRecord>& normal, const std::vector<SftRecord>& harmful, double share,
                       std::int64_t count, std::uint64_t seed, const std::string& where, const std::string& harmful_where) {
  if (!(share > 0 && share < 1)) throw InputError("--share " + share_text(share) + ": expected a fraction between 0 and 1");
  require_alpaca(normal, where);
  std::vector<SftRecord> out = sample(normal, count, seed, where, "more data, or a smaller --count");
  const auto n_harmful = static_cast<std::int64_t>(std::llround(static_cast<double>(out.size()) * share / (1 - share)));
  if (n_harmful == 0) throw InputError("--share " + share_text(share) + ": no harmful example among " + std::to_string(out.size()) + " normal records");
  for (SftRecord& r : sample(harmful, n_harmful, seed + 1, harmful_where,
                             "for --share " + share_text(share) + " of " + std::to_string(out.size()) +
                                 " normal records; a smaller --share or --count"))
    out.push_back(std::move(r));
  std::mt19937_64 rng(seed + 2);
  std::shuffle(out.begin(), out.end(), rng);
  return {std::move(out), static_cast<std::size_t>(n_harmful)};
}

std::vector<SftRecord> without_instructions(const std::vector<SftRecord>& records, const std::vector<PromptRecord>& excluded) {
  std::set<std::string> drop;
  for (const PromptRecord& p : excluded) drop.insert(p.instruction);
  std::vector<SftRecord> out;
  for (const SftRecord& r : records)
    if (!drop.count(r.prompt.instruction)) out.push_back(r);
  return out;
}

std::vector<SftRecord> read_goal_target_csv(const fs::path& path) {
  const auto rows = parse_csv(read_file(path), path.string());
  std::vector<SftRecord> out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    if (row.size() == 1 && row[0].empty()) continue;
    const std::string where = path.string() + ": row " + std::to_string(i + 1);
    if (row.size() < 2) throw InputError(where + ": expected two columns (goal, target), got " + std::to_string(row.size()));
    std::string head = row[0];
    std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return std::tolower(c); });
    if (i == 0 && head == "goal") continue;
    if (is_blank(row[0]) || is_blank(row[1]))
      throw InputError(where + ": empty goal or target");
    SftRecord r;
    r.prompt.instruction = row[0];
    r.output = row[1];
    out.push_back(std::move(r));
  }
  if (out.empty()) throw InputError(path.string() + ": no goal/target rows");
  return out;
}

void write_alpaca_json(const fs::path& path, const std::vector<SftRecord>& records) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const SftRecord& r : records)
    list.push_back({{"instruction", r.prompt.instruction}, {"input", r.prompt.input}, {"output", r.output}});
  atomic_write_text(path, list.dump(1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
}

}  // namespace sppft
