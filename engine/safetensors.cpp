#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "engine/json.h"

namespace sppft {

namespace {

constexpr std::uint64_t kMaxHeader = 100u << 20;  // 100 MB, as the reference implementation

bool parse_dtype(const std::string& s, DType& out) {
  if (s == "F32") out = DType::F32;
  else if (s == "F16") out = DType::F16;
  else if (s == "BF16") out = DType::BF16;
  else if (s == "I32") out = DType::I32;
  else return false;
  return true;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const fs::path& path) : map_(path) {
  const std::string where = path.string();
  if (map_.size() < 8) throw InputError(where + ": truncated safetensors file (" + std::to_string(map_.size()) + " bytes, expected at least 8)");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | map_.data()[i];
  if (header_len > kMaxHeader || header_len > map_.size() - 8)
    throw InputError(where + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                     std::to_string(map_.size()) + " bytes)");
  std::string_view header(reinterpret_cast<const char*>(map_.data() + 8), header_len);
  Json j = parse_json(header, where + " header");
  if (!j.is_object()) throw InputError(where + ": header is not a JSON object");
  const std::uint8_t* data = map_.data() + 8 + header_len;
  const std::size_t data_size = map_.size() - 8 - header_len;

  std::vector<std::pair<std::size_t, std::size_t>> spans;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) throw InputError(where + ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) throw InputError(where + ": __metadata__." + m.key() + " is not a string");
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string tw = where + ": tensor '" + name + "'";
    const Json& e = *it;
    if (!e.is_object()) throw InputError(tw + ": entry is not an object");
    TensorEntry t;
    t.name = name;
    t.file = path.filename().string();
    std::string dt = json_get<std::string>(e, "dtype", tw);
    if (!parse_dtype(dt, t.dtype)) throw InputError(tw + ": dtype " + dt + " not supported (expected F32, F16, BF16 or I32)");
    const Json& shape = e.contains("shape") ? e["shape"] : Json();
    if (!shape.is_array()) throw InputError(tw + ": field 'shape' missing or not an array");
    std::uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_integer() || d.get<std::int64_t>() < 0) throw InputError(tw + ": shape has a non-integer or negative dimension");
      auto v = d.get<std::uint64_t>();
      if (v != 0 && numel > (std::uint64_t{1} << 50) / v) throw InputError(tw + ": shape too large");
      numel *= v;
      t.shape.push_back(static_cast<std::int64_t>(v));
    }
    const Json& off = e.contains("data_offsets") ? e["data_offsets"] : Json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw InputError(tw + ": field 'data_offsets' must be two non-negative integers");
    auto begin = off[0].get<std::uint64_t>(), end = off[1].get<std::uint64_t>();
    if (begin > end || end > data_size)
      throw InputError(tw + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                       "] outside the data (" + std::to_string(data_size) + " bytes)");
    std::uint64_t expected = numel * dtype_size(t.dtype);
    if (end - begin != expected)
      throw InputError(tw + ": " + std::to_string(end - begin) + " bytes but dtype " + dt + " x shape " +
                       shape_str(t.shape) + " needs " + std::to_string(expected));
    t.data = data + begin;
    t.nbytes = end - begin;
    if (t.nbytes) spans.emplace_back(begin, end);
    tensors_.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      throw InputError(where + ": tensor data overlaps at byte " + std::to_string(spans[i].first));
}

Checkpoint::Checkpoint(const fs::path& dir) {
  require_directory(dir, "checkpoint");
  fs::path index = dir / "model.safetensors.index.json";
  fs::path single = dir / "model.safetensors";
  std::error_code ec;
  if (fs::exists(index, ec)) {
    Json j = read_json_file(index);
    Json map = json_get<Json>(j, "weight_map", index.string());
    if (!map.is_object()) throw InputError(index.string() + ": field 'weight_map' is not an object");
    std::map<std::string, std::string> wanted;
    std::vector<std::string> shard_names;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->is_string()) throw InputError(index.string() + ": weight_map['" + it.key() + "'] is not a file name");
      std::string shard = it->get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        throw InputError(index.string() + ": shard name '" + shard + "' must be a plain file name");
      wanted[it.key()] = shard;
      if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) shard_names.push_back(shard);
    }
    for (const auto& s : shard_names) add_file(dir / s);
    for (const auto& [name, shard] : wanted) {
      auto it = entries_.find(name);
      if (it == entries_.end() || it->second.file != shard)
        throw InputError(index.string() + ": tensor '" + name + "' not found in shard " + shard);
    }
    for (const auto& [name, e] : entries_)
      if (!wanted.count(name)) throw InputError((dir / e.file).string() + ": tensor '" + name + "' is not listed in the index");
  } else if (fs::exists(single, ec)) {
    add_file(single);
  } else {
    throw InputError(dir.string() + ": no model.safetensors or model.safetensors.index.json");
  }
}

void Checkpoint::rename(const std::function<std::string(const std::string&)>& name_of, const std::string& where) {
  std::map<std::string, TensorEntry> renamed;
  for (auto& [name, e] : entries_) {
    std::string to = name_of(name);
    if (to.empty()) continue;
    if (renamed.count(to))
      throw InputError(where + ": tensors '" + renamed.at(to).name + "' and '" + name + "' both stand for '" + to + "'");
    renamed.emplace(to, e);
  }
  entries_ = std::move(renamed);
}

Checkpoint Checkpoint::from_file(const fs::path& file) {
  Checkpoint c;
  c.add_file(file);
  return c;
}

void Checkpoint::add_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": file not found");
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  for (const auto& [name, e] : files_.back()->tensors()) {
    if (entries_.count(name)) throw InputError(path.string() + ": tensor '" + name + "' also appears in " + entries_[name].file);
    entries_.emplace(name, e);
  }
}

const TensorEntry& Checkpoint::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw InputError("checkpoint: tensor '" + name + "' missing");
  return it->second;
}

Tensor Checkpoint::load_f32(const std::string& name, const Shape& expected, MemCategory cat) const {
  const TensorEntry& e = entry(name);
  if (e.shape != expected)
    throw InputError(e.file + ": tensor '" + name + "' has shape " + shape_str(e.shape) + ", expected " + shape_str(expected));
  if (e.dtype == DType::I32)
    throw InputError(e.file + ": tensor '" + name + "' has dtype I32, expected F32, F16 or BF16");
  Tensor t = Tensor::empty(expected, DType::F32, cat);
  convert_to_f32(e.data, e.dtype, t.data<float>(), static_cast<std::size_t>(t.numel()));
  return t;
}

void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (const auto& t : tensors) {
    std::size_t n = static_cast<std::size_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  atomic_write(path, [&](std::FILE* f) {
    std::uint8_t len[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(n >> (8 * i));
    bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    for (const auto& t : tensors) {
      std::size_t bytes = static_cast<std::size_t>(shape_numel(t.shape)) * dtype_size(t.dtype);
      ok = ok && std::fwrite(t.data, 1, bytes, f) == bytes;
    }
    if (!ok) throw RuntimeFailure(path.string() + ": short write");
  });
}

}  // namespace sppft
