#include "trainer/dataset.h"

#include <algorithm>
#include <cstdio>
#include <mutex>

#include "engine/error.h"
#include "engine/text.h"
#include "engine/json.h"
#include "models/prompting.h"

namespace sppft {

namespace {

// The turns in list field `field` of a chat record: {role, content} messages with roles system /
// user / assistant, or ShareGPT's {from, value} with system / human / gpt (user / assistant too).
std::vector<ChatMessage> chat_turns(const Json& j, const char* field, const std::string& where) {
  const bool sharegpt = std::string_view(field) == "conversations";
  const char* role_key = sharegpt ? "from" : "role";
  const Json& m = j[field];
  if (!m.is_array() || m.empty()) throw InputError(where + ": field '" + field + "' must be a non-empty list");
  std::vector<ChatMessage> turns;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const std::string mw = where + ": " + field + "[" + std::to_string(i) + "]";
    std::string role = json_get<std::string>(m[i], role_key, mw);
    if (sharegpt && role == "human") role = "user";
    if (sharegpt && role == "gpt") role = "assistant";
    if (role != "system" && role != "user" && role != "assistant")
      throw InputError(mw + ": " + role_key + " '" + role + "' (expected " +
                       (sharegpt ? "system, human or gpt" : "system, user or assistant") + ")");
    turns.push_back({role, json_get<std::string>(m[i], sharegpt ? "value" : "content", mw)});
    if (!sharegpt) turns.back().reasoning_content = json_get_or<std::string>(m[i], "reasoning_content", "", mw);
  }
  return turns;
}

bool has_assistant(const std::vector<ChatMessage>& turns, std::size_t from = 0) {
  return std::any_of(turns.begin() + static_cast<std::ptrdiff_t>(from), turns.end(), [](auto& x) { return x.role == "assistant"; });
}

// TRL's prompt-completion records: strings (the prompt goes through --template as an Alpaca
// instruction does) or lists of messages (a conversation; loss on the completion's assistant turns).
SftRecord prompt_completion_record(const Json& j, const std::string& where) {
  SftRecord r;
  const Json &p = j["prompt"], &c = j["completion"];
  if (p.is_string() && c.is_string()) {
    r.prompt.instruction = p.get<std::string>();
    r.output = c.get<std::string>();
    if (is_blank(r.prompt.instruction)) throw InputError(where + ": field 'prompt' is empty");
    if (is_blank(r.output)) throw InputError(where + ": field 'completion' is empty");
    return r;
  }
  if (!p.is_array() || !c.is_array())
    throw InputError(where + ": fields 'prompt' and 'completion' must both be strings or both lists of messages");
  r.messages = chat_turns(j, "prompt", where);
  r.first_trained_message = r.messages.size();
  for (ChatMessage& m : chat_turns(j, "completion", where)) r.messages.push_back(std::move(m));
  if (!has_assistant(r.messages, r.first_trained_message)) throw InputError(where + ": no assistant message in 'completion' to train on");
  return r;
}

SftRecord record_from_json(const Json& j, const std::string& where) {
  if (!j.is_object()) throw InputError(where + ": expected a JSON object");
  const int forms = j.contains("messages") + j.contains("conversations") + (j.contains("prompt") && j.contains("completion"));
  if (forms > 1) throw InputError(where + ": more than one of 'messages', 'conversations', 'prompt' + 'completion' (expected one)");
  if (j.contains("prompt") && j.contains("completion")) return prompt_completion_record(j, where);
  SftRecord r;
  if (j.contains("messages") || j.contains("conversations")) {
    r.messages = chat_turns(j, j.contains("messages") ? "messages" : "conversations", where);
    if (!has_assistant(r.messages)) throw InputError(where + ": no assistant message to train on");
    return r;
  }
  r.prompt.instruction = json_get<std::string>(j, "instruction", where);
  r.prompt.input = json_get_or<std::string>(j, "input", "", where);
  r.output = json_get<std::string>(j, "output", where);
  if (is_blank(r.prompt.instruction)) throw InputError(where + ": field 'instruction' is empty");
  if (is_blank(r.output)) throw InputError(where + ": field 'output' is empty");
  return r;
}

// A rendered conversation and the character spans that carry the loss.
struct RenderedChat {
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> spans;
};

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

// The conversation in the family's built-in chat format (engine/prompts.h); spans on the
// assistant turns from message `first_trained` on.
RenderedChat render_builtin(const Model& model, const std::vector<ChatMessage>& messages, std::size_t first_trained) {
  const ChatFormat f = chat_format_for(model);
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  std::string system;
  bool first_user = true;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
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
      // Reasoning given apart goes before the answer as a think block, as in content.
      const std::string body = m.reasoning_content.empty() ? m.content : "<think>\n" + m.reasoning_content + "\n</think>\n\n" + m.content;
      text += (f == ChatFormat::Llama2 || f == ChatFormat::Mistral || f == ChatFormat::Llava ? " " : "") + body + chat_turn_end(f);
      if (i >= first_trained) spans.emplace_back(begin, text.size());
    }
  }
  return {text, spans};
}

// The conversation through the checkpoint's chat template. Each assistant turn's span starts at
// the end of the rendering of the turns before it with the generation prompt open (a prefix of
// the whole) and ends where the rendering up to and including it stops agreeing with the whole
// (an EOS a template appends at the end of a conversation counts on the last turn only): one
// rendering. A template that renders an earlier assistant turn differently once later turns follow
// (Qwen3 drops its reasoning) gives one rendering per assistant turn instead: the conversation up
// to that turn, the loss on it, as the model sees the turn when it generates it. Empty, after a
// note, when the template does not render even a last turn after its prompt (the caller then uses
// the built-in format). Assistant turns before message `first_trained` are context: no span, no
// example. With train_on_inputs every token is trained, so no span has to be found: the whole
// rendering is the one example (as TRL trains such a conversation), each token trained once.
std::vector<RenderedChat> render_with_template(const Model& model, const std::vector<ChatMessage>& messages,
                                               std::size_t first_trained, bool train_on_inputs) {
  const auto full = apply_chat_template(model, messages, false);
  if (!full) return {};
  RenderedChat whole{*full, {}};
  std::vector<RenderedChat> per_turn;
  bool chained = true;
  for (std::size_t i = first_trained; i < messages.size(); ++i) {
    if (messages[i].role != "assistant") continue;
    const std::vector<ChatMessage> before(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i));
    const std::vector<ChatMessage> upto(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    const std::string prompt = *apply_chat_template(model, before, true), with = *apply_chat_template(model, upto, false);
    // Templates may reformat a reasoning block (Qwen3 rebuilds it): the answer after it must show.
    const std::string content(trim(after_reasoning(messages[i].content)));
    if (!with.starts_with(prompt) || with.find(content, prompt.size()) == std::string::npos) {
      static std::once_flag noted;
      std::call_once(noted, [&] {
        std::fprintf(stderr,
                     "sppft: note: %s's chat template does not render an assistant turn after its prompt; training "
                     "data uses the built-in %s format\n",
                     model.directory().string().c_str(), chat_format_name(chat_format_for(model)).c_str());
      });
      return {};
    }
    per_turn.push_back({with, {{prompt.size(), with.size()}}});
    if (!chained) continue;
    std::size_t end = 0;
    while (end < with.size() && end < full->size() && with[end] == (*full)[end]) ++end;
    if (!full->starts_with(prompt) || end < prompt.size() ||
        full->substr(prompt.size(), end - prompt.size()).find(content) == std::string::npos)
      chained = false;
    else
      whole.spans.emplace_back(prompt.size(), end);
  }
  if (chained || train_on_inputs) return {whole};
  static std::once_flag noted;
  std::call_once(noted, [&] {
    std::fprintf(stderr,
                 "sppft: note: %s's chat template renders an assistant turn differently once later turns follow; "
                 "each assistant turn of such a conversation is its own example (the conversation up to it)\n",
                 model.directory().string().c_str());
  });
  return per_turn;
}

// Ids and labels of a rendered conversation: the spans' tokens are labelled (all with
// train_on_inputs), each span located by the token count of the text before its ends.
SftExample tokenize_rendered(const Tokenizer& tok, const RenderedChat& r, const DataOptions& opts) {
  SftExample ex;
  ex.ids = tok.encode(r.text, /*add_special=*/false);
  ex.labels = opts.train_on_inputs ? ex.ids : std::vector<std::int32_t>(ex.ids.size(), kIgnoreLabel);
  for (auto [b, e] : r.spans) {
    const auto tb = tok.encode(r.text.substr(0, b), false).size(), te = tok.encode(r.text.substr(0, e), false).size();
    for (std::size_t i = tb; i < te && i < ex.ids.size(); ++i) ex.labels[i] = ex.ids[i];
  }
  if (static_cast<std::int64_t>(ex.ids.size()) > opts.cutoff) {
    ex.ids.resize(opts.cutoff);
    ex.labels.resize(opts.cutoff);
  }
  return ex;
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
    for (const JsonLine& l : parse_json_lines(text, where))
      out.push_back(record_from_json(l.value, where + ": line " + std::to_string(l.line)));
  } else {
    Json j;
    try {
      j = parse_json(text, where);
    } catch (const InputError& e) {
      if (path.extension() == ".json") throw;
      throw InputError(std::string(e.what()) + " (training data is a .json list or .jsonl records)");
    }
    if (!j.is_array()) throw InputError(where + ": expected a JSON list of examples");
    for (std::size_t i = 0; i < j.size(); ++i) out.push_back(record_from_json(j[i], where + ": item " + std::to_string(i)));
  }
  if (out.empty()) throw InputError(where + ": no examples");
  return out;
}

std::vector<SftExample> tokenize_record(const Model& model, const SftRecord& r, const DataOptions& opts,
                                        const std::string& where) {
  const Tokenizer& tok = model.tokenizer();
  std::vector<SftExample> out;
  if (r.messages.empty()) {
    if (opts.tmpl == PromptTemplate::Chat) {
      SftRecord chat;
      chat.messages = {{"user", chat_content(r.prompt)}, {"assistant", r.output}};
      return tokenize_record(model, chat, opts, where);
    }
    SftExample ex;
    const std::string prompt = render_prompt(model, r.prompt, opts.tmpl);
    ex.ids = tok.encode(prompt + r.output, /*add_special=*/true);
    const auto prompt_len = static_cast<std::int64_t>(tok.encode(prompt, true).size());
    if (static_cast<std::int64_t>(ex.ids.size()) < opts.cutoff && !tok.eos_ids().empty()) ex.ids.push_back(tok.eos_ids()[0]);
    if (static_cast<std::int64_t>(ex.ids.size()) > opts.cutoff) ex.ids.resize(opts.cutoff);
    ex.labels = ex.ids;
    if (!opts.train_on_inputs)
      std::fill(ex.labels.begin(), ex.labels.begin() + std::min<std::int64_t>(prompt_len, ex.labels.size()), kIgnoreLabel);
    out.push_back(std::move(ex));
  } else {
    std::vector<RenderedChat> rendered = render_with_template(model, r.messages, r.first_trained_message, opts.train_on_inputs);
    if (rendered.empty()) rendered.push_back(render_builtin(model, r.messages, r.first_trained_message));
    for (const RenderedChat& rc : rendered) out.push_back(tokenize_rendered(tok, rc, opts));
  }
  for (const SftExample& ex : out)
    if (ex.ids.size() < 2) throw InputError(where + ": empty after templating (fewer than 2 tokens)");
  return out;
}

}  // namespace sppft
