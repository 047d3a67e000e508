#include "engine/device.h"

#include "engine/error.h"

#ifdef SPPFT_HAVE_CUDA
#include <cuda_runtime.h>

#include "engine/cuda_check.h"
#endif

namespace sppft {

#ifdef SPPFT_HAVE_CUDA
bool built_with_cuda() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the "no device" error
    return 0;
  }
  return n;
}

std::string cuda_device_description(int device) {
  if (device >= cuda_device_count()) return "";
  cudaDeviceProp p{};
  SPPFT_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", p.totalGlobalMem / 1073741824.0);
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " + mem + ")";
}

void set_cuda_device(int index) {
  const int n = cuda_device_count();
  if (index < 0 || index >= n)
    throw InputError("GPU " + std::to_string(index) + " requested (LOCAL_RANK) but this node has " + std::to_string(n));
  SPPFT_CUDA_CHECK(cudaSetDevice(index));
}

int cuda_current_device() {
  int d = 0;
  SPPFT_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

bool cuda_memory_info(std::size_t& free_bytes, std::size_t& total_bytes) {
  if (cuda_device_count() == 0) return false;
  SPPFT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return true;
}

void* cuda_device_malloc(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: the device stays usable
    return nullptr;
  }
  SPPFT_CUDA_CHECK(err);
  return p;
}

void cuda_device_free(void* p) { cudaFree(p); }
#else
bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_description(int) { return ""; }
int cuda_current_device() { return 0; }
bool cuda_memory_info(std::size_t&, std::size_t&) { return false; }
void set_cuda_device(int index) {
  throw InputError("GPU " + std::to_string(index) + " requested but sppft was built without CUDA");
}
void* cuda_device_malloc(std::size_t) { throw RuntimeFailure("CUDA memory requested but sppft was built without CUDA"); }
void cuda_device_free(void*) {}
#endif

Device require_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name != "cuda") throw InputError("--device: expected cpu or cuda, got '" + name + "'");
  if (cuda_device_count() == 0)
    throw InputError(std::string("--device cuda: ") + (built_with_cuda() ? "no CUDA device is visible" : "this build has no CUDA"));
  return Device::CUDA;
}

}  // namespace sppft
