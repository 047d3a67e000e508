// The BPE model stage of tokenizer.json ("model": {"type": "BPE", ...}):
// Llama-3 / Qwen2 byte-level BPE (the ByteLevel pre-tokenizer has already
// mapped bytes to the GPT-2 alphabet, so the model just sees characters) and
// sentencepiece-converted BPE with byte fallback (Llama-2 / Mistral / Gemma
// tokenizer.json without tokenizer.model).
//
// Merging follows tokenizers' Word::merge_all: a min-heap of (rank, position)
// over adjacent pairs, stale entries skipped, so the result equals the
// reference for any word length in O(n log n). Results of short words are
// cached (the same pre-tokens recur constantly in real text). Sentencepiece-style
// vocabularies see whole chunks of text as one pre-token (Metaspace without
// split); those are cut into words first when that is exact.
#include <algorithm>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "engine/error.h"
#include "engine/tokenizer_impl.h"

namespace sppft::tok {
namespace {

struct MergeValue {
  std::int32_t rank;
  std::int32_t id;
};

class BpeModel final : public Model {
 public:
  BpeModel(const Json& model, const std::string& where) {
    const std::string type = json_get_or<std::string>(model, "type", "BPE", where + ": field 'model'");
    if (type != "BPE")
      throw InputError(where + ": field 'model.type' is '" + type + "', which is not supported (expected 'BPE')");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = model.find(key);
      if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
        throw InputError(where + ": field 'model." + key + "' is set, which is not supported");
    }
    auto bool_field = [&](const char* key) {
      auto it = model.find(key);
      if (it == model.end() || it->is_null()) return false;
      if (!it->is_boolean()) throw InputError(where + ": field 'model." + std::string(key) + "' must be true or false");
      return it->get<bool>();
    };
    byte_fallback_ = bool_field("byte_fallback");
    fuse_unk_ = bool_field("fuse_unk");
    ignore_merges_ = bool_field("ignore_merges");

    // vocab: {"token": id, ...}
    auto vit = model.find("vocab");
    if (vit == model.end() || vit->is_null()) throw InputError(where + ": field 'model.vocab' missing");
    if (!vit->is_object()) throw InputError(where + ": field 'model.vocab' must be an object of token: id");
    vocab_.reserve(vit->size() * 2);
    std::int32_t max_id = -1;
    for (auto& [token, id] : vit->items()) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 || id.get<std::int64_t>() > INT32_MAX)
        throw InputError(where + ": field 'model.vocab' maps '" + token + "' to something that is not a token id");
      auto i = id.get<std::int32_t>();
      vocab_.emplace(token, i);
      max_id = std::max(max_id, i);
    }
    if (static_cast<std::size_t>(max_id) >= 2 * vocab_.size() + 1024)
      throw InputError(where + ": field 'model.vocab' has ids up to " + std::to_string(max_id) + " for " +
                       std::to_string(vocab_.size()) + " tokens (expected ids 0..size-1)");
    pieces_.assign(static_cast<std::size_t>(max_id + 1), std::string());
    has_piece_.assign(static_cast<std::size_t>(max_id + 1), false);
    for (const auto& [token, id] : vocab_) {
      pieces_[static_cast<std::size_t>(id)] = token;
      has_piece_[static_cast<std::size_t>(id)] = true;
    }
    small_char_id_.assign(kSmallChars, -1);
    for (const auto& [token, id] : vocab_) {
      char32_t cp;
      if (!token.empty() && decode_utf8(token, 0, &cp) == token.size() && cp < kSmallChars) small_char_id_[cp] = id;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      auto it = vocab_.find(name);
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    }
    cut_words_ = vocab_.count("\xE2\x96\x81") && metaspace_cut_is_exact(pieces_);
    auto uit = model.find("unk_token");
    if (uit != model.end() && uit->is_string()) {
      auto it = vocab_.find(uit->get<std::string>());
      if (it != vocab_.end()) unk_id_ = it->second;
    }

    // merges: ["a b", ...] or [["a", "b"], ...]; rank = position.
    auto mit = model.find("merges");
    if (mit == model.end() || mit->is_null()) throw InputError(where + ": field 'model.merges' missing");
    if (!mit->is_array()) throw InputError(where + ": field 'model.merges' must be a list");
    merges_.reserve(mit->size() * 2);
    std::string a, b;
    for (std::size_t r = 0; r < mit->size(); ++r) {
      const Json& m = (*mit)[r];
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        std::size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw InputError(where + ": field 'model.merges[" + std::to_string(r) + "]' is '" + s +
                           "' (expected two tokens separated by one space)");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        throw InputError(where + ": field 'model.merges[" + std::to_string(r) +
                         "]' must be \"a b\" or [\"a\", \"b\"]");
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
        throw InputError(where + ": field 'model.merges[" + std::to_string(r) + "]' (" + a + " " + b +
                         ") uses a token that is not in model.vocab");
      merges_.insert_or_assign(key(ia->second, ib->second),
                               MergeValue{static_cast<std::int32_t>(r), iab->second});
    }
  }

  void encode(std::string_view piece, std::vector<std::int32_t>& out) const override {
    if (piece.empty()) return;
    if (ignore_merges_) {
      auto it = vocab_.find(std::string(piece));
      if (it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
      encode_word(piece, out);
      return;
    }
    encode_metaspace_words(
        piece, cut_words_, [this](std::string_view w, std::vector<std::int32_t>& o) { encode_word(w, o); }, out);
  }

  std::optional<std::string_view> id_to_piece(std::int32_t id) const override {
    if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size() || !has_piece_[static_cast<std::size_t>(id)])
      return std::nullopt;
    return std::string_view(pieces_[static_cast<std::size_t>(id)]);
  }
  std::optional<std::int32_t> piece_to_id(std::string_view piece) const override {
    auto it = vocab_.find(std::string(piece));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  std::int32_t size() const override { return static_cast<std::int32_t>(pieces_.size()); }

 private:
  static constexpr char32_t kSmallChars = 0x3000;

  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
    if (cache_.get(word, out)) return;
    std::vector<std::int32_t> ids;
    merge_word(word, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    cache_.put(word, ids);
  }

  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  const MergeValue* find_merge(std::int32_t a, std::int32_t b) const {
    auto it = merges_.find(key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // tokenizers BPE::merge_word + Word::merge_all.
  void merge_word(std::string_view word, std::vector<std::int32_t>& out) const {
    struct Sym {
      std::int32_t id, prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(word.size());
    auto push = [&](std::int32_t id) {
      auto n = static_cast<std::int32_t>(syms.size());
      syms.push_back({id, n - 1, -1, true});
      if (n > 0) syms[static_cast<std::size_t>(n - 1)].next = n;
    };
    bool pending_unk = false;
    for (std::size_t i = 0; i < word.size();) {
      char32_t cp;
      std::size_t len = decode_utf8(word, i, &cp);
      std::int32_t id = -1;
      if (cp < kSmallChars && len == (cp < 0x80 ? 1u : cp < 0x800 ? 2u : 3u)) {
        id = small_char_id_[cp];
      } else {
        auto it = vocab_.find(std::string(word.substr(i, len)));
        if (it != vocab_.end()) id = it->second;
      }
      if (id >= 0) {
        if (pending_unk) push(*unk_id_);
        pending_unk = false;
        push(id);
      } else {
        bool done = false;
        if (byte_fallback_) {
          bool all = true;
          for (std::size_t k = 0; k < len; ++k) all = all && byte_id_[static_cast<unsigned char>(word[i + k])] >= 0;
          if (all) {
            if (pending_unk) push(*unk_id_);
            pending_unk = false;
            for (std::size_t k = 0; k < len; ++k) push(byte_id_[static_cast<unsigned char>(word[i + k])]);
            done = true;
          }
        }
        if (!done && unk_id_) {
          if (pending_unk && !fuse_unk_) push(*unk_id_);
          pending_unk = true;
        }
      }
      i += len;
    }
    if (pending_unk) push(*unk_id_);

    struct Cand {
      std::int32_t rank, pos, id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    for (std::size_t i = 0; i + 1 < syms.size(); ++i)
      if (const MergeValue* m = find_merge(syms[i].id, syms[i + 1].id))
        heap.push({m->rank, static_cast<std::int32_t>(i), m->id});
    while (!heap.empty()) {
      Cand top = heap.top();
      heap.pop();
      Sym& s = syms[static_cast<std::size_t>(top.pos)];
      if (!s.alive || s.next < 0) continue;
      Sym& right = syms[static_cast<std::size_t>(s.next)];
      const MergeValue* m = find_merge(s.id, right.id);
      if (!m || m->id != top.id) continue;
      s.id = top.id;
      right.alive = false;
      s.next = right.next;
      if (s.next >= 0) syms[static_cast<std::size_t>(s.next)].prev = top.pos;
      if (s.prev >= 0)
        if (const MergeValue* pm = find_merge(syms[static_cast<std::size_t>(s.prev)].id, s.id))
          heap.push({pm->rank, s.prev, pm->id});
      if (s.next >= 0)
        if (const MergeValue* nm = find_merge(s.id, syms[static_cast<std::size_t>(s.next)].id))
          heap.push({nm->rank, top.pos, nm->id});
    }
    for (const Sym& s : syms)
      if (s.alive) out.push_back(s.id);
  }

  std::unordered_map<std::string, std::int32_t> vocab_;
  std::vector<std::string> pieces_;
  std::vector<bool> has_piece_;
  std::vector<std::int32_t> small_char_id_;
  std::int32_t byte_id_[256];
  std::unordered_map<std::uint64_t, MergeValue> merges_;
  std::optional<std::int32_t> unk_id_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;

  bool cut_words_ = false;  // sentencepiece-style vocabulary: BPE word by word (see cut_metaspace_words)
  WordCache cache_;
};

}  // namespace

std::unique_ptr<Model> make_bpe_model(const Json& model, const std::string& where) {
  return std::make_unique<BpeModel>(model, where);
}

}  // namespace sppft::tok
