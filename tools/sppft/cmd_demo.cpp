// sppft demo: the embedded default. Stages are cached in OUT so a second run
// skips what is done.
//
// What runs today (foundation): a sentencepiece tokenizer trained on the
// bundled data, a small Llama-architecture checkpoint written in Hugging Face
// format, then the checkpoint loaded back and used for batched generation and
// per-block hidden states of the normal and malicious query sets. Training
// the model, the safety-layer analysis and the SPPFT comparison join as their
// engines land (docs/demo.md).
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "engine/json.h"
#include "engine/progress.h"
#include "engine/prompts.h"
#include "engine/tokenizer_train.h"
#include "models/generate.h"
#include "models/hidden.h"
#include "models/prompting.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {

const char* kHelp =
    "usage: sppft demo [--out DIR] [--data DIR] [--device cpu]\n\n"
    "Runs the embedded default end to end on a model it builds itself; stages are\n"
    "cached in DIR (default demo-out) and skipped when done.\n\n"
    "  --out DIR    output directory (default demo-out)\n"
    "  --data DIR   the bundled data sets (default: data/ of the source tree)\n"
    "  --device D   cpu (cuda arrives with the CUDA backend)\n";

fs::path find_data_dir(const Args& args) {
  if (auto d = args.get("--data")) return *d;
  if (const char* env = std::getenv("SPPFT_DATA")) return env;
  if (fs::exists("data/normal.csv")) return "data";
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && fs::exists(exe.parent_path() / "../../data/normal.csv")) return exe.parent_path() / "../../data";
  throw InputError("demo: cannot find the bundled data (data/normal.csv); pass --data DIR");
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::vector<std::string> corpus_lines(const fs::path& data) {
  std::vector<std::string> lines;
  for (const char* f : {"normal.csv", "malicious.csv", "over_rejection.csv"})
    for (auto& r : read_prompt_file(data / f)) lines.push_back(r.instruction);
  Json ft = read_json_file(data / "finetune_normal.json");
  for (const auto& ex : ft) {
    lines.push_back(json_get<std::string>(ex, "instruction", "finetune_normal.json"));
    lines.push_back(json_get<std::string>(ex, "output", "finetune_normal.json"));
  }
  return lines;
}

ModelConfig demo_config(std::int64_t vocab) {
  ModelConfig c;
  c.model_type = "llama";
  c.family = Family::Llama;
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_layers = 8;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.vocab_size = vocab;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

}  // namespace

int cmd_demo(int argc, char** argv) {
  Args args(argc, argv, {"--out", "--data", "--device"}, {});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.get_or("--device", "cpu") != "cpu")
    throw InputError("--device: only cpu is available in this build of the demo");
  const fs::path out = args.get_or("--out", "demo-out");
  const fs::path data = find_data_dir(args);
  const fs::path model_dir = out / "model";
  ensure_directory(out);
  const auto t0 = std::chrono::steady_clock::now();
  Json report = Json::object();

  // Stage 1: tokenizer.
  auto t = std::chrono::steady_clock::now();
  if (!fs::exists(model_dir / "tokenizer.model")) {
    std::fprintf(stderr, "[1/3] training a sentencepiece tokenizer on the bundled text ...\n");
    SentencePieceTrainOptions opts;
    opts.vocab_size = 1024;
    train_sentencepiece(corpus_lines(data), model_dir, opts);
    report["tokenizer_seconds"] = seconds_since(t);
  } else {
    std::fprintf(stderr, "[1/3] tokenizer: cached in %s\n", model_dir.c_str());
  }

  // Stage 2: a Llama-architecture checkpoint in Hugging Face format.
  t = std::chrono::steady_clock::now();
  if (!fs::exists(model_dir / "model.safetensors")) {
    std::fprintf(stderr, "[2/3] writing a small Llama-architecture checkpoint ...\n");
    auto tok = load_tokenizer(model_dir);
    auto m = Model::random(demo_config(tok->vocab_size()), /*seed=*/1234, 0.05f);
    Json gen = {{"bos_token_id", 1}, {"eos_token_id", 2}, {"do_sample", false}};
    atomic_write_text(model_dir / "generation_config.json", gen.dump(2) + "\n");
    m->save(model_dir, DType::F32);
  } else {
    std::fprintf(stderr, "[2/3] checkpoint: cached in %s\n", model_dir.c_str());
  }

  // Stage 3: load it back; generation and hidden states on the method's query sets.
  std::fprintf(stderr, "[3/3] loading the checkpoint; generation and hidden states ...\n");
  t = std::chrono::steady_clock::now();
  auto model = Model::load(model_dir);
  const auto& c = model->config();
  auto normal = read_prompt_file(data / "normal.csv");
  auto malicious = read_prompt_file(data / "malicious.csv");
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto* set : {&normal, &malicious})
    for (const auto& r : *set) ids.push_back(encode_prompt(*model, r, PromptTemplate::Alpaca));
  Progress bar("hidden states", ids.size(), "prompts");
  auto hs = capture_hidden_states(*model, ids, 32, [&](std::size_t d, std::size_t) { bar.update(d); });
  bar.finish();
  save_hidden_states(hs, out / "hidden_states.safetensors");
  const double hidden_s = seconds_since(t);

  t = std::chrono::steady_clock::now();
  SamplingOptions opts;
  opts.max_new_tokens = 16;
  std::vector<std::vector<std::int32_t>> few(ids.begin(), ids.begin() + 4);
  auto gens = generate(*model, few, opts);
  const double gen_s = seconds_since(t);
  std::size_t new_tokens = 0;
  for (auto& g : gens) new_tokens += g.new_ids.size();

  std::string md = "# sppft demo report\n\n";
  md += "Every number below was measured by this run (" + std::to_string(static_cast<int>(seconds_since(t0))) + " s in all).\n\n";
  md += "## Model\n\n| field | value |\n|---|---|\n";
  md += "| architecture | llama, " + std::to_string(c.num_layers) + " blocks, hidden " + std::to_string(c.hidden_size) +
        ", " + std::to_string(c.num_heads) + " heads / " + std::to_string(c.num_kv_heads) + " kv heads |\n";
  md += "| parameters | " + std::to_string(c.total_parameters()) + " (" + std::to_string(c.block_parameters()) + " per block) |\n";
  md += "| tokenizer | sentencepiece, " + std::to_string(model->tokenizer().vocab_size()) + " pieces, trained on data/ |\n\n";
  md += "## Stages run\n\n";
  md += "| stage | result | seconds |\n|---|---|---|\n";
  md += "| hidden states | " + std::to_string(ids.size()) + " prompts (normal + malicious, Alpaca template) -> " +
        "hidden_states.safetensors " + shape_str(hs.states.shape()) + " | " + std::to_string(hidden_s).substr(0, 5) + " |\n";
  md += "| greedy generation | 4 prompts, " + std::to_string(new_tokens) + " new tokens | " + std::to_string(gen_s).substr(0, 5) + " |\n\n";
  md += "## Not yet in the demo\n\nThe model is untrained (random weights): the alignment stage needs the trainer, and the\n"
        "cosine-similarity analysis, the over-rejection search and the full-FT vs SPPFT comparison need\n"
        "the training and analysis engines. Until they land this report shows no safety numbers.\n";
  atomic_write_text(out / "report.md", md);
  std::printf("demo: model %s (%lld params), %zu prompts -> hidden states %s in %.2f s, %zu greedy tokens in %.2f s\n",
              model_dir.c_str(), (long long)c.total_parameters(), ids.size(), shape_str(hs.states.shape()).c_str(),
              hidden_s, new_tokens, gen_s);
  std::printf("demo: report written to %s\n", (out / "report.md").c_str());
  return 0;
}

}  // namespace sppft::cli
