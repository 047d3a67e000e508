// embedding_forward on the GPU.
//
//   out[n, :] = table[ids[n], :] * scale        ids I32 [N], table [V, H], out [N, H]
//
// dtypes: table F32 or BF16, out F32 or BF16 (the product is formed in fp32, then rounded).
// Two kernels: check_ids flags any id outside [0, V) (the host reads the flag back and
// throws InputError, like the CPU reference, before anything is written), then the
// gather: a grid-stride loop over rows, each row copied by one block with 16-byte packs
// of 8 elements when H % 8 == 0 and both bases are 16-byte aligned.
#include <string>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using detail::bf16;

__global__ void check_ids_kernel(const std::int32_t* __restrict__ ids, std::int64_t n, std::int64_t vocab,
                                 int* __restrict__ flag) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int32_t id = ids[i];
    if (id < 0 || id >= vocab) {
      if (atomicExch(&flag[0], 1) == 0) flag[1] = id;  // the first bad id found is reported
    }
  }
}

template <typename TT, typename TO, bool VEC>
__global__ void embedding_kernel(const std::int32_t* __restrict__ ids, const TT* __restrict__ table,
                                 TO* __restrict__ out, std::int64_t n, std::int64_t h, float scale) {
  for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const TT* src = table + static_cast<std::int64_t>(ids[r]) * h;
    TO* dst = out + r * h;
    if constexpr (VEC) {
      for (std::int64_t j = threadIdx.x * 8; j < h; j += blockDim.x * 8) {
        float v[8];
        detail::load8(src + j, v);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] *= scale;
        detail::store8(dst + j, v);
      }
    } else {
      for (std::int64_t j = threadIdx.x; j < h; j += blockDim.x) dst[j] = detail::from_f32<TO>(detail::to_f32(src[j]) * scale);
    }
  }
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, float scale, Tensor& out) {
  const char* op = "embedding_forward";
  using detail::check;
  detail::check_cuda_tensor(ids, op, "ids");
  detail::check_cuda_tensor(table, op, "table");
  detail::check_cuda_tensor(out, op, "out");
  check(ids.dtype() == DType::I32 && ids.rank() == 1, op, "ids must be a 1-d I32 tensor");
  check(table.rank() == 2, op, "table must be [V, H]");
  detail::check_float(table, op, "table");
  detail::check_float(out, op, "out");
  const std::int64_t n = ids.dim(0), vocab = table.dim(0), h = table.dim(1);
  detail::check_shape(out, {n, h}, op, "out");
  if (n == 0) return;

  cudaStream_t s = detail::stream();
  int* flag = detail::error_flag();
  SPPFT_CUDA_CHECK(cudaMemsetAsync(flag, 0, 2 * sizeof(int), s));
  check_ids_kernel<<<detail::grid_blocks(n, 256, 1024), 256, 0, s>>>(ids.data<std::int32_t>(), n, vocab, flag);
  detail::check_launch();
  int host_flag[2] = {0, 0};
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(host_flag, flag, sizeof host_flag, cudaMemcpyDeviceToHost, s));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(s));
  if (host_flag[0])
    throw InputError("token id " + std::to_string(host_flag[1]) + " outside the vocabulary (size " +
                     std::to_string(vocab) + ")");
  if (h == 0) return;

  const bool vec = h % 8 == 0 && detail::aligned16(table.raw()) && detail::aligned16(out.raw());
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(n, 1 << 20));
  const int threads = h >= 1024 ? 256 : 128;
  detail::dispatch_float(table.dtype(), [&](auto tt) {
    using TT = typename decltype(tt)::type;
    detail::dispatch_float(out.dtype(), [&](auto to) {
      using TO = typename decltype(to)::type;
      if (vec)
        embedding_kernel<TT, TO, true><<<blocks, threads, 0, s>>>(ids.data<std::int32_t>(), table.data<TT>(),
                                                                  out.data<TO>(), n, h, scale);
      else
        embedding_kernel<TT, TO, false><<<blocks, threads, 0, s>>>(ids.data<std::int32_t>(), table.data<TT>(),
                                                                   out.data<TO>(), n, h, scale);
      detail::check_launch();
    });
  });
}

}  // namespace sppft::cuda
