// How embedding_backward's CUDA kernel (kernels/cuda/embedding.cu) gets the rows of each id,
// as plain host code (the emulation test in tests/emu/ builds the same table from here):
// one int table [keys | rows | run] of 3 N ints (device_scratch::embedding_backward): rows
// sorted by id, keeping row order within an id; keys[p] = the id of rows[p]; run[p] = the
// length of the run of equal ids starting at p, 0 where p is not the first of its run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

namespace sppft {

inline std::vector<std::int32_t> group_rows_by_id(std::span<const std::int32_t> ids) {
  const auto n = static_cast<std::int64_t>(ids.size());
  std::vector<std::int32_t> table(static_cast<std::size_t>(3 * n));
  std::int32_t* keys = table.data();
  std::int32_t* rows = keys + n;
  std::int32_t* run = rows + n;
  std::iota(rows, rows + n, 0);
  std::stable_sort(rows, rows + n, [&](std::int32_t a, std::int32_t b) { return ids[a] < ids[b]; });
  for (std::int64_t p = 0; p < n; ++p) keys[p] = ids[rows[p]];
  for (std::int64_t p = 0; p < n;) {
    std::int64_t q = p + 1;
    while (q < n && keys[q] == keys[p]) run[q++] = 0;
    run[p] = static_cast<std::int32_t>(q - p);
    p = q;
  }
  return table;
}

}  // namespace sppft
