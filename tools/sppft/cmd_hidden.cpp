// sppft hidden DIR --prompts FILE --out FILE.safetensors: per-block last-token states.
#include <cstdio>

#include "engine/progress.h"
#include "models/hidden.h"
#include "models/prompting.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/device_option.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
const std::string kHelp = std::string(
    "usage: sppft hidden DIR --prompts FILE --out FILE.safetensors [--template NAME] [--batch-size B]\n\n"
    "Runs each prompt once and writes, at its last prompt position, the residual stream\n"
    "of every block as tensor `hidden_states` [prompts, L+1, hidden] fp32 with Hugging\n"
    "Face indexing (0 = embeddings, k+1 = raw output of block k, no final norm) and the\n"
    "final-normed state as `final_normed` [prompts, hidden].\n\n"
    "  --template NAME   alpaca (default), chat or none\n") + kChatKwargsHelp + kDeviceHelp;
}  // namespace

int cmd_hidden(int argc, char** argv) {
  Args args(argc, argv, {"--device", "--prompts", "--out", "--template", "--chat-template-kwargs", "--batch-size"}, {});
  if (args.help()) {
    std::fputs(kHelp.c_str(), stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("hidden: expected one checkpoint directory (see --help)");
  const fs::path out = args.require("--out");
  auto records = read_prompt_file(args.require("--prompts"));
  const PromptTemplate tmpl = parse_template(args.get_or("--template", "alpaca"));
  const auto chat_kwargs = chat_template_kwargs_option(args, tmpl);
  const auto batch = args.get_int("--batch-size", 16, 1, 4096);
  auto model = Model::load(args.positional()[0]);
  place_model(*model, args);
  model->set_chat_template_kwargs(chat_kwargs);
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& r : records) ids.push_back(encode_prompt(*model, r, tmpl));
  Progress bar("hidden", ids.size(), "prompts");
  auto states = capture_hidden_states(*model, ids, batch, [&](std::size_t d, std::size_t) { bar.update(d); });
  bar.finish();
  save_hidden_states(states, out);
  std::printf("wrote %s: hidden_states %s, final_normed %s\n", out.c_str(), shape_str(states.states.shape()).c_str(),
              shape_str(states.final_normed.shape()).c_str());
  return 0;
}

}  // namespace sppft::cli
