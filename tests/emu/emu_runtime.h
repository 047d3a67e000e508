// The CUDA runtime API as the emulated device provides it (included by emu_cuda.h): GPUs whose
// memory is host memory, streams whose work is queued and run as late as CUDA allows (below),
// kernels run on emulated warps (emu::launch) when their stream runs them. Enough of the API for
// kernels/cuda/*.cu, engine/device.cpp and trainer/profile.cpp, so that the whole CUDA backend
// - host code, launch configurations, scratch buffers, the tagged allocator's device side -
// runs in the emulated-device build (tests/emudev.cmake) without a GPU. Device properties are
// an H200's (sm_90, 132 SMs, 227 KiB opt-in shared memory per block).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
};
using cudaStream_t = struct EmuStream*;
using cudaEvent_t = struct EmuEvent*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlock = 8, cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDisableTiming = 2;
struct cudaDeviceProp {
  char name[256];
  std::size_t totalGlobalMem;
  int major, minor, multiProcessorCount;
  std::size_t sharedMemPerBlock, sharedMemPerBlockOptin;
};

namespace emu::rt {
constexpr int kSms = 132;
constexpr int kSmemDefault = 48 * 1024;
constexpr int kSmemOptin = 227 * 1024;
// Memory per GPU: an H200's 141 GiB, or SPPFT_EMU_MEMORY_MIB (to test running out).
inline const std::size_t kTotalMemory = [] {
  const char* e = std::getenv("SPPFT_EMU_MEMORY_MIB");
  return e ? static_cast<std::size_t>(std::atoll(e)) << 20 : std::size_t{141} << 30;
}();
inline std::mutex g_mutex;
inline cudaError_t g_last = cudaSuccess;
inline cudaError_t g_sticky = cudaSuccess;  // a kernel that failed poisons every later synchronizing call
inline std::size_t g_in_use = 0;
inline std::map<void*, std::size_t>& allocations() {
  static auto* m = new std::map<void*, std::size_t>;  // never destroyed: allocator singletons free at exit
  return *m;
}
inline std::map<const void*, int>& smem_limits() {  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
  static auto* m = new std::map<const void*, int>;
  return *m;
}
inline cudaError_t fail(cudaError_t e) {
  g_last = e;
  return e;
}
}  // namespace emu::rt

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error (emulated device)";
    case cudaErrorInvalidValue: return "invalid argument (emulated device)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated device)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated device)";
    case cudaErrorNotReady: return "device not ready (emulated device)";
    case cudaErrorLaunchFailure: return "kernel failed on the emulated device (see its report above)";
  }
  return "unknown error (emulated device)";
}
inline cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(emu::rt::g_mutex);
  const cudaError_t e = emu::rt::g_sticky != cudaSuccess ? emu::rt::g_sticky : emu::rt::g_last;
  emu::rt::g_last = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return emu::rt::g_last; }

// ---- streams: work queued and run as late as CUDA allows
// Every operation a stream gets (kernel, copy, memset, event record, wait, cuBLASLt GEMM, NCCL
// collective) is queued, and runs only when something needs its result: a synchronizing call
// (cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, cudaMemcpy, a copy into
// host memory, cudaFree), or an operation of another stream ordered after it (cudaStreamWaitEvent,
// the legacy default stream's implicit ordering with blocking streams). Running everything as late
// as allowed turns a missing synchronization - a collective on its own stream reading gradients the
// compute stream has not written yet, the host reading a result before waiting - into a wrong
// value every time instead of a race the hardware wins most of the time. One thread at a time runs
// operations (g_sched); the others wait to queue.
namespace emu::rt {
struct Op {
  std::function<void()> run;
  std::vector<std::pair<EmuStream*, std::uint64_t>> after;  // (stream, count of its ops that must have run)
};
inline std::recursive_mutex g_sched;
}  // namespace emu::rt

struct EmuStream {
  bool blocking = true;  // orders with the legacy default stream (no cudaStreamNonBlocking)
  std::uint64_t queued = 0, done = 0;
  std::deque<emu::rt::Op> ops;
};
struct EmuEvent {
  std::shared_ptr<std::chrono::steady_clock::time_point> t;  // set when its last record runs
  EmuStream* stream = nullptr;  // where it was last recorded, and after how many ops of it
  std::uint64_t seq = 0;
};

namespace emu::rt {
inline EmuStream g_legacy;
inline std::set<EmuStream*>& streams() {  // created ones
  static auto* s = new std::set<EmuStream*>;
  return *s;
}
inline EmuStream* resolve(cudaStream_t s) { return s ? s : &g_legacy; }
// Queues `fn` on `s` after `extra`; returns its position (ops of s that must run to include it).
inline std::uint64_t enqueue(cudaStream_t stream, std::function<void()> fn,
                             std::vector<std::pair<EmuStream*, std::uint64_t>> extra = {}) {
  std::lock_guard<std::recursive_mutex> lock(g_sched);
  EmuStream* s = resolve(stream);
  Op op{std::move(fn), std::move(extra)};
  if (s == &g_legacy) {
    for (EmuStream* b : streams())
      if (b->blocking) op.after.emplace_back(b, b->queued);
  } else if (s->blocking) {
    op.after.emplace_back(&g_legacy, g_legacy.queued);
  }
  s->ops.push_back(std::move(op));
  return ++s->queued;
}
inline void flush(EmuStream* s, std::uint64_t upto) {
  std::lock_guard<std::recursive_mutex> lock(g_sched);
  while (s->done < upto) {
    Op op = std::move(s->ops.front());
    s->ops.pop_front();
    for (auto [d, n] : op.after) flush(d, n);
    op.run();
    ++s->done;
  }
}
inline void flush_all() {
  std::lock_guard<std::recursive_mutex> lock(g_sched);
  flush(&g_legacy, g_legacy.queued);
  for (EmuStream* s : streams()) flush(s, s->queued);
}
inline cudaError_t sticky() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_sticky;
}
// A kernel (or library call) failed while running: the launch error every later call sees.
inline void fail_async(cudaError_t e) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_last = g_sticky = e;
}
// Whether [p, p + n) lies inside one cudaMalloc allocation (n = 0: p itself does).
inline bool is_device(const void* p, std::size_t n = 0) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& a = allocations();
  auto it = a.upper_bound(const_cast<void*>(p));
  if (it == a.begin()) return false;
  --it;
  const std::size_t offset = static_cast<std::size_t>(static_cast<const char*>(p) - static_cast<const char*>(it->first));
  return offset < std::max<std::size_t>(it->second, 1) && n <= it->second - std::min(offset, it->second);
}
// A copy or memset whose device side is not inside one allocation: on a GPU an illegal address
// or a write past the buffer, here it would silently touch host memory.
inline cudaError_t check_device_range(const char* what, const void* p, std::size_t n) {
  if (is_device(p, n)) return cudaSuccess;
  std::fprintf(stderr, "emulated device: %s of %zu bytes at %p is not inside one device allocation\n", what, n, p);
  return fail(cudaErrorInvalidValue);
}
// Emulated GPUs (SPPFT_EMU_DEVICES, default 1, at most 8), all sharing the process's memory; the
// current one is per host thread, as in CUDA.
inline int device_count() {
  static const int n = [] {
    const char* e = std::getenv("SPPFT_EMU_DEVICES");
    const int v = e ? std::atoi(e) : 1;
    return std::clamp(v, 1, 8);
  }();
  return n;
}
inline thread_local int t_device = 0;
}  // namespace emu::rt

// ---- devices
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = emu::rt::device_count();
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= emu::rt::device_count()) return emu::rt::fail(cudaErrorInvalidDevice);
  emu::rt::t_device = d;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = emu::rt::t_device;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d < 0 || d >= emu::rt::device_count()) return emu::rt::fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "emulated GPU (CPU fibers)");
  p->totalGlobalMem = emu::rt::kTotalMemory;
  p->major = 9, p->minor = 0, p->multiProcessorCount = emu::rt::kSms;
  p->sharedMemPerBlock = emu::rt::kSmemDefault, p->sharedMemPerBlockOptin = emu::rt::kSmemOptin;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (d < 0 || d >= emu::rt::device_count()) return emu::rt::fail(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = emu::rt::kSms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = emu::rt::kSmemDefault; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = emu::rt::kSmemOptin; return cudaSuccess;
  }
  return emu::rt::fail(cudaErrorInvalidValue);
}
inline cudaError_t cudaDeviceSynchronize() {
  emu::rt::flush_all();
  return emu::rt::sticky();
}

// ---- memory: host memory, filled with 0xff (NaN) like nothing a kernel may rely on
inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(emu::rt::g_mutex);
  if (emu::rt::g_in_use + bytes > emu::rt::kTotalMemory) return emu::rt::fail(cudaErrorMemoryAllocation);
  *p = std::aligned_alloc(256, (std::max<std::size_t>(bytes, 1) + 255) / 256 * 256);
  if (!*p) return emu::rt::fail(cudaErrorMemoryAllocation);
  std::memset(*p, 0xff, bytes);
  emu::rt::allocations()[*p] = bytes;
  emu::rt::g_in_use += bytes;
  return cudaSuccess;
}
template <typename T>  // the typed overload of cuda_runtime.h's C++ API
cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  emu::rt::flush_all();  // cudaFree waits for the device
  std::lock_guard<std::mutex> lock(emu::rt::g_mutex);
  auto it = emu::rt::allocations().find(p);
  if (it == emu::rt::allocations().end()) return emu::rt::fail(cudaErrorInvalidValue);
  emu::rt::g_in_use -= it->second;
  emu::rt::allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total) {
  std::lock_guard<std::mutex> lock(emu::rt::g_mutex);
  *total = emu::rt::kTotalMemory;
  *free_bytes = emu::rt::kTotalMemory - emu::rt::g_in_use;
  return cudaSuccess;
}
// Host memory here is pageable (the product pins none), so as in CUDA a copy from it reads the
// source before the call returns and a copy into it returns when it has landed; device to device
// is queued.
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind, cudaStream_t s = nullptr) {
  if (!n) return cudaSuccess;
  const bool from_host = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost ||
                         (kind == cudaMemcpyDefault && !emu::rt::is_device(src));
  const bool to_host = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost ||
                       (kind == cudaMemcpyDefault && !emu::rt::is_device(dst));
  if (!from_host && emu::rt::check_device_range("copy source", src, n) != cudaSuccess) return cudaErrorInvalidValue;
  if (!to_host && emu::rt::check_device_range("copy destination", dst, n) != cudaSuccess) return cudaErrorInvalidValue;
  std::uint64_t at;
  if (from_host) {
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + n);
    at = emu::rt::enqueue(s, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  } else {
    at = emu::rt::enqueue(s, [dst, src, n] { std::memmove(dst, src, n); });
  }
  if (to_host) {
    emu::rt::flush(emu::rt::resolve(s), at);
    return emu::rt::sticky();
  }
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind) {
  const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, nullptr);
  if (e != cudaSuccess) return e;
  emu::rt::flush(&emu::rt::g_legacy, emu::rt::g_legacy.queued);  // synchronous in every direction
  return emu::rt::sticky();
}
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t s = nullptr) {
  if (n && emu::rt::check_device_range("memset", p, n) != cudaSuccess) return cudaErrorInvalidValue;
  if (n) emu::rt::enqueue(s, [p, v, n] { std::memset(p, v, n); });
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int v, std::size_t n) { return cudaMemsetAsync(p, v, n, nullptr); }

// ---- streams and events
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  std::lock_guard<std::recursive_mutex> lock(emu::rt::g_sched);
  *s = new EmuStream;
  (*s)->blocking = !(flags & cudaStreamNonBlocking);
  emu::rt::streams().insert(*s);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, 0); }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s) return emu::rt::fail(cudaErrorInvalidValue);
  std::lock_guard<std::recursive_mutex> lock(emu::rt::g_sched);
  emu::rt::flush(s, s->queued);  // CUDA finishes queued work after the call; here before it
  emu::rt::streams().erase(s);
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  EmuStream* r = emu::rt::resolve(s);
  emu::rt::flush(r, r->queued);
  return emu::rt::sticky();
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new EmuEvent{std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now())};
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;  // a record still queued keeps its own time point
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr) {
  std::lock_guard<std::recursive_mutex> lock(emu::rt::g_sched);
  auto t = std::make_shared<std::chrono::steady_clock::time_point>();
  e->t = t;
  e->stream = emu::rt::resolve(s);
  e->seq = emu::rt::enqueue(s, [t] { *t = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned = 0) {
  if (!e->stream) return cudaSuccess;  // never recorded: nothing to wait for
  emu::rt::enqueue(s, [] {}, {{e->stream, e->seq}});
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (e->stream) emu::rt::flush(e->stream, e->seq);
  return emu::rt::sticky();
}
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  {
    std::lock_guard<std::recursive_mutex> lock(emu::rt::g_sched);
    for (cudaEvent_t e : {a, b})
      if (!e->stream || e->stream->done < e->seq) return emu::rt::fail(cudaErrorNotReady);  // not completed yet
  }
  *ms = std::chrono::duration<float, std::milli>(*b->t - *a->t).count();
  return cudaSuccess;
}

// ---- kernels
template <typename K>
cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > emu::rt::kSmemOptin)
    return emu::rt::fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(emu::rt::g_mutex);
  emu::rt::smem_limits()[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}
