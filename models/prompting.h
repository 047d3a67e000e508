// From prompt records to token ids for one model: the template applied and
// tokenized the way transformers would (chat formats carry their own BOS).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/prompts.h"
#include "models/model.h"

namespace sppft {

// The chat format of a model: from model_type, and for llama from its tokenizer
// (Llama-3 tokenizers have <|start_header_id|>).
ChatFormat chat_format_for(const Model& model);

// `messages` through the checkpoint's chat template (engine/chat_template.h) as transformers'
// apply_chat_template renders them (the tokenizer's special tokens and the model's
// chat_template_kwargs as variables); the text is
// meant to be tokenized without adding special tokens. nullopt when the checkpoint has no chat
// template, or one sppft cannot parse (then a note on stderr, once per template, and callers
// use the built-in format of the family). InputError when the template itself raises.
// `content_as_parts` overrides how message content is passed (text parts or a string; by
// default parts for vision-language checkpoints only).
std::optional<std::string> apply_chat_template(const Model& model, const std::vector<ChatMessage>& messages,
                                               bool add_generation_prompt, std::optional<bool> content_as_parts = std::nullopt);

// `--chat-template-kwargs` text: a JSON object of extra template variables. InputError naming
// `where` when it is not one, or when it sets messages or add_generation_prompt (sppft sets those).
nlohmann::ordered_json parse_chat_template_kwargs(const std::string& text, const std::string& where);

std::string render_prompt(const Model& model, const PromptRecord& r, PromptTemplate t);
std::vector<std::int32_t> encode_prompt(const Model& model, const PromptRecord& r, PromptTemplate t);

}  // namespace sppft
