// The CUDA runtime API as the emulated device provides it (included by emu_cuda.h): one
// "GPU" whose memory is host memory, every stream the synchronous host thread, kernels run
// on emulated warps (emu::launch) when the host code launches them. Enough of the API for
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
#include <cstring>
#include <map>
#include <mutex>
#include <string>

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
using cudaStream_t = struct EmuStream*;
using cudaEvent_t = struct EmuEvent*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlock = 8, cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
constexpr unsigned cudaStreamNonBlocking = 1;
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
constexpr std::size_t kTotalMemory = std::size_t{141} << 30;
inline std::mutex g_mutex;
inline cudaError_t g_last = cudaSuccess;
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

struct EmuEvent {
  std::chrono::steady_clock::time_point t;
};

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error (emulated device)";
    case cudaErrorInvalidValue: return "invalid argument (emulated device)";
    case cudaErrorMemoryAllocation: return "out of memory (emulated device)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulated device)";
    case cudaErrorLaunchFailure: return "kernel failed on the emulated device (see its report above)";
  }
  return "unknown error (emulated device)";
}
inline cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(emu::rt::g_mutex);
  const cudaError_t e = emu::rt::g_last;
  emu::rt::g_last = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return emu::rt::g_last; }

// ---- devices
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : emu::rt::fail(cudaErrorInvalidDevice); }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return emu::rt::fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "emulated GPU (CPU fibers)");
  p->totalGlobalMem = emu::rt::kTotalMemory;
  p->major = 9, p->minor = 0, p->multiProcessorCount = emu::rt::kSms;
  p->sharedMemPerBlock = emu::rt::kSmemDefault, p->sharedMemPerBlockOptin = emu::rt::kSmemOptin;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (d != 0) return emu::rt::fail(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = emu::rt::kSms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = emu::rt::kSmemDefault; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = emu::rt::kSmemOptin; return cudaSuccess;
  }
  return emu::rt::fail(cudaErrorInvalidValue);
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

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
inline cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
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
inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t n, cudaMemcpyKind) {
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind k, cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, n, k);
}
inline cudaError_t cudaMemset(void* p, int v, std::size_t n) {
  if (n) std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t = nullptr) { return cudaMemset(p, v, n); }

// ---- streams and events: everything has finished when the call returns
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static char token;
  *s = reinterpret_cast<cudaStream_t>(&token);
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new EmuEvent{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
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
