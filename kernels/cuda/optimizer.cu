// Optimizer-side ops on the GPU: sum_squares (for the global gradient norm),
// scale_inplace (clipping), and AdamW, one tensor per call or many tensors per launch.
//
// sum_squares: F32 or BF16. Deterministic for a given element count: a fixed grid (a
// function of numel only, at most kSsMaxBlocks blocks of kSsThreads threads), each thread
// walks packs of 8 consecutive elements in a fixed grid-stride order (16-byte loads when the
// base is aligned, scalar loads otherwise: the same elements in the same order either way),
// adding the exact double squares; a fixed warp-shuffle + shared-memory tree gives one
// double partial per block, and one block adds the partials in a fixed tree. The host reads
// the double back: this op synchronises.
//
// scale_inplace: F32 or BF16, a grid-stride elementwise kernel (fp32 product, rounded back).
//
// AdamW: kernels/ops.h's update (torch.optim.AdamW's single-tensor path) operation by
// operation: scalars computed in double on the host and rounded to float exactly like
// kernels/cpu/adamw.cpp; per element, explicitly rounded fp32 operations (__fmul_rn etc.,
// so nvcc cannot contract them into FMAs the CPU reference does not do) and the fmaf of
// torch's lerp. param F32 or BF16 (rounded to nearest even after the fp32 update), grad F32
// or BF16, m, v (and master) F32.
//
// adamw_multi_tensor: the tensors travel as a table in the kernel parameters (no device
// buffer, no copy, no sync, no lifetime question), up to kMtMaxTensors tensors per launch
// (the table stays under the 4 KiB classic parameter limit, so any toolkit/driver works);
// more tensors take more launches. Each tensor is cut into chunks of kMtChunk elements, one
// block per chunk; the table holds each tensor's first block index, and a block finds its
// tensor by binary search over those (uniform across the block) and its element range as
// (block - first block) * kMtChunk. adamw_step runs the same kernel with a one-entry table,
// so the two agree bit for bit. Neither synchronises.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/device_scratch.h"
#include "kernels/cuda/cuda_ops.h"

namespace sppft::cuda {

namespace {

using detail::bf16;

// ---- sum_squares ----
constexpr int kSsThreads = 256;
constexpr int kSsMaxBlocks = device_scratch::kSumSquaresMaxBlocks;

// Sum over the block in a fixed order; thread 0 gets the total. blockDim.x == kSsThreads.
__device__ __forceinline__ double block_sum_double(double v, double* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  double t = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) t += sh[w];
  return t;
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(kSsThreads)
    sum_squares_kernel(const T* __restrict__ x, std::int64_t n, double* __restrict__ partial) {
  __shared__ double sh[kSsThreads / 32];
  const std::int64_t packs = (n + 7) / 8, full = n / 8;
  double s = 0.0;
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(kSsThreads) + threadIdx.x; p < packs;
       p += static_cast<std::int64_t>(gridDim.x) * kSsThreads) {
    const std::int64_t i0 = p * 8;
    if (VEC && p < full) {
      float v[8];
      detail::load8(x + i0, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) s += static_cast<double>(v[e]) * v[e];
    } else {
      for (std::int64_t i = i0; i < min(n, i0 + 8); ++i) {
        const double v = detail::to_f32(x[i]);
        s += v * v;
      }
    }
  }
  s = block_sum_double(s, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// out[0] = sum of partial[0 .. count), count <= kSsMaxBlocks, in a fixed tree. One block of kSsMaxBlocks threads.
__global__ void __launch_bounds__(kSsMaxBlocks)
    sum_partials_kernel(const double* __restrict__ partial, int count, double* __restrict__ out) {
  __shared__ double sh[kSsMaxBlocks];
  sh[threadIdx.x] = static_cast<int>(threadIdx.x) < count ? partial[threadIdx.x] : 0.0;
  __syncthreads();
  for (int half = kSsMaxBlocks / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) sh[threadIdx.x] += sh[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = sh[0];
}

// ---- scale_inplace ----
template <typename T>
__global__ void scale_kernel(T* __restrict__ x, std::int64_t n, float s) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    x[i] = detail::from_f32<T>(detail::to_f32(x[i]) * s);
}

// ---- AdamW ----
// The step's scalars, rounded to float on the host exactly as kernels/cpu/adamw.cpp does.
struct AdamWScalars {
  float w1;        // 1 - beta1
  float w1m1;      // w1 - 1 (the other branch of torch's lerp)
  float b2;        // beta2
  float w2;        // 1 - beta2
  float bc2_sqrt;  // sqrt(1 - beta2^step)
  float eps;
  float neg_step;  // -lr / (1 - beta1^step)
  int lerp_low;    // |w1| < 0.5
};

AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, std::int64_t step) {
  const double st = static_cast<double>(step);
  AdamWScalars c{};
  c.w1 = static_cast<float>(1.0 - beta1);
  c.w1m1 = c.w1 - 1.0f;
  c.lerp_low = std::fabs(c.w1) < 0.5f;
  c.b2 = static_cast<float>(beta2);
  c.w2 = static_cast<float>(1.0 - beta2);
  c.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, st)));
  c.eps = static_cast<float>(eps);
  c.neg_step = static_cast<float>(-(lr / (1.0 - std::pow(beta1, st))));
  return c;
}

// One element: p, m, v updated in place (p is the fp32 value: param, or the master copy).
__device__ __forceinline__ void adamw_update(float& p, float& m, float& v, float g, float decay,
                                             const AdamWScalars& c) {
  float pi = __fmul_rn(p, decay);
  const float d = __fsub_rn(g, m);
  const float mn = c.lerp_low ? fmaf(c.w1, d, m) : fmaf(c.w1m1, d, g);
  float vi = __fmul_rn(v, c.b2);
  vi = __fadd_rn(vi, __fmul_rn(__fmul_rn(c.w2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), c.bc2_sqrt), c.eps);
  pi = __fadd_rn(pi, __fdiv_rn(__fmul_rn(c.neg_step, mn), denom));
  p = pi;
  m = mn;
  v = vi;
}

constexpr int kMtMaxTensors = 64;
constexpr std::int64_t kMtChunk = 1 << 16;  // elements per block
constexpr int kMtThreads = 512;
constexpr int kParamBf16 = 1, kGradBf16 = 2;

struct MtTensor {
  void* param;         // F32 or BF16 (flags)
  const void* grad;    // F32 or BF16 (flags)
  float* m;
  float* v;
  float* master;       // null: the update runs on param itself
  std::int64_t numel;  // > 0
  float decay;         // 1 - lr * weight_decay
  std::int32_t flags;
};
struct MtTable {
  MtTensor t[kMtMaxTensors];
  std::int32_t first_block[kMtMaxTensors + 1];  // blocks of tensor i: [first_block[i], first_block[i + 1])
  std::int32_t count;
};
static_assert(sizeof(MtTable) + sizeof(AdamWScalars) <= 4000, "AdamW table must fit the 4 KiB kernel parameters");

__global__ void __launch_bounds__(kMtThreads) adamw_multi_kernel(const MtTable table, const AdamWScalars c) {
  const int b = static_cast<int>(blockIdx.x);
  int lo = 0, hi = table.count - 1;  // the last tensor whose first block is <= b
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table.first_block[mid] <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  const MtTensor& d = table.t[lo];
  const std::int64_t begin = static_cast<std::int64_t>(b - table.first_block[lo]) * kMtChunk;
  const std::int64_t end = min(d.numel, begin + kMtChunk);
  const bool param_bf16 = d.flags & kParamBf16, grad_bf16 = d.flags & kGradBf16;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kMtThreads) {
    const float g = grad_bf16 ? detail::to_f32(static_cast<const bf16*>(d.grad)[i]) : static_cast<const float*>(d.grad)[i];
    float p = d.master ? d.master[i]
                       : (param_bf16 ? detail::to_f32(static_cast<const bf16*>(d.param)[i])
                                     : static_cast<const float*>(d.param)[i]);
    float m = d.m[i], v = d.v[i];
    adamw_update(p, m, v, g, d.decay, c);
    d.m[i] = m;
    d.v[i] = v;
    if (d.master) d.master[i] = p;
    if (param_bf16)
      static_cast<bf16*>(d.param)[i] = detail::from_f32<bf16>(p);
    else
      static_cast<float*>(d.param)[i] = p;
  }
}

// Launches the kernel over `entries` (validated, numel > 0), kMtMaxTensors per launch.
void launch_adamw(const std::vector<MtTensor>& entries, const AdamWScalars& c) {
  constexpr std::int64_t kMaxGrid = 0x7fffffff;
  MtTable table{};
  std::int64_t blocks = 0;
  auto flush = [&] {
    if (table.count == 0) return;
    table.first_block[table.count] = static_cast<std::int32_t>(blocks);
    adamw_multi_kernel<<<static_cast<unsigned>(blocks), kMtThreads, 0, detail::stream()>>>(table, c);
    detail::check_launch();
    table = MtTable{};
    blocks = 0;
  };
  for (const MtTensor& e : entries) {
    const std::int64_t nb = (e.numel + kMtChunk - 1) / kMtChunk;
    if (table.count == kMtMaxTensors || blocks + nb > kMaxGrid) flush();
    table.t[table.count] = e;
    table.first_block[table.count] = static_cast<std::int32_t>(blocks);
    ++table.count;
    blocks += nb;
  }
  flush();
}

// Checks one tensor of an AdamW update and returns its table entry (numel may be 0).
MtTensor adamw_entry(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor* master, double lr,
                     double weight_decay, const char* op, const std::string& where) {
  using detail::check;
  auto name = [&](const char* n) { return where + n; };
  detail::check_cuda_tensor(param, op, name("param").c_str());
  detail::check_cuda_tensor(grad, op, name("grad").c_str());
  detail::check_cuda_tensor(m, op, name("m").c_str());
  detail::check_cuda_tensor(v, op, name("v").c_str());
  detail::check_float(param, op, name("param").c_str());
  detail::check_float(grad, op, name("grad").c_str());
  check(m.dtype() == DType::F32 && v.dtype() == DType::F32, op, name("m and v must be F32"));
  detail::check_shape(grad, param.shape(), op, name("grad").c_str());
  detail::check_shape(m, param.shape(), op, name("m").c_str());
  detail::check_shape(v, param.shape(), op, name("v").c_str());
  if (master) {
    detail::check_cuda_tensor(*master, op, name("master").c_str());
    check(master->dtype() == DType::F32, op, name("master must be F32"));
    detail::check_shape(*master, param.shape(), op, name("master").c_str());
    check(master->raw() != param.raw() || param.numel() == 0, op, name("master must not alias param"));
  }
  MtTensor e{};
  e.param = param.raw();
  e.grad = grad.raw();
  e.m = m.data<float>();
  e.v = v.data<float>();
  e.master = master ? master->data<float>() : nullptr;
  e.numel = param.numel();
  e.decay = static_cast<float>(1.0 - lr * weight_decay);
  e.flags = (param.dtype() == DType::BF16 ? kParamBf16 : 0) | (grad.dtype() == DType::BF16 ? kGradBf16 : 0);
  return e;
}

}  // namespace

double sum_squares(const Tensor& t) {
  const char* op = "sum_squares";
  detail::check_cuda_tensor(t, op, "t");
  detail::check_float(t, op, "t");
  const std::int64_t n = t.numel();
  if (n == 0) return 0.0;
  const std::int64_t packs = (n + 7) / 8;
  const int blocks = static_cast<int>(std::min<std::int64_t>((packs + kSsThreads - 1) / kSsThreads, kSsMaxBlocks));
  auto* partial = static_cast<double*>(detail::scratch(device_scratch::sum_squares()));
  double* total = partial + kSsMaxBlocks;
  cudaStream_t s = detail::stream();
  const bool vec = detail::aligned16(t.raw());
  detail::dispatch_float(t.dtype(), [&](auto tt) {
    using T = typename decltype(tt)::type;
    if (vec)
      sum_squares_kernel<T, true><<<blocks, kSsThreads, 0, s>>>(t.data<T>(), n, partial);
    else
      sum_squares_kernel<T, false><<<blocks, kSsThreads, 0, s>>>(t.data<T>(), n, partial);
    detail::check_launch();
  });
  sum_partials_kernel<<<1, kSsMaxBlocks, 0, s>>>(partial, blocks, total);
  detail::check_launch();
  double result = 0.0;
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(&result, total, sizeof result, cudaMemcpyDeviceToHost, s));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(s));
  return result;
}

void scale_inplace(Tensor& t, float s) {
  const char* op = "scale_inplace";
  detail::check_cuda_tensor(t, op, "t");
  detail::check_float(t, op, "t");
  const std::int64_t n = t.numel();
  if (n == 0) return;
  detail::dispatch_float(t.dtype(), [&](auto tt) {
    using T = typename decltype(tt)::type;
    scale_kernel<T><<<detail::grid_blocks(n, 256, 4096), 256, 0, detail::stream()>>>(t.data<T>(), n, s);
    detail::check_launch();
  });
}

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const ops::AdamWParams& hp,
                std::int64_t step) {
  const char* op = "adamw_step";
  detail::check(step >= 1, op, "step counts from 1");
  const MtTensor e = adamw_entry(param, grad, m, v, nullptr, hp.lr, hp.weight_decay, op, "");
  if (e.numel == 0) return;
  launch_adamw({e}, adamw_scalars(hp.lr, hp.beta1, hp.beta2, hp.eps, step));
}

void adamw_multi_tensor(std::span<const AdamWTensor> tensors, double lr, double beta1, double beta2, double eps,
                        std::int64_t step) {
  const char* op = "adamw_multi_tensor";
  detail::check(step >= 1, op, "step counts from 1");
  std::vector<MtTensor> entries;
  entries.reserve(tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {  // every check before any launch
    const AdamWTensor& t = tensors[i];
    const std::string where = "tensor " + std::to_string(i) + ": ";
    detail::check(t.param && t.grad && t.m && t.v, op, where + "param, grad, m and v must be set");
    const MtTensor e = adamw_entry(*t.param, *t.grad, *t.m, *t.v, t.master, lr, static_cast<double>(t.weight_decay),
                                   op, where);
    if (e.numel > 0) entries.push_back(e);
  }
  launch_adamw(entries, adamw_scalars(lr, beta1, beta2, eps, step));
}

}  // namespace sppft::cuda
