// Tokenizers of Hugging Face checkpoints: sentencepiece `tokenizer.model`
// (through libsentencepiece) and byte-level BPE `tokenizer.json` (Llama-3,
// Qwen2). Both give the ids transformers gives for the same checkpoint,
// special tokens and BOS included.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sppft {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`. Special/added tokens written literally in the text
  // (e.g. "<|eot_id|>") become their ids, as in transformers. With
  // `add_special`, BOS is prepended exactly when transformers would for
  // this checkpoint (see add_bos()).
  virtual std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const = 0;

  // Text of `ids`; special tokens dropped when `skip_special`. Throws
  // InputError for an id outside the vocabulary.
  virtual std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const = 0;

  // Number of ids the tokenizer can produce (including added tokens).
  virtual std::int32_t vocab_size() const = 0;

  // Id of a token string (a piece or an added/special token), if any.
  virtual std::optional<std::int32_t> token_to_id(std::string_view token) const = 0;

  // "sentencepiece" or "bpe".
  virtual std::string kind() const = 0;

  std::optional<std::int32_t> bos_id() const { return bos_id_; }
  const std::vector<std::int32_t>& eos_ids() const { return eos_ids_; }
  bool add_bos() const { return add_bos_; }
  bool is_eos(std::int32_t id) const;

  // The checkpoint's chat template as transformers 5 picks it: chat_template.jinja, else
  // tokenizer_config.json's chat_template (a string, or the list entry named "default").
  const std::optional<std::string>& chat_template() const { return chat_template_; }
  // The named special tokens as strings (bos_token, eos_token, unk_token, ...), as
  // transformers' special_tokens_map: the variables a chat template sees besides messages.
  const std::map<std::string, std::string>& special_tokens_map() const { return special_tokens_map_; }

 protected:
  std::optional<std::int32_t> bos_id_;
  std::vector<std::int32_t> eos_ids_;
  bool add_bos_ = false;
  std::optional<std::string> chat_template_;
  std::map<std::string, std::string> special_tokens_map_;
  friend std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);
};

// Loads the tokenizer of a checkpoint directory: `tokenizer.model` when present
// (sentencepiece), else `tokenizer.json` (byte-level BPE). Special tokens and
// BOS/EOS come from tokenizer_config.json, tokenizer.json, generation_config.json
// and config.json (EOS: generation_config first, one id or a list). InputError
// naming the file when nothing usable is found.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& dir);

// The chat template of checkpoint `dir` as transformers 5 picks it (what load_tokenizer keeps):
// chat_template.jinja, else tokenizer_config.json's chat_template (a string, or the list entry
// named "default"); nullopt when there is none.
struct ChatTemplateSource {
  std::string file;  // chat_template.jinja or tokenizer_config.json
  std::string text;
};
std::optional<ChatTemplateSource> read_chat_template(const std::filesystem::path& dir);

}  // namespace sppft
