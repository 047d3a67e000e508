// Emulated runs of the elementwise kernels of kernels/cuda/glu.cu (glu_kernel for SiLU / GELU
// tanh / GELU erf, glu_backward_kernel, add_kernel as add_inplace and as convert) and
// kernels/cuda/rope.cu (rope_kernel forward and inverse) and kernels/cuda/embedding.cu
// (check_ids_kernel, embedding_kernel, embedding_backward_kernel fed with the [keys | rows |
// run] table built as the host code builds it), extracted unchanged by
// tests/emu/extract.py into the build's emu_gen/, against the CPU reference (kernels/ops.h on
// host tensors). Registered with ctest as kernels.elementwise_emu. The launchers mirror the host
// code (VEC when the count is a multiple of 8 and every base is 16-byte aligned, 256 threads,
// detail::grid_blocks of the packs or elements, k_tanh = sqrt(2 / pi) in fp32).
// Tolerances as tests/gpu/cuda_forward_test.cpp / cuda_backward_test.cpp: max |emu - ref| /
// max |ref| <= 1e-5 when every tensor is F32, 1e-2 with any BF16; convert bit for bit (NaN
// for NaN); rope forward then backward (F32) gives x back within 1e-5. Inputs that are not
// outputs must stay bitwise unchanged. Aliasing as the ops allow it: glu out = gate or up;
// glu_backward dgate = dout, dup = dout, dgate = gate with dup = up, dgate = gate with dup =
// dout. Each case runs as A, B (A again: bitwise determinism) and a variant (random fiber
// order, buffers after a guard page) that must equal A bit for bit (emu_harness.h).
// Usage: elementwise_emu [--no-variant] [--only SUBSTRING]
#include "glu_emu.h"   // from emu_gen/ (or a mutant dir), via -I
#include "rope_emu.h"  // (the extracted headers first: they bring emu_cuda.h, which the harness uses)
#include "embedding_emu.h"
#include <algorithm>
#include <chrono>
#include <numeric>
#include <memory>

#include "emu_harness.h"
#include "kernels/embedding_groups.h"

namespace cu = sppft::cuda;
using namespace emuh;
using sppft::ops::GluActivation;
using std::int64_t;

static const float kTanh = std::sqrt(2.0f / static_cast<float>(M_PI));  // as glu.cu's host code

// dispatch_activation of glu.cu: f(integral_constant<int, kernel constant>).
template <typename F>
static void with_act(GluActivation act, F&& f) {
  switch (act) {
    case GluActivation::SiLU: f(std::integral_constant<int, 0>{}); break;
    case GluActivation::GeluTanh: f(std::integral_constant<int, 1>{}); break;
    case GluActivation::GeluErf: f(std::integral_constant<int, 2>{}); break;
  }
}
static const char* act_name(GluActivation a) {
  return a == GluActivation::SiLU ? "silu" : a == GluActivation::GeluTanh ? "gelu-tanh" : "gelu-erf";
}

// ---------------------------------------------------------------- emulated launchers (as glu.cu / rope.cu)
// grid_override > 0: that many blocks instead of the host's (a probe of the grid-stride loop).
static bool emu_glu(GluActivation act, Dev& gate, Dev& up, Dev& out, int64_t n, unsigned grid_override = 0) {
  if (n == 0) return true;
  const bool vec = n % 8 == 0 && aligned16(gate.raw()) && aligned16(up.raw()) && aligned16(out.raw());
  const unsigned blocks = grid_override ? grid_override : grid_blocks(vec ? n / 8 : n, 256);
  bool ok = true;
  with_type(gate.t, [&](auto ti) {
    using TI = typename decltype(ti)::type;
    with_type(out.t, [&](auto to) {
      using TO = typename decltype(to)::type;
      with_act(act, [&](auto a) {
        constexpr int A = decltype(a)::value;
        const TI *g = gate.as<TI>(), *u = up.as<TI>();
        TO* o = out.as<TO>();
        const float k = kTanh;
        if (vec)
          ok = emu::launch("glu_kernel<VEC>", blocks, 256, 0, [=] { cu::glu_kernel<A, TI, TO, true>(g, u, o, n, k); });
        else
          ok = emu::launch("glu_kernel", blocks, 256, 0, [=] { cu::glu_kernel<A, TI, TO, false>(g, u, o, n, k); });
      });
    });
  });
  return ok;
}

static bool emu_glu_backward(GluActivation act, Dev& gate, Dev& up, Dev& dout, Dev& dgate, Dev& dup, int64_t n,
                             unsigned grid_override = 0) {
  if (n == 0) return true;
  const bool vec = n % 8 == 0 && aligned16(gate.raw()) && aligned16(up.raw()) && aligned16(dout.raw()) &&
                   aligned16(dgate.raw()) && aligned16(dup.raw());
  const unsigned blocks = grid_override ? grid_override : grid_blocks(vec ? n / 8 : n, 256);
  bool ok = true;
  with_type(gate.t, [&](auto ti) {
    using TI = typename decltype(ti)::type;
    with_type(dout.t, [&](auto tg) {
      using TG = typename decltype(tg)::type;
      with_act(act, [&](auto a) {
        constexpr int A = decltype(a)::value;
        const TI *g = gate.as<TI>(), *u = up.as<TI>();
        const TG* d = dout.as<TG>();
        TG *dg = dgate.as<TG>(), *du = dup.as<TG>();
        const float k = kTanh;
        if (vec)
          ok = emu::launch("glu_backward_kernel<VEC>", blocks, 256, 0,
                           [=] { cu::glu_backward_kernel<A, TI, TG, true>(g, u, d, dg, du, n, k); });
        else
          ok = emu::launch("glu_backward_kernel", blocks, 256, 0,
                           [=] { cu::glu_backward_kernel<A, TI, TG, false>(g, u, d, dg, du, n, k); });
      });
    });
  });
  return ok;
}

// elementwise_into<ADD>(x, y): add_inplace(x, y) or convert(src = y, dst = x).
template <bool ADD>
static bool emu_add(Dev& x, Dev& y, int64_t n, unsigned grid_override = 0) {
  if (n == 0) return true;
  const bool vec = n % 8 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  const unsigned blocks = grid_override ? grid_override : grid_blocks(vec ? n / 8 : n, 256);
  bool ok = true;
  with_type(x.t, [&](auto tx) {
    using TX = typename decltype(tx)::type;
    with_type(y.t, [&](auto ty) {
      using TY = typename decltype(ty)::type;
      TX* xp = x.as<TX>();
      const TY* yp = y.as<TY>();
      if (vec)
        ok = emu::launch("add_kernel<VEC>", blocks, 256, 0, [=] { cu::add_kernel<TX, TY, true, ADD>(xp, yp, n); });
      else
        ok = emu::launch("add_kernel", blocks, 256, 0, [=] { cu::add_kernel<TX, TY, false, ADD>(xp, yp, n); });
    });
  });
  return ok;
}

static bool emu_rope(Dev& x, Dev& pos, Dev& freq, int64_t n, int64_t width, int64_t head_dim, int64_t half, float scale,
                     bool inverse) {
  const int64_t heads = width / head_dim;
  if (n == 0 || width == 0) return true;
  const unsigned blocks = grid_blocks(n * half, 256);
  const std::int32_t* pp = pos.as<std::int32_t>();
  const float* fp = freq.as<float>();
  bool ok = true;
  with_type(x.t, [&](auto tx) {
    using T = typename decltype(tx)::type;
    T* xp = x.as<T>();
    if (inverse)
      ok = emu::launch("rope_kernel<INVERSE>", blocks, 256, 0,
                       [=] { cu::rope_kernel<T, true>(xp, pp, fp, n, width, heads, head_dim, half, scale); });
    else
      ok = emu::launch("rope_kernel", blocks, 256, 0,
                       [=] { cu::rope_kernel<T, false>(xp, pp, fp, n, width, heads, head_dim, half, scale); });
  });
  return ok;
}

// cuda::embedding_forward: flag reset, id check and its read-back (threw: the host would throw
// InputError, nothing else launched), VEC choice, min(n, 2^20) blocks of 128 or 256 threads.
struct EmbResult {
  bool ok = true, threw = false;
  int flag[2] = {0, 0};
};
static EmbResult emu_embedding_forward(Dev& ids, Dev& table, Dev& out, int64_t n, int64_t vocab, int64_t h,
                                       float scale) {
  EmbResult r;
  if (n == 0) return r;
  Dev flag(DType::I32, 2);
  int* fp = flag.as<int>();
  fp[0] = fp[1] = 0;
  const std::int32_t* ip = ids.as<std::int32_t>();
  r.ok = emu::launch("check_ids_kernel", grid_blocks(n, 256, 1024), 256, 0,
                     [=] { cu::check_ids_kernel(ip, n, vocab, fp); });
  r.flag[0] = fp[0], r.flag[1] = fp[1];
  r.ok = r.ok && flag.m.canaries_ok();
  if (fp[0]) {
    r.threw = true;
    return r;
  }
  if (h == 0) return r;
  const bool vec = h % 8 == 0 && aligned16(table.raw()) && aligned16(out.raw());
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 1 << 20));
  const int threads = h >= 1024 ? 256 : 128;
  with_type(table.t, [&](auto tt) {
    using TT = typename decltype(tt)::type;
    with_type(out.t, [&](auto to) {
      using TO = typename decltype(to)::type;
      const TT* tp = table.as<TT>();
      TO* op = out.as<TO>();
      if (vec)
        r.ok = emu::launch("embedding_kernel<VEC>", blocks, threads, 0,
                           [=] { cu::embedding_kernel<TT, TO, true>(ip, tp, op, n, h, scale); }) && r.ok;
      else
        r.ok = emu::launch("embedding_kernel", blocks, threads, 0,
                           [=] { cu::embedding_kernel<TT, TO, false>(ip, tp, op, n, h, scale); }) && r.ok;
    });
  });
  return r;
}

// cuda::embedding_backward: ids read back and checked (threw), the [keys | rows | run] table
// built as the host code builds it, in "device" scratch, VEC choice, threads and 2-D grid.
static EmbResult emu_embedding_backward(Dev& ids, Dev& dout, Dev& dtable, int64_t n, int64_t vocab, int64_t h,
                                        float scale) {
  EmbResult r;
  if (n == 0) return r;
  std::vector<std::int32_t> host_ids(ids.as<std::int32_t>(), ids.as<std::int32_t>() + n);
  for (const std::int32_t id : host_ids)
    if (id < 0 || id >= vocab) {
      r.threw = true;
      return r;
    }
  if (h == 0) return r;
  const std::vector<std::int32_t> table = sppft::group_rows_by_id(host_ids);  // as the host code
  Dev scratch(DType::I32, sppft::device_scratch::embedding_backward(n) / 4);
  std::memcpy(scratch.raw(), table.data(), table.size() * 4);
  const std::int32_t* keys_d = scratch.as<std::int32_t>();
  const std::int32_t* rows_d = keys_d + n;
  const std::int32_t* run_d = keys_d + 2 * n;
  const bool vec = h % 8 == 0 && aligned16(dout.raw()) && aligned16(dtable.raw());
  const int64_t items = vec ? h / 8 : h;
  const int threads = static_cast<int>(std::clamp<int64_t>((items + 31) / 32 * 32, 32, 128));
  const dim3 grid(static_cast<unsigned>((items + threads - 1) / threads), static_cast<unsigned>(std::min<int64_t>(n, 65535)));
  with_type(dout.t, [&](auto td) {
    using TD = typename decltype(td)::type;
    with_type(dtable.t, [&](auto tt) {
      using TT = typename decltype(tt)::type;
      const TD* dp = dout.as<TD>();
      TT* tp = dtable.as<TT>();
      if (vec)
        r.ok = emu::launch("embedding_backward_kernel<VEC>", grid, threads, 0, [=] {
          cu::embedding_backward_kernel<TD, TT, true>(keys_d, rows_d, run_d, dp, tp, n, h, scale);
        });
      else
        r.ok = emu::launch("embedding_backward_kernel", grid, threads, 0, [=] {
          cu::embedding_backward_kernel<TD, TT, false>(keys_d, rows_d, run_d, dp, tp, n, h, scale);
        });
    });
  });
  r.ok = r.ok && scratch.m.canaries_ok() && std::memcmp(scratch.raw(), table.data(), table.size() * 4) == 0;
  return r;
}

// ---------------------------------------------------------------- report
static std::vector<unsigned char> bytes_of(const std::vector<float>& v, DType t) {
  Dev d(t, v.size());
  d.upload(v);
  return d.bytes();
}
// one error term: "name e/tol", ok &= e <= tol
static void term(std::string& errs, bool& ok, const char* name, double e, double tol) {
  char b[64];
  std::snprintf(b, sizeof b, "%s %8.2e/%.0e ", name, e, tol);
  errs += b;
  ok = ok && e <= tol;
}

// ---------------------------------------------------------------- glu forward
enum GluAlias { kOutSep, kOutGate, kOutUp };
static void glu_case(const Args& args, GluActivation act, DType in_t, DType out_t, int64_t n, std::size_t offset,
                     GluAlias alias, unsigned grid_override, unsigned seed) {
  char nm[160];
  std::snprintf(nm, sizeof nm, "glu %s n=%" PRId64 " in %s out %s%s%s%s", act_name(act), n, dt_name(in_t),
                dt_name(out_t), offset ? " offset" : "",
                alias == kOutGate ? " out=gate" : alias == kOutUp ? " out=up" : "", grid_override ? " grid-probe" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::size_t un = static_cast<std::size_t>(n);
  const std::vector<float> gate = randn(rng, un, in_t, 2.0f), up = randn(rng, un, in_t);
  sppft::Tensor want_t = host_tensor(std::vector<float>(un, NAN), {n});
  sppft::ops::glu_forward(host_tensor(gate, {n}), host_tensor(up, {n}), act, want_t);
  const std::vector<float> want = to_vec(want_t);
  const DType ot = alias == kOutSep ? out_t : in_t;
  auto run = [&] {
    Snapshot s;
    Dev g(in_t, un, offset), u(in_t, un, offset);
    g.upload(gate), u.upload(up);
    std::unique_ptr<Dev> o;
    if (alias == kOutSep) o = std::make_unique<Dev>(out_t, un, offset), o->fill_nan();
    Dev& out = alias == kOutSep ? *o : alias == kOutGate ? g : u;
    s.launched(emu_glu(act, g, u, out, n, grid_override));
    s.add("gate", g), s.add("up", u), s.add("out", out);
    s.check_canaries("gate", g), s.check_canaries("up", u), s.check_canaries("out", out);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why, errs;
  term(errs, ok, "out", rel_error(floats_of(a.get("out"), ot), want), tolerance({in_t, ot}));
  if (alias != kOutGate && a.get("gate") != bytes_of(gate, in_t)) ok = false, why += " gate-modified";
  if (alias != kOutUp && a.get("up") != bytes_of(up, in_t)) ok = false, why += " up-modified";
  report_case(nm, errs, ok, why);
}

// ---------------------------------------------------------------- glu backward
enum BwdAlias { kSep, kDgDout, kDuDout, kGateUp, kGateDout };
static const char* bwd_alias_name(BwdAlias a) {
  return a == kSep ? "" : a == kDgDout ? " dgate=dout" : a == kDuDout ? " dup=dout" : a == kGateUp ? " dgate=gate,dup=up"
                                                                                                    : " dgate=gate,dup=dout";
}
static void glu_bwd_case(const Args& args, GluActivation act, DType in_t, DType g_t, int64_t n, std::size_t offset,
                         BwdAlias alias, unsigned grid_override, unsigned seed) {
  char nm[160];
  std::snprintf(nm, sizeof nm, "glu_bwd %s n=%" PRId64 " in %s grad %s%s%s%s", act_name(act), n, dt_name(in_t),
                dt_name(g_t), offset ? " offset" : "", bwd_alias_name(alias), grid_override ? " grid-probe" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::size_t un = static_cast<std::size_t>(n);
  const std::vector<float> gate = randn(rng, un, in_t, 2.0f), up = randn(rng, un, in_t), dout = randn(rng, un, g_t);
  sppft::Tensor wdg = host_tensor(std::vector<float>(un, NAN), {n}), wdu = host_tensor(std::vector<float>(un, NAN), {n});
  sppft::ops::glu_backward(host_tensor(gate, {n}), host_tensor(up, {n}), host_tensor(dout, {n}), act, wdg, wdu);
  auto run = [&] {
    Snapshot s;
    Dev g(in_t, un, offset), u(in_t, un, offset), d(g_t, un, offset);
    g.upload(gate), u.upload(up), d.upload(dout);
    std::unique_ptr<Dev> dg_own, du_own;
    if (alias == kSep || alias == kDuDout) dg_own = std::make_unique<Dev>(g_t, un, offset), dg_own->fill_nan();
    if (alias == kSep || alias == kDgDout) du_own = std::make_unique<Dev>(g_t, un, offset), du_own->fill_nan();
    Dev& dg = dg_own ? *dg_own : alias == kDgDout ? d : g;
    Dev& du = du_own ? *du_own : alias == kGateUp ? u : d;
    s.launched(emu_glu_backward(act, g, u, d, dg, du, n, grid_override));
    s.add("gate", g), s.add("up", u), s.add("dout", d), s.add("dgate", dg), s.add("dup", du);
    s.check_canaries("gate", g), s.check_canaries("up", u), s.check_canaries("dout", d);
    s.check_canaries("dgate", dg), s.check_canaries("dup", du);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why, errs;
  const double tol = tolerance({in_t, g_t});
  term(errs, ok, "dgate", rel_error(floats_of(a.get("dgate"), g_t), to_vec(wdg)), tol);
  term(errs, ok, "dup", rel_error(floats_of(a.get("dup"), g_t), to_vec(wdu)), tol);
  if (alias != kGateUp && alias != kGateDout && a.get("gate") != bytes_of(gate, in_t)) ok = false, why += " gate-modified";
  if (alias != kGateUp && a.get("up") != bytes_of(up, in_t)) ok = false, why += " up-modified";
  if (alias == kSep || alias == kGateUp)
    if (a.get("dout") != bytes_of(dout, g_t)) ok = false, why += " dout-modified";
  report_case(nm, errs, ok, why);
}

// ---------------------------------------------------------------- add_inplace, convert
static void add_case(const Args& args, DType x_t, DType y_t, int64_t n, std::size_t offset, unsigned grid_override,
                     unsigned seed) {
  char nm[128];
  std::snprintf(nm, sizeof nm, "add_inplace n=%" PRId64 " x %s y %s%s%s", n, dt_name(x_t), dt_name(y_t),
                offset ? " offset" : "", grid_override ? " grid-probe" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::size_t un = static_cast<std::size_t>(n);
  const std::vector<float> x = randn(rng, un, x_t), y = randn(rng, un, y_t);
  sppft::Tensor want = host_tensor(x, {n});
  sppft::ops::add_inplace(want, host_tensor(y, {n}));
  auto run = [&] {
    Snapshot s;
    Dev dx(x_t, un, offset), dy(y_t, un, offset);
    dx.upload(x), dy.upload(y);
    s.launched(emu_add<true>(dx, dy, n, grid_override));
    s.add("x", dx), s.add("y", dy);
    s.check_canaries("x", dx), s.check_canaries("y", dy);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why, errs;
  term(errs, ok, "x", rel_error(floats_of(a.get("x"), x_t), to_vec(want)), tolerance({x_t, y_t}));
  if (a.get("y") != bytes_of(y, y_t)) ok = false, why += " y-modified";
  report_case(nm, errs, ok, why);
}

// convert: bit for bit with the CPU's ops::convert (NaN for NaN), specials at the front.
static void convert_case(const Args& args, DType from, DType to, int64_t n, std::size_t offset, unsigned seed) {
  char nm[128];
  std::snprintf(nm, sizeof nm, "convert n=%" PRId64 " %s->%s%s", n, dt_name(from), dt_name(to), offset ? " offset" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::size_t un = static_cast<std::size_t>(n);
  std::vector<float> src = randn(rng, un, DType::F32, 100.0f);
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.00390625f, 1e-40f, 3.4e38f, 1.01171875f, -3.0078125f};
  for (std::size_t i = 0; i < un && i < std::size(specials); ++i) src[i] = specials[i];
  const std::vector<unsigned char> src_bytes = [&] {
    Dev d(from, un);  // F32 -> the source dtype as the host stores it (upload rounds to nearest even)
    d.upload(src);
    return d.bytes();
  }();
  sppft::Tensor hs = sppft::Tensor::empty({n}, from, sppft::MemCategory::Workspace);
  sppft::Tensor hd = sppft::Tensor::empty({n}, to, sppft::MemCategory::Workspace);
  std::memcpy(hs.raw(), src_bytes.data(), src_bytes.size());
  sppft::ops::convert(hs, hd);
  const std::vector<float> want = floats_of(
      std::vector<unsigned char>(static_cast<unsigned char*>(hd.raw()), static_cast<unsigned char*>(hd.raw()) + n * dt_size(to)), to);
  auto run = [&] {
    Snapshot s;
    Dev ds(from, un, offset), dd(to, un, offset);
    std::memcpy(ds.raw(), src_bytes.data(), src_bytes.size());
    dd.fill_nan();
    s.launched(emu_add<false>(dd, ds, n));
    s.add("src", ds), s.add("dst", dd);
    s.check_canaries("src", ds), s.check_canaries("dst", dd);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why;
  const std::vector<float> got = floats_of(a.get("dst"), to);
  int64_t bad = 0;
  for (std::size_t i = 0; i < un; ++i) {
    const bool same = std::isnan(want[i]) ? std::isnan(got[i]) : std::memcmp(&got[i], &want[i], 4) == 0;
    bad += !same;
  }
  if (bad) ok = false, why += " not-bitwise";
  if (a.get("src") != src_bytes) ok = false, why += " src-modified";
  char errs[64];
  std::snprintf(errs, sizeof errs, "%" PRId64 " of %" PRId64 " differ", bad, n);
  report_case(nm, errs, ok, why);
}

// ---------------------------------------------------------------- rope
// r: the rotated dimensions of each head (r < d: a partial_rotary_factor, there with cos and sin
// scaled by 1.25 as LongRoPE's attention factor)
static void rope_case(const Args& args, int64_t n, int64_t heads, int64_t d, int64_t r, int max_pos, DType t, bool inverse,
                      unsigned seed) {
  const float scale = r < d ? 1.25f : 1.0f;
  char nm[160];
  std::snprintf(nm, sizeof nm, "rope %s N=%" PRId64 " heads=%" PRId64 " D=%" PRId64 " R=%" PRId64 " scale=%g pos<=%d %s",
                inverse ? "backward" : "forward", n, heads, d, r, static_cast<double>(scale), max_pos, dt_name(t));
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const int64_t width = heads * d;
  const std::size_t nx = static_cast<std::size_t>(n * width);
  std::vector<std::int32_t> pos(n);
  std::uniform_int_distribution<int> pick(0, max_pos);
  for (auto& p : pos) p = pick(rng);
  if (n > 1) pos[0] = max_pos;
  std::vector<float> freq(r / 2);
  for (int64_t i = 0; i < r / 2; ++i) freq[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / r));
  const std::vector<float> x = randn(rng, nx, t);
  sppft::Tensor hpos = sppft::Tensor::empty({n}, DType::I32, sppft::MemCategory::Workspace);
  std::copy(pos.begin(), pos.end(), hpos.data<std::int32_t>());
  sppft::Tensor want = host_tensor(x, {n, width});
  if (inverse)
    sppft::ops::rope_backward(want, hpos, host_tensor(freq, {r / 2}), d, scale);
  else
    sppft::ops::rope_forward(want, hpos, host_tensor(freq, {r / 2}), d, scale);
  auto run = [&] {
    Snapshot s;
    Dev dx(t, nx), dp(DType::I32, n), df(DType::F32, freq.size());
    dx.upload(x), df.upload(freq);
    std::copy(pos.begin(), pos.end(), dp.as<std::int32_t>());
    s.launched(emu_rope(dx, dp, df, n, width, d, r / 2, scale, inverse));
    s.add("x", dx), s.add("pos", dp), s.add("freq", df);
    s.check_canaries("x", dx), s.check_canaries("pos", dp), s.check_canaries("freq", df);
    if (t == DType::F32) {  // then the other direction: x back
      s.launched(emu_rope(dx, dp, df, n, width, d, r / 2, 1.0f / scale, !inverse));
      s.add("round-trip", dx);
    }
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why, errs;
  term(errs, ok, "x", rel_error(floats_of(a.get("x"), t), to_vec(want)), tolerance({t}));
  if (t == DType::F32) term(errs, ok, "round-trip", rel_error(floats_of(a.get("round-trip"), t), x), 1e-5);
  if (a.get("freq") != bytes_of(freq, DType::F32)) ok = false, why += " freq-modified";
  if (std::memcmp(a.get("pos").data(), pos.data(), 4 * n) != 0) ok = false, why += " pos-modified";
  report_case(nm, errs, ok, why);
}

// ---------------------------------------------------------------- embedding
static std::vector<std::int32_t> make_ids(std::mt19937& rng, int n, int vocab, bool all_same) {
  std::vector<std::int32_t> ids(n);
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  const std::int32_t same = pick(rng);
  for (auto& id : ids) id = all_same ? same : pick(rng);
  if (vocab > 1000)  // a large vocabulary: force some repeats anyway (and the top id)
    for (int i = 0; i < n; i += 7) ids[i] = i % 2 ? vocab - 1 : ids[0];
  return ids;
}
static sppft::Tensor host_ids(const std::vector<std::int32_t>& ids) {
  sppft::Tensor t = sppft::Tensor::empty({static_cast<int64_t>(ids.size())}, DType::I32, sppft::MemCategory::Workspace);
  std::copy(ids.begin(), ids.end(), t.data<std::int32_t>());
  return t;
}
static bool ids_unchanged(const Snapshot& a, const std::vector<std::int32_t>& ids) {
  return std::memcmp(a.get("ids").data(), ids.data(), 4 * ids.size()) == 0;
}

// bad: an id put at row n / 2 (0: none): flagged, nothing written.
static void emb_fwd_case(const Args& args, int n, int h, int vocab, DType tab_t, DType out_t, float scale,
                         std::size_t offset, std::int32_t bad, unsigned seed) {
  char nm[160];
  std::snprintf(nm, sizeof nm, "embedding N=%d H=%d V=%d table %s out %s scale %g%s", n, h, vocab, dt_name(tab_t),
                dt_name(out_t), scale, offset ? " offset" : "");
  if (bad) std::snprintf(nm, sizeof nm, "embedding bad id %d", bad);
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids = make_ids(rng, n, vocab, false);
  if (bad) ids[n / 2] = bad;
  const std::vector<float> table = randn(rng, static_cast<std::size_t>(vocab) * h, tab_t);
  const std::size_t nh = static_cast<std::size_t>(n) * h;
  std::vector<float> want(nh, NAN);
  if (!bad) {
    sppft::Tensor w = host_tensor(want, {n, h});
    sppft::ops::embedding_forward(host_ids(ids), host_tensor(table, {vocab, h}), scale, w);
    want = to_vec(w);
  }
  EmbResult res;
  auto run = [&] {
    Snapshot s;
    Dev di(DType::I32, n), dt(tab_t, table.size(), offset), dout(out_t, nh, offset);
    std::copy(ids.begin(), ids.end(), di.as<std::int32_t>());
    dt.upload(table), dout.fill_nan();
    res = emu_embedding_forward(di, dt, dout, n, vocab, h, scale);
    s.launched(res.ok);
    s.add_bytes("flag", res.flag, sizeof res.flag), s.add("ids", di), s.add("table", dt), s.add("out", dout);
    s.check_canaries("ids", di), s.check_canaries("table", dt), s.check_canaries("out", dout);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why, errs;
  if (bad) {
    ok = ok && res.threw && res.flag[0] == 1 && res.flag[1] == bad;
    if (!res.threw) why += " not-flagged";
    Dev nan_out(out_t, nh);
    nan_out.fill_nan();
    if (a.get("out") != nan_out.bytes()) ok = false, why += " written";
    errs = "flag {" + std::to_string(res.flag[0]) + ", " + std::to_string(res.flag[1]) + "}";
  } else {
    if (res.threw) ok = false, why += " flagged";
    term(errs, ok, "out", rel_error(floats_of(a.get("out"), out_t), want), tolerance({tab_t, out_t}));
  }
  if (a.get("table") != bytes_of(table, tab_t)) ok = false, why += " table-modified";
  if (!ids_unchanged(a, ids)) ok = false, why += " ids-modified";
  report_case(nm, errs, ok, why);
}

static void emb_bwd_case(const Args& args, int n, int h, int vocab, bool all_same, DType g_t, DType tab_t,
                         float scale, std::size_t offset, unsigned seed) {
  char nm[160];
  std::snprintf(nm, sizeof nm, "embedding_bwd N=%d H=%d V=%d%s grad %s table %s scale %g%s", n, h, vocab,
                all_same ? " one-id" : "", dt_name(g_t), dt_name(tab_t), scale, offset ? " offset" : "");
  if (args.skip(nm)) return;
  std::mt19937 rng(seed);
  const std::vector<std::int32_t> ids = make_ids(rng, n, vocab, all_same);
  const std::vector<float> dout = randn(rng, static_cast<std::size_t>(n) * h, g_t);
  const std::vector<float> table0 = randn(rng, static_cast<std::size_t>(vocab) * h, tab_t);
  sppft::Tensor want = host_tensor(table0, {vocab, h});
  sppft::ops::embedding_backward(host_ids(ids), host_tensor(dout, {n, h}), scale, want);
  EmbResult res;
  auto run = [&] {
    Snapshot s;
    Dev di(DType::I32, n), dd(g_t, dout.size(), offset), dt(tab_t, table0.size(), offset);
    std::copy(ids.begin(), ids.end(), di.as<std::int32_t>());
    dd.upload(dout), dt.upload(table0);
    res = emu_embedding_backward(di, dd, dt, n, vocab, h, scale);
    s.launched(res.ok);
    if (res.threw) s.ok = false, s.why += " ids-rejected";
    s.add("ids", di), s.add("dout", dd), s.add("dtable", dt);
    s.check_canaries("ids", di), s.check_canaries("dout", dd), s.check_canaries("dtable", dt);
    return s;
  };
  Snapshot a = run_three(run, seed, args.variant);
  bool ok = a.ok;
  std::string why = a.why, errs;
  term(errs, ok, "dtable", rel_error(floats_of(a.get("dtable"), tab_t), to_vec(want)), tolerance({g_t, tab_t}));
  if (a.get("dout") != bytes_of(dout, g_t)) ok = false, why += " dout-modified";
  if (!ids_unchanged(a, ids)) ok = false, why += " ids-modified";
  report_case(nm, errs, ok, why);
}

int main(int argc, char** argv) {
  const Args args(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  unsigned seed = 500;
  const DType kT[] = {DType::F32, DType::BF16};
  const GluActivation kActs[] = {GluActivation::SiLU, GluActivation::GeluTanh, GluActivation::GeluErf};
  // n = 1, 333 (odd: scalar), 4096 (packs of 8) and 4096 viewed one element in (2- or 4-byte
  // offset: scalar), 4104 with 2 blocks (the grid-stride loop, VEC and scalar).
  for (GluActivation act : kActs)
    for (DType it : kT)
      for (DType ot : kT) {
        for (int64_t n : {1, 333, 4096}) glu_case(args, act, it, ot, n, 0, kOutSep, 0, seed++);
        glu_case(args, act, it, ot, 4096, 1, kOutSep, 0, seed++);
        if (it == ot) {
          glu_case(args, act, it, ot, 4096, 0, kOutGate, 0, seed++);
          glu_case(args, act, it, ot, 333, 0, kOutUp, 0, seed++);
        }
      }
  for (GluActivation act : kActs)
    for (DType it : kT)
      for (DType gt : kT) {
        for (int64_t n : {5, 1480}) glu_bwd_case(args, act, it, gt, n, 0, kSep, 0, seed++);
        glu_bwd_case(args, act, it, gt, 1480, 1, kSep, 0, seed++);
        glu_bwd_case(args, act, it, gt, 1480, 0, kDgDout, 0, seed++);
        glu_bwd_case(args, act, it, gt, 333, 0, kDuDout, 0, seed++);
        if (it == gt) {
          glu_bwd_case(args, act, it, gt, 1480, 0, kGateUp, 0, seed++);
          glu_bwd_case(args, act, it, gt, 333, 0, kGateDout, 0, seed++);
        }
      }
  for (DType t : kT) {
    glu_case(args, GluActivation::GeluTanh, t, t, 4104, 0, kOutSep, 2, seed++);
    glu_case(args, GluActivation::SiLU, t, t, 4101, 0, kOutGate, 2, seed++);
    glu_bwd_case(args, GluActivation::GeluErf, t, t, 4104, 0, kGateUp, 2, seed++);
    glu_bwd_case(args, GluActivation::SiLU, t, t, 4101, 0, kSep, 2, seed++);
  }
  for (DType xt : kT)
    for (DType yt : kT) {
      for (int64_t n : {1, 7, 8, 2331, 4096}) add_case(args, xt, yt, n, 0, 0, seed++);
      add_case(args, xt, yt, 4096, 1, 0, seed++);
      add_case(args, xt, yt, 4104, 0, 2, seed++);
    }
  for (auto [from, to] : {std::pair{DType::F32, DType::BF16}, {DType::BF16, DType::F32}, {DType::BF16, DType::BF16},
                          {DType::F32, DType::F32}})
    for (int64_t n : {1, 7, 8, 1000, 4099})
      for (std::size_t off : {0, 1}) convert_case(args, from, to, n, off, seed++);
  // As the GPU tests' shapes: D = 2 (one pair), 8, 64, 128; positions up to 131072; partial rotary
  // dims (R < D: Phi-4-mini's 96 of 128, and one pair of 8).
  for (auto [n, heads, d, r, max_pos] : {std::tuple{5, 3, 8, 8, 10}, {7, 4, 128, 128, 5000}, {3, 2, 2, 2, 3},
                                         {33, 5, 64, 64, 131072}, {1, 2, 64, 64, 10}, {37, 4, 128, 128, 5000},
                                         {7, 4, 128, 96, 5000}, {5, 3, 8, 2, 10}})
    for (DType t : kT)
      for (bool inv : {false, true}) rope_case(args, n, heads, d, r, max_pos, t, inv, seed++);

  // embedding_forward as the GPU test's shapes, plus H = 1024 (256 threads) and 2- or 4-byte
  // offset views (scalar path with H % 8 == 0); bad ids flagged before any write.
  for (auto [n, h] : {std::pair{1, 1}, {13, 7}, {9, 64}, {33, 256}, {4, 1000}, {3, 1024}})
    for (DType tt : kT)
      for (DType ot : kT)
        for (float sc : {1.0f, std::sqrt(static_cast<float>(h))}) emb_fwd_case(args, n, h, 50, tt, ot, sc, 0, 0, seed++);
  for (DType t : kT) emb_fwd_case(args, 9, 64, 50, t, t, 8.0f, 1, 0, seed++);
  for (std::int32_t bad : {50, -1, 1 << 30}) emb_fwd_case(args, 5, 16, 50, DType::F32, DType::F32, 1.0f, 0, bad, seed++);
  // embedding_backward as the GPU test's cases: repeated ids, one long run, V = 1, a large V.
  struct BwdShape {
    int n, h, vocab;
    bool all_same;
  };
  for (const BwdShape& c : {BwdShape{1, 1, 50, false}, {3, 7, 50, false}, {37, 40, 50, false}, {37, 64, 10, false},
                            {37, 300, 50, false}, {9, 4096, 50, false}, {300, 96, 50, false}, {100, 40, 50, true},
                            {200, 64, 1, true}, {500, 24, 131075, false}, {1000, 16, 7, false}})
    for (DType gt : kT)
      for (DType tt : kT)
        for (float sc : {1.0f, std::sqrt(static_cast<float>(c.h))})
          emb_bwd_case(args, c.n, c.h, c.vocab, c.all_same, gt, tt, sc, 0, seed++);
  for (DType t : kT) emb_bwd_case(args, 37, 64, 10, false, t, t, 1.0f, 1, seed++);

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d cases, %d failed, emulator reports: %zu, %.1f s\n", g_cases, g_failures, emu::g_errors.size(), secs);
  std::printf("%s\n", g_failures ? "SOME CASES FAILED" : "ALL CASES PASSED");
  return g_failures ? 1 : 0;
}
