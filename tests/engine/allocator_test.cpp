// engine/allocator: byte-exact accounting per category on the CPU, and the byte formatting
// every report uses (memory tables, the out-of-GPU-memory line).
#include <doctest/doctest.h>

#include <cstdint>

#include "engine/allocator.h"

using namespace sppft;

TEST_CASE("human_bytes picks the largest binary unit below the value") {
  CHECK(human_bytes(0) == "0 B");
  CHECK(human_bytes(1023) == "1023 B");
  CHECK(human_bytes(1024) == "1.00 KiB");
  CHECK(human_bytes(1536) == "1.50 KiB");
  CHECK(human_bytes(3.5 * (1 << 20)) == "3.50 MiB");
  CHECK(human_bytes(20.02 * (1ull << 30)) == "20.02 GiB");
  CHECK(human_bytes(double(1ull << 40)) == "1.00 TiB");
  CHECK(human_bytes(2048.0 * (1ull << 40)) == "2048.00 TiB");  // no unit above TiB
}

TEST_CASE("the CPU allocator counts bytes per category, current and peak") {
  Allocator& a = Allocator::for_device(Device::CPU);
  const MemoryStats before = a.stats();
  const auto grads = static_cast<std::size_t>(MemCategory::Grads);
  void* p = a.allocate(1000, MemCategory::Grads);
  void* q = a.allocate(24, MemCategory::Grads);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 64 == 0);
  MemoryStats mid = a.stats();
  CHECK(mid.current[grads] == before.current[grads] + 1024);
  CHECK(mid.peak[grads] >= mid.current[grads]);
  CHECK(mid.total_current == before.total_current + 1024);
  a.release(q, 24, MemCategory::Grads);
  a.release(p, 1000, MemCategory::Grads);
  const MemoryStats after = a.stats();
  CHECK(after.current[grads] == before.current[grads]);
  CHECK(after.peak[grads] == mid.peak[grads]);  // the high-water mark stays until reset_peaks
  a.reset_peaks();
  CHECK(a.stats().peak[grads] == before.current[grads]);
}
