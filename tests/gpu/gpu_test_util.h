// Shared helpers for the CUDA kernel tests in tests/gpu: the GPU-or-skip check, and (with
// CUDA in the build) host <-> device tensor moves, NaN-poisoned outputs and comparisons
// against the fp32 CPU reference. Each test file keeps its own seeded std::mt19937 and passes
// it in, so the random inputs a test draws do not depend on the other files.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <random>
#include <vector>

#include "engine/device.h"
#include "test_util.h"
#ifdef SPPFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace sppft::test::gpu {

// True when there is a GPU; otherwise prints "skipped: no CUDA device" (once per process).
inline bool have_gpu() {
  static const bool ok = [] {
    if (cuda_device_count() > 0) return true;
    std::printf("skipped: no CUDA device\n");
    std::fflush(stdout);
    return false;
  }();
  return ok;
}

// `n` short instruction/answer pairs (Alpaca JSON lines) for the training tests.
inline void write_sft_data(const fs::path& file, int n) {
  std::string data;
  for (int i = 0; i < n; ++i)
    data += Json({{"instruction", "Question " + std::to_string(i)}, {"output", "Answer number " + std::to_string(i % 5)}}).dump() + "\n";
  atomic_write_text(file, data);
}

// x rounded to the nearest bf16 value.
inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

#ifdef SPPFT_HAVE_CUDA

inline constexpr auto kWork = MemCategory::Workspace;  // memory category of every test tensor
inline constexpr DType kFloatTypes[] = {DType::F32, DType::BF16};  // the dtypes each op is run with

// "BF16" or "F32", for CAPTURE.
inline const char* name(DType t) { return t == DType::BF16 ? "BF16" : "F32"; }

// Rounds every value of a host F32 tensor to bf16 (in place) when it will be stored as BF16.
inline void round_for(Tensor& t, DType stored) {
  if (stored != DType::BF16) return;
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = round_bf16(p[i]);
}

// A host F32 tensor of normal(0, scale) values drawn from rng, rounded to bf16 when it will be
// stored as BF16 (so the CPU reference sees exactly what the GPU reads).
inline Tensor host_random(std::mt19937& rng, Shape s, DType stored, float scale = 1.0f) {
  Tensor t = Tensor::empty(std::move(s), DType::F32, kWork);
  std::normal_distribution<float> d(0.0f, scale);
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = d(rng);
  round_for(t, stored);
  return t;
}

// Host F32 tensors filled with v / with NaN (the poison for outputs that must be overwritten).
inline Tensor host_fill(Shape s, float v) {
  Tensor t = Tensor::empty(std::move(s), DType::F32, kWork);
  std::fill_n(t.data<float>(), t.numel(), v);
  return t;
}
inline Tensor host_nan(Shape s) { return host_fill(std::move(s), NAN); }

// A host copy of a host tensor (same shape and dtype).
inline Tensor host_copy(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), kWork);
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

// Host F32 -> device tensor of dtype `dt`.
inline Tensor upload(const Tensor& host_f32, DType dt) {
  Tensor h = Tensor::empty(host_f32.shape(), dt, kWork);
  convert_from_f32(host_f32.data<float>(), dt, h.raw(), static_cast<std::size_t>(h.numel()));
  return cuda::to_device(h, kWork);
}

// A NaN-poisoned device tensor of dtype `dt`.
inline Tensor device_nan(Shape s, DType dt) { return upload(host_nan(std::move(s)), dt); }

// Device tensor (F32/BF16) -> host F32.
inline Tensor download(const Tensor& dev) {
  Tensor h = cuda::to_host(dev, kWork);
  Tensor f = Tensor::empty(h.shape(), DType::F32, kWork);
  convert_to_f32(h.raw(), h.dtype(), f.data<float>(), static_cast<std::size_t>(h.numel()));
  return f;
}

// The raw bytes of a device tensor, for bitwise comparisons (determinism checks).
inline std::vector<unsigned char> device_bytes(const Tensor& dev) {
  Tensor h = cuda::to_host(dev, kWork);
  const auto* p = static_cast<const unsigned char*>(h.raw());
  return std::vector<unsigned char>(p, p + h.nbytes());
}

// Token ids / positions as an I32 tensor on the host / on the device.
inline Tensor host_i32(const std::vector<std::int32_t>& v) {
  Tensor h = Tensor::empty({static_cast<std::int64_t>(v.size())}, DType::I32, kWork);
  std::copy(v.begin(), v.end(), h.data<std::int32_t>());
  return h;
}
inline Tensor upload_i32(const std::vector<std::int32_t>& v) { return cuda::to_device(host_i32(v), kWork); }

// The rel_error bound for an op whose tensors have these dtypes: 1e-5 all F32, 1e-2 any BF16.
inline double tolerance(std::initializer_list<DType> dts) {
  for (DType t : dts)
    if (t != DType::F32) return 1e-2;
  return 1e-5;
}

// Host F32 output against the host F32 reference: every value finite and rel_error below tol.
inline void check_close(const Tensor& got_host, const Tensor& want_host, double tol) {
  REQUIRE(got_host.numel() == want_host.numel());
  const float* g = got_host.data<float>();
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < got_host.numel(); ++i) bad += !std::isfinite(g[i]);
  REQUIRE(bad == 0);
  const double err = test::rel_error(g, want_host.data<float>(), got_host.numel());
  CHECK(err < tol);
  if (err >= tol) MESSAGE("relative error " << err << " >= " << tol);
}

#endif  // SPPFT_HAVE_CUDA

}  // namespace sppft::test::gpu
