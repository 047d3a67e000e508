// Backward of embedding_forward: scatter-add of the output gradient into the
// table gradient. Threads split the hidden columns, so repeated ids never race
// and rows are added in order n = 0 .. N-1 (deterministic).
#include <algorithm>
#include <string>

#include "engine/error.h"
#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void embedding_backward(const Tensor& ids, const Tensor& dout, float scale, Tensor& dtable) {
  const auto n = ids.numel(), vocab = dtable.dim(0), h = dtable.dim(1);
  const auto* id = ids.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i)
    if (id[i] < 0 || id[i] >= vocab)
      throw InputError("embedding_backward: token id " + std::to_string(id[i]) + " outside the vocabulary (size " +
                       std::to_string(vocab) + ")");
  const float* g = dout.data<float>();
  float* t = dtable.data<float>();
  constexpr std::int64_t kBlock = 64;
  const std::int64_t blocks = (h + kBlock - 1) / kBlock;
#pragma omp parallel for if (n * h > 65536)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(h, c0 + kBlock);
    for (std::int64_t i = 0; i < n; ++i) {
      float* dst = t + static_cast<std::int64_t>(id[i]) * h;
      const float* src = g + i * h;
      for (std::int64_t c = c0; c < c1; ++c) dst[c] += scale * src[c];
    }
  }
}

}  // namespace sppft::cpu
