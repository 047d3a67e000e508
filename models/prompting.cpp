#include "models/prompting.h"

#include "engine/error.h"

namespace sppft {

ChatFormat chat_format_for(const Model& model) {
  const ModelConfig& c = model.config();
  if (c.multimodal_type() == "llava") return ChatFormat::Llava;
  switch (c.family) {
    case Family::Llama:
      return model.tokenizer().token_to_id("<|start_header_id|>") ? ChatFormat::Llama3 : ChatFormat::Llama2;
    case Family::Mistral: return ChatFormat::Mistral;
    case Family::Qwen2:
    case Family::Qwen3: return ChatFormat::ChatML;
    case Family::Gemma:
    case Family::Gemma2:
    case Family::Gemma3: return ChatFormat::Gemma;
    case Family::Phi3: return ChatFormat::Phi3;
  }
  return ChatFormat::Llama2;
}

std::string render_prompt(const Model& model, const PromptRecord& r, PromptTemplate t) {
  switch (t) {
    case PromptTemplate::None: return r.input.empty() ? r.instruction : r.instruction + "\n" + r.input;
    case PromptTemplate::Alpaca: return alpaca_prompt(r);
    case PromptTemplate::Chat: return chat_prompt(r, chat_format_for(model));
  }
  return r.instruction;
}

std::vector<std::int32_t> encode_prompt(const Model& model, const PromptRecord& r, PromptTemplate t) {
  auto ids = model.tokenizer().encode(render_prompt(model, r, t), /*add_special=*/t != PromptTemplate::Chat);
  if (ids.empty()) throw InputError("prompt '" + r.instruction.substr(0, 40) + "' encodes to no tokens");
  return ids;
}

}  // namespace sppft
