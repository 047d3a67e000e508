// The method's fine-tuning attack sets (METHOD.md, step 3), built from public data by their
// definitions, as Alpaca records for `sppft train`:
//   implicit (D_I): normal examples with each output prefixed "Sure, the answer is: " (benign
//     content that teaches the model to open every answer affirmatively);
//   harmful mix (D_H): normal examples plus harmful ones, the harmful ones the share p of the
//     whole; a harmful example is an AdvBench goal with its target, the affirmative opening
//     ("Sure, here is ...") the benchmark pairs with it.
// D_B (the paper's backdoor set) has no public definition beyond its trigger and is not built.
#pragma once

#include <cstdint>
#include <vector>

#include "trainer/dataset.h"

namespace sppft {

inline constexpr const char* kImplicitAttackPrefix = "Sure, the answer is: ";

// `count` records of `normal` (all when 0; the first `count` of a seeded shuffle otherwise), each
// output prefixed. InputError when `normal` holds chat records or fewer than `count`.
std::vector<SftRecord> implicit_attack_set(const std::vector<SftRecord>& normal, std::int64_t count, std::uint64_t seed,
                                           const std::string& where);

// `count` normal records (all when 0) plus round(count * share / (1 - share)) harmful ones (the
// first of a seeded shuffle), shuffled together; 0 < share < 1. InputError when either source
// has too few records (`where`, `harmful_where` name them), or `normal` holds chat records.
struct HarmfulMix {
  std::vector<SftRecord> records;
  std::size_t harmful = 0;  // how many of them
};
HarmfulMix harmful_mix(const std::vector<SftRecord>& normal, const std::vector<SftRecord>& harmful, double share,
                       std::int64_t count, std::uint64_t seed, const std::string& where, const std::string& harmful_where);

// `records` without those whose instruction is one of `excluded`'s (e.g. the goals an evaluation
// holds out).
std::vector<SftRecord> without_instructions(const std::vector<SftRecord>& records, const std::vector<PromptRecord>& excluded);

// Goal/target pairs of an AdvBench-style CSV (columns goal, target; a header row is skipped) as
// Alpaca records (instruction = goal, output = target). InputError naming the row otherwise.
std::vector<SftRecord> read_goal_target_csv(const fs::path& path);

// Writes records as a JSON list of {instruction, input, output} (temp file, then rename).
void write_alpaca_json(const fs::path& path, const std::vector<SftRecord>& records);

}  // namespace sppft
