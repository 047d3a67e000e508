// Every CUDA and cuBLAS call is checked; failures throw RuntimeFailure with the
// call, file and line.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "engine/error.h"

#define SPPFT_CUDA_CHECK(call)                                                                           \
  do {                                                                                                   \
    cudaError_t err_ = (call);                                                                           \
    if (err_ != cudaSuccess)                                                                             \
      throw ::sppft::RuntimeFailure(std::string(#call) + " failed: " + cudaGetErrorString(err_) + " at " + \
                                    __FILE__ + ":" + std::to_string(__LINE__));                          \
  } while (0)
