// The tagged allocator: every buffer of a model is labelled with what it holds,
// so memory reports are exact bytes per category and the planner's predictions
// can be checked against them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sppft {

enum class MemCategory : std::uint8_t { Weights, Grads, Master, Optimizer, Activations, Workspace };
inline constexpr std::size_t kMemCategories = 6;
std::string_view mem_category_name(MemCategory c);  // "weights", "grads", ...
// "512 B", "3.50 MiB", "20.02 GiB": binary units, two decimals above bytes.
std::string human_bytes(double bytes);

enum class Device : std::uint8_t { CPU, CUDA };
std::string_view device_name(Device d);

struct MemoryStats {
  std::array<std::size_t, kMemCategories> current{};
  std::array<std::size_t, kMemCategories> peak{};  // per-category high-water marks
  std::size_t total_current = 0;
  std::size_t total_peak = 0;  // high-water mark of the sum
};

// Byte-exact accounting per device. Thread-safe.
class Allocator {
 public:
  static Allocator& for_device(Device d);

  // Allocates `bytes` (64-byte aligned on the CPU); never returns null (throws).
  void* allocate(std::size_t bytes, MemCategory cat);
  void release(void* p, std::size_t bytes, MemCategory cat);

  MemoryStats stats() const;
  void reset_peaks();

 private:
  explicit Allocator(Device d) : device_(d) {}
  void account(std::ptrdiff_t delta, MemCategory cat);
  std::string out_of_gpu_memory(std::size_t bytes, MemCategory cat) const;
  Device device_;
  MemoryStats stats_;
};

}  // namespace sppft
