#include <string>

#include "engine/error.h"
#include "kernels/cpu/cpu_ops.h"

namespace sppft::cpu {

void embedding_forward(const Tensor& ids, const Tensor& table, float scale, Tensor& out) {
  const auto n = ids.numel(), vocab = table.dim(0), h = table.dim(1);
  const auto* id = ids.data<std::int32_t>();
  for (std::int64_t i = 0; i < n; ++i)
    if (id[i] < 0 || id[i] >= vocab)
      throw InputError("token id " + std::to_string(id[i]) + " outside the vocabulary (size " + std::to_string(vocab) + ")");
  const float* t = table.data<float>();
  float* o = out.data<float>();
#pragma omp parallel for if (n * h > 65536)
  for (std::int64_t i = 0; i < n; ++i) {
    const float* row = t + static_cast<std::int64_t>(id[i]) * h;
    for (std::int64_t j = 0; j < h; ++j) o[i * h + j] = row[j] * scale;
  }
}

}  // namespace sppft::cpu
