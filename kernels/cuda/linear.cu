// linear_forward on the GPU: one cuBLASLt matmul.
//
//   y[n, m] = sum_k x[n, k] * w[m, k] + bias[m]
//   x [N, K], w [M, K] (nn.Linear layout), bias [M] or null, y [N, M]; all row-major.
//
// cuBLASLt is column-major. Row-major y [N, M] is column-major y^T [M, N] = w x^T, so
//   D (M x N, ld M) = op(A) * B,  A = w stored K x M (ld K), op(A) = A^T;  B = x stored K x N (ld K)
// i.e. the "TN" layout, the one cuBLASLt's fastest kernels are written for.
//
// dtypes: A and B both F32 (compute CUBLAS_COMPUTE_32F: plain fp32 FMA, TF32 off, unless
// set_linear_allow_tf32(true) picks CUBLAS_COMPUTE_32F_FAST_TF32) with D F32, or both BF16
// (tensor cores, fp32 accumulation) with D F32 or BF16; alpha/beta F32. The bias is fused with the BIAS
// epilogue when it has D's dtype (what cuBLASLt expects) and is 16-byte aligned; otherwise,
// or when no algorithm supports the epilogue, it is broadcast into y first and the GEMM
// accumulates onto it (beta = 1). If cuBLASLt has no algorithm at all for a shape or
// alignment, a slow tiled fallback kernel computes the same thing.
//
// One cuBLASLt handle and a 32 MiB workspace per device, created on first use and cached
// with the matmul descriptors and the heuristic's algorithm per (shape, dtypes, alignment).
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "engine/allocator.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

#define SPPFT_CUBLAS_CHECK(call)                                                                                 \
  do {                                                                                                           \
    cublasStatus_t st_ = (call);                                                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                            \
      throw ::sppft::RuntimeFailure(std::string(#call) + " failed: " + cublasLtGetStatusString(st_) + " at " + \
                                    __FILE__ + ":" + std::to_string(__LINE__));                                 \
  } while (0)

namespace sppft::cuda {

namespace {

using detail::bf16;
using detail::current_device;
using detail::kMaxDevices;

constexpr std::size_t kWorkspaceBytes = 32u << 20;  // cuBLAS's recommendation for Hopper
constexpr std::size_t kMaxPlans = 4096;  // cached (shape, dtype, alignment) plans per device
std::atomic<bool> g_allow_tf32{false};
std::atomic<bool> g_force_fallback{false};

// ---- RAII owners of cuBLASLt objects ----
struct HandleDeleter {
  void operator()(cublasLtContext* h) const { cublasLtDestroy(h); }
};
struct DescDeleter {
  void operator()(cublasLtMatmulDesc_t d) const { cublasLtMatmulDescDestroy(d); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayout_t l) const { cublasLtMatrixLayoutDestroy(l); }
};
struct PrefDeleter {
  void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using Handle = std::unique_ptr<cublasLtContext, HandleDeleter>;
using Desc = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>, DescDeleter>;
using Layout = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>, LayoutDeleter>;
using Pref = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, PrefDeleter>;

// The tagged workspace buffer.
class Workspace {
 public:
  explicit Workspace(std::size_t bytes)
      : ptr_(Allocator::for_device(Device::CUDA).allocate(bytes, MemCategory::Workspace)), bytes_(bytes) {}
  ~Workspace() { Allocator::for_device(Device::CUDA).release(ptr_, bytes_, MemCategory::Workspace); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_;
  std::size_t bytes_;
};

// Everything that decides the matmul descriptors and the algorithm.
struct PlanKey {
  std::int64_t m, n, k;
  int ab_type, d_type;
  int compute;
  bool bias_epilogue;
  unsigned align_a, align_b, align_d, align_bias;
  auto tie() const {
    return std::tie(m, n, k, ab_type, d_type, compute, bias_epilogue, align_a, align_b, align_d, align_bias);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct Plan {
  Desc desc;
  Layout a, b, d;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;  // false: no algorithm for this key (cached too, so we ask once)
};

struct LtState {
  Handle handle;
  std::unique_ptr<Workspace> workspace;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
};

struct LtRegistry {
  std::mutex mutex;
  std::array<std::unique_ptr<LtState>, kMaxDevices> devices;
};
LtRegistry& lt_registry() {
  static LtRegistry* r = new LtRegistry;  // never destroyed: see kernels/cuda/runtime.cu
  return *r;
}

// Largest power of two (<= 256) dividing the address: what cuBLASLt's heuristic must assume.
unsigned alignment_of(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  unsigned al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Caller holds the registry mutex.
LtState& lt_state_locked(int dev) {
  auto& slot = lt_registry().devices[dev];
  if (!slot) {
    auto s = std::make_unique<LtState>();
    cublasLtHandle_t h = nullptr;
    SPPFT_CUBLAS_CHECK(cublasLtCreate(&h));
    s->handle.reset(h);
    s->workspace = std::make_unique<Workspace>(kWorkspaceBytes);
    slot = std::move(s);
  }
  return *slot;
}

// Builds the descriptors and asks the heuristic for the best algorithm.
std::unique_ptr<Plan> make_plan(LtState& st, const PlanKey& key, const void* bias) {
  auto plan = std::make_unique<Plan>();
  cublasLtMatmulDesc_t desc = nullptr;
  SPPFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, static_cast<cublasComputeType_t>(key.compute), CUDA_R_32F));
  plan->desc.reset(desc);
  const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
  SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
  if (key.bias_epilogue) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const std::int32_t bias_type = key.d_type;
    SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                      sizeof bias_type));
    SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  const auto ab = static_cast<cudaDataType_t>(key.ab_type), dt = static_cast<cudaDataType_t>(key.d_type);
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  SPPFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, ab, key.k, key.m, key.k));
  plan->a.reset(la);
  SPPFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, ab, key.k, key.n, key.k));
  plan->b.reset(lb);
  SPPFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dt, key.m, key.n, key.m));
  plan->d.reset(ld);

  cublasLtMatmulPreference_t pref = nullptr;
  SPPFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  Pref pref_owner(pref);
  const std::uint64_t ws = st.workspace->bytes();
  SPPFT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  const std::uint32_t al_a = key.align_a, al_b = key.align_b, al_d = key.align_d;
  SPPFT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  SPPFT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  SPPFT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d));
  SPPFT_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d));

  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  const cublasStatus_t st_h = cublasLtMatmulAlgoGetHeuristic(st.handle.get(), desc, la, lb, ld, ld, pref, 1, &result,
                                                              &count);
  if (st_h == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan->algo = result.algo;
    plan->found = true;
  } else if (st_h != CUBLAS_STATUS_SUCCESS && st_h != CUBLAS_STATUS_NOT_SUPPORTED) {
    SPPFT_CUBLAS_CHECK(st_h);
  }
  return plan;
}

// y[n, :] = bias (converted to y's dtype); for K == 0, and for the unfused bias path.
template <typename TB, typename TY>
__global__ void broadcast_bias_kernel(const TB* __restrict__ bias, TY* __restrict__ y, std::int64_t n,
                                      std::int64_t m) {
  const std::int64_t total = n * m;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = detail::from_f32<TY>(bias ? detail::to_f32(bias[i % m]) : 0.0f);
}

// Correctness fallback for shapes/alignments cuBLASLt has no algorithm for (e.g. odd
// leading dimensions of BF16 matrices): a plain 16 x 16 shared-memory tiled GEMM, fp32
// accumulation, y (+)= x w^T. Slow; used only when the heuristic returns nothing.
constexpr int kFallbackTile = 16;
template <typename TA, typename TY>
__global__ void gemm_fallback_kernel(const TA* __restrict__ x, const TA* __restrict__ w, TY* __restrict__ y,
                                     std::int64_t n, std::int64_t k, std::int64_t m, bool accumulate) {
  __shared__ float xs[kFallbackTile][kFallbackTile + 1];
  __shared__ float ws[kFallbackTile][kFallbackTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kFallbackTile + ty;  // index into n
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.y) * kFallbackTile;      // first index into m
  float acc = 0.0f;
  for (std::int64_t k0 = 0; k0 < k; k0 += kFallbackTile) {
    const std::int64_t kk = k0 + tx, wrow = col0 + ty;
    xs[ty][tx] = row < n && kk < k ? detail::to_f32(x[row * k + kk]) : 0.0f;
    ws[ty][tx] = wrow < m && kk < k ? detail::to_f32(w[wrow * k + kk]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int e = 0; e < kFallbackTile; ++e) acc = fmaf(xs[ty][e], ws[tx][e], acc);
    __syncthreads();
  }
  const std::int64_t col = col0 + tx;
  if (row < n && col < m) {
    if (accumulate) acc += detail::to_f32(y[row * m + col]);
    y[row * m + col] = detail::from_f32<TY>(acc);
  }
}

void gemm_fallback(const Tensor& x, const Tensor& w, Tensor& y, bool accumulate) {
  const std::int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
  const dim3 grid(static_cast<unsigned>((n + kFallbackTile - 1) / kFallbackTile),
                  static_cast<unsigned>((m + kFallbackTile - 1) / kFallbackTile));
  detail::check((m + kFallbackTile - 1) / kFallbackTile <= 65535, "linear_forward", "M too large for the fallback GEMM");
  detail::dispatch_float(x.dtype(), [&](auto ta) {
    using TA = typename decltype(ta)::type;
    detail::dispatch_float(y.dtype(), [&](auto ty) {
      using TY = typename decltype(ty)::type;
      gemm_fallback_kernel<TA, TY><<<grid, dim3(kFallbackTile, kFallbackTile), 0, detail::stream()>>>(
          x.data<TA>(), w.data<TA>(), y.data<TY>(), n, k, m, accumulate);
      detail::check_launch();
    });
  });
}

void fill_bias(const Tensor* bias, Tensor& y, std::int64_t n, std::int64_t m) {
  detail::dispatch_float(y.dtype(), [&](auto ty) {
    using TY = typename decltype(ty)::type;
    detail::dispatch_float(bias ? bias->dtype() : y.dtype(), [&](auto tb) {
      using TB = typename decltype(tb)::type;
      broadcast_bias_kernel<TB, TY><<<detail::grid_blocks(n * m, 256), 256, 0, detail::stream()>>>(
          bias ? bias->data<TB>() : nullptr, y.data<TY>(), n, m);
      detail::check_launch();
    });
  });
}

}  // namespace

namespace detail {
void release_linear_cache() {
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(lt_registry().mutex);
  lt_registry().devices[dev].reset();
}
}  // namespace detail

void set_linear_allow_tf32(bool allow) { g_allow_tf32.store(allow); }
void set_linear_fallback_for_testing(bool force) { g_force_fallback.store(force); }

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const char* op = "linear_forward";
  using detail::check;
  detail::check_cuda_tensor(x, op, "x");
  detail::check_cuda_tensor(w, op, "w");
  detail::check_cuda_tensor(y, op, "y");
  check(x.rank() == 2 && w.rank() == 2, op, "x and w must be 2-d");
  const std::int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
  check(w.dim(1) == k, op, "w has shape " + shape_str(w.shape()) + ", expected [M, " + std::to_string(k) + "]");
  detail::check_shape(y, {n, m}, op, "y");
  detail::check_float(x, op, "x");
  detail::check_float(y, op, "y");
  check(w.dtype() == x.dtype(), op, "x and w must have the same dtype (F32 or BF16)");
  check(x.dtype() == DType::BF16 || y.dtype() == DType::F32, op, "F32 inputs need an F32 output");
  if (bias) {
    detail::check_cuda_tensor(*bias, op, "bias");
    detail::check_float(*bias, op, "bias");
    detail::check_shape(*bias, {m}, op, "bias");
  }
  if (n == 0 || m == 0) return;
  if (k == 0) {  // empty sum: y = bias or 0
    fill_bias(bias, y, n, m);
    return;
  }

  const bool fuse_bias = bias && bias->dtype() == y.dtype() && detail::aligned16(bias->raw());
  PlanKey key{};
  key.m = m, key.n = n, key.k = k;
  key.ab_type = cuda_type(x.dtype());
  key.d_type = cuda_type(y.dtype());
  key.compute = x.dtype() == DType::F32 && g_allow_tf32.load() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  key.align_a = alignment_of(w.raw());
  key.align_b = alignment_of(x.raw());
  key.align_d = alignment_of(y.raw());

  const int dev = current_device();
  std::lock_guard<std::mutex> lock(lt_registry().mutex);
  LtState& st = lt_state_locked(dev);
  auto plan_for = [&](bool epilogue) -> Plan& {
    key.bias_epilogue = epilogue;
    key.align_bias = epilogue ? alignment_of(bias->raw()) : 0;
    auto it = st.plans.find(key);
    if (it == st.plans.end()) {
      if (st.plans.size() >= kMaxPlans) st.plans.clear();  // many distinct token counts: start over
      it = st.plans.emplace(key, make_plan(st, key, epilogue ? bias->raw() : nullptr)).first;
    }
    return *it->second;
  };

  Plan* plan = nullptr;
  bool fused = false;
  if (fuse_bias) {
    plan = &plan_for(true);
    fused = plan->found;
  }
  if (!fused) plan = &plan_for(false);
  if (!plan->found || g_force_fallback.load()) {  // no cuBLASLt algorithm for this shape / alignment
    if (bias) fill_bias(bias, y, n, m);
    gemm_fallback(x, w, y, bias != nullptr);
    return;
  }

  float beta = 0.0f;
  if (fused) {
    const void* bp = bias->raw();
    SPPFT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan->desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
  } else if (bias) {
    fill_bias(bias, y, n, m);
    beta = 1.0f;
  }
  const float alpha = 1.0f;
  const cublasStatus_t status =
      cublasLtMatmul(st.handle.get(), plan->desc.get(), &alpha, w.raw(), plan->a.get(), x.raw(), plan->b.get(), &beta,
                     y.raw(), plan->d.get(), y.raw(), plan->d.get(), &plan->algo, st.workspace->get(),
                     st.workspace->bytes(), detail::stream());
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {  // refused at run time: remember, and fall back
    plan->found = false;
    if (bias) fill_bias(bias, y, n, m);
    gemm_fallback(x, w, y, bias != nullptr);
    return;
  }
  SPPFT_CUBLAS_CHECK(status);
}

}  // namespace sppft::cuda
