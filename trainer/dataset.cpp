#include "trainer/dataset.h"

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "engine/error.h"
#include "engine/json.h"
#include "models/prompting.h"

namespace sppft {

namespace {

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

SftRecord record_from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": expected a JSON object");
  SftRecord r;
  if (j.contains("messages")) {
    const Json& m = j["messages"];
    if (!m.is_array() || m.empty()) throw InputError(where + ": field 'messages' must be a non-empty list");
    for (std::size_t i = 0; i < m.size(); ++i) {
      const std::string mw = where + ": messages[" + std::to_string(i) + "]";
      ChatMessage msg{json_get<std::string>(m[i], "role", mw), json_get<std::string>(m[i], "content", mw)};
      if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
        throw InputError(mw + ": role '" + msg.role + "' (expected system, user or assistant)");
      r.messages.push_back(std::move(msg));
    }
    if (std::none_of(r.messages.begin(), r.messages.end(), [](auto& x) { return x.role == "assistant"; }))
      throw InputError(where + ": no assistant message to train on");
    return r;
  }
  r.prompt.instruction = json_get<std::string>(j, "instruction", where);
  r.prompt.input = json_get_or<std::string>(j, "input", "", where);
  r.output = json_get<std::string>(j, "output", where);
  if (blank(r.prompt.instruction)) throw InputError(where + ": field 'instruction' is empty");
  if (blank(r.output)) throw InputError(where + ": field 'output' is empty");
  return r;
}

std::string system_prefix(ChatFormat f, const std::string& system) {
  switch (f) {
    case ChatFormat::Llama3: return "<|start_header_id|>system<|end_header_id|>\n\n" + system + "<|eot_id|>";
    case ChatFormat::ChatML: return "<|im_start|>system\n" + system + "<|im_end|>\n";
    case ChatFormat::Phi3: return "<|system|>\n" + system + "<|end|>\n";
    case ChatFormat::Llava: return system + " ";  // LLaVA's vicuna_v1: "SYSTEM USER: ..."
    default: return system + "\n\n";  // formats without a system role: prepended to the first user turn
  }
}

std::string user_turn(ChatFormat f, const std::string& content, bool first) {
  switch (f) {
    case ChatFormat::Llama2:
    case ChatFormat::Mistral: return std::string(first ? "<s>" : "<s>") + "[INST] " + content + " [/INST]";
    case ChatFormat::Llama3:
      return "<|start_header_id|>user<|end_header_id|>\n\n" + content + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatFormat::Gemma: return "<start_of_turn>user\n" + content + "<end_of_turn>\n<start_of_turn>model\n";
    case ChatFormat::Phi3: return "<|user|>\n" + content + "<|end|>\n<|assistant|>\n";
    case ChatFormat::ChatML: return "<|im_start|>user\n" + content + "<|im_end|>\n<|im_start|>assistant\n";
    // LLaVA-1.5's vicuna_v1 conversation: "USER: q ASSISTANT: a</s>USER: q2 ASSISTANT:".
    case ChatFormat::Llava: return "USER: " + content + " ASSISTANT:";
  }
  return content;
}

// The conversation in the family's built-in chat format (engine/prompts.h).
void render_builtin(const Model& model, const std::vector<ChatMessage>& messages, std::string& text,
                    std::vector<std::pair<std::size_t, std::size_t>>& spans) {
  const ChatFormat f = chat_format_for(model);
  std::string system;
  bool first_user = true;
  for (const auto& m : messages) {
    if (m.role == "system") {
      system = m.content;
    } else if (m.role == "user") {
      std::string content = m.content;
      if (first_user && !system.empty()) {
        if (f == ChatFormat::Llama3 || f == ChatFormat::ChatML || f == ChatFormat::Phi3 || f == ChatFormat::Llava)
          text += system_prefix(f, system);
        else content = system_prefix(f, system) + content;
      }
      if (first_user && f == ChatFormat::Llama3) text = "<|begin_of_text|>" + text;
      if (first_user && f == ChatFormat::Gemma) text = "<bos>" + text;
      if (first_user && f == ChatFormat::Llava) text = "<s>" + text;
      text += user_turn(f, content, first_user);
      first_user = false;
    } else {
      const std::size_t begin = text.size();
      text += (f == ChatFormat::Llama2 || f == ChatFormat::Mistral || f == ChatFormat::Llava ? " " : "") + m.content +
              chat_turn_end(f);
      spans.emplace_back(begin, text.size());
    }
  }
}

// The conversation through the checkpoint's chat template. Each assistant turn's span starts at
// the end of the rendering of the turns before it with the generation prompt open (a prefix of
// the whole) and ends where the rendering up to and including it stops agreeing with the whole
// (an EOS a template appends at the end of a conversation counts on the last turn only). false,
// after a note, when the template renders no such spans holding each message's content (e.g.
// one that drops earlier turns' reasoning), and the caller uses the built-in format.
bool render_with_template(const Model& model, const std::vector<ChatMessage>& messages, std::string& text,
                          std::vector<std::pair<std::size_t, std::size_t>>& spans) {
  const auto full = apply_chat_template(model, messages, false);
  if (!full) return false;
  std::vector<std::pair<std::size_t, std::size_t>> found;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::vector<ChatMessage> before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i));
    const std::vector<ChatMessage> upto(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    const std::string prompt = *apply_chat_template(model, before, true), with = *apply_chat_template(model, upto, false);
    std::size_t end = 0;
    while (end < with.size() && end < full->size() && with[end] == (*full)[end]) ++end;
    const std::size_t c0 = messages[i].content.find_first_not_of(" \t\r\n"), c1 = messages[i].content.find_last_not_of(" \t\r\n");
    const std::string content = c0 == std::string::npos ? "" : messages[i].content.substr(c0, c1 - c0 + 1);
    if (!with.starts_with(prompt) || !full->starts_with(prompt) || end < prompt.size() ||
        full->substr(prompt.size(), end - prompt.size()).find(content) == std::string::npos) {
      static std::once_flag noted;
      std::call_once(noted, [&] {
        std::fprintf(stderr,
                     "sppft: note: %s's chat template does not render conversations turn by turn (an assistant "
                     "turn's text is not where the turns before it end); training data uses the built-in %s format\n",
                     model.directory().string().c_str(), chat_format_name(chat_format_for(model)).c_str());
      });
      return false;
    }
    found.emplace_back(prompt.size(), end);
  }
  text = *full;
  spans = std::move(found);
  return true;
}
}  // namespace

std::int64_t SftExample::trained_tokens() const {
  return std::count_if(labels.begin(), labels.end(), [](std::int32_t l) { return l != kIgnoreLabel; });
}

std::string chat_turn_end(ChatFormat f) {
  switch (f) {
    case ChatFormat::Llama2:
    case ChatFormat::Mistral: return " </s>";
    case ChatFormat::Llama3: return "<|eot_id|>";
    case ChatFormat::Gemma: return "<end_of_turn>\n";
    case ChatFormat::Phi3: return "<|end|>\n";
    case ChatFormat::ChatML: return "<|im_end|>\n";
    case ChatFormat::Llava: return "</s>";
  }
  return "";
}

std::vector<SftRecord> read_sft_file(const fs::path& path) {
  const std::string text = read_file(path);
  const std::string where = path.string();
  std::vector<SftRecord> out;
  if (path.extension() == ".jsonl") {
    std::size_t start = 0, line = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      ++line;
      const std::string l = text.substr(start, end - start);
      if (!blank(l)) {
        const std::string lw = where + ": line " + std::to_string(line);
        out.push_back(record_from_json(parse_json(l, lw), lw));
      }
      start = end + 1;
    }
  } else {
    Json j = parse_json(text, where);
    if (!j.is_array()) throw InputError(where + ": expected a JSON list of examples");
    for (std::size_t i = 0; i < j.size(); ++i) out.push_back(record_from_json(j[i], where + ": item " + std::to_string(i)));
  }
  if (out.empty()) throw InputError(where + ": no examples");
  return out;
}

SftExample tokenize_example(const Model& model, const SftRecord& r, const DataOptions& opts, const std::string& where) {
  const Tokenizer& tok = model.tokenizer();
  SftExample ex;
  if (r.messages.empty()) {
    if (opts.tmpl == PromptTemplate::Chat) {
      SftRecord chat;
      chat.messages = {{"user", chat_content(r.prompt)}, {"assistant", r.output}};
      return tokenize_example(model, chat, opts, where);
    }
    const std::string prompt = render_prompt(model, r.prompt, opts.tmpl);
    ex.ids = tok.encode(prompt + r.output, /*add_special=*/true);
    const auto prompt_len = static_cast<std::int64_t>(tok.encode(prompt, true).size());
    if (static_cast<std::int64_t>(ex.ids.size()) < opts.cutoff && !tok.eos_ids().empty()) ex.ids.push_back(tok.eos_ids()[0]);
    if (static_cast<std::int64_t>(ex.ids.size()) > opts.cutoff) ex.ids.resize(opts.cutoff);
    ex.labels = ex.ids;
    if (!opts.train_on_inputs)
      std::fill(ex.labels.begin(), ex.labels.begin() + std::min<std::int64_t>(prompt_len, ex.labels.size()), kIgnoreLabel);
  } else {
    // Render the conversation; each assistant span is located by the token count of its prefix.
    std::string text;
    std::vector<std::pair<std::size_t, std::size_t>> spans;  // character spans of assistant text
    if (!render_with_template(model, r.messages, text, spans)) render_builtin(model, r.messages, text, spans);
    ex.ids = tok.encode(text, /*add_special=*/false);
    ex.labels.assign(ex.ids.size(), opts.train_on_inputs ? 0 : kIgnoreLabel);
    if (opts.train_on_inputs) ex.labels = ex.ids;
    for (auto [b, e] : spans) {
      const auto tb = tok.encode(text.substr(0, b), false).size(), te = tok.encode(text.substr(0, e), false).size();
      for (std::size_t i = tb; i < te && i < ex.ids.size(); ++i) ex.labels[i] = ex.ids[i];
    }
    if (static_cast<std::int64_t>(ex.ids.size()) > opts.cutoff) {
      ex.ids.resize(opts.cutoff);
      ex.labels.resize(opts.cutoff);
    }
  }
  if (ex.ids.size() < 2) throw InputError(where + ": empty after templating (fewer than 2 tokens)");
  return ex;
}

}  // namespace sppft
