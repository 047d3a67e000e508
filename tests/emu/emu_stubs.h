// What the extracted kernel code needs from the host side: the real engine/error.h and
// kernels/ops.h (plain C++: InputError, RuntimeFailure, ops::AttentionSeq) and
// SPPFT_CUDA_CHECK over the emulated runtime (engine/cuda_check.h needs the CUDA headers).
#pragma once
#include <string>

#include "engine/error.h"
#include "kernels/ops.h"

#define SPPFT_CUDA_CHECK(call)                                                              \
  do {                                                                                      \
    cudaError_t err_ = (call);                                                              \
    if (err_ != cudaSuccess) throw ::sppft::RuntimeFailure(std::string(#call) + " failed"); \
  } while (0)
