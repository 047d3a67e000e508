// Device memory the CUDA backend holds besides the tensors it is given (all under
// MemCategory::Workspace), as host arithmetic: the kernels request exactly these
// amounts, and the memory planner predicts a GPU run's workspace from the same
// functions, so prediction and measurement cannot drift apart. Plain C++ (no CUDA
// headers): the planner uses it in builds without CUDA too.
//
// Per device, kept until cuda::release_cached_resources():
//   - the cuBLASLt workspace, allocated on the first GEMM;
//   - an error flag (two ints), allocated on the first id / target check;
//   - one scratch buffer shared by every op in stream order, grown to the largest request
//     so far (at least 1 MiB, in whole MiB); reserve_scratch grows it ahead of time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace sppft::device_scratch {

inline constexpr std::size_t kGemmWorkspaceBytes = std::size_t{32} << 20;  // cuBLAS's recommendation for Hopper
inline constexpr std::size_t kErrorFlagBytes = 2 * sizeof(int);
inline constexpr std::size_t kScratchGranule = std::size_t{1} << 20;

// Bytes the scratch buffer has after a request of `request` bytes (when it was smaller).
constexpr std::size_t buffer_bytes(std::size_t request) {
  const std::size_t b = std::max(request, kScratchGranule);
  return (b + kScratchGranule - 1) / kScratchGranule * kScratchGranule;
}

// All the backend holds on a device once it has run a GEMM and a check and its largest scratch
// request was `request`: the cuBLASLt workspace, the error flag and the scratch buffer.
constexpr std::size_t backend_bytes(std::size_t request) {
  return kGemmWorkspaceBytes + kErrorFlagBytes + buffer_bytes(request);
}

// rmsnorm_backward with a weight gradient: per-block fp32 column partial sums over at
// most kRmsnormDwBlocks blocks of rows.
inline constexpr std::int64_t kRmsnormDwBlocks = 512;
constexpr std::size_t rmsnorm_backward(std::int64_t rows, std::int64_t hidden, bool dw) {
  return dw ? static_cast<std::size_t>(std::min(rows, kRmsnormDwBlocks) * hidden) * 4 : 0;
}

// attention_backward: delta = rowsum(dO * O) per (row, query head), fp32.
constexpr std::size_t attention_backward(std::int64_t rows, std::int64_t q_heads) {
  return static_cast<std::size_t>(rows * q_heads) * 4;
}

// cross_entropy: one double per row's loss, then the total.
constexpr std::size_t cross_entropy(std::int64_t rows) { return static_cast<std::size_t>(rows + 1) * 8; }

// sum_squares: one double per block (at most kSumSquaresMaxBlocks), then the total.
inline constexpr int kSumSquaresMaxBlocks = 1024;
constexpr std::size_t sum_squares() { return (kSumSquaresMaxBlocks + 1) * 8; }

// linear_backward_weight's bias gradient: per chunk of kBiasRows rows, one double per column.
inline constexpr std::int64_t kBiasRows = 1024;
constexpr std::size_t bias_backward(std::int64_t rows, std::int64_t cols) {
  return static_cast<std::size_t>((rows + kBiasRows - 1) / kBiasRows * cols) * 8;
}

// embedding_backward: the rows grouped by id, as three int arrays of `rows` (sorted ids,
// row numbers, run lengths), built on the host.
constexpr std::size_t embedding_backward(std::int64_t rows) { return static_cast<std::size_t>(rows) * 3 * 4; }

}  // namespace sppft::device_scratch
