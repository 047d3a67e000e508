// safetensors: mmap reading of single files and sharded checkpoints
// (model.safetensors.index.json), F32 / F16 / BF16 (and I32), with everything
// validated before use; atomic writing.
//
// File layout: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data; offsets are relative to the start of the data.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/fs.h"
#include "engine/tensor.h"

namespace sppft {

struct TensorEntry {
  std::string name;
  DType dtype;
  Shape shape;
  const std::uint8_t* data = nullptr;  // inside the mapped file
  std::size_t nbytes = 0;
  std::string file;  // for messages
};

class SafetensorsFile {
 public:
  // Maps and validates: header length inside the file, JSON well formed, known
  // dtypes, offsets inside the data, no overlaps, byte size = dtype x shape.
  explicit SafetensorsFile(const fs::path& path);
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const fs::path& path() const { return map_.path(); }

 private:
  MappedFile map_;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory, single-file or sharded.
class Checkpoint {
 public:
  // `dir/model.safetensors.index.json` (sharded) or `dir/model.safetensors`.
  explicit Checkpoint(const fs::path& dir);
  // A single .safetensors file.
  static Checkpoint from_file(const fs::path& file);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const TensorEntry& entry(const std::string& name) const;  // InputError if missing
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }
  std::size_t shard_count() const { return files_.size(); }
  // Renames every tensor to name_of(name), dropping those it maps to ""; two tensors renamed to
  // one name are an InputError (`where` names the checkpoint).
  void rename(const std::function<std::string(const std::string&)>& name_of, const std::string& where);

  // The named tensor converted to fp32 on the CPU, after checking its shape.
  Tensor load_f32(const std::string& name, const Shape& expected, MemCategory cat) const;

 private:
  Checkpoint() = default;
  void add_file(const fs::path& path);
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorEntry> entries_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  Shape shape;
  const void* data;  // numel(shape) * dtype_size(dtype) bytes, host memory
};

// Writes a safetensors file atomically (temp file + rename). Tensors are stored
// in the order given; the header is padded to 8 bytes.
void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sppft
