// Shared pieces of the emulation harnesses (rmsnorm, loss, optimizer, elementwise, attention,
// attention_train, linear _emu.cpp):
// guarded "device" buffers with canaries, F32/BF16 storage, the run configurations (A, its
// repeat B, the randomized variant), error measures and the CPU reference's host tensors.
// Include after the extracted kernel header (which brings emu_cuda.h and kernels/ops.h).
#pragma once

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace emuh {

using bf16 = __nv_bfloat16;
using sppft::DType;

inline const char* dt_name(DType t) { return t == DType::BF16 ? "B" : "F"; }
inline std::size_t dt_size(DType t) { return t == DType::BF16 ? 2 : 4; }
inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// ---------------------------------------------------------------- run configurations
// A: fiber order fixed, fresh shared memory 0xff (NaN), buffers and shared memory ending at a
// guard page. B: A again (bitwise determinism). Variant: random fiber order, shared memory
// zeroed and starting right after a guard page, buffers too: must equal A bit for bit (a
// difference means a race, a read of uninitialised memory, or an order dependence).
inline bool g_buf_at_start = false;
inline void mode_a() {
  emu::g_random = false, emu::g_smem_fill = 0xff, emu::g_smem_at_start = false, g_buf_at_start = false;
}
inline void mode_variant(unsigned seed) {
  emu::g_random = true, emu::g_rng.seed(seed), emu::g_smem_fill = 0x00, emu::g_smem_at_start = true;
  g_buf_at_start = true;
}

// ---------------------------------------------------------------- guarded device memory
// `bytes` of "device" memory, 16-byte aligned like cudaMalloc's (optionally viewed
// `offset_bytes` in), inside PROT_NONE guard pages: data ends at the page after it (A) or
// starts right after the page before it (variant), up to 15 bytes of alignment slack aside.
// Every other byte of the mapped pages is a canary; canaries_ok() finds small over- and
// underruns that stay inside the pages.
constexpr unsigned char kCanary = 0xa5;
struct Mem {
  emu::Guarded g;
  std::size_t bytes = 0;
  unsigned char* p = nullptr;
  Mem(std::size_t nbytes, std::size_t offset_bytes = 0) : bytes(nbytes) {
    const std::size_t span = (offset_bytes + std::max<std::size_t>(nbytes, 1) + 15) / 16 * 16;
    g.alloc(span, g_buf_at_start, 16);
    std::memset(g.base + emu::kPage, kCanary, g.total - 2 * emu::kPage);
    p = g.data + offset_bytes;
  }
  ~Mem() { g.release(); }
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  bool canaries_ok() const {
    const unsigned char* lo = g.base + emu::kPage;
    const unsigned char* hi = g.base + g.total - emu::kPage;
    for (const unsigned char* q = lo; q < p; ++q)
      if (*q != kCanary) return false;
    for (const unsigned char* q = p + bytes; q < hi; ++q)
      if (*q != kCanary) return false;
    return true;
  }
};

// The NaN payloads fill_nan writes: an element still holding one was never written.
constexpr std::uint16_t kPoisonBf16 = 0x7fc1;
constexpr std::uint32_t kPoisonF32 = 0x7fc00001u;
// Element i of a byte image of `t` values still holds the poison.
inline bool is_poison(const std::vector<unsigned char>& bytes, std::size_t i, DType t) {
  if (t == DType::BF16) {
    std::uint16_t u;
    std::memcpy(&u, bytes.data() + 2 * i, 2);
    return u == kPoisonBf16;
  }
  std::uint32_t u;
  std::memcpy(&u, bytes.data() + 4 * i, 4);
  return u == kPoisonF32;
}

// A tensor in "device" memory: F32 or BF16, `n` elements (offset_elems: a view that many
// elements into the allocation, so its base is not 16-byte aligned).
struct Dev {
  DType t;
  std::size_t n;
  Mem m;
  Dev(DType dt, std::size_t count, std::size_t offset_elems = 0)
      : t(dt), n(count), m(count * dt_size(dt), offset_elems * dt_size(dt)) {}
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(m.p);
  }
  void* raw() { return m.p; }
  void upload(const std::vector<float>& v) {
    for (std::size_t i = 0; i < n; ++i) {
      if (t == DType::BF16)
        as<bf16>()[i] = __float2bfloat16_rn(v[i]);
      else
        as<float>()[i] = v[i];
    }
  }
  void fill_nan() {
    for (std::size_t i = 0; i < n; ++i) {
      if (t == DType::BF16)
        as<bf16>()[i] = bf16{kPoisonBf16};
      else
        std::memcpy(as<float>() + i, &kPoisonF32, 4);
    }
  }
  std::vector<float> download() {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = t == DType::BF16 ? __bfloat162float(as<bf16>()[i]) : as<float>()[i];
    return v;
  }
  std::vector<unsigned char> bytes() const { return std::vector<unsigned char>(m.p, m.p + m.bytes); }
};

// The launch helpers of the kernels' host code (kernels/cuda/cuda_common.cuh), for the
// emulated launchers that mirror it: dtype dispatch, 16-byte alignment, grid-stride grids.
using sppft::cuda::detail::aligned16;
using sppft::cuda::detail::grid_blocks;
template <typename F>
decltype(auto) with_type(DType t, F&& f) {
  return sppft::cuda::detail::dispatch_float(t, std::forward<F>(f));
}

// ---------------------------------------------------------------- inputs, reference, errors
inline std::vector<float> randn(std::mt19937& rng, std::size_t n, DType stored, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  if (stored == DType::BF16)
    for (float& x : v) x = round_bf16(x);
  return v;
}

inline sppft::Tensor host_tensor(const std::vector<float>& v, sppft::Shape shape) {
  sppft::Tensor t = sppft::Tensor::empty(std::move(shape), DType::F32, sppft::MemCategory::Workspace);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}
inline std::vector<float> to_vec(const sppft::Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

// max |got - want| / max |want| (test::rel_error), NaN in got -> infinity.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= diff)) diff = std::isnan(d) ? INFINITY : d;
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}
// The GPU tests' bound: 1e-5 when every tensor is F32, 1e-2 with any BF16.
inline double tolerance(std::initializer_list<DType> dts) {
  for (DType t : dts)
    if (t != DType::F32) return 1e-2;
  return 1e-5;
}
// |got - want| / max(1, |want|) (check_close_scalar of cuda_training_ops_test.cpp).
inline double scalar_error(double got, double want) {
  const double e = std::fabs(got - want) / std::max(1.0, std::fabs(want));
  return std::isnan(e) ? INFINITY : e;
}

// ---------------------------------------------------------------- one emulated run's outputs
// Named byte images of everything a run leaves behind (outputs and inputs), compared bitwise
// between A, B and the variant; `ok`: no deadlock, no emulator report, every canary intact.
struct Snapshot {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> parts;
  bool ok = true;
  std::string why;
  void add(const std::string& name, const Dev& d) { parts.emplace_back(name, d.bytes()); }
  void add_bytes(const std::string& name, const void* p, std::size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    parts.emplace_back(name, std::vector<unsigned char>(c, c + n));
  }
  void check_canaries(const std::string& name, const Dev& d) {
    if (!d.m.canaries_ok()) ok = false, why += " canary(" + name + ")";
  }
  void launched(bool launch_ok) {
    if (!launch_ok) ok = false, why += " deadlock";
  }
  const std::vector<unsigned char>& get(const std::string& name) const {
    for (const auto& [k, v] : parts)
      if (k == name) return v;
    std::fprintf(stderr, "snapshot has no %s\n", name.c_str());
    std::abort();
  }
};
// "" when equal, else the names of the parts that differ.
inline std::string diff(const Snapshot& a, const Snapshot& b) {
  std::string s;
  for (std::size_t i = 0; i < a.parts.size(); ++i)
    if (i >= b.parts.size() || a.parts[i] != b.parts[i]) s += " " + a.parts[i].first;
  return s;
}

inline std::vector<float> floats_of(const std::vector<unsigned char>& b, DType t) {
  std::vector<float> v(b.size() / dt_size(t));
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (t == DType::BF16) {
      bf16 h;
      std::memcpy(&h, b.data() + 2 * i, 2);
      v[i] = __bfloat162float(h);
    } else {
      std::memcpy(&v[i], b.data() + 4 * i, 4);
    }
  }
  return v;
}

// Runs `run` (returning a Snapshot) as A, B and the variant; reports emulator messages. The
// returned Snapshot is A's, with ok false and `why` filled on any failure of the three.
template <typename Run>
Snapshot run_three(Run&& run, unsigned variant_seed, bool variant = true) {
  const std::size_t errs0 = emu::g_errors.size();
  mode_a();
  Snapshot a = run();
  Snapshot b = run();
  if (!b.ok) a.ok = false, a.why += " B:" + b.why;
  const std::string db = diff(a, b);
  if (!db.empty()) a.ok = false, a.why += " NONDETERMINISTIC(" + db + " )";
  if (variant) {
    mode_variant(variant_seed);
    Snapshot v = run();
    mode_a();
    if (!v.ok) a.ok = false, a.why += " variant:" + v.why;
    const std::string dv = diff(a, v);
    if (!dv.empty()) a.ok = false, a.why += " VARIANT-DIFFERS(" + dv + " )";
  }
  if (emu::g_errors.size() != errs0) {
    a.ok = false;
    for (std::size_t i = errs0; i < emu::g_errors.size(); ++i) a.why += "\n    ! " + emu::g_errors[i];
  }
  return a;
}

// One line per case, counted for the summary and the exit status.
inline int g_failures = 0, g_cases = 0;
inline void report_case(const std::string& name, const std::string& errs, bool ok, const std::string& why) {
  ++g_cases;
  g_failures += !ok;
  std::printf("%-60s %s | %s%s\n", name.c_str(), errs.c_str(), ok ? "PASS" : "FAIL", why.c_str());
  std::fflush(stdout);
}

// Common command line: [--no-variant] [--only SUBSTRING]
struct Args {
  bool variant = true;
  std::string only;
  Args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--no-variant")
        variant = false;
      else if (a == "--only" && i + 1 < argc)
        only = argv[++i];
      else {
        std::fprintf(stderr, "usage: %s [--no-variant] [--only SUBSTRING-OF-CASE-NAME]\n", argv[0]);
        std::exit(2);
      }
    }
  }
  bool skip(const std::string& name) const { return !only.empty() && name.find(only) == std::string::npos; }
};

}  // namespace emuh
