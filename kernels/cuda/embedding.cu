// embedding_forward and embedding_backward on the GPU.
//
//   out[n, :] = table[ids[n], :] * scale        ids I32 [N], table [V, H], out [N, H]
//
// dtypes: table F32 or BF16, out F32 or BF16 (the product is formed in fp32, then rounded).
// Two kernels: check_ids flags any id outside [0, V) (the host reads the flag back and
// throws InputError, like the CPU reference, before anything is written), then the
// gather: a grid-stride loop over rows, each row copied by one block with 16-byte packs
// of 8 elements when H % 8 == 0 and both bases are 16-byte aligned.
//
// embedding_backward:  dtable[ids[n], :] += scale * dout[n, :]   (dout [N, H], dtable [V, H])
// dtypes: dout F32 or BF16, dtable F32 or BF16 (each dtable element is read once, summed in
// fp32 and rounded once). Repeated ids add up in row order n = 0 .. N-1, bitwise
// reproducibly, without atomics:
//   1. on the host: the ids come back (one small copy, so this op synchronises) and are
//      checked (InputError before any write); the row numbers are stably sorted by id, so
//      rows of one id form one contiguous run still in order of n, and each run's length is
//      noted at its first position (0 elsewhere); one copy puts the three int arrays into
//      scratch (closed-form size: kernels/device_scratch.h);
//   2. scatter: block (column tile, p), grid-stride over p; the first position of each
//      run sums that id's rows of dout in order (one fp32 accumulator per column, fma with
//      scale, started from the dtable value) and stores the row of dtable once. Every
//      dtable element is written by exactly one thread, summing in the fixed order.
// Parallelism: over distinct ids x column tiles (128 threads x 8 columns with 16-byte packs
// when H % 8 == 0 and both bases are aligned, else 128 columns); the time is bounded by
// the longest run of one id (its rows are summed serially, as the row order requires).
#include <algorithm>
#include <climits>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/device_scratch.h"
#include "kernels/embedding_groups.h"

namespace sppft::cuda {

namespace {

using detail::bf16;

__device__ __forceinline__ void check_id(std::int32_t id, std::int64_t vocab, int* flag) {
  if (id < 0 || id >= vocab) {
    if (atomicExch(&flag[0], 1) == 0) flag[1] = id;  // the first bad id found is reported
  }
}

__global__ void check_ids_kernel(const std::int32_t* __restrict__ ids, std::int64_t n, std::int64_t vocab,
                                 int* __restrict__ flag) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    check_id(ids[i], vocab, flag);
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

// ---- backward ----

// Block (x: tile of columns, y: sorted positions, grid-stride). The first position of each
// run adds that id's rows of dout, in row order, into its row of dtable.
template <typename TD, typename TT, bool VEC>
__global__ void embedding_backward_kernel(const std::int32_t* __restrict__ keys, const std::int32_t* __restrict__ rows,
                                          const std::int32_t* __restrict__ run, const TD* __restrict__ dout,
                                          TT* __restrict__ dtable, std::int64_t n, std::int64_t h, float scale) {
  const std::int64_t col = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * (VEC ? 8 : 1);
  if (col >= h) return;  // no barriers below
  for (std::int64_t p = blockIdx.y; p < n; p += gridDim.y) {
    const std::int32_t len = run[p];
    if (len == 0) continue;
    TT* dst = dtable + static_cast<std::int64_t>(keys[p]) * h + col;
    const std::int32_t* rp = rows + p;
    if constexpr (VEC) {
      float acc[8];
      detail::load8(dst, acc);
#pragma unroll 4
      for (std::int32_t q = 0; q < len; ++q) {
        float g[8];
        detail::load8(dout + static_cast<std::int64_t>(rp[q]) * h + col, g);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] = __fmaf_rn(scale, g[e], acc[e]);
      }
      detail::store8(dst, acc);
    } else {
      float acc = detail::to_f32(*dst);
#pragma unroll 4
      for (std::int32_t q = 0; q < len; ++q)
        acc = __fmaf_rn(scale, detail::to_f32(dout[static_cast<std::int64_t>(rp[q]) * h + col]), acc);
      *dst = detail::from_f32<TT>(acc);
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

void embedding_backward(const Tensor& ids, const Tensor& dout, float scale, Tensor& dtable) {
  const char* op = "embedding_backward";
  using detail::check;
  detail::check_cuda_tensor(ids, op, "ids");
  detail::check_cuda_tensor(dout, op, "dout");
  detail::check_cuda_tensor(dtable, op, "dtable");
  check(ids.dtype() == DType::I32 && ids.rank() == 1, op, "ids must be a 1-d I32 tensor");
  check(dtable.rank() == 2, op, "dtable must be [V, H]");
  detail::check_float(dout, op, "dout");
  detail::check_float(dtable, op, "dtable");
  const std::int64_t n = ids.dim(0), vocab = dtable.dim(0), h = dtable.dim(1);
  detail::check_shape(dout, {n, h}, op, "dout");
  if (n == 0) return;
  check(n <= INT_MAX, op, "at most 2^31 - 1 rows");

  // Group the rows by id on the host (one micro-batch's ids: a few thousand ints): the ids
  // come back (so this op synchronises) and are checked, then a stable sort of the row
  // numbers by id and the run lengths go to the device in one copy.
  cudaStream_t s = detail::stream();
  std::vector<std::int32_t> host_ids(static_cast<std::size_t>(n));
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(host_ids.data(), ids.raw(), host_ids.size() * 4, cudaMemcpyDeviceToHost, s));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(s));
  for (const std::int32_t id : host_ids)
    if (id < 0 || id >= vocab)
      throw InputError(std::string(op) + " (cuda): token id " + std::to_string(id) + " outside the vocabulary (size " +
                       std::to_string(vocab) + ")");
  if (h == 0) return;
  const std::vector<std::int32_t> table = group_rows_by_id(host_ids);  // [keys | rows | run]
  auto* dev_table = static_cast<std::int32_t*>(detail::scratch(device_scratch::embedding_backward(n)));
  // Synchronous from pageable memory: returns once `table` is staged, so it may go.
  SPPFT_CUDA_CHECK(cudaMemcpy(dev_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  const std::int32_t* keys_out = dev_table;
  const std::int32_t* rows_out = dev_table + n;
  const std::int32_t* run_dev = dev_table + 2 * n;

  const bool vec = h % 8 == 0 && detail::aligned16(dout.raw()) && detail::aligned16(dtable.raw());
  const std::int64_t items_per_row = vec ? h / 8 : h;
  const int threads = static_cast<int>(std::clamp<std::int64_t>((items_per_row + 31) / 32 * 32, 32, 128));
  const dim3 grid(static_cast<unsigned>((items_per_row + threads - 1) / threads),
                  static_cast<unsigned>(std::min<std::int64_t>(n, 65535)));
  detail::dispatch_float(dout.dtype(), [&](auto td) {
    using TD = typename decltype(td)::type;
    detail::dispatch_float(dtable.dtype(), [&](auto tt) {
      using TT = typename decltype(tt)::type;
      if (vec)
        embedding_backward_kernel<TD, TT, true>
            <<<grid, threads, 0, s>>>(keys_out, rows_out, run_dev, dout.data<TD>(), dtable.data<TT>(), n, h, scale);
      else
        embedding_backward_kernel<TD, TT, false>
            <<<grid, threads, 0, s>>>(keys_out, rows_out, run_dev, dout.data<TD>(), dtable.data<TT>(), n, h, scale);
      detail::check_launch();
    });
  });
}

}  // namespace sppft::cuda
