// Emulated-device build (tests/emudev.cmake): the part of cuBLASLt kernels/cuda/linear.cu uses.
// cublasLtMatmul computes D = alpha op(A) op(B) + beta C (+ bias per row with
// CUBLASLT_EPILOGUE_BIAS) in fp32 through OpenBLAS on column-major F32/BF16 matrices, then
// rounds to D's type, as cuBLASLt's fp32-accumulating kernels do up to summation order. Every
// shape and alignment has an "algorithm", so the fallback GEMM is taken only when forced.
#pragma once

#include <cblas.h>

#include <cstdint>
#include <vector>

#include "emu_cuda.h"

enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasLtEpilogue_t { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 };
enum cublasLtMatmulDescAttributes_t {
  CUBLASLT_MATMUL_DESC_TRANSA = 3,
  CUBLASLT_MATMUL_DESC_TRANSB = 4,
  CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
  CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
  CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,
};
enum cublasLtMatmulPreferenceAttributes_t {
  CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
  CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
};

struct cublasLtContext {};
using cublasLtHandle_t = cublasLtContext*;
struct EmuLtDesc {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  cudaDataType_t bias_type = CUDA_R_32F;
  const void* bias = nullptr;
};
struct EmuLtLayout {
  cudaDataType_t type;
  std::uint64_t rows, cols;
  std::int64_t ld;
};
struct EmuLtPref {};
using cublasLtMatmulDesc_t = EmuLtDesc*;
using cublasLtMatrixLayout_t = EmuLtLayout*;
using cublasLtMatmulPreference_t = EmuLtPref*;
struct cublasLtMatmulAlgo_t {
  std::uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
  cublasLtMatmulAlgo_t algo;
  std::size_t workspaceSize;
  cublasStatus_t state;
  float wavesCount;
  int reserved[4];
};

inline const char* cublasLtGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "cuBLASLt error (emulated)";
}
inline cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  *h = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t compute, cudaDataType_t scale) {
  if ((compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) || scale != CUDA_R_32F)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  *d = new EmuLtDesc;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete d;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void* v,
                                                     std::size_t bytes) {
  switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
      (a == CUBLASLT_MATMUL_DESC_TRANSA ? d->trans_a : d->trans_b) = *static_cast<const cublasOperation_t*>(v);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      if (bytes != sizeof(cublasLtEpilogue_t)) return CUBLAS_STATUS_INVALID_VALUE;
      d->epilogue = *static_cast<const cublasLtEpilogue_t*>(v);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (bytes != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
      d->bias = *static_cast<const void* const*>(v);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      if (bytes != sizeof(std::int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      d->bias_type = static_cast<cudaDataType_t>(*static_cast<const std::int32_t*>(v));
      return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}
inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType_t t, std::uint64_t rows,
                                                 std::uint64_t cols, std::int64_t ld) {
  if ((t != CUDA_R_32F && t != CUDA_R_16BF) || ld < static_cast<std::int64_t>(rows)) return CUBLAS_STATUS_INVALID_VALUE;
  *l = new EmuLtLayout{t, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete l;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = new EmuLtPref;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t,
                                                           const void*, std::size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                                     cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                                     cublasLtMatmulPreference_t, int requested,
                                                     cublasLtMatmulHeuristicResult_t* results, int* returned) {
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

namespace emu::lt {
inline std::vector<float> to_f32(const void* p, const EmuLtLayout& l) {
  const std::size_t n = static_cast<std::size_t>(l.ld) * l.cols;
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = l.type == CUDA_R_16BF ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
  return v;
}
}  // namespace emu::lt

// Checked at the call, computed when the stream runs it (emu_runtime.h); the descriptors and
// alpha / beta are read at the call, as cuBLASLt does with host-pointer scalars.
inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* a,
                                     cublasLtMatrixLayout_t layout_a, const void* b, cublasLtMatrixLayout_t layout_b,
                                     const void* beta, const void* c, cublasLtMatrixLayout_t layout_c, void* out,
                                     cublasLtMatrixLayout_t layout_o, const cublasLtMatmulAlgo_t*, void*, std::size_t,
                                     cudaStream_t stream) {
  const EmuLtDesc d = *desc;
  const EmuLtLayout la = *layout_a, lb = *layout_b, lc = *layout_c, lo = *layout_o;
  const std::int64_t m = static_cast<std::int64_t>(lo.rows), n = static_cast<std::int64_t>(lo.cols);
  const bool ta = d.trans_a == CUBLAS_OP_T, tb = d.trans_b == CUBLAS_OP_T;
  const std::int64_t k = static_cast<std::int64_t>(ta ? la.rows : la.cols);
  if ((ta ? la.cols : la.rows) != lo.rows || (tb ? lb.rows : lb.cols) != lo.cols ||
      static_cast<std::int64_t>(tb ? lb.cols : lb.rows) != k || lc.rows != lo.rows || lc.cols != lo.cols ||
      la.type != lb.type)
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool bias = d.epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (bias && !d.bias) return CUBLAS_STATUS_INVALID_VALUE;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  emu::rt::enqueue(stream, [=] {
    const std::vector<float> af = emu::lt::to_f32(a, la), bf = emu::lt::to_f32(b, lb), cf = emu::lt::to_f32(c, lc);
    std::vector<float> prod(static_cast<std::size_t>(m * n));
    cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.0f, af.data(), static_cast<int>(la.ld), bf.data(),
                static_cast<int>(lb.ld), 0.0f, prod.data(), static_cast<int>(m));
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t i = 0; i < m; ++i) {
        float v = al * prod[j * m + i];
        if (be != 0.0f) v += be * cf[j * lc.ld + i];
        if (bias)
          v += d.bias_type == CUDA_R_16BF ? __bfloat162float(static_cast<const __nv_bfloat16*>(d.bias)[i])
                                          : static_cast<const float*>(d.bias)[i];
        if (lo.type == CUDA_R_16BF)
          static_cast<__nv_bfloat16*>(out)[j * lo.ld + i] = __float2bfloat16_rn(v);
        else
          static_cast<float*>(out)[j * lo.ld + i] = v;
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}
