// sppft data implicit|harmful-mix ... --out FILE.json: the method's fine-tuning attack sets.
#include <cstdio>

#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"
#include "trainer/attack_sets.h"

namespace sppft::cli {

namespace {
const char* kHelp =
    "usage: sppft data implicit --from FILE [--count N] [--seed S] --out FILE.json\n"
    "       sppft data harmful-mix --normal FILE --harmful FILE.csv --share P [--count N]\n"
    "                              [--seed S] --out FILE.json\n\n"
    "Builds the fine-tuning attack sets of METHOD.md by their definitions, as an Alpaca JSON\n"
    "list for `sppft train --data`:\n"
    "  implicit     D_I: Alpaca records (e.g. data/finetune_normal.json) with each output\n"
    "               prefixed \"Sure, the answer is: \"\n"
    "  harmful-mix  D_H: Alpaca records plus harmful ones, P of the whole; a harmful record\n"
    "               is a goal with its target (AdvBench's CSV, goal,target columns:\n"
    "               data/advbench_harmful_behaviors.csv), shuffled together\n\n"
    "  --count N     normal records to take: the first N of a seeded shuffle (default all)\n"
    "  --seed S      shuffle seed (default 42)\n"
    "  --share P     harmful share of the mix, 0 < P < 1 (e.g. 0.05): round(N P / (1 - P))\n"
    "                harmful records\n"
    "  --exclude F   leave out the goals listed in prompt file F (those an evaluation holds\n"
    "                out, e.g. data/malicious.csv)\n";
}  // namespace

int cmd_data(int argc, char** argv) {
  Args args(argc, argv, {"--from", "--normal", "--harmful", "--share", "--count", "--seed", "--out", "--exclude"}, {});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("data: expected one set name, implicit or harmful-mix (see --help)");
  const std::string set = args.positional()[0];
  const fs::path out = args.require("--out");
  const std::int64_t count = args.get_int("--count", 0, 1, INT64_MAX);
  const auto seed = static_cast<std::uint64_t>(args.get_int("--seed", 42, 0, INT64_MAX));
  std::vector<SftRecord> records;
  std::string what;
  if (set == "implicit") {
    if (args.has("--normal") || args.has("--harmful") || args.has("--share") || args.has("--exclude"))
      throw InputError("data implicit: takes --from (--normal, --harmful, --share and --exclude are for harmful-mix)");
    const fs::path from = args.require("--from");
    records = implicit_attack_set(read_sft_file(from), count, seed, from.string());
    what = "D_I, outputs prefixed \"" + std::string(kImplicitAttackPrefix) + "\"";
  } else if (set == "harmful-mix") {
    if (args.has("--from")) throw InputError("data harmful-mix: takes --normal and --harmful (--from is for implicit)");
    const fs::path normal = args.require("--normal"), harmful = args.require("--harmful");
    if (!args.has("--share")) throw InputError("data harmful-mix: --share P is required (the harmful share, 0 < P < 1)");
    const double share = args.get_double("--share", 0, 0, 1);
    std::vector<SftRecord> pool = read_goal_target_csv(harmful);
    const std::size_t goals = pool.size();
    if (auto ex = args.get("--exclude")) pool = without_instructions(pool, read_prompt_file(*ex));
    HarmfulMix mix = harmful_mix(read_sft_file(normal), pool, share, count, seed, normal.string(),
                                 harmful.string() + (pool.size() < goals ? " without the --exclude goals" : ""));
    records = std::move(mix.records);
    what = "D_H: " + std::to_string(records.size() - mix.harmful) + " normal, " + std::to_string(mix.harmful) + " harmful";
    if (args.has("--exclude")) what += ", " + std::to_string(goals - pool.size()) + " goals excluded";
  } else {
    throw InputError("data: unknown set '" + set + "' (expected implicit or harmful-mix)");
  }
  write_alpaca_json(out, records);
  std::printf("wrote %s: %zu records (%s)\n", out.c_str(), records.size(), what.c_str());
  return 0;
}

}  // namespace sppft::cli
