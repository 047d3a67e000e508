#include "engine/fs.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <utility>

#include "engine/error.h"

namespace sppft {

std::string read_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": file not found");
  if (fs::is_directory(path, ec)) throw InputError(path.string() + ": is a directory, expected a file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw InputError(path.string() + ": cannot open: " + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw InputError(path.string() + ": read error");
  return out;
}

void require_directory(const fs::path& dir, std::string_view what) {
  std::error_code ec;
  if (!fs::exists(dir, ec))
    throw InputError(std::string(what) + " " + dir.string() + ": directory not found");
  if (!fs::is_directory(dir, ec))
    throw InputError(std::string(what) + " " + dir.string() + ": not a directory");
}

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw InputError(path.string() + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw InputError(path.string() + ": cannot stat");
  }
  size_ = static_cast<std::size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw InputError(path.string() + ": mmap failed: " + std::strerror(errno));
    }
    data_ = static_cast<const std::uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    path_ = std::move(o.path_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void atomic_write(const fs::path& path, const std::function<void(std::FILE*)>& writer) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw InputError(path.string() + ": is a directory, expected a file path");
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  ensure_directory(dir);
  std::random_device rd;
  std::string tmp_name = ".";  // appends, not operator+ chains: GCC 12 warns (-Wrestrict) on those
  tmp_name += path.filename().string();
  tmp_name += ".tmp";
  tmp_name += std::to_string(rd() % 1000000);
  const fs::path tmp = dir / tmp_name;
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw RuntimeFailure(tmp.string() + ": cannot create: " + std::strerror(errno));
  try {
    writer(f);
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      throw RuntimeFailure(tmp.string() + ": write failed: " + std::strerror(errno));
  } catch (...) {
    std::fclose(f);
    fs::remove(tmp, ec);
    throw;
  }
  if (std::fclose(f) != 0) {
    fs::remove(tmp, ec);
    throw RuntimeFailure(tmp.string() + ": close failed");
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw RuntimeFailure(path.string() + ": rename failed: " + ec.message());
  }
}

void atomic_write_text(const fs::path& path, std::string_view text) {
  atomic_write(path, [&](std::FILE* f) {
    if (std::fwrite(text.data(), 1, text.size(), f) != text.size())
      throw RuntimeFailure(path.string() + ": short write");
  });
}

void ensure_directory(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) throw InputError(dir.string() + ": exists and is not a directory");
    return;
  }
  fs::create_directories(dir, ec);
  if (ec) throw InputError(dir.string() + ": cannot create directory: " + ec.message());
}

}  // namespace sppft
