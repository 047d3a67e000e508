// Private to engine/tokenizer*.cpp: the pieces of a Hugging Face `tokenizers`
// pipeline (added tokens, normalizers, pre-tokenizers, model, post-processor
// ids, decoders) that both tokenizer kinds share. The model stage is either
// libsentencepiece (sentencepiece_tokenizer.cpp) or byte-level / byte-fallback
// BPE from tokenizer.json (bpe_tokenizer.cpp); the rest is tokenizer.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/fs.h"
#include "engine/json.h"
#include "engine/tokenizer.h"

namespace sppft::tok {

// ---- UTF-8 and Unicode ------------------------------------------------------

// Decodes the code point starting at s[i] into *cp and returns its length in
// bytes. On a malformed or truncated sequence *cp is U+FFFD and the length is
// that of the maximal invalid subpart (at least 1), as in the Unicode
// "substitution of maximal subparts" practice (Python's errors="replace",
// Rust's from_utf8_lossy).
std::size_t decode_utf8(std::string_view s, std::size_t i, char32_t* cp);
void append_utf8(std::string& out, char32_t cp);
// Invalid sequences replaced by U+FFFD; returns the input unchanged when valid.
std::string utf8_lossy(std::string_view bytes);
bool is_white_space(char32_t cp);  // Unicode White_Space property
// Unicode normalization forms NFC and NFD (canonical only; tables are Unicode 14).
std::string nfc(std::string_view s);
std::string nfd(std::string_view s);

// ---- Regular expressions (PCRE2, UTF + UCP, JIT when available) ------------

class Regex {
 public:
  // InputError "<where>: bad regex ..." when `pattern` does not compile.
  Regex(std::string_view pattern, std::string_view where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Calls fn(start, end) for every non-empty, non-overlapping match, left to right.
  // `text` must be valid UTF-8.
  void for_each_match(std::string_view text, const std::function<void(std::size_t, std::size_t)>& fn) const;
  // True when the pattern matches at some position in `text`.
  bool search(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- Pipeline stages (the subset of HF tokenizers that Llama-family checkpoints use) ----

struct AddedToken {
  std::int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

struct Normalizer {
  enum class Kind { NFC, NFD, Prepend, Replace, Strip };
  Kind kind = Kind::NFC;
  std::string text;               // Prepend: prefix; Replace: literal pattern
  std::string content;            // Replace: replacement
  std::shared_ptr<Regex> regex;   // Replace with a regex pattern
  bool left = false, right = false;  // Strip
};

enum class PrependScheme { Always, First, Never };

struct PreTokenizer {
  enum class Kind { Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit };
  enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
  Kind kind = Kind::Split;
  std::shared_ptr<Regex> regex;   // Split (regex or escaped literal), ByteLevel(use_regex), Digits, Whitespace
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  PrependScheme prepend = PrependScheme::Always;
  bool split = false;             // Metaspace
};

struct Decoder {
  enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace };
  Kind kind = Kind::Fuse;
  std::string pattern, content;   // Replace (literal), Strip (content), Metaspace (replacement)
  int start = 0, stop = 0;        // Strip
  PrependScheme prepend = PrependScheme::Always;  // Metaspace
};

// The model stage: one pre-tokenized piece in, ids out.
class Model {
 public:
  virtual ~Model() = default;
  virtual void encode(std::string_view piece, std::vector<std::int32_t>& out) const = 0;
  // Piece string of an id of the model's own vocabulary, nullopt for ids it lacks.
  virtual std::optional<std::string_view> id_to_piece(std::int32_t id) const = 0;
  virtual std::optional<std::int32_t> piece_to_id(std::string_view piece) const = 0;
  virtual std::int32_t size() const = 0;  // one past the largest id
};

// Everything around the model, as the transformers class that AutoTokenizer picks would set it up.
struct Pipeline {
  std::vector<AddedToken> added;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::vector<Decoder> decoders;
  bool has_decoder = false;              // without one, tokens are joined by spaces (HF default)
  std::vector<std::int32_t> prefix_ids;  // post-processor ids before the sequence (BOS)
  std::vector<std::int32_t> suffix_ids;  // and after it (EOS when configured)
  bool split_special_tokens = false;     // tokenizer_config.json: special tokens in the text stay text
};

// Tokenizer over a Pipeline and a Model (both kinds are this class).
class PipelineTokenizer final : public Tokenizer {
 public:
  PipelineTokenizer(std::string kind, std::unique_ptr<Model> model, Pipeline pipeline);
  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const override;
  std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const override;
  std::int32_t vocab_size() const override { return vocab_size_; }
  std::optional<std::int32_t> token_to_id(std::string_view token) const override;
  std::string kind() const override { return kind_; }

  void set_special_ids(std::optional<std::int32_t> bos, std::vector<std::int32_t> eos, bool add_bos) {
    bos_id_ = bos;
    eos_ids_ = std::move(eos);
    add_bos_ = add_bos;
  }
  const Pipeline& pipeline() const { return pipeline_; }

 private:
  struct Segment {
    std::size_t begin, end;  // byte range in the text being split
    std::int32_t id;         // added token id, or -1 for text
  };
  void split_added(std::string_view text, bool normalized_pass, std::vector<Segment>& out) const;
  std::string normalize(std::string_view text) const;
  void pre_tokenize(std::string text, bool at_start, std::vector<std::string>& pieces) const;

  std::string kind_;
  std::unique_ptr<Model> model_;
  Pipeline pipeline_;
  std::int32_t vocab_size_ = 0;
  std::unordered_map<std::int32_t, std::size_t> added_by_id_;  // id -> index in pipeline_.added
  std::unordered_map<std::string, std::int32_t> added_by_content_;
  std::unordered_map<std::int32_t, std::string> decode_text_;  // normalized added tokens: normalized content
  // Matching tables for the two added-token passes (raw text, normalized text):
  // per first byte, indices of the tokens starting with it, longest first.
  struct Matcher {
    std::vector<std::string> patterns;      // content (normalized for the second pass)
    std::vector<std::size_t> token_index;   // into pipeline_.added
    std::vector<std::vector<std::size_t>> by_first_byte = std::vector<std::vector<std::size_t>>(256);
    bool empty() const { return patterns.empty(); }
  };
  Matcher raw_matcher_, normalized_matcher_;
  std::unique_ptr<Regex> word_char_;  // one Rust-regex \w character, for single_word tokens
};

// ---- Helpers shared by the models ------------------------------------------------

// Sentencepiece-style text ("▁" for spaces) is cut into words, each a run of "▁" plus the
// non-"▁" characters after it. BPE over the words gives the same ids as BPE over the
// whole text when no vocabulary token has a non-"▁" character followed by "▁" (so no
// merge can span a cut), which metaspace_cut_is_exact() checks once at load time.
bool metaspace_cut_is_exact(const std::vector<std::string>& tokens);
void cut_metaspace_words(std::string_view text, std::vector<std::string_view>& words);

// Encodes `text` with `encode_word` word by word when `cut` (the check above passed), else whole.
template <typename EncodeWord>
void encode_metaspace_words(std::string_view text, bool cut, const EncodeWord& encode_word, std::vector<std::int32_t>& out) {
  if (!cut) {
    encode_word(text, out);
    return;
  }
  std::vector<std::string_view> words;
  cut_metaspace_words(text, words);
  for (std::string_view w : words) encode_word(w, out);
}

// Thread-safe memo of word -> ids for short words, cleared when it gets large.
class WordCache {
 public:
  static constexpr std::size_t kMaxWordBytes = 64;
  bool get(std::string_view word, std::vector<std::int32_t>& out) const;
  void put(std::string_view word, const std::vector<std::int32_t>& ids) const;

 private:
  static constexpr std::size_t kMaxEntries = 1 << 17;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, std::vector<std::int32_t>> map_;
};

// ---- Models (one file each) ---------------------------------------------------

struct SentencePieceInfo {
  struct Piece {
    std::string text;
    int type = 1;  // sentencepiece ModelProto.SentencePiece.Type: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
  };
  std::vector<Piece> pieces;
  int bos_id = 1, eos_id = 2, unk_id = 0, pad_id = -1;
  int model_type = 1;  // 1 unigram, 2 bpe, 3 word, 4 char
};

// Loads `tokenizer.model` with libsentencepiece. The normalizer spec is
// replaced by identity without dummy prefix or whitespace handling, because
// transformers does that part itself (Metaspace / normalizers) before the model.
std::unique_ptr<Model> make_sentencepiece_model(const fs::path& file, SentencePieceInfo* info);

// What transformers builds from a sentencepiece model for LlamaTokenizer when
// there is no tokenizer.json: BPE over the pieces with merges generated from
// the vocabulary (differs from sentencepiece itself for unigram models).
std::unique_ptr<Model> make_sentencepiece_bpe(const SentencePieceInfo& info, const std::string& where);

// BPE model of tokenizer.json's "model" object (`where` names the file in errors).
std::unique_ptr<Model> make_bpe_model(const Json& model, const std::string& where);

// Parses tokenizer.json stages; `where` names the file in errors.
std::vector<Normalizer> parse_normalizer(const Json& j, const std::string& where);
std::vector<PreTokenizer> parse_pre_tokenizer(const Json& j, const std::string& where);
std::vector<Decoder> parse_decoder(const Json& j, const std::string& where);

// GPT-2's pre-tokenization pattern (ByteLevel with use_regex).
extern const char* const kGpt2Pattern;
// Rust regex's \w as a PCRE2 class, and its inside (for negated classes).
extern const char* const kRustWordClass;
extern const char* const kRustWordInner;
// Qwen2Tokenizer's pattern (transformers rebuilds Qwen2 tokenizers with it).
extern const char* const kQwen2Pattern;

// Byte-level BPE alphabet: byte -> code point and back.
char32_t byte_to_unicode(unsigned char b);
int unicode_to_byte(char32_t cp);  // -1 when cp is not in the alphabet

}  // namespace sppft::tok
