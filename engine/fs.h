// Files: whole-file reads, read-only memory maps, and atomic writes
// (temp file in the same directory, then rename) so nothing is half-written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace sppft {

namespace fs = std::filesystem;

// Reads a whole file; InputError naming the path when it is missing or unreadable.
std::string read_file(const fs::path& path);

// Throws InputError unless `dir` exists and is a directory.
void require_directory(const fs::path& dir, std::string_view what);

// Read-only mmap of a whole file. Movable, not copyable.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const fs::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Writes `path` atomically: `writer` fills a temp file next to it, which is
// flushed and renamed over `path` only if `writer` returns normally.
void atomic_write(const fs::path& path, const std::function<void(std::FILE*)>& writer);
void atomic_write_text(const fs::path& path, std::string_view text);

// Creates `dir` (and parents); InputError if it exists as a non-directory.
void ensure_directory(const fs::path& dir);

}  // namespace sppft
