// sppft generate DIR (--prompt TEXT | --prompts FILE) ...: batched generation.
#include <chrono>
#include <cstdio>

#include "engine/progress.h"
#include "engine/prompts.h"
#include "models/generate.h"
#include "models/prompting.h"
#include "engine/error.h"
#include "engine/text.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft generate DIR (--prompt TEXT | --prompts FILE) [options]\n\n"
    "Generates continuations for prompts, all prompts of a chunk prefilled together,\n"
    "then decoded with a KV cache. Stops at any EOS id of the checkpoint.\n\n"
    "  --prompt TEXT          one prompt\n"
    "  --prompts FILE         .txt (one per line), .csv (first column), .json/.jsonl\n"
    "                         (objects with instruction [+ input] or prompt)\n"
    "  --template NAME        alpaca (default, METHOD.md's strings), chat (the checkpoint's\n"
    "                         chat template, else its family's format), none (text as is)\n"
    "  --max-new-tokens N     tokens to generate per prompt (default 64)\n"
    "  --temperature T        0 = greedy (default); > 0 samples\n"
    "  --top-k K              keep the K most likely tokens (0 = off)\n"
    "  --top-p P              nucleus sampling mass (1 = off)\n"
    "  --seed S               sampling seed (default 0)\n"
    "  --batch-size B         prompts per prefill chunk (default 16)\n"
    "  --json                 one JSON object per prompt: prompt, token_ids, text\n") + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_generate(int argc, char** argv) {
  Args args(argc, argv,
            {"--device", "--prompt", "--prompts", "--template", "--chat-template-kwargs", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed",
             "--batch-size"},
            {"--json"});
  if (args.help()) {
    std::fputs(kHelp.c_str(), stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("generate: expected one checkpoint directory (see --help)");
  if (args.has("--prompt") == args.has("--prompts")) throw InputError("generate: give exactly one of --prompt or --prompts");
  std::vector<PromptRecord> records;
  if (auto p = args.get("--prompt")) {
    if (is_blank(*p)) throw InputError("--prompt: empty prompt");
    records.push_back({*p, ""});
  } else {
    records = read_prompt_file(args.require("--prompts"));
  }
  const PromptTemplate tmpl = parse_template(args.get_or("--template", "alpaca"));
  const auto chat_kwargs = chat_template_kwargs_option(args, tmpl);
  SamplingOptions opts;
  opts.max_new_tokens = args.get_int("--max-new-tokens", 64, 1, 1 << 20);
  opts.temperature = static_cast<float>(args.get_double("--temperature", 0.0, 0.0, 100.0));
  opts.top_k = args.get_int("--top-k", 0, 0, 1 << 30);
  opts.top_p = static_cast<float>(args.get_double("--top-p", 1.0, 1e-6, 1.0));
  opts.seed = static_cast<std::uint64_t>(args.get_int("--seed", 0, 0, INT64_MAX));
  opts.batch_size = args.get_int("--batch-size", 16, 1, 4096);
  const bool json = args.has("--json");

  auto model = Model::load(args.positional()[0]);
  place_model(*model, args);
  model->set_chat_template_kwargs(chat_kwargs);
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& r : records) ids.push_back(encode_prompt(*model, r, tmpl));

  const auto start = std::chrono::steady_clock::now();
  Progress bar("generate", records.size(), "prompts");
  auto gens = generate(*model, ids, opts, [&](std::size_t done, std::size_t) { bar.update(done); });
  bar.finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::size_t new_tokens = 0;
  for (std::size_t i = 0; i < gens.size(); ++i) {
    const auto& g = gens[i];
    new_tokens += g.new_ids.size();
    const std::string text = model->tokenizer().decode(g.new_ids, /*skip_special=*/true);
    if (json) {
      Json j = {{"prompt", records[i].instruction}, {"token_ids", g.new_ids}, {"text", text}};
      if (!records[i].input.empty()) j["input"] = records[i].input;
      std::printf("%s\n", j.dump(-1, ' ', false, Json::error_handler_t::replace).c_str());
    } else {
      std::printf("### %zu: %s\n%s\n\n", i + 1, records[i].instruction.c_str(), text.c_str());
    }
  }
  std::fprintf(stderr, "%zu prompts, %zu new tokens in %.2f s (%.1f tokens/s)\n", gens.size(), new_tokens, secs,
               secs > 0 ? new_tokens / secs : 0.0);
  return 0;
}

}  // namespace sppft::cli
