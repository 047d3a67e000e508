// linear_forward, linear_backward_input and linear_backward_weight on the GPU: one
// cuBLASLt matmul each (plus a column-sum kernel for the bias gradient).
//
//   forward:         y[n, m]  = sum_k x[n, k] * w[m, k] + bias[m]     y = x w^T (+ bias)
//   backward input:  dx[n, k] (+)= sum_m dy[n, m] * w[m, k]           dx = dy w
//   backward weight: dw[m, k] += sum_n dy[n, m] * x[n, k]             dw += dy^T x
//                    dbias[m] += sum_n dy[n, m]
//   x, dx [N, K], w, dw [M, K] (nn.Linear layout), bias, dbias [M], y, dy [N, M]; all row-major.
//
// cuBLASLt is column-major, and a row-major [R, C] matrix is a column-major C x R one (its
// transpose). So each op is one column-major GEMM  D (m x n, ld m) = alpha op(A) op(B) + beta D:
//   forward          D = y^T  (M x N) = w^T-stored-as-(K x M)^T . x^T     A = w "T", B = x "N"   ("TN")
//   backward input   D = dx^T (K x N) = w^T (K x M) . dy^T (M x N)       A = w "N", B = dy "N"  ("NN")
//   backward weight  D = dw^T (K x M) = x^T (K x N) . dy (N x M)         A = x "N", B = dy "T"  ("NT")
// (every operand is a contiguous tensor, so the leading dimensions follow from m, n, k and
// the transposes). All three go through one internal helper, lt_gemm(), sharing the handle,
// the workspace and the plan cache.
//
// dtypes: A and B both F32 (compute CUBLAS_COMPUTE_32F: plain fp32 FMA, TF32 off, unless
// set_linear_allow_tf32(true) picks CUBLAS_COMPUTE_32F_FAST_TF32) with D F32, or both BF16
// (tensor cores, fp32 accumulation) with D F32 or BF16; alpha/beta F32. Accumulating outputs
// (dw always, dx when asked, y after an unfused bias) use beta = 1, so D is also C.
// The forward bias is fused with the BIAS epilogue when it has D's dtype (what cuBLASLt
// expects) and is 16-byte aligned; otherwise, or when no algorithm supports the epilogue, it
// is broadcast into y first and the GEMM accumulates onto it (beta = 1). If cuBLASLt has no
// algorithm at all for a shape or alignment (or set_linear_fallback_for_testing(true)), a
// slow tiled fallback kernel computes the same GEMM, for all three ops.
//
// dbias: a deterministic two-pass column sum, no atomics: rows are cut into fixed chunks of
// kBiasRows rows; one block per (32 columns, chunk) sums its rows in order in double and
// writes a partial to scratch; a second kernel adds the partials of each column in chunk
// order and adds the fp32-rounded total into dbias. The same bits on every run and GPU.
//
// One cuBLASLt handle and a 32 MiB workspace per device, created on first use and cached
// with the matmul descriptors and the heuristic's algorithm per (shape, transposes, dtypes,
// alignment).
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
#include "kernels/device_scratch.h"
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

constexpr std::size_t kWorkspaceBytes = device_scratch::kGemmWorkspaceBytes;
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
  bool trans_a, trans_b;
  int ab_type, d_type;
  int compute;
  bool bias_epilogue;
  unsigned align_a, align_b, align_d, align_bias;
  auto tie() const {
    return std::tie(m, n, k, trans_a, trans_b, ab_type, d_type, compute, bias_epilogue, align_a, align_b, align_d,
                    align_bias);
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
  const cublasOperation_t op_a = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  if (key.bias_epilogue) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const std::int32_t bias_type = key.d_type;
    SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                      sizeof bias_type));
    SPPFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  // Stored (pre-op) shapes, column-major and contiguous: op(A) is m x k, op(B) is k x n.
  const auto ab = static_cast<cudaDataType_t>(key.ab_type), dt = static_cast<cudaDataType_t>(key.d_type);
  const std::int64_t a_rows = key.trans_a ? key.k : key.m, a_cols = key.trans_a ? key.m : key.k;
  const std::int64_t b_rows = key.trans_b ? key.n : key.k, b_cols = key.trans_b ? key.k : key.n;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  SPPFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, ab, a_rows, a_cols, a_rows));
  plan->a.reset(la);
  SPPFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, ab, b_rows, b_cols, b_rows));
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

// One GEMM in cuBLASLt's column-major terms:  D (m x n, ld m) = alpha op(A) op(B) + beta D,
// op(A) m x k (A stored m x k, or k x m when trans_a), op(B) k x n (B stored k x n, or n x k
// when trans_b); every operand contiguous. a and b share a dtype (F32 or BF16); d is F32, or
// BF16 when they are BF16. k > 0 (callers handle empty sums). beta = 0 never reads D.
struct Gemm {
  bool trans_a, trans_b;
  std::int64_t m, n, k;
  const Tensor* a;
  const Tensor* b;
  Tensor* d;
  float alpha, beta;
};

// Runs g through cuBLASLt (with the BIAS epilogue when fused_bias is set). Returns false,
// having written nothing, when there is no algorithm for it (or the fallback is forced):
// the caller then takes another route.
bool lt_gemm(const Gemm& g, const Tensor* fused_bias) {
  if (g_force_fallback.load()) return false;
  PlanKey key{};
  key.m = g.m, key.n = g.n, key.k = g.k;
  key.trans_a = g.trans_a, key.trans_b = g.trans_b;
  key.ab_type = cuda_type(g.a->dtype());
  key.d_type = cuda_type(g.d->dtype());
  key.compute =
      g.a->dtype() == DType::F32 && g_allow_tf32.load() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  key.bias_epilogue = fused_bias != nullptr;
  key.align_a = alignment_of(g.a->raw());
  key.align_b = alignment_of(g.b->raw());
  key.align_d = alignment_of(g.d->raw());
  key.align_bias = fused_bias ? alignment_of(fused_bias->raw()) : 0;

  const int dev = current_device();
  std::lock_guard<std::mutex> lock(lt_registry().mutex);
  LtState& st = lt_state_locked(dev);
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    if (st.plans.size() >= kMaxPlans) st.plans.clear();  // many distinct token counts: start over
    it = st.plans.emplace(key, make_plan(st, key, fused_bias ? fused_bias->raw() : nullptr)).first;
  }
  Plan& plan = *it->second;
  if (!plan.found) return false;  // no cuBLASLt algorithm for this shape / alignment
  if (fused_bias) {
    const void* bp = fused_bias->raw();
    SPPFT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
  }
  const cublasStatus_t status =
      cublasLtMatmul(st.handle.get(), plan.desc.get(), &g.alpha, g.a->raw(), plan.a.get(), g.b->raw(), plan.b.get(),
                     &g.beta, g.d->raw(), plan.d.get(), g.d->raw(), plan.d.get(), &plan.algo, st.workspace->get(),
                     st.workspace->bytes(), detail::stream());
  // Refused at run time (cuBLASLt reports some unsupported alignments of row views as
  // INVALID_VALUE rather than NOT_SUPPORTED): remember, and let the caller fall back.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    plan.found = false;
    return false;
  }
  SPPFT_CUBLAS_CHECK(status);
  return true;
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
// leading dimensions of BF16 matrices): the GEMM of a Gemm as a plain 16 x 16 shared-memory
// tiled kernel, fp32 accumulation over k in order, then D = alpha acc + beta D. Block
// (16, 16): threadIdx.x runs along m (D's contiguous dimension); each tile of A and B is
// loaded with threadIdx.x along the operand's contiguous dimension, so every global access
// is coalesced whatever the transposes. grid.y is capped at 65535 tiles of n and loops over
// the rest. Slow; used only when the heuristic returns nothing.
constexpr int kFallbackTile = 16;
template <typename TA, typename TD>
__global__ void gemm_fallback_kernel(const TA* __restrict__ a, const TA* __restrict__ b, TD* __restrict__ d,
                                     std::int64_t m, std::int64_t n, std::int64_t k, bool trans_a, bool trans_b,
                                     float alpha, float beta) {
  __shared__ float as[kFallbackTile][kFallbackTile + 1];  // as[l][i] = op(A)(i0 + i, l0 + l)
  __shared__ float bs[kFallbackTile][kFallbackTile + 1];  // bs[l][j] = op(B)(l0 + l, j0 + j)
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * kFallbackTile;
  for (std::int64_t j0 = static_cast<std::int64_t>(blockIdx.y) * kFallbackTile; j0 < n;
       j0 += static_cast<std::int64_t>(gridDim.y) * kFallbackTile) {
    float acc = 0.0f;
    for (std::int64_t l0 = 0; l0 < k; l0 += kFallbackTile) {
      if (trans_a) {  // A stored k x m: contiguous along l
        const std::int64_t i = i0 + ty, l = l0 + tx;
        as[tx][ty] = i < m && l < k ? detail::to_f32(a[i * k + l]) : 0.0f;
      } else {  // A stored m x k: contiguous along i
        const std::int64_t i = i0 + tx, l = l0 + ty;
        as[ty][tx] = i < m && l < k ? detail::to_f32(a[l * m + i]) : 0.0f;
      }
      if (trans_b) {  // B stored n x k: contiguous along j
        const std::int64_t j = j0 + tx, l = l0 + ty;
        bs[ty][tx] = j < n && l < k ? detail::to_f32(b[l * n + j]) : 0.0f;
      } else {  // B stored k x n: contiguous along l
        const std::int64_t j = j0 + ty, l = l0 + tx;
        bs[tx][ty] = j < n && l < k ? detail::to_f32(b[j * k + l]) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int e = 0; e < kFallbackTile; ++e) acc = fmaf(as[e][tx], bs[e][ty], acc);
      __syncthreads();
    }
    const std::int64_t i = i0 + tx, j = j0 + ty;
    if (i < m && j < n) {
      float v = alpha * acc;
      if (beta != 0.0f) v += beta * detail::to_f32(d[j * m + i]);
      d[j * m + i] = detail::from_f32<TD>(v);
    }
  }
}

void gemm_fallback(const Gemm& g) {
  const dim3 grid(static_cast<unsigned>((g.m + kFallbackTile - 1) / kFallbackTile),
                  static_cast<unsigned>(std::min<std::int64_t>((g.n + kFallbackTile - 1) / kFallbackTile, 65535)));
  detail::check((g.m + kFallbackTile - 1) / kFallbackTile <= 0x7fffffff, "linear", "matrix too large for the fallback GEMM");
  detail::dispatch_float(g.a->dtype(), [&](auto ta) {
    using TA = typename decltype(ta)::type;
    detail::dispatch_float(g.d->dtype(), [&](auto td) {
      using TD = typename decltype(td)::type;
      gemm_fallback_kernel<TA, TD><<<grid, dim3(kFallbackTile, kFallbackTile), 0, detail::stream()>>>(
          g.a->data<TA>(), g.b->data<TA>(), g.d->data<TD>(), g.m, g.n, g.k, g.trans_a, g.trans_b, g.alpha, g.beta);
      detail::check_launch();
    });
  });
}

// cuBLASLt when it has an algorithm, else the fallback kernel.
void run_gemm(const Gemm& g) {
  if (!lt_gemm(g, nullptr)) gemm_fallback(g);
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

// ---- dbias: deterministic column sums ----
constexpr int kBiasCols = 32;      // columns per block (threadIdx.x): one 128-byte row segment per warp
constexpr int kBiasLanes = 8;      // row lanes per block (threadIdx.y)
constexpr std::int64_t kBiasRows = device_scratch::kBiasRows;  // rows per chunk: a fixed split, so the bits depend on the shape only

// partial[c, col] = sum over rows of chunk c of g[row, col], in double: thread (x, y) sums
// rows y, y + 8, ... of the chunk in order, then lane y = 0 adds the 8 lane sums in order.
template <typename TG>
__global__ void colsum_partial_kernel(const TG* __restrict__ g, double* __restrict__ partial, std::int64_t n,
                                      std::int64_t m) {
  __shared__ double sh[kBiasLanes][kBiasCols];
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kBiasCols + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t r0 = chunk * kBiasRows, r1 = min(n, r0 + kBiasRows);
  double s = 0.0;
  if (col < m)
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kBiasLanes) s += static_cast<double>(detail::to_f32(g[r * m + col]));
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < m) {
    double t = 0.0;
#pragma unroll
    for (int y = 0; y < kBiasLanes; ++y) t += sh[y][threadIdx.x];
    partial[chunk * m + col] = t;
  }
}

// dbias[col] += float(sum over chunks, in order, of partial[c, col]).
template <typename TB>
__global__ void colsum_finish_kernel(const double* __restrict__ partial, TB* __restrict__ dbias, std::int64_t chunks,
                                     std::int64_t m) {
  for (std::int64_t col = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; col < m;
       col += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    double t = 0.0;
    for (std::int64_t c = 0; c < chunks; ++c) t += partial[c * m + col];
    dbias[col] = detail::from_f32<TB>(detail::to_f32(dbias[col]) + static_cast<float>(t));
  }
}

void column_sums_into(const Tensor& g, Tensor& dbias) {
  const std::int64_t n = g.dim(0), m = g.dim(1);
  const std::int64_t chunks = (n + kBiasRows - 1) / kBiasRows;
  detail::check(chunks <= 65535 && (m + kBiasCols - 1) / kBiasCols <= 0x7fffffff, "linear_backward_weight",
                "dy too large for the bias reduction");
  auto* partial = static_cast<double*>(detail::scratch(device_scratch::bias_backward(n, m)));
  cudaStream_t s = detail::stream();
  const dim3 grid(static_cast<unsigned>((m + kBiasCols - 1) / kBiasCols), static_cast<unsigned>(chunks));
  detail::dispatch_float(g.dtype(), [&](auto tg) {
    using TG = typename decltype(tg)::type;
    colsum_partial_kernel<TG><<<grid, dim3(kBiasCols, kBiasLanes), 0, s>>>(g.data<TG>(), partial, n, m);
    detail::check_launch();
  });
  detail::dispatch_float(dbias.dtype(), [&](auto tb) {
    using TB = typename decltype(tb)::type;
    colsum_finish_kernel<TB><<<detail::grid_blocks(m, 256), 256, 0, s>>>(partial, dbias.data<TB>(), chunks, m);
    detail::check_launch();
  });
}

// Checks shared by the three ops: a and b one float dtype; d F32, or BF16 with BF16 inputs.
void check_gemm_dtypes(const Tensor& a, const char* an, const Tensor& b, const char* bn, const Tensor& d,
                       const char* dn, const char* op) {
  detail::check_float(a, op, an);
  detail::check_float(d, op, dn);
  detail::check(a.dtype() == b.dtype(), op,
                std::string(an) + " and " + bn + " must have the same dtype (F32 or BF16)");
  detail::check(a.dtype() == DType::BF16 || d.dtype() == DType::F32, op,
                std::string("F32 inputs need an F32 ") + dn);
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
  check_gemm_dtypes(x, "x", w, "w", y, "y", op);
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

  // y^T (M x N) = w^T x^T: A = w stored K x M, transposed; B = x stored K x N.
  Gemm g{/*trans_a=*/true, /*trans_b=*/false, m, n, k, &w, &x, &y, 1.0f, 0.0f};
  const bool fuse_bias = bias && bias->dtype() == y.dtype() && detail::aligned16(bias->raw());
  if (fuse_bias && lt_gemm(g, bias)) return;
  if (bias) {  // unfused: y = bias, then y += x w^T
    fill_bias(bias, y, n, m);
    g.beta = 1.0f;
  }
  run_gemm(g);
}

void linear_backward_input(const Tensor& dy, const Tensor& w, Tensor& dx, bool accumulate) {
  const char* op = "linear_backward_input";
  using detail::check;
  detail::check_cuda_tensor(dy, op, "dy");
  detail::check_cuda_tensor(w, op, "w");
  detail::check_cuda_tensor(dx, op, "dx");
  check(dy.rank() == 2 && w.rank() == 2, op, "dy and w must be 2-d");
  const std::int64_t n = dy.dim(0), m = dy.dim(1), k = w.dim(1);
  check(w.dim(0) == m, op, "w has shape " + shape_str(w.shape()) + ", expected [" + std::to_string(m) + ", K]");
  detail::check_shape(dx, {n, k}, op, "dx");
  check_gemm_dtypes(dy, "dy", w, "w", dx, "dx", op);
  if (n == 0 || k == 0) return;
  if (m == 0) {  // empty sum
    if (!accumulate) SPPFT_CUDA_CHECK(cudaMemsetAsync(dx.raw(), 0, dx.nbytes(), detail::stream()));
    return;
  }
  // dx^T (K x N) = w^T (K x M) dy^T (M x N): A = w stored K x M, B = dy stored M x N, no transposes.
  run_gemm(Gemm{/*trans_a=*/false, /*trans_b=*/false, k, n, m, &w, &dy, &dx, 1.0f, accumulate ? 1.0f : 0.0f});
}

void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dw, Tensor* dbias) {
  const char* op = "linear_backward_weight";
  using detail::check;
  detail::check_cuda_tensor(dy, op, "dy");
  detail::check_cuda_tensor(x, op, "x");
  detail::check_cuda_tensor(dw, op, "dw");
  check(dy.rank() == 2 && x.rank() == 2, op, "dy and x must be 2-d");
  const std::int64_t n = dy.dim(0), m = dy.dim(1), k = x.dim(1);
  check(x.dim(0) == n, op, "x has shape " + shape_str(x.shape()) + ", expected [" + std::to_string(n) + ", K]");
  detail::check_shape(dw, {m, k}, op, "dw");
  check_gemm_dtypes(dy, "dy", x, "x", dw, "dw", op);
  if (dbias) {
    detail::check_cuda_tensor(*dbias, op, "dbias");
    detail::check_float(*dbias, op, "dbias");
    detail::check_shape(*dbias, {m}, op, "dbias");
  }
  if (n == 0 || m == 0) return;
  // dw^T (K x M) = x^T (K x N) dy (N x M): A = x stored K x N; B = dy stored M x N, transposed.
  if (k > 0) run_gemm(Gemm{/*trans_a=*/false, /*trans_b=*/true, k, m, n, &x, &dy, &dw, 1.0f, 1.0f});
  if (dbias) column_sums_into(dy, *dbias);
}

}  // namespace sppft::cuda
