// sppft info DIR [--json]: what a checkpoint is, without loading its weights.
#include <algorithm>
#include <cstdio>
#include <map>

#include "engine/chat_template.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"
#include "models/model.h"
#include "trainer/memory_plan.h"
#include "engine/error.h"
#include "tools/sppft/args.h"
#include "tools/sppft/commands.h"

namespace sppft::cli {

namespace {
std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The checkpoint's chat template: where it is, its size, and whether sppft can run it (what
// `--template chat` will use). Null when there is none.
Json chat_template_info(const fs::path& dir) {
  const auto source = read_chat_template(dir);
  if (!source) return nullptr;
  Json j{{"source", source->file}, {"lines", std::count(source->text.begin(), source->text.end(), '\n') + 1}, {"usable", true}};
  try {
    ChatTemplate(source->text, source->file);
  } catch (const InputError& e) {
    j["usable"] = false;
    j["error"] = e.what();
  }
  return j;
}

// The checkpoint's tokenizer: kind, ids, BOS / EOS, and why sppft cannot use it (no usable files, or
// more ids than the embedding has rows), without which generate, train and the analyses stop.
Json tokenizer_info(const fs::path& dir, const ModelConfig& c) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = load_tokenizer(dir);
  } catch (const InputError& e) {
    return {{"usable", false}, {"error", e.what()}};
  }
  auto token = [&](std::int32_t id) { return Json{{"id", id}, {"token", tok->decode(std::vector<std::int32_t>{id}, false)}}; };
  Json j{{"usable", true}, {"kind", tok->kind()}, {"vocab_size", tok->vocab_size()}, {"adds_bos", tok->add_bos()}};
  j["bos"] = tok->bos_id() ? token(*tok->bos_id()) : Json(nullptr);
  j["eos"] = Json::array();
  for (std::int32_t id : tok->eos_ids()) j["eos"].push_back(token(id));
  if (tok->vocab_size() > c.vocab_size) {
    j["usable"] = false;
    j["error"] = std::to_string(tok->vocab_size()) + " ids, more than the " + std::to_string(c.vocab_size) +
                 " rows of the embedding (config.json vocab_size)";
  }
  return j;
}

const char* kHelp =
    "usage: sppft info DIR [--json]\n\n"
    "Prints the architecture of a Hugging Face checkpoint directory (config.json +\n"
    "safetensors), its parameters per block and in total, the dtypes stored and the\n"
    "weight bytes on disk and as fp32 in memory. The checkpoint is validated against\n"
    "the config (every tensor present, none extra, shapes right) without loading it,\n"
    "its tokenizer (kind, ids, BOS / EOS) and whether its chat template (what --template\n"
    "chat renders) is one sppft can run.\n";

}  // namespace

int cmd_info(int argc, char** argv) {
  Args args(argc, argv, {}, {"--json"});
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 1) throw InputError("info: expected one checkpoint directory (see --help)");
  const fs::path dir = args.positional()[0];
  ModelConfig c = load_model_config(dir);
  const Checkpoint ckpt = open_checkpoint(c, dir);
  validate_checkpoint(c, ckpt, dir);
  std::map<std::string, std::int64_t> dtype_params;
  std::int64_t disk_bytes = 0;
  for (const auto& p : parameter_shapes(c)) {
    const auto& e = ckpt.entry(p.name);
    dtype_params[std::string(dtype_name(e.dtype))] += shape_numel(e.shape);
    disk_bytes += static_cast<std::int64_t>(e.nbytes);
  }
  const std::int64_t total = c.total_parameters(), block = c.block_parameters();
  // A vision-language checkpoint's tower: not loaded, carried into saves (Model::save).
  std::int64_t tower_tensors = 0, tower_params = 0, tower_bytes = 0;
  if (c.multimodal) {
    const Checkpoint whole(dir);
    for (const auto& [name, e] : whole.entries())
      if (is_vision_tower_tensor(name)) {
        ++tower_tensors;
        tower_params += shape_numel(e.shape);
        tower_bytes += static_cast<std::int64_t>(e.nbytes);
      }
  }
  const Json chat = chat_template_info(dir);
  const Json tok = tokenizer_info(dir, c);
  if (args.has("--json")) {
    Json j = model_config_to_json(c);
    j["chat_template"] = chat;
    j["tokenizer"] = tok;
    j["parameters_per_block"] = block;
    j["parameters_total"] = total;
    j["dtypes"] = dtype_params;
    j["weight_bytes_on_disk"] = disk_bytes;
    j["weight_bytes_fp32"] = total * 4;
    j["shards"] = ckpt.shard_count();
    j["multimodal"] = c.multimodal;
    if (c.multimodal) {
      j["multimodal_model_type"] = c.multimodal_type();
      j["vision_tower"] = {{"tensors", tower_tensors}, {"parameters", tower_params}, {"bytes_on_disk", tower_bytes}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("checkpoint     %s\n", dir.c_str());
  std::printf("model_type     %s%s%s%s\n", c.model_type.c_str(), c.multimodal ? " (the text model of a multimodal " : "",
              c.multimodal_type().c_str(), c.multimodal ? " checkpoint; its vision tower is not loaded, and saves carry it)" : "");
  if (c.multimodal)
    std::printf("vision tower   %lld tensors, %lld parameters, %s on disk (vision tower and projector)\n",
                (long long)tower_tensors, (long long)tower_params, human_bytes(static_cast<double>(tower_bytes)).c_str());
  std::printf("layers         %lld blocks, hidden %lld, intermediate %lld\n", (long long)c.num_layers,
              (long long)c.hidden_size, (long long)c.intermediate_size);
  std::string window;
  if (c.sliding_window) {
    std::int64_t windowed = 0;
    for (std::int64_t l = 0; l < c.num_layers; ++l) windowed += c.attention_window(l) > 0;
    window = ", sliding window " + std::to_string(*c.sliding_window);
    if (windowed < c.num_layers) window += " on " + std::to_string(windowed) + " of " + std::to_string(c.num_layers) + " blocks";
  }
  if (c.qk_norm) window += ", an RMSNorm on each query and key head";
  std::printf("attention      %lld query heads, %lld kv heads (%s), head_dim %lld%s\n", (long long)c.num_heads,
              (long long)c.num_kv_heads, c.num_kv_heads == c.num_heads ? "MHA" : "GQA", (long long)c.head_dim,
              window.c_str());
  if (c.sandwich_norms) {  // gemma2, gemma3
    const auto cap = [](float v) { return v > 0 ? "at " + fmt_g(v) : std::string("none"); };
    std::printf("%-14s scale 1/sqrt(%g), score soft-cap %s, final logit soft-cap %s, norms before and after "
                "attention and MLP\n",
                c.model_type.c_str(), c.query_pre_attn_scalar, cap(c.attn_logit_softcap).c_str(),
                cap(c.final_logit_softcap).c_str());
  }
  std::printf("rope           theta %g, scaling %s", c.rope.theta, c.rope.type.c_str());
  if (c.rope.type == "longrope")
    std::printf(" (factor %g; long factors past %lld positions; attention factor %g)", c.rope.factor,
                (long long)c.rope.original_max_position_embeddings, c.rope.attention_factor);
  else if (c.rope.type == "yarn")
    std::printf(" (factor %g past %lld positions; attention factor %g)", c.rope.factor,
                (long long)c.rope.original_max_position_embeddings, c.rope.attention_factor);
  else if (c.rope.type != "default")
    std::printf(" (factor %g)", c.rope.factor);
  if (c.rope_dim() != c.head_dim)
    std::printf("; on the first %lld of %lld dimensions of each head", (long long)c.rope_dim(), (long long)c.head_dim);
  if (c.local_rope) std::printf("; sliding-window blocks: theta %g, scaling %s", c.local_rope->theta, c.local_rope->type.c_str());
  std::printf("\nvocab          %lld, max positions %lld, rms_norm_eps %g, tied embeddings %s\n",
              (long long)c.vocab_size, (long long)c.max_position_embeddings, c.rms_norm_eps,
              c.tie_word_embeddings ? "yes" : "no");
  std::printf("parameters     %lld per block, %lld in all blocks, %lld total\n", (long long)block,
              (long long)(block * c.num_layers), (long long)total);
  std::printf("dtypes        ");
  for (auto& [d, n] : dtype_params) std::printf(" %s: %lld params", d.c_str(), (long long)n);
  std::printf("\nweight bytes   %s on disk (%zu file%s), %s as fp32 in memory\n", human_bytes(disk_bytes).c_str(),
              ckpt.shard_count(), ckpt.shard_count() == 1 ? "" : "s", human_bytes(total * 4.0).c_str());
  if (tok["usable"].get<bool>()) {
    auto named = [](const Json& t) { return t["token"].get<std::string>() + " (" + std::to_string(t["id"].get<std::int32_t>()) + ")"; };
    std::string eos;
    for (const Json& e : tok["eos"]) eos += (eos.empty() ? "" : ", ") + named(e);
    std::printf("tokenizer      %s, %d ids; BOS %s%s; EOS %s\n", tok["kind"].get<std::string>().c_str(), tok["vocab_size"].get<int>(),
                tok["bos"].is_null() ? "none" : named(tok["bos"]).c_str(), tok["adds_bos"].get<bool>() ? ", prepended" : "",
                eos.empty() ? "none" : eos.c_str());
  } else {
    std::printf("tokenizer      not usable: %s\n", tok["error"].get<std::string>().c_str());
  }
  if (chat.is_null())
    std::printf("chat template  none: --template chat uses the built-in format of the family\n");
  else if (chat["usable"].get<bool>())
    std::printf("chat template  %s, %lld line%s: --template chat renders it\n", chat["source"].get<std::string>().c_str(),
                (long long)chat["lines"].get<std::int64_t>(), chat["lines"].get<std::int64_t>() == 1 ? "" : "s");
  else
    std::printf("chat template  %s, not one sppft can run (%s): --template chat uses the built-in format of the family\n",
                chat["source"].get<std::string>().c_str(), chat["error"].get<std::string>().c_str());
  return 0;
}

}  // namespace sppft::cli
