// Devices: which exist, and raw device memory for the tagged allocator (plain
// cudaMalloc, never managed memory). Without CUDA in the build, there are no
// CUDA devices.
#pragma once

#include <cstddef>
#include <string>

#include "engine/allocator.h"

namespace sppft {

bool built_with_cuda();
// Number of usable CUDA devices; 0 without a driver, a GPU, or CUDA in the build.
int cuda_device_count();
// "NVIDIA H200 (sm_90, 139.8 GiB)" or "" when there is none.
std::string cuda_device_description(int device = 0);

// The --device option's value: "cpu" or "cuda". InputError for another name, or for
// "cuda" when the build has no CUDA or no GPU is visible.
Device require_device(const std::string& name);

// The GPU current for this thread (0 without CUDA).
int cuda_current_device();

// Makes GPU `index` current for this thread (InputError when there is no such GPU).
void set_cuda_device(int index);

// Free and total bytes of the current GPU as cudaMemGetInfo sees them; false without one.
bool cuda_memory_info(std::size_t& free_bytes, std::size_t& total_bytes);

// cudaMalloc on the current GPU; nullptr when the GPU is out of memory (the caller reports it
// with what it knows), RuntimeFailure for any other error.
void* cuda_device_malloc(std::size_t bytes);
void cuda_device_free(void* p);

}  // namespace sppft
