// From prompt records to token ids for one model: the template applied and
// tokenized the way transformers would (chat formats carry their own BOS).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/prompts.h"
#include "models/model.h"

namespace sppft {

// The chat format of a model: from model_type, and for llama from its tokenizer
// (Llama-3 tokenizers have <|start_header_id|>).
ChatFormat chat_format_for(const Model& model);

std::string render_prompt(const Model& model, const PromptRecord& r, PromptTemplate t);
std::vector<std::int32_t> encode_prompt(const Model& model, const PromptRecord& r, PromptTemplate t);

}  // namespace sppft
