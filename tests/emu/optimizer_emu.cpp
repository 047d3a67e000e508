// Emulated runs of adamw_multi_kernel, sum_squares_kernel + sum_partials_kernel and scale_kernel
// (kernels/cuda/optimizer.cu, extracted unchanged by tests/emu/extract.py into the build's
// emu_gen/) against the fp32 CPU reference (kernels/ops.h on host tensors). Registered with
// ctest as kernels.optimizer_emu. Launchers mirror adamw_multi_tensor / adamw_step (the
// kernel's own adamw_scalars, table entries as adamw_entry, launch_adamw's 64-tensor flushes),
// sum_squares (grid, VEC choice, scratch of device_scratch::sum_squares() bytes, the final
// kernel) and scale_inplace. Tolerances as tests/gpu/cuda_training_ops_test.cpp: AdamW param
// max |emu - ref| / max |ref| <= 1e-6 (F32) or 1e-2 (BF16), m, v, master 1e-6, and
// multi-tensor = single-tensor (adamw_step) bit for bit; sum_squares |emu - ref| / max(1, |ref|)
// <= 1e-9 and the same bits from an unaligned base; scale_inplace exact. Beyond the GPU test:
// AdamW equal to the CPU reference bit for bit (the kernel's explicitly rounded operations and
// fmaf are the reference's, and the emulation's are exact IEEE) unless this build may contract
// the reference's a * b + c into FMAs (__FMA__ defined): that catches 1-ulp slips (e.g. an
// unfused lerp) that 1e-6 lets through. Grads bitwise
// unchanged. Each case runs as A, B (A again: bitwise determinism) and a variant (random
// fiber order, zeroed shared memory, buffers after a guard page) that must equal A bit for bit.
// Usage: optimizer_emu [--no-variant] [--only SUBSTRING]
#include "optimizer_emu.h"  // from emu_gen/ (or a mutant dir), via -I
// (the extracted header first: it brings emu_cuda.h, which the harness header uses)
#include <chrono>

#include "emu_harness.h"

namespace cu = sppft::cuda;
using namespace emuh;
using std::int64_t;

// ---------------------------------------------------------------- emulated launchers
// As launch_adamw: kMtMaxTensors per launch, one block per kMtChunk elements.
static bool emu_launch_adamw(const std::vector<cu::MtTensor>& entries, const cu::AdamWScalars& c, int* launches) {
  constexpr int64_t kMaxGrid = 0x7fffffff;
  cu::MtTable table{};
  int64_t blocks = 0;
  bool ok = true;
  auto flush = [&] {
    if (table.count == 0) return;
    table.first_block[table.count] = static_cast<std::int32_t>(blocks);
    const cu::MtTable t = table;
    ok = emu::launch("adamw_multi_kernel", static_cast<unsigned>(blocks), cu::kMtThreads, 0,
                     [t, c] { cu::adamw_multi_kernel(t, c); }) &&
         ok;
    ++*launches;
    table = cu::MtTable{};
    blocks = 0;
  };
  for (const cu::MtTensor& e : entries) {
    const int64_t nb = (e.numel + cu::kMtChunk - 1) / cu::kMtChunk;
    if (table.count == cu::kMtMaxTensors || blocks + nb > kMaxGrid) flush();
    table.t[table.count] = e;
    table.first_block[table.count] = static_cast<std::int32_t>(blocks);
    ++table.count;
    blocks += nb;
  }
  flush();
  return ok;
}

// As sum_squares.
static double emu_sum_squares(Dev& t, bool* ok) {
  const int64_t n = static_cast<int64_t>(t.n);
  if (n == 0) return 0.0;
  const int64_t packs = (n + 7) / 8;
  const int blocks =
      static_cast<int>(std::min<int64_t>((packs + cu::kSsThreads - 1) / cu::kSsThreads, cu::kSsMaxBlocks));
  Dev scratch(DType::F32, sppft::device_scratch::sum_squares() / 4);
  scratch.fill_nan();
  auto* partial = reinterpret_cast<double*>(scratch.raw());
  double* total = partial + cu::kSsMaxBlocks;
  const bool vec = aligned16(t.raw());
  with_type(t.t, [&](auto tt) {
    using T = typename decltype(tt)::type;
    const T* p = t.as<T>();
    if (vec)
      *ok = emu::launch("sum_squares_kernel<VEC>", blocks, cu::kSsThreads, 0,
                        [=] { cu::sum_squares_kernel<T, true>(p, n, partial); }) && *ok;
    else
      *ok = emu::launch("sum_squares_kernel", blocks, cu::kSsThreads, 0,
                        [=] { cu::sum_squares_kernel<T, false>(p, n, partial); }) && *ok;
  });
  *ok = emu::launch("sum_partials_kernel", 1, cu::kSsMaxBlocks, 0,
                    [=] { cu::sum_partials_kernel(partial, blocks, total); }) && *ok;
  *ok = *ok && scratch.m.canaries_ok();
  return *total;
}

// As scale_inplace.
static bool emu_scale(Dev& t, float s) {
  const int64_t n = static_cast<int64_t>(t.n);
  if (n == 0) return true;
  bool ok = true;
  with_type(t.t, [&](auto tt) {
    using T = typename decltype(tt)::type;
    T* p = t.as<T>();
    ok = emu::launch("scale_kernel", grid_blocks(n, 256, 4096), 256, 0, [=] { cu::scale_kernel<T>(p, n, s); });
  });
  return ok;
}

// ---------------------------------------------------------------- report

// ---------------------------------------------------------------- sum_squares and scale
static void sum_squares_case(const Args& args, int64_t n, DType t, unsigned seed) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  char nm[96];
  std::snprintf(nm, sizeof nm, "sum_squares n=%" PRId64 " %s", n, t == DType::BF16 ? "BF16" : "F32");
  if (args.skip(nm)) return;
  const std::vector<float> x = randn(rng, n, t, 2.0f);
  const double want = sppft::ops::sum_squares(host_tensor(x, {n}));
  double got = 0, got_unaligned = 0;
  auto run = [&] {
    Snapshot s;
    Dev d(t, n), du(t, n, 1);  // du: the same values one element into an allocation (scalar loads)
    d.upload(x), du.upload(x);
    bool ok = true;
    got = emu_sum_squares(d, &ok);
    got_unaligned = emu_sum_squares(du, &ok);
    s.launched(ok);
    s.add_bytes("sum", &got, sizeof got), s.add_bytes("sum_unaligned", &got_unaligned, sizeof got_unaligned);
    s.add("x", d), s.add("x_unaligned", du);
    s.check_canaries("x", d), s.check_canaries("x_unaligned", du);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  const double e = scalar_error(got, want);
  bool ok = a.ok && e <= 1e-9;
  std::string why = a.why;
  if (std::memcmp(&got, &got_unaligned, sizeof got) != 0) ok = false, why += " unaligned-differs";
  Dev x_want(t, n);
  x_want.upload(x);
  if (a.get("x") != x_want.bytes() || a.get("x_unaligned") != x_want.bytes()) ok = false, why += " x-modified";
  const int64_t packs = (n + 7) / 8;
  char errs[96];
  std::snprintf(errs, sizeof errs, "sum %8.2e/1e-09 [%" PRId64 " blocks]", e,
                std::min<int64_t>((packs + cu::kSsThreads - 1) / cu::kSsThreads, cu::kSsMaxBlocks));
  report_case(nm, errs, ok, why);
}

static void scale_case(const Args& args, int64_t n, DType t, unsigned seed) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  char nm[96];
  std::snprintf(nm, sizeof nm, "scale_inplace n=%" PRId64 " %s", n, t == DType::BF16 ? "BF16" : "F32");
  if (args.skip(nm)) return;
  const float s = 0.37f;
  const std::vector<float> x = randn(rng, n, t);
  sppft::Tensor want = host_tensor(x, {n});
  sppft::ops::scale_inplace(want, s);
  auto run = [&] {
    Snapshot sn;
    Dev d(t, n);
    d.upload(x);
    sn.launched(emu_scale(d, s));
    sn.add("x", d), sn.check_canaries("x", d);
    return sn;
  };
  Snapshot a = run_three(run, seed, args.variant);
  Dev w(t, n);
  w.upload(to_vec(want));  // the fp32 product, rounded to bf16 when stored so
  const bool exact = a.get("x") == w.bytes();
  report_case(nm, exact ? "bitwise equal to the reference" : "DIFFERS from the reference", a.ok && exact, a.why);
}

// ---------------------------------------------------------------- AdamW
struct AdamT {
  int64_t n;
  DType param_t, grad_t;
  bool master;
  float wd;
  std::vector<float> p0, m0, v0, w0;          // initial state (p0: bf16 values when param_t is BF16; w0: master)
  std::vector<std::vector<float>> grads;      // per step
  std::vector<std::vector<float>> p, m, v, w;  // reference after each step (w: master)
};

static void adamw_case(const Args& args, const std::vector<int64_t>& sizes, int steps, unsigned seed) {
  std::mt19937 rng(seed);  // inputs from the case seed: --only reproduces them
  char nm[96];
  std::snprintf(nm, sizeof nm, "adamw_multi_tensor %zu tensors x %d steps", sizes.size(), steps);
  if (args.skip(nm)) return;
  const double lr = 2e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  const float decays[] = {0.0f, 0.01f, 0.1f};
  std::vector<AdamT> ts;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    AdamT a;
    a.n = sizes[i];
    a.param_t = i % 2 ? DType::BF16 : DType::F32;
    a.grad_t = (i / 2) % 2 ? DType::BF16 : DType::F32;
    a.master = a.param_t == DType::BF16 && i % 4 == 1;
    a.wd = decays[i % 3];
    const std::vector<float> w = randn(rng, a.n, DType::F32, 0.5f);
    a.m0 = randn(rng, a.n, DType::F32, 0.01f);
    a.v0 = randn(rng, a.n, DType::F32, 0.01f);
    for (float& x : a.v0) x = std::fabs(x);
    a.p0 = w;
    if (a.master) a.w0 = w;
    if (a.param_t == DType::BF16)
      for (float& x : a.p0) x = round_bf16(x);
    // The reference: ops::adamw_step on the master (the fp32 weights w) or on param, then the
    // param rounded to bf16 when stored so (cuda_training_ops_test.cpp's cpu_step).
    sppft::Tensor tp = host_tensor(a.master ? w : a.p0, {a.n}), tm = host_tensor(a.m0, {a.n}),
                  tv = host_tensor(a.v0, {a.n});
    sppft::ops::AdamWParams hp;
    hp.lr = lr, hp.beta1 = beta1, hp.beta2 = beta2, hp.eps = eps, hp.weight_decay = static_cast<double>(a.wd);
    for (int step = 1; step <= steps; ++step) {
      a.grads.push_back(randn(rng, a.n, a.grad_t, 0.1f));
      sppft::ops::adamw_step(tp, host_tensor(a.grads.back(), {a.n}), tm, tv, hp, step);
      std::vector<float> p = to_vec(tp);
      if (a.master) a.w.push_back(p);
      if (a.param_t == DType::BF16) {
        for (float& x : p) x = round_bf16(x);
        if (!a.master) std::copy(p.begin(), p.end(), tp.data<float>());  // the next step starts from bf16
      }
      a.p.push_back(p), a.m.push_back(to_vec(tm)), a.v.push_back(to_vec(tv));
    }
    ts.push_back(std::move(a));
  }

  // One emulated run: every step through adamw_multi_tensor (single = false) or per tensor
  // through adamw_step (single = true; a master tensor: the step on the master as an F32
  // param, then param = bf16(master), as the GPU test's single-tensor side).
  int launches = 0;
  auto run_mode = [&](bool single) {
    Snapshot s;
    std::vector<std::unique_ptr<Dev>> P, G, M, V, W;
    for (const AdamT& a : ts) {
      P.push_back(std::make_unique<Dev>(a.param_t, a.n)), P.back()->upload(a.p0);
      G.push_back(std::make_unique<Dev>(a.grad_t, a.n));
      M.push_back(std::make_unique<Dev>(DType::F32, a.n)), M.back()->upload(a.m0);
      V.push_back(std::make_unique<Dev>(DType::F32, a.n)), V.back()->upload(a.v0);
      W.push_back(a.master ? std::make_unique<Dev>(DType::F32, a.n) : nullptr);
      if (a.master) W.back()->upload(a.w0);
    }
    for (int step = 1; step <= steps; ++step) {
      std::vector<cu::MtTensor> entries;
      std::vector<std::size_t> index;  // tensor of each entry
      for (std::size_t i = 0; i < ts.size(); ++i) {
        const AdamT& a = ts[i];
        G[i]->upload(a.grads[step - 1]);
        cu::MtTensor e{};  // as adamw_entry
        e.param = P[i]->raw();
        e.grad = G[i]->raw();
        e.m = M[i]->as<float>();
        e.v = V[i]->as<float>();
        e.master = a.master ? W[i]->as<float>() : nullptr;
        e.numel = a.n;
        e.decay = static_cast<float>(1.0 - lr * static_cast<double>(a.wd));
        e.flags = (a.param_t == DType::BF16 ? cu::kParamBf16 : 0) | (a.grad_t == DType::BF16 ? cu::kGradBf16 : 0);
        if (e.numel > 0) entries.push_back(e), index.push_back(i);  // adamw_multi_tensor skips empty tensors
      }
      const cu::AdamWScalars sc = cu::adamw_scalars(lr, beta1, beta2, eps, step);
      if (!single) {
        launches = 0;
        s.launched(emu_launch_adamw(entries, sc, &launches));
      } else {
        for (std::size_t i = 0; i < entries.size(); ++i) {
          int l = 0;
          cu::MtTensor e = entries[i];
          if (e.master) {  // adamw_step(master, grad, m, v): an F32 param without master
            e.param = e.master, e.master = nullptr, e.flags &= ~cu::kParamBf16;
            s.launched(emu_launch_adamw({e}, sc, &l));
            P[index[i]]->upload(W[index[i]]->download());  // param = bf16(master)
          } else {
            s.launched(emu_launch_adamw({e}, sc, &l));
          }
        }
      }
      for (std::size_t i = 0; i < ts.size(); ++i) {
        const std::string k = std::to_string(i) + "@" + std::to_string(step);
        s.add("p" + k, *P[i]), s.add("m" + k, *M[i]), s.add("v" + k, *V[i]), s.add("g" + k, *G[i]);
        if (W[i]) s.add("w" + k, *W[i]);
      }
    }
    for (std::size_t i = 0; i < ts.size(); ++i) {
      s.check_canaries("p", *P[i]), s.check_canaries("g", *G[i]), s.check_canaries("m", *M[i]);
      s.check_canaries("v", *V[i]);
      if (W[i]) s.check_canaries("w", *W[i]);
    }
    return s;
  };
  Snapshot a = run_three([&] { return run_mode(false); }, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why;
  // Against the reference, every step.
  double e_p32 = 0, e_p16 = 0, e_mv = 0, e_w = 0;
  long not_bitwise = 0, total = 0;
  auto track = [&](const std::vector<unsigned char>& got_b, DType t, const std::vector<float>& want, double& worst) {
    const std::vector<float> got = floats_of(got_b, t);
    worst = std::max(worst, rel_error(got, want));
    for (std::size_t j = 0; j < want.size(); ++j) not_bitwise += std::memcmp(&got[j], &want[j], 4) != 0;
    total += static_cast<long>(want.size());
  };
  for (std::size_t i = 0; i < ts.size(); ++i)
    for (int step = 1; step <= steps; ++step) {
      const AdamT& t = ts[i];
      const std::string k = std::to_string(i) + "@" + std::to_string(step);
      track(a.get("p" + k), t.param_t, t.p[step - 1], t.param_t == DType::BF16 ? e_p16 : e_p32);
      track(a.get("m" + k), DType::F32, t.m[step - 1], e_mv);
      track(a.get("v" + k), DType::F32, t.v[step - 1], e_mv);
      if (t.master) track(a.get("w" + k), DType::F32, t.w[step - 1], e_w);
      Dev g_want(t.grad_t, t.n);
      g_want.upload(t.grads[step - 1]);
      if (a.get("g" + k) != g_want.bytes()) ok = false, why += " grad-modified(" + k + ")";
    }
  ok = ok && e_p32 <= 1e-6 && e_p16 <= 1e-2 && e_mv <= 1e-6 && e_w <= 1e-6;
#ifndef __FMA__
  if (not_bitwise) ok = false, why += " not-bitwise-equal-to-reference";
#endif
  // Multi-tensor = single-tensor, bit for bit.
  const Snapshot single = run_mode(true);
  const std::string d = diff(a, single);
  if (!single.ok) ok = false, why += " single:" + single.why;
  if (!d.empty()) ok = false, why += " MULTI!=SINGLE(" + d.substr(0, 80) + ")";
  char errs[200];
  std::snprintf(errs, sizeof errs,
                "p F32 %8.2e/1e-06 p BF16 %8.2e/1e-02 m,v %8.2e/1e-06 master %8.2e/1e-06 [%d launches/step; "
                "%ld of %ld values not bitwise = ref%s; multi = single: %s]",
                e_p32, e_p16, e_mv, e_w, launches, not_bitwise, total,
#ifdef __FMA__
                " (not enforced: FMA build)",
#else
                "",
#endif
                d.empty() ? "yes" : "NO");
  report_case(nm, errs, ok, why);
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  std::mt19937 rng(37);
  unsigned seed = 500;
  // sum_squares: n = 2,100,000 > 1024 blocks x 256 threads x 8 (the grid-stride loop).
  for (int64_t n : {1, 7, 8, 1000, 4099, 1000003, 2100000})
    for (DType t : {DType::F32, DType::BF16}) sum_squares_case(args, n, t, seed++);
  // scale_inplace: 1,100,003 > 4096 blocks x 256 threads (the grid-stride loop).
  for (int64_t n : {1, 1000, 1100003})
    for (DType t : {DType::F32, DType::BF16}) scale_case(args, n, t, seed++);
  // AdamW: sizes around the 65536-element chunk, an empty tensor (skipped), every dtype pair,
  // with and without master, three weight decays; then 70 small tensors (two launches).
  std::vector<int64_t> sizes = {1, 3, 1000, 65536, 65537, 0, 70001, 131073};
  std::uniform_int_distribution<int> small(1, 300);
  for (int i = 0; i < 70; ++i) sizes.push_back(small(rng));
  adamw_case(args, sizes, 3, seed++);
  adamw_case(args, {5, 77, 65535}, 2, seed++);  // one launch, odd sizes

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
