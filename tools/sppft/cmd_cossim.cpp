// sppft cossim DIR --normal N.csv --malicious M.csv --out OUTDIR: step 1 of the method.
#include <chrono>
#include <cstdio>

#include "analysis/cossim.h"
#include "analysis/plots.h"
#include "engine/error.h"
#include "engine/progress.h"
#include "models/hidden.h"
#include "models/prompting.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft cossim DIR --normal N.csv --malicious M.csv --out OUTDIR [options]\n\n"
    "Runs every query once (batched), takes its last-token state after every block, and\n"
    "compares r pairs per type (N-N, M-M, N-M): per layer the mean and std of the cosine\n"
    "and the mean angle gap (N-M minus N-N, degrees). Writes OUTDIR/cossim.json, .csv and\n"
    ".svg, and proposes the initial safety-layer range (METHOD.md's heuristic).\n\n"
    "  --pairs R            pairs drawn per type (default 500)\n"
    "  --seed S             added to the start seeds 10 / 100 / 1000 (default 0)\n"
    "  --threshold T        mean_NN - mean_NM that starts the gap (default 0.05)\n"
    "  --template T         alpaca (default, as the paper) | chat | none\n"
    "  --authors-final-norm use the final-normed state for the last block, as the\n"
    "                       authors' Hugging Face tuple did (default: raw block output)\n"
    "  --batch-size B       prompts per forward (default 32)\n") + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_cossim(int argc, char** argv) {
  Args args(argc, argv, {"--device", "--normal", "--malicious", "--out", "--pairs", "--seed", "--threshold", "--template", "--chat-template-kwargs", "--batch-size"},
            {"--authors-final-norm"});
  if (args.help()) {
    std::fputs(kHelp.c_str(), stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("cossim: expected one checkpoint directory (see --help)");
  CosSimOptions o;
  o.pairs = args.get_int("--pairs", 500, 1, 10000000);
  o.seed = static_cast<std::uint64_t>(args.get_int("--seed", 0, 0, INT64_MAX));
  o.threshold = args.get_double("--threshold", 0.05, 0.0, 2.0);
  o.authors_final_norm = args.has("--authors-final-norm");
  const fs::path out = args.require("--out");
  auto normal = read_prompt_file(args.require("--normal"));
  auto malicious = read_prompt_file(args.require("--malicious"));
  if (normal.size() < 2) throw InputError("--normal: " + std::to_string(normal.size()) + " query, need at least 2");
  if (malicious.size() < 2) throw InputError("--malicious: " + std::to_string(malicious.size()) + " query, need at least 2");
  const PromptTemplate tmpl = parse_template(args.get_or("--template", "alpaca"));
  const auto chat_kwargs = chat_template_kwargs_option(args, tmpl);
  const auto batch = args.get_int("--batch-size", 32, 1, 4096);
  ensure_directory(out);
  const auto t0 = std::chrono::steady_clock::now();
  auto model = Model::load(args.positional()[0]);
  place_model(*model, args);
  model->set_chat_template_kwargs(chat_kwargs);
  auto states = [&](const std::vector<PromptRecord>& set, const char* label) {
    std::vector<std::vector<std::int32_t>> ids;
    for (const auto& r : set) ids.push_back(encode_prompt(*model, r, tmpl));
    Progress bar(label, ids.size(), "queries");
    auto hs = capture_hidden_states(*model, ids, batch, [&](std::size_t d, std::size_t) { bar.update(d); });
    bar.finish();
    return hs;
  };
  HiddenStates n = states(normal, "normal"), m = states(malicious, "malicious");
  CosSimResult r = cosine_analysis(n.states, n.final_normed, m.states, m.final_normed, o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Json j = r.to_json(o);
  j["model"] = args.positional()[0];
  j["normal_queries"] = normal.size();
  j["malicious_queries"] = malicious.size();
  j["template"] = args.get_or("--template", "alpaca");
  if (!chat_kwargs.empty()) j["chat_template_kwargs"] = Json::parse(chat_kwargs.dump());
  j["seconds"] = secs;
  atomic_write_text(out / "cossim.json", j.dump(2) + "\n");
  atomic_write_text(out / "cossim.csv", r.to_csv());
  write_cossim_svg(r, out / "cossim.svg", args.positional()[0]);
  std::printf("%5s %9s %9s %9s %9s\n", "layer", "N-N", "M-M", "N-M", "gap(deg)");
  for (std::size_t k = 0; k < r.layers.size(); ++k)
    std::printf("%5lld %9.4f %9.4f %9.4f %9.2f%s\n", (long long)r.layers[k], r.nn_mean[k], r.mm_mean[k], r.nm_mean[k],
                r.gap_deg[k], r.found && (std::int64_t)k >= r.initial.first && (std::int64_t)k <= r.initial.last ? "  <" : "");
  std::printf("initial range: %s\n  %s\n", r.found ? (std::to_string(r.initial.first) + "-" + std::to_string(r.initial.last)).c_str() : "none",
              r.reasoning.c_str());
  std::printf("wrote %s/cossim.{json,csv,svg} (%.1f s)\n", out.c_str(), secs);
  return 0;
}

}  // namespace sppft::cli
