// The model stage of sentencepiece checkpoints: `tokenizer.model` through
// libsentencepiece.
//
// Transformers 5 does not run sentencepiece's own normalizer: it replaces
// spaces by "▁" and adds the dummy prefix itself (Metaspace pre-tokenizer or
// normalizers, per chunk between added tokens), then runs BPE over the
// result. So the proto is loaded with its normalizer spec replaced by an
// identity one (no dummy prefix, no whitespace escaping or collapsing) and the
// self-test data dropped, and each pre-tokenized piece, "▁" already in place,
// is encoded as it is (word by word, with a cache, when that is exact). The proto is edited at the wire level (only the few
// fields involved), so no protobuf headers are needed.
#include <sentencepiece_processor.h>

#include <cstring>
#include <unordered_map>

#include "engine/error.h"
#include "engine/tokenizer_impl.h"

namespace sppft::tok {
namespace {

// ---- minimal protobuf wire-format reader/writer ----

struct Reader {
  std::string_view buf;
  std::size_t pos = 0;
  const std::string* where;

  [[noreturn]] void fail() const {
    throw InputError(*where + ": not a sentencepiece model (malformed protobuf at byte " + std::to_string(pos) + ")");
  }
  bool done() const { return pos >= buf.size(); }
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= buf.size()) fail();
      auto b = static_cast<unsigned char>(buf[pos++]);
      v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail();
  }
  // Reads one field; returns its number and wire type, the payload in *payload
  // (length-delimited) or *value (varint / fixed).
  void field(std::uint32_t* number, int* wire, std::string_view* payload, std::uint64_t* value) {
    std::uint64_t key = varint();
    *number = static_cast<std::uint32_t>(key >> 3);
    *wire = static_cast<int>(key & 7);
    switch (*wire) {
      case 0:
        *value = varint();
        break;
      case 1:
        if (buf.size() - pos < 8) fail();
        std::memcpy(value, buf.data() + pos, 8);
        pos += 8;
        break;
      case 2: {
        std::uint64_t n = varint();
        if (n > buf.size() - pos) fail();
        *payload = buf.substr(pos, n);
        pos += n;
        break;
      }
      case 5: {
        if (buf.size() - pos < 4) fail();
        std::uint32_t v32;
        std::memcpy(&v32, buf.data() + pos, 4);
        *value = v32;
        pos += 4;
        break;
      }
      default:
        fail();
    }
  }
};

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_key(std::string& out, std::uint32_t number, int wire) { put_varint(out, (static_cast<std::uint64_t>(number) << 3) | wire); }
void put_bytes(std::string& out, std::uint32_t number, std::string_view s) {
  put_key(out, number, 2);
  put_varint(out, s.size());
  out.append(s);
}
void put_bool(std::string& out, std::uint32_t number, bool b) {
  put_key(out, number, 0);
  put_varint(out, b ? 1 : 0);
}

// ModelProto: 1 pieces, 2 trainer_spec, 3 normalizer_spec, 4 self_test_data, 5 denormalizer_spec.
// SentencePiece: 1 piece, 2 score, 3 type. TrainerSpec: 3 model_type, 40-43 unk/bos/eos/pad id.
std::string rewrite_proto(std::string_view proto, const std::string& where, SentencePieceInfo* info) {
  Reader r{proto, 0, &where};
  std::string out;
  out.reserve(proto.size());
  bool saw_trainer = false;
  while (!r.done()) {
    std::size_t start = r.pos;
    std::uint32_t number;
    int wire;
    std::string_view payload;
    std::uint64_t value = 0;
    r.field(&number, &wire, &payload, &value);
    if (number == 1 && wire == 2) {
      SentencePieceInfo::Piece piece;
      Reader pr{payload, 0, &where};
      while (!pr.done()) {
        std::uint32_t n;
        int w;
        std::string_view pl;
        std::uint64_t v = 0;
        pr.field(&n, &w, &pl, &v);
        if (n == 1 && w == 2) piece.text = std::string(pl);
        if (n == 3 && w == 0) piece.type = static_cast<int>(v);
      }
      info->pieces.push_back(std::move(piece));
      out.append(proto.substr(start, r.pos - start));
    } else if (number == 2 && wire == 2) {
      saw_trainer = true;
      Reader tr{payload, 0, &where};
      while (!tr.done()) {
        std::uint32_t n;
        int w;
        std::string_view pl;
        std::uint64_t v = 0;
        tr.field(&n, &w, &pl, &v);
        if (w != 0) continue;
        auto iv = static_cast<int>(static_cast<std::int64_t>(v));
        if (n == 3) info->model_type = iv;
        if (n == 40) info->unk_id = iv;
        if (n == 41) info->bos_id = iv;
        if (n == 42) info->eos_id = iv;
        if (n == 43) info->pad_id = iv;
      }
      out.append(proto.substr(start, r.pos - start));
    } else if (number == 3 || number == 4 || number == 5) {
      // dropped: replaced below / self test no longer valid / decoding is ours
    } else {
      out.append(proto.substr(start, r.pos - start));
    }
  }
  if (info->pieces.empty() || !saw_trainer)
    throw InputError(where + ": not a sentencepiece model (no pieces or trainer spec)");
  std::string norm;
  put_bytes(norm, 1, "identity");
  put_bool(norm, 3, false);  // add_dummy_prefix
  put_bool(norm, 4, false);  // remove_extra_whitespaces
  put_bool(norm, 5, false);  // escape_whitespaces
  put_bytes(out, 3, norm);
  return out;
}

class SentencePieceModel final : public Model {
 public:
  SentencePieceModel(const fs::path& file, SentencePieceInfo* info) {
    const std::string where = file.string();
    std::string proto = read_file(file);
    std::string edited = rewrite_proto(proto, where, info);
    auto status = sp_.LoadFromSerializedProto(edited);
    if (!status.ok()) throw InputError(where + ": not a sentencepiece model (" + status.ToString() + ")");
    pieces_.reserve(info->pieces.size());
    for (std::size_t i = 0; i < info->pieces.size(); ++i) {
      pieces_.push_back(info->pieces[i].text);
      by_piece_.emplace(info->pieces[i].text, static_cast<std::int32_t>(i));
    }
    cut_words_ = metaspace_cut_is_exact(pieces_);
  }

  void encode(std::string_view piece, std::vector<std::int32_t>& out) const override {
    encode_metaspace_words(
        piece, cut_words_, [this](std::string_view w, std::vector<std::int32_t>& o) { encode_word(w, o); }, out);
  }
  std::optional<std::string_view> id_to_piece(std::int32_t id) const override {
    if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size()) return std::nullopt;
    return std::string_view(pieces_[static_cast<std::size_t>(id)]);
  }
  std::optional<std::int32_t> piece_to_id(std::string_view piece) const override {
    auto it = by_piece_.find(std::string(piece));
    if (it == by_piece_.end()) return std::nullopt;
    return it->second;
  }
  std::int32_t size() const override { return static_cast<std::int32_t>(pieces_.size()); }

 private:
  void encode_word(std::string_view word, std::vector<std::int32_t>& out) const {
    if (cache_.get(word, out)) return;
    std::vector<int> ids;
    auto status = sp_.Encode(word, &ids);
    if (!status.ok()) throw RuntimeFailure("sentencepiece encode failed: " + status.ToString());
    std::vector<std::int32_t> ids32(ids.begin(), ids.end());
    out.insert(out.end(), ids32.begin(), ids32.end());
    cache_.put(word, ids32);
  }

  bool cut_words_ = false;  // encode word by word (see cut_metaspace_words), with a cache
  WordCache cache_;
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, std::int32_t> by_piece_;
};

}  // namespace

std::unique_ptr<Model> make_sentencepiece_model(const fs::path& file, SentencePieceInfo* info) {
  return std::make_unique<SentencePieceModel>(file, info);
}

// transformers' generate_merges(vocab) (tokenization_utils_base.py): for every piece in id order,
// each split into two pieces of the vocabulary (at code point boundaries) is a merge; merges are
// ranked by (id of the piece, length of the left part, length of the right part), splits of one
// piece by (id of left, id of right) before that stable sort.
std::unique_ptr<Model> make_sentencepiece_bpe(const SentencePieceInfo& info, const std::string& where) {
  Json vocab = Json::object();
  std::unordered_map<std::string, std::int32_t> ids;
  for (std::size_t i = 0; i < info.pieces.size(); ++i) {  // a repeated piece keeps its last id, as in a dict
    ids[info.pieces[i].text] = static_cast<std::int32_t>(i);
    vocab[info.pieces[i].text] = static_cast<std::int32_t>(i);
  }
  struct Merge {
    std::int32_t piece, left_id, right_id;
    std::size_t left_len, right_len;  // in code points
    std::string left, right;
  };
  std::vector<Merge> merges;
  for (std::size_t i = 0; i < info.pieces.size(); ++i) {
    const std::string& piece = info.pieces[i].text;
    if (ids.at(piece) != static_cast<std::int32_t>(i)) continue;  // repeated piece: counted once, at its last id
    std::vector<Merge> local;
    std::size_t left_chars = 0;
    for (std::size_t pos = 0; pos < piece.size();) {
      char32_t cp;
      pos += decode_utf8(piece, pos, &cp);
      ++left_chars;
      if (pos >= piece.size()) break;
      auto l = ids.find(piece.substr(0, pos)), r = ids.find(piece.substr(pos));
      if (l == ids.end() || r == ids.end()) continue;
      std::size_t right_chars = 0;
      for (std::size_t k = pos; k < piece.size(); ++right_chars) k += decode_utf8(piece, k, &cp);
      local.push_back({static_cast<std::int32_t>(i), l->second, r->second, left_chars, right_chars, l->first, r->first});
    }
    std::stable_sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left_id != b.left_id ? a.left_id < b.left_id : a.right_id < b.right_id;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.piece != b.piece) return a.piece < b.piece;
    if (a.left_len != b.left_len) return a.left_len < b.left_len;
    return a.right_len < b.right_len;
  });
  Json list = Json::array();
  for (const Merge& m : merges) list.push_back(Json::array({m.left, m.right}));
  Json model = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(list)},
                {"byte_fallback", true}, {"fuse_unk", true}, {"unk_token", nullptr}};
  return make_bpe_model(model, where);
}

}  // namespace sppft::tok
