#include "models/prompting.h"

#include <cstdio>
#include <map>
#include <memory>
#include <mutex>

#include "engine/chat_template.h"
#include "engine/error.h"

namespace sppft {

namespace {

// Parsed templates by source (a run renders thousands of prompts with one); null for a
// template sppft cannot parse, after its note.
std::shared_ptr<const ChatTemplate> parsed_template(const std::string& source, const std::string& where) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const ChatTemplate>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(source);
  if (it != cache.end()) return it->second;
  std::shared_ptr<const ChatTemplate> t;
  try {
    t = std::make_shared<const ChatTemplate>(source, where);
  } catch (const InputError& e) {
    std::fprintf(stderr, "sppft: note: %s; using the built-in chat format of the model family instead\n", e.what());
  }
  cache.emplace(source, t);
  return t;
}

}  // namespace

std::optional<std::string> apply_chat_template(const Model& model, const std::vector<ChatMessage>& messages,
                                               bool add_generation_prompt, std::optional<bool> content_as_parts) {
  const Tokenizer& tok = model.tokenizer();
  if (!tok.chat_template()) return std::nullopt;
  auto t = parsed_template(*tok.chat_template(), model.directory().string() + " chat template");
  if (!t) return std::nullopt;
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  for (const auto& [k, v] : tok.special_tokens_map()) vars[k] = v;
  // Vision-language templates read content as a list of parts (llava-hf's renders nothing of a
  // plain string), as their processors pass it; text templates read a string.
  const bool parts = content_as_parts.value_or(!model.config().multimodal_type().empty());
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json content = m.content;
    if (parts) content = nlohmann::ordered_json::array({{{"type", "text"}, {"text", m.content}}});
    msgs.push_back({{"role", m.role}, {"content", std::move(content)}});
    if (!m.reasoning_content.empty()) msgs.back()["reasoning_content"] = m.reasoning_content;
  }
  vars["messages"] = std::move(msgs);
  vars["tools"] = nullptr;  // defined and None, as apply_chat_template passes them
  vars["documents"] = nullptr;
  // Over the special tokens and tools / documents, as apply_chat_template's kwargs.
  for (const auto& [k, v] : model.chat_template_kwargs().items()) vars[k] = v;
  vars["add_generation_prompt"] = add_generation_prompt;
  return t->render(vars);
}

nlohmann::ordered_json parse_chat_template_kwargs(const std::string& text, const std::string& where) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw InputError(where + ": malformed JSON (expected an object such as {\"enable_thinking\": false})");
  }
  if (!j.is_object()) throw InputError(where + ": expected a JSON object such as {\"enable_thinking\": false}");
  for (const char* own : {"messages", "add_generation_prompt"})
    if (j.contains(own)) throw InputError(where + ": '" + own + "' is set by sppft, not a template variable to pass");
  return j;
}

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
    case PromptTemplate::Chat: {
      if (auto text = apply_chat_template(model, {{"user", chat_content(r)}}, true)) return *text;
      return chat_prompt(r, chat_format_for(model));
    }
  }
  return r.instruction;
}

std::vector<std::int32_t> encode_prompt(const Model& model, const PromptRecord& r, PromptTemplate t) {
  auto ids = model.tokenizer().encode(render_prompt(model, r, t), /*add_special=*/t != PromptTemplate::Chat);
  if (ids.empty()) throw InputError("prompt '" + r.instruction.substr(0, 40) + "' encodes to no tokens");
  return ids;
}

}  // namespace sppft
