// sppft locate DIR --over-rejection FILE --out OUTDIR: step 2 of the method.
#include <cstdio>

#include "analysis/cossim.h"
#include "analysis/judge.h"
#include "analysis/locate.h"
#include "analysis/plots.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft locate DIR --over-rejection FILE --out OUTDIR [options]\n\n"
    "Pins the safety layers by scaling candidate blocks' weights by alpha and counting\n"
    "over-rejections (greedy, --template): the baseline R_o, an upper-bound sweep\n"
    "[i, j+k] and a lower-bound sweep [i-k, j'] (argmax of R_o for alpha > 1, argmin for\n"
    "alpha < 1). Writes OUTDIR/locate.json, locate.md (the paper's Table 1), locate.svg\n"
    "and every response in responses.jsonl.\n\n"
    "  --initial i-j | auto    initial range (auto: from OUTDIR/cossim.json or --cossim)\n"
    "  --cossim FILE           cossim.json to take the initial range from\n"
    "  --alpha A | auto        scaling factor (auto: METHOD.md's rule, default)\n"
    "  --window W              candidates per sweep (default 5)\n"
    "  --max-new-tokens N      tokens generated per query (default 16)\n"
    "  --scale-o-proj          also scale o_proj (the authors' code did not)\n"
    "  --judge J               auto (default: the family's prefix list, else keyword) |\n"
    "                          prefix | keyword (AdvBench substrings) | FILE\n"
    "  --limit N               only the first N queries (quick looks)\n"
    "  --batch-size B          prompts per prefill chunk (default 32)\n") + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_locate(int argc, char** argv) {
  Args args(argc, argv,
            {"--device", "--over-rejection", "--out", "--initial", "--cossim", "--alpha", "--window", "--max-new-tokens", "--judge",
             "--limit", "--batch-size", "--template", "--chat-template-kwargs"},
            {"--scale-o-proj"});
  if (args.help()) {
    std::fputs(kHelp.c_str(), stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("locate: expected one checkpoint directory (see --help)");
  const fs::path out = args.require("--out");
  auto queries = read_prompt_file(args.require("--over-rejection"));
  const auto limit = args.get_int("--limit", 0, 0, INT64_MAX);
  if (limit > 0 && static_cast<std::int64_t>(queries.size()) > limit) queries.resize(limit);
  LocateOptions o;
  o.tmpl = parse_template(args.get_or("--template", "alpaca"));
  const auto chat_kwargs = chat_template_kwargs_option(args, o.tmpl);
  auto model = Model::load(args.positional()[0]);
  place_model(*model, args);
  model->set_chat_template_kwargs(chat_kwargs);
  const std::int64_t L = model->config().num_layers;
  const std::string initial = args.get_or("--initial", "auto");
  if (initial == "auto") {
    const fs::path cs = args.get_or("--cossim", (out / "cossim.json").string());
    if (!fs::exists(cs)) throw InputError("--initial auto: " + cs.string() + " not found (run sppft cossim first, or give --initial i-j)");
    const auto range = initial_range_of(read_json_file(cs), cs.string());
    if (!range) throw InputError(cs.string() + ": no initial_range (the cosine analysis found no gap); give --initial i-j");
    o.initial = *range;
  } else {
    auto r = parse_layer_ranges(initial, L, "--initial");
    if (r.size() != 1) throw InputError("--initial: expected one range i-j");
    o.initial = r[0];
  }
  const std::string alpha = args.get_or("--alpha", "auto");
  o.alpha = alpha == "auto" ? 0.0 : args.get_double("--alpha", 0, 1e-9, 100.0);
  o.window = args.get_int("--window", 5, 1, L);
  o.max_new_tokens = args.get_int("--max-new-tokens", 16, 1, 4096);
  o.scale_o_proj = args.has("--scale-o-proj");
  o.batch_size = args.get_int("--batch-size", 32, 1, 4096);
  const Judge judge = load_judge(args.get_or("--judge", "auto"), judge_family(*model));
  ensure_directory(out);
  std::string responses;
  auto sink = [&](const std::string& setting, std::size_t q, const std::string& text, bool refused) {
    responses += Json{{"setting", setting}, {"query", queries[q].instruction}, {"response", text}, {"refused", refused},
                      {"judge", judge.name}}.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
  };
  LocateResult r = locate_safety_layers(*model, queries, judge, o, sink, [](const std::string& s) { std::fprintf(stderr, "locate: %s\n", s.c_str()); });
  Json j = r.to_json();
  j["model"] = args.positional()[0];
  j["initial"] = {o.initial.first, o.initial.last};
  j["scale_o_proj"] = o.scale_o_proj;
  j["max_new_tokens"] = o.max_new_tokens;
  atomic_write_text(out / "locate.json", j.dump(2) + "\n");
  atomic_write_text(out / "responses.jsonl", responses);
  const std::string table = r.table_markdown();
  atomic_write_text(out / "locate.md", "# Safety-layer localization: " + args.positional()[0] + "\n\n" + table);
  write_locate_svg(r, out / "locate.svg", args.positional()[0]);
  std::printf("%s", table.c_str());
  std::printf("wrote %s/locate.{json,md,svg}, responses.jsonl (%.1f s)\n", out.c_str(), r.seconds);
  return 0;
}

}  // namespace sppft::cli
