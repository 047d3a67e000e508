#include "engine/allocator.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>

#include "engine/device.h"
#include "engine/error.h"

namespace sppft {

namespace {
std::mutex g_alloc_mutex;
}

std::string_view mem_category_name(MemCategory c) {
  static constexpr std::string_view names[] = {"weights", "grads", "master", "optimizer", "activations", "workspace"};
  return names[static_cast<int>(c)];
}

std::string_view device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

Allocator& Allocator::for_device(Device d) {
  static Allocator cpu(Device::CPU);
  static Allocator cuda(Device::CUDA);
  return d == Device::CPU ? cpu : cuda;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
  return buf;
}

// The one-line report of a failed GPU allocation: what was asked for, what the driver has free,
// and what sppft holds per category (the first place to look when a plan was wrong).
std::string Allocator::out_of_gpu_memory(std::size_t bytes, MemCategory cat) const {
  std::string msg = "out of GPU memory: " + human_bytes(double(bytes)) + " for " + std::string(mem_category_name(cat)) + " on " +
                    cuda_device_description(cuda_current_device());
  std::size_t free_b = 0, total_b = 0;
  if (cuda_memory_info(free_b, total_b)) msg += ", " + human_bytes(double(free_b)) + " of " + human_bytes(double(total_b)) + " free";
  const MemoryStats st = stats();
  msg += "; sppft holds";
  for (std::size_t i = 0; i < kMemCategories; ++i)
    msg += std::string(i ? ", " : " ") + std::string(mem_category_name(static_cast<MemCategory>(i))) + " " + human_bytes(double(st.current[i]));
  return msg + " (sppft memory predicts a run's bytes: try --freeze, --zero1 with more ranks, a smaller --micro-batch or --cutoff)";
}

void* Allocator::allocate(std::size_t bytes, MemCategory cat) {
  void* p = nullptr;
  if (device_ == Device::CPU) {
    std::size_t rounded = (bytes + 63) / 64 * 64;
    p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!p) throw std::bad_alloc();
  } else {
    p = cuda_device_malloc(bytes);
    if (!p) throw RuntimeFailure(out_of_gpu_memory(bytes, cat));
  }
  account(static_cast<std::ptrdiff_t>(bytes), cat);
  return p;
}

void Allocator::release(void* p, std::size_t bytes, MemCategory cat) {
  if (!p) return;
  if (device_ == Device::CPU) {
    std::free(p);
  } else {
    cuda_device_free(p);
  }
  account(-static_cast<std::ptrdiff_t>(bytes), cat);
}

void Allocator::account(std::ptrdiff_t delta, MemCategory cat) {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  auto i = static_cast<std::size_t>(cat);
  stats_.current[i] += delta;
  stats_.total_current += delta;
  if (stats_.current[i] > stats_.peak[i]) stats_.peak[i] = stats_.current[i];
  if (stats_.total_current > stats_.total_peak) stats_.total_peak = stats_.total_current;
}

MemoryStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  return stats_;
}

void Allocator::reset_peaks() {
  std::lock_guard<std::mutex> lock(g_alloc_mutex);
  stats_.peak = stats_.current;
  stats_.total_peak = stats_.total_current;
}

}  // namespace sppft
