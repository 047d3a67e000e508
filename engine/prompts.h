// Prompt files and prompt templates.
//
// Prompt files: `.txt` one prompt per line; `.csv` first column (headerless, or
// with a header cell such as goal / instruction / prompt); `.json` a list of
// objects or strings, `.jsonl` one per line, objects with `instruction` (and
// optional `input`) or `prompt`.
//
// Templates: `none` (the text as is), `alpaca` (METHOD.md's exact strings), and
// `chat`: the model's own chat format for one user turn, generation prompt open: the
// checkpoint's chat template when it has one (models/prompting.h), else the built-in format
// of its family (chat_prompt below).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/fs.h"

namespace sppft {

struct PromptRecord {
  std::string instruction;
  std::string input;  // optional context (Alpaca "input")
};

// Reads a prompt file; InputError naming file and line for empty/malformed rows.
std::vector<PromptRecord> read_prompt_file(const fs::path& path);

// RFC 4180 CSV: rows of fields, quotes with "" escapes, newlines inside quotes.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& where);

// One turn of a conversation.
struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
  std::string reasoning_content = {};  // an assistant turn's reasoning given apart from its content (Qwen3 datasets)
};

enum class PromptTemplate { None, Alpaca, Chat };
PromptTemplate parse_template(const std::string& name);  // InputError on unknown names

enum class ChatFormat { Llama2, Llama3, Mistral, Gemma, Phi3, ChatML, Llava };
std::string chat_format_name(ChatFormat f);

// The text after a reasoning block (the last "</think>", as Qwen3 and DeepSeek-R1 write it),
// else all of `text`.
std::string_view after_reasoning(std::string_view text);

// A record as one chat message: the instruction, then a blank line and the input if any.
std::string chat_content(const PromptRecord& r);
// The Alpaca prompt, with or without the input section.
std::string alpaca_prompt(const PromptRecord& r);
// One user turn in `format`, ending where the assistant's answer starts. The
// text begins with the literal BOS token where the format has one, so it is
// tokenized without adding special tokens.
std::string chat_prompt(const PromptRecord& r, ChatFormat format);

}  // namespace sppft
