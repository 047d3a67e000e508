// Supervised fine-tuning data: Alpaca JSON / JSONL ({instruction, input,
// output}), chat records ({messages: [{role, content}, ...]}, or ShareGPT's
// {conversations: [{from, value}, ...]}) and TRL's prompt-completion records
// ({prompt, completion}: strings, or lists of messages), templated and tokenized, with labels masked (-100) where no loss is taken.
//
// Alpaca, as alpaca-lora: ids = encode(prompt + output) + EOS (EOS only when it
// fits under the cutoff), and without --train-on-inputs the first
// len(encode(prompt)) labels are masked. Chat: the model's chat format; loss on
// the assistant turns (their end-of-turn marker included), the rest masked
// unless --train-on-inputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/prompts.h"
#include "models/model.h"

namespace sppft {

constexpr std::int32_t kIgnoreLabel = -100;

struct SftRecord {
  PromptRecord prompt;  // Alpaca instruction + input
  std::string output;
  std::vector<ChatMessage> messages;  // chat form when non-empty
  std::size_t first_trained_message = 0;  // assistant turns before it are context (prompt-completion)
};

struct SftExample {
  std::vector<std::int32_t> ids;
  std::vector<std::int32_t> labels;  // same length; kIgnoreLabel = no loss
  std::int64_t trained_tokens() const;
};

struct DataOptions {
  PromptTemplate tmpl = PromptTemplate::Alpaca;
  std::int64_t cutoff = 256;
  bool train_on_inputs = false;
};

// Reads .json (a list) or .jsonl; InputError naming the line/item and field
// for missing fields, wrong types and rows empty after templating.
std::vector<SftRecord> read_sft_file(const fs::path& path);

// A record's examples: one, or, for a chat template that renders an earlier
// assistant turn differently once later turns follow (Qwen3 drops its
// reasoning), one per assistant turn (the conversation up to it, loss on it).
// An example whose response lies wholly past the cutoff has no trained token;
// the trainer skips and counts those.
std::vector<SftExample> tokenize_record(const Model& model, const SftRecord& r, const DataOptions& opts,
                                        const std::string& where);

// The turn-end text of a chat format after an assistant message.
std::string chat_turn_end(ChatFormat f);

}  // namespace sppft
