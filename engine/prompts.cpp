#include "engine/prompts.h"

#include <algorithm>
#include <cctype>

#include "engine/error.h"
#include "engine/text.h"
#include "engine/json.h"

namespace sppft {

namespace {

PromptRecord record_from_json(const Json& j, const std::string& where) {
  if (j.is_string()) return {j.get<std::string>(), ""};
  if (!j.is_object()) throw InputError(where + ": expected an object with 'instruction' or 'prompt', or a string");
  PromptRecord r;
  if (j.contains("instruction")) {
    r.instruction = json_get<std::string>(j, "instruction", where);
    r.input = json_get_or<std::string>(j, "input", "", where);
  } else if (j.contains("prompt")) {
    r.instruction = json_get<std::string>(j, "prompt", where);
  } else {
    throw InputError(where + ": missing field 'instruction' or 'prompt'");
  }
  return r;
}

}  // namespace

std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& where) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, field_started = false;
  std::size_t line = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (ch == '"' && field.empty() && !field_started) {
      quoted = field_started = true;
    } else if (ch == ',') {
      row.push_back(std::move(field));
      field.clear();
      field_started = false;
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(std::move(field));
      rows.push_back(std::move(row));
      row.clear();
      field.clear();
      field_started = false;
      ++line;
    } else {
      field += ch;
      field_started = true;
    }
  }
  if (quoted) throw InputError(where + ": line " + std::to_string(line) + ": unterminated quoted field");
  if (!field.empty() || !row.empty() || field_started) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<PromptRecord> read_prompt_file(const fs::path& path) {
  const std::string text = read_file(path);
  const std::string where = path.string();
  const std::string ext = lower_ascii(path.extension().string());
  std::vector<PromptRecord> out;
  if (ext == ".csv") {
    auto rows = parse_csv(text, where);
    static const char* headers[] = {"goal", "instruction", "prompt", "query", "question", "text", "behavior"};
    std::size_t first = 0;
    if (!rows.empty() && !rows[0].empty()) {
      std::string h = lower_ascii(rows[0][0]);
      if (std::find(std::begin(headers), std::end(headers), h) != std::end(headers)) first = 1;
    }
    for (std::size_t i = first; i < rows.size(); ++i) {
      if (rows[i].size() == 1 && rows[i][0].empty() && i + 1 == rows.size()) continue;  // trailing newline
      if (rows[i].empty() || is_blank(rows[i][0]))
        throw InputError(where + ": row " + std::to_string(i + 1) + ": empty prompt");
      out.push_back({rows[i][0], ""});
    }
  } else if (ext == ".json") {
    Json j = parse_json(text, where);
    if (!j.is_array()) throw InputError(where + ": expected a JSON list of prompts");
    for (std::size_t i = 0; i < j.size(); ++i) out.push_back(record_from_json(j[i], where + ": item " + std::to_string(i)));
  } else if (ext == ".jsonl") {
    for (const JsonLine& l : parse_json_lines(text, where))
      out.push_back(record_from_json(l.value, where + ": line " + std::to_string(l.line)));
  } else {  // .txt and anything else: one prompt per line
    std::size_t start = 0, line = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      ++line;
      std::string l = text.substr(start, end - start);
      if (!l.empty() && l.back() == '\r') l.pop_back();
      if (is_blank(l)) throw InputError(where + ": line " + std::to_string(line) + ": empty prompt");
      out.push_back({l, ""});
      start = end + 1;
    }
  }
  for (std::size_t i = 0; i < out.size(); ++i)
    if (is_blank(out[i].instruction)) throw InputError(where + ": prompt " + std::to_string(i + 1) + " is empty");
  if (out.empty()) throw InputError(where + ": no prompts found");
  return out;
}

PromptTemplate parse_template(const std::string& name) {
  if (name == "none") return PromptTemplate::None;
  if (name == "alpaca") return PromptTemplate::Alpaca;
  if (name == "chat") return PromptTemplate::Chat;
  throw InputError("--template: unknown template '" + name + "' (expected alpaca, chat or none)");
}

std::string chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::Llama2: return "llama-2";
    case ChatFormat::Llama3: return "llama-3";
    case ChatFormat::Mistral: return "mistral";
    case ChatFormat::Gemma: return "gemma";
    case ChatFormat::Phi3: return "phi-3";
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::Llava: return "llava";
  }
  return "?";
}

std::string alpaca_prompt(const PromptRecord& r) {
  if (r.input.empty())
    return "Below is an instruction that describes a task. Write a response that appropriately completes the "
           "request.\n\n### Instruction:\n" +
           r.instruction + "\n\n### Response:\n";
  return "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n### Instruction:\n" +
         r.instruction + "\n\n### Input:\n" + r.input + "\n\n### Response:\n";
}

std::string_view after_reasoning(std::string_view text) {
  constexpr std::string_view close = "</think>";
  const std::size_t c = text.rfind(close);
  return c == std::string_view::npos ? text : text.substr(c + close.size());
}

std::string chat_content(const PromptRecord& r) { return r.input.empty() ? r.instruction : r.instruction + "\n\n" + r.input; }

std::string chat_prompt(const PromptRecord& r, ChatFormat format) {
  const std::string content = chat_content(r);
  switch (format) {
    case ChatFormat::Llama2: return "<s>[INST] " + content + " [/INST]";
    case ChatFormat::Mistral: return "<s>[INST] " + content + " [/INST]";
    case ChatFormat::Llama3:
      return "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n" + content +
             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatFormat::Gemma: return "<bos><start_of_turn>user\n" + content + "<end_of_turn>\n<start_of_turn>model\n";
    case ChatFormat::Phi3: return "<|user|>\n" + content + "<|end|>\n<|assistant|>\n";
    case ChatFormat::ChatML:
      return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + content +
             "<|im_end|>\n<|im_start|>assistant\n";
    // llava-hf's chat template renders "USER: text ASSISTANT:" and its processor adds the BOS.
    case ChatFormat::Llava: return "<s>USER: " + content + " ASSISTANT:";
  }
  return content;
}

}  // namespace sppft
