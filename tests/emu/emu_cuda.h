// CPU emulation of the CUDA device environment needed by the kernel files tests/emu.cmake lists
// (attention_train_tc.cu, rmsnorm.cu, loss.cu, optimizer.cu, glu.cu, rope.cu, embedding.cu,
// attention.cu, attention_train.cu, linear.cu): qualifiers, built-in variables (1-3 dimensional
// blocks and grids), barriers, warp shuffles (4- and 8-byte types), atomics, bf16, vector
// types, IEEE round-to-nearest intrinsics, static and dynamic shared memory, and nvcuda::wmma
// (16x16x16, bf16 in, fp32 accumulate). Threads of a block are cooperative
// fibers (custom x86-64 context switch) in one OS thread; a block runs until all its
// threads finish or deadlock (every live thread waits on a barrier that cannot complete).
// Blocks of a launch run one after another. Shared memory (dynamic, and static through
// EMU_SHARED, which extract.py substitutes for `__shared__ T name[dims];`) is fresh per
// block: filled with emu::g_smem_fill, next to a PROT_NONE guard page.
// Under -fsanitize=thread each emulated thread is a TSan fiber; the only happens-before
// edges are the barriers (__syncthreads, __syncwarp, the implicit warp barrier of the
// *_sync WMMA ops and of shuffles), kernel start and kernel end, so TSan reports any
// shared/global memory conflict not ordered by a barrier, within a warp, between warps, or
// between blocks of the same launch.
#pragma once

#include <math.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <memory>
#include <span>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
#endif

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
// A static `__shared__ T name dims;` of a kernel, as extract.py rewrites it: `name` is a
// reference to this block's copy (emu::shared_var); the static `emu_shared_key_name` only
// identifies the declaration (one per template instantiation) and is never read or written.
#define EMU_SHARED(T, name, dims) \
  static T emu_shared_key_##name dims; \
  std::add_lvalue_reference_t<T dims> name = ::emu::shared_var(emu_shared_key_##name)

// ---------------------------------------------------------------- vector types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
inline float2 make_float2(float a, float b) { return float2{a, b}; }

// ---------------------------------------------------------------- bf16
struct __nv_bfloat16 {
  unsigned short x;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{static_cast<unsigned short>((u >> 16) | 0x40)};  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return __nv_bfloat16{static_cast<unsigned short>(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return float2{__bfloat162float(h.x), __bfloat162float(h.y)}; }

// ---------------------------------------------------------------- math
inline float __expf(float x) { return expf(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }  // std::int64_t (CUDA has the long overloads too)
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
// IEEE-754 round-to-nearest single operations, never contracted into an FMA (as CUDA's
// __fadd_rn etc.): the empty asm makes each result opaque to the optimizer, so even a build
// with -mfma -ffp-contract=fast cannot fuse a product into the following add.
namespace emu {
inline float opaque(float x) {
  asm("" : "+x"(x));
  return x;
}
}  // namespace emu
inline float __fadd_rn(float a, float b) { return emu::opaque(a + b); }
inline float __fsub_rn(float a, float b) { return emu::opaque(a - b); }
inline float __fmul_rn(float a, float b) { return emu::opaque(a * b); }
inline float __fdiv_rn(float a, float b) { return emu::opaque(a / b); }
inline float __fsqrt_rn(float a) { return emu::opaque(sqrtf(a)); }
// Fused multiply-add, rounded once (CUDA __fmaf_rn): std::fma is correctly rounded.
inline float __fmaf_rn(float a, float b, float c) { return emu::opaque(std::fma(a, b, c)); }

// ---------------------------------------------------------------- the runtime API (host side)
#include "emu_runtime.h"

// ---------------------------------------------------------------- fiber runtime
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
// One COMDAT copy per translation unit (the emulated-device build includes this header in many);
// the linker keeps one.
asm(R"(
.section .text.emu_ctx_switch,"axG",@progbits,emu_ctx_switch,comdat
.weak emu_ctx_switch
.type emu_ctx_switch,@function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_ctx_switch,.-emu_ctx_switch
.section .note.GNU-stack,"",@progbits
.text
)");

namespace emu {

#ifdef EMU_TSAN
extern "C" void AnnotateIgnoreReadsBegin(const char* f, int l);
extern "C" void AnnotateIgnoreReadsEnd(const char* f, int l);
extern "C" void AnnotateIgnoreWritesBegin(const char* f, int l);
extern "C" void AnnotateIgnoreWritesEnd(const char* f, int l);
// Emulator bookkeeping touched by every emulated thread (not the kernel's memory).
struct IgnoreScope {
  IgnoreScope() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__), AnnotateIgnoreWritesBegin(__FILE__, __LINE__); }
  ~IgnoreScope() { AnnotateIgnoreWritesEnd(__FILE__, __LINE__), AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
};
inline void tsan_release(void* a) { __tsan_release(a); }
inline void tsan_acquire(void* a) { __tsan_acquire(a); }
#else
struct IgnoreScope {};
inline void tsan_release(void*) {}
inline void tsan_acquire(void*) {}
#endif

enum State : int { ST_READY = 0, ST_WAIT_BLOCK = 1, ST_WAIT_WARP = 2, ST_DONE = 3 };

struct Fiber {
  uint3 tidx;
  int tid, warp, lane;
  void* sp = nullptr;
  std::atomic<int> state{ST_READY};
  std::atomic<unsigned> wait_gen{0};
  void* tsan = nullptr;
  long nsync_block = 0, nsync_warp = 0;
  unsigned nshfl = 0;  // shuffles so far (selects the exchange buffer)
  unsigned ngather = 0;  // warp gathers so far (ldmatrix, mma: selects the gather buffer)
  // cp.async copies (dst, src) of the open group and of committed groups, oldest first; they
  // land only at cp_async_wait, the latest moment the hardware may complete them.
  std::vector<std::pair<void*, const void*>> cp_open;
  std::vector<std::vector<std::pair<void*, const void*>>> cp_groups;
};

constexpr int kMaxWarps = 32;
struct StaticShared {
  const void* key;  // the declaration (address of its emu_shared_key_ static)
  unsigned char* base;
  std::size_t total;
  unsigned char* data;
  std::size_t bytes;
};
struct Block {
  uint3 bidx;
  dim3 bdim, gdim;
  int nthreads, nwarps;
  unsigned char* smem;
  std::size_t smem_size;
  std::atomic<int> barrived{0};
  std::atomic<unsigned> bgen{0};
  std::atomic<int> warrived[kMaxWarps];
  std::atomic<unsigned> wgen[kMaxWarps];
  alignas(8) unsigned char shfl[2][kMaxWarps][32][8];  // shuffle exchange (double-buffered), 4 or 8 bytes
  alignas(16) unsigned char gather[2][kMaxWarps][32][32];  // warp gathers (double-buffered), up to 32 bytes a lane
  std::vector<StaticShared> statics;                 // static __shared__ variables, allocated on first use
  std::size_t static_bytes = 0;
  char tsan_b[2];
  char tsan_w[kMaxWarps][2];
  char tsan_start;
};

// Configuration (set by the harness between launches).
// WMMA barriers: 0 (default) before and after every load/store/mma_sync; 1: before load/store
// only (CUDA: "waits until all warp lanes have arrived"); 2: none (only the kernel's own
// __syncwarp/__syncthreads order memory between lanes).
inline int g_strict = 0;
// Random schedule: each scheduling round runs the ready threads in a random order, and each
// warp of a block gets a random speed (the chance that its ready threads run in a round: 1,
// 1/2, 1/4 or 1/10), so warps drift apart between block barriers as far as the barriers allow
// (every schedule it produces is one a GPU may choose). Without it every warp advances one
// barrier-delimited segment per round, in lockstep, and a missing __syncthreads between warps
// that stay in step could never show.
inline bool g_random = false;
inline std::mt19937 g_rng{1};
inline int g_smem_fill = 0xff;  // byte pattern of fresh shared memory (0xff: NaN)
inline bool g_smem_at_start = false;  // shared buffer at the start of its pages (guard before) vs at the end

inline std::atomic<Block*> g_blk{nullptr};
inline std::atomic<Fiber*> g_cur{nullptr};
inline void* g_sched_sp = nullptr;
inline std::atomic<void*> g_sched_tsan{nullptr};
inline std::function<void()> g_kernel;
inline char g_launch_done;
inline const char* g_kernel_name = "";

// Violations and events, reported by the harness.
inline std::vector<std::string> g_errors;
inline long g_wmma_violations = 0;
inline void report(const std::string& s) {
  [[maybe_unused]] IgnoreScope ig;
  if (g_errors.size() < 200) g_errors.push_back(s);
}

inline Fiber* cur() { return g_cur.load(std::memory_order_relaxed); }
inline Block* blk() { return g_blk.load(std::memory_order_relaxed); }
inline unsigned char* dyn_smem() { return blk()->smem; }

inline void yield() {
  Fiber* f = cur();
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(g_sched_tsan.load(std::memory_order_relaxed), __tsan_switch_to_fiber_no_sync);
#endif
  emu_ctx_switch(&f->sp, g_sched_sp);
}

inline void block_sync() {
  Fiber* f = cur();
  Block* b = blk();
  const unsigned g = b->bgen.load(std::memory_order_relaxed);
  tsan_release(&b->tsan_b[g & 1]);
  ++f->nsync_block;
  if (b->barrived.fetch_add(1, std::memory_order_relaxed) + 1 == b->nthreads) {
    b->barrived.store(0, std::memory_order_relaxed);
    b->bgen.store(g + 1, std::memory_order_relaxed);
  } else {
    f->wait_gen.store(g, std::memory_order_relaxed);
    f->state.store(ST_WAIT_BLOCK, std::memory_order_relaxed);
    yield();
    f->state.store(ST_READY, std::memory_order_relaxed);
  }
  tsan_acquire(&b->tsan_b[g & 1]);
}

inline void warp_sync() {
  Fiber* f = cur();
  Block* b = blk();
  const int w = f->warp;
  const unsigned g = b->wgen[w].load(std::memory_order_relaxed);
  tsan_release(&b->tsan_w[w][g & 1]);
  ++f->nsync_warp;
  if (b->warrived[w].fetch_add(1, std::memory_order_relaxed) + 1 == 32) {
    b->warrived[w].store(0, std::memory_order_relaxed);
    b->wgen[w].store(g + 1, std::memory_order_relaxed);
  } else {
    f->wait_gen.store(g, std::memory_order_relaxed);
    f->state.store(ST_WAIT_WARP, std::memory_order_relaxed);
    yield();
    f->state.store(ST_READY, std::memory_order_relaxed);
  }
  tsan_acquire(&b->tsan_w[w][g & 1]);
}

inline void fiber_main() {
  Fiber* f = cur();
  tsan_acquire(&blk()->tsan_start);
  g_kernel();
  if (!f->cp_open.empty() || !f->cp_groups.empty())
    report(std::string("cp.async copies never waited for in ") + g_kernel_name + " (thread " + std::to_string(f->tid) + ")");
  f->state.store(ST_DONE, std::memory_order_relaxed);
  tsan_release(&g_launch_done);
  yield();
  __builtin_trap();
}

constexpr std::size_t kStack = 256 * 1024;
constexpr std::size_t kPage = 4096;

// Region of `bytes` with PROT_NONE guard pages on both sides; the data sits at the end of its
// pages (an overrun faults at once) or, with at_start, at the start (an underrun faults).
struct Guarded {
  unsigned char* base = nullptr;
  std::size_t total = 0;
  unsigned char* data = nullptr;
  void alloc(std::size_t bytes, bool at_start, std::size_t align) {
    const std::size_t pages = (bytes + kPage - 1) / kPage;
    total = (pages + 2) * kPage;
    base = static_cast<unsigned char*>(mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (base == MAP_FAILED) {
      perror("mmap");
      std::abort();
    }
    mprotect(base + kPage, pages * kPage, PROT_READ | PROT_WRITE);
    if (at_start)
      data = base + kPage;
    else
      data = base + kPage + pages * kPage - bytes;
    if (reinterpret_cast<std::uintptr_t>(data) % align != 0) {
      std::fprintf(stderr, "guarded alloc: %zu bytes cannot be end-aligned to %zu\n", bytes, align);
      std::abort();
    }
  }
  void release() {
    if (base) munmap(base, total);
    base = data = nullptr;
  }
  // Canary bytes in the mapped pages outside [data, data + bytes) (alignment slack, the rest
  // of the page): canary_ok() is false when an access that stayed in the pages wrote one.
  static constexpr unsigned char kCanary = 0x5a;
  void canary(std::size_t bytes) {
    std::memset(base + kPage, kCanary, static_cast<std::size_t>(data - base) - kPage);
    std::memset(data + bytes, kCanary, static_cast<std::size_t>(base + total - kPage - (data + bytes)));
  }
  bool canary_ok(std::size_t bytes) const {
    for (const unsigned char* q = base + kPage; q < data; ++q)
      if (*q != kCanary) return false;
    for (const unsigned char* q = data + bytes; q < base + total - kPage; ++q)
      if (*q != kCanary) return false;
    return true;
  }
};

// Shared memory regions (dynamic, static variables) are recycled from block to block by size
// and placement (they are refilled and re-canaried for each block); under TSan every block
// maps its own, like the stacks below.
inline std::vector<Guarded>& region_pool() {
  static std::vector<Guarded> pool;
  return pool;
}
inline void region_alloc(Guarded& g, std::size_t bytes, bool at_start, std::size_t align) {
#ifndef EMU_TSAN
  auto& pool = region_pool();
  for (std::size_t i = 0; i < pool.size(); ++i) {
    Guarded& c = pool[i];
    const std::size_t pages = (bytes + kPage - 1) / kPage;
    unsigned char* want = at_start ? c.base + kPage : c.base + kPage + pages * kPage - bytes;
    if (c.total == (pages + 2) * kPage && c.data == want && reinterpret_cast<std::uintptr_t>(want) % align == 0) {
      g = c;
      pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
  }
#endif
  g.alloc(bytes, at_start, align);
}
inline void region_free(Guarded& g) {
#ifndef EMU_TSAN
  if (region_pool().size() < 64) {
    region_pool().push_back(g);
    g.base = g.data = nullptr;
    return;
  }
#endif
  g.release();
}

// The fibers' stacks (one region, a guard page below it), kept from block to block: stack
// contents need no reset (each fiber starts from a fresh frame), so only the first block of
// a size maps them. Under TSan every block maps its own (the shadow of a region is reset when
// it is unmapped, so fibers of different blocks never appear to share stack slots).
inline unsigned char* fiber_stacks(int nthreads, Guarded& per_block) {
#ifdef EMU_TSAN
  per_block.alloc(kStack * nthreads, true, 16);
  return per_block.data;
#else
  (void)per_block;
  static Guarded cache;
  static int cached = 0;
  if (nthreads > cached) {
    cache.release();
    cache.alloc(kStack * nthreads, true, 16);
    cached = nthreads;
  }
  return cache.data;
#endif
}

// The block's copy of a static __shared__ variable (EMU_SHARED): allocated when the first of
// its threads reaches the declaration, like dynamic shared memory (fill pattern, guard page
// after it, or before it with g_smem_at_start), released with the block. CUDA's limit on
// static shared memory per block (48 KiB) is checked.
template <typename T>
T& shared_var(T& key) {
  [[maybe_unused]] IgnoreScope ig;  // emulator bookkeeping and the fill (undefined contents on the GPU)
  Block* b = blk();
  for (const StaticShared& st : b->statics)
    if (st.key == &key) return *reinterpret_cast<T*>(st.data);
  b->static_bytes += sizeof(T);
  if (b->static_bytes > 48 * 1024)
    report(std::string("static shared memory of ") + g_kernel_name + " over 48 KiB per block");
  Guarded g;  // the variable ends exactly at the guard page (or starts right after one)
  region_alloc(g, sizeof(T), g_smem_at_start, alignof(T));
  g.canary(sizeof(T));
  std::memset(g.data, g_smem_fill, sizeof(T));
  b->statics.push_back(StaticShared{&key, g.base, g.total, g.data, sizeof(T)});
  return *reinterpret_cast<T*>(g.data);
}

// "(x,y)", or "(x,y,z)" in a grid with gridDim.z > 1 (attention.cu's split-K), for reports.
inline std::string block_name(uint3 b, dim3 grid) {
  std::string s = "(";
  s += std::to_string(b.x);
  s += ',';
  s += std::to_string(b.y);
  if (grid.z > 1) {
    s += ',';
    s += std::to_string(b.z);
  }
  s += ')';
  return s;
}

// Runs one block; returns false on deadlock.
inline bool run_block(uint3 bidx, dim3 grid, dim3 bdim, std::size_t smem_bytes, Fiber* fibers) {
  const int nthreads = static_cast<int>(bdim.x * bdim.y * bdim.z);
  Block* b = new Block;
  b->bidx = bidx;
  b->bdim = bdim;
  b->gdim = grid;
  b->nthreads = nthreads;
  b->nwarps = (nthreads + 31) / 32;
  for (int w = 0; w < kMaxWarps; ++w) {
    b->warrived[w].store(0);
    b->wgen[w].store(0);
  }
  // Dynamic shared memory: 16-byte aligned (128 when the size is a multiple of 128), ending at
  // a guard page up to the alignment slack (or starting right after one); canaries around it.
  Guarded sm;
  const std::size_t sm_span = smem_bytes ? (smem_bytes + 15) / 16 * 16 : 128;
  region_alloc(sm, sm_span, g_smem_at_start, 16);
  sm.canary(smem_bytes);
  std::memset(sm.data, g_smem_fill, smem_bytes);
  b->smem = sm.data;
  b->smem_size = smem_bytes;

  Guarded stacks;
  unsigned char* const stack_base = fiber_stacks(nthreads, stacks);
  for (int i = 0; i < nthreads; ++i) {
    Fiber& f = fibers[i];
    f.tid = i;  // linear thread id x + X (y + Y z); warps are runs of 32 linear ids, as on the GPU
    f.tidx = uint3{static_cast<unsigned>(i) % bdim.x, static_cast<unsigned>(i) / bdim.x % bdim.y,
                   static_cast<unsigned>(i) / (bdim.x * bdim.y)};
    f.warp = i / 32;
    f.lane = i % 32;
    auto* top = reinterpret_cast<void**>(stack_base + kStack * (i + 1));
    // [top-8]: fake return slot of fiber_main; [top-16]: fiber_main; then 6 callee-saved regs.
    top[-1] = nullptr;
    top[-2] = reinterpret_cast<void*>(&fiber_main);
    for (int r = 3; r <= 8; ++r) top[-r] = nullptr;
    f.sp = top - 8;
#ifdef EMU_TSAN
    f.tsan = __tsan_create_fiber(0);
#endif
  }
#ifdef EMU_TSAN
  if (!g_sched_tsan.load()) g_sched_tsan.store(__tsan_get_current_fiber());
#endif
  g_blk.store(b, std::memory_order_relaxed);
  tsan_release(&b->tsan_start);

  std::vector<Fiber*> ready;
  bool ok = true;
  float speed[kMaxWarps];
  if (g_random)
    for (int w = 0; w < b->nwarps; ++w) {
      static constexpr float kSpeeds[] = {1.0f, 0.5f, 0.25f, 0.1f};
      speed[w] = kSpeeds[g_rng() % 4];
    }
  std::uniform_real_distribution<float> coin(0.0f, 1.0f);
  for (;;) {
    ready.clear();
    bool all_done = true;
    for (Fiber& f : std::span(fibers, nthreads)) {
      const int st = f.state.load(std::memory_order_relaxed);
      if (st == ST_DONE) continue;
      all_done = false;
      const unsigned wg = f.wait_gen.load(std::memory_order_relaxed);
      if (st == ST_READY || (st == ST_WAIT_BLOCK && b->bgen.load(std::memory_order_relaxed) != wg) ||
          (st == ST_WAIT_WARP && b->wgen[f.warp].load(std::memory_order_relaxed) != wg))
        ready.push_back(&f);
    }
    if (all_done) break;
    if (ready.empty()) {
      int nb = 0, nw = 0, nd = 0;
      std::string warps;
      for (Fiber& f : std::span(fibers, nthreads)) {
        const int st = f.state.load();
        nb += st == ST_WAIT_BLOCK;
        nw += st == ST_WAIT_WARP;
        nd += st == ST_DONE;
      }
      for (int w = 0; w < b->nwarps; ++w)
        warps += " w" + std::to_string(w) + ":" + std::to_string(b->warrived[w].load()) + "@syncwarp";
      report(std::string("DEADLOCK in ") + g_kernel_name + " block " + block_name(bidx, grid) + ": " +
             std::to_string(nb) + " threads at __syncthreads, " +
             std::to_string(nw) + " at a warp barrier, " + std::to_string(nd) + " exited;" + warps);
      ok = false;
      break;
    }
    if (g_random) {
      // This round's warps: each with its speed's probability (drawn again until one of the
      // ready threads' warps is chosen).
      bool run_warp[kMaxWarps];
      for (bool any = false; !any;) {
        for (int w = 0; w < b->nwarps; ++w) run_warp[w] = coin(g_rng) < speed[w];
        for (Fiber* f : ready) any = any || run_warp[f->warp];
      }
      std::erase_if(ready, [&](Fiber* f) { return !run_warp[f->warp]; });
      std::shuffle(ready.begin(), ready.end(), g_rng);
    }
    for (Fiber* f : ready) {
      g_cur.store(f, std::memory_order_relaxed);
#ifdef EMU_TSAN
      __tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);
#endif
      emu_ctx_switch(&g_sched_sp, f->sp);
    }
  }
  g_cur.store(nullptr);
  stacks.release();
  const auto where = [&] { return std::string(g_kernel_name) + " block " + block_name(bidx, grid); };
  if (!sm.canary_ok(smem_bytes)) report("dynamic shared memory accessed out of bounds in " + where());
  region_free(sm);
  for (StaticShared& st : b->statics) {
    Guarded g;
    g.base = st.base, g.total = st.total, g.data = st.data;
    if (!g.canary_ok(st.bytes)) report("static shared memory accessed out of bounds in " + where());
    region_free(g);
  }
  b->statics.clear();
  // b is leaked on purpose when TSan runs (its sync objects must stay distinct per block)
#ifndef EMU_TSAN
  delete b;
#endif
  return ok;
}

// Launch: every block of grid, blocks one after another - in index order, in reverse
// (reverse_blocks) or, under the random schedule, shuffled: a kernel whose blocks read what other
// blocks of the same launch write (a race on the hardware, where they run at once) gets a
// different answer from different orders. block: threads per block (an int converts to dim3(n)),
// at most 1024, a multiple of 32 (every warp full).
inline bool launch(const char* name, dim3 grid, dim3 block, std::size_t smem, std::function<void()> body,
                   bool reverse_blocks = false) {
  g_kernel_name = name;
  g_kernel = std::move(body);
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads < 1 || threads > 32 * kMaxWarps || threads % 32 != 0 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
      grid.y > 65535 || grid.z > 65535 || block.z > 64) {
    report(std::string("launch configuration of ") + name +
           " invalid (CUDA) or with a partial warp (not emulated)");
    return false;
  }
  bool ok = true;
  std::vector<std::unique_ptr<Fiber[]>> all;
  std::vector<char> done;
  std::vector<uint3> order;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) order.push_back(uint3{x, y, z});
  if (g_random)
    std::shuffle(order.begin(), order.end(), g_rng);
  else if (reverse_blocks)
    std::reverse(order.begin(), order.end());
  for (const uint3& bidx : order) {
    all.emplace_back(new Fiber[threads]);
    done.push_back(run_block(bidx, grid, block, smem, all.back().get()));
    ok = ok && done.back();
  }
  tsan_acquire(&g_launch_done);
  for (std::size_t bi = 0; bi < all.size(); ++bi) {
    Fiber* fibers = all[bi].get();
    if (done[bi])
      for (int i = 0; i < threads; ++i)
        if (fibers[i].nsync_block != fibers[0].nsync_block)
          report(std::string("barrier count mismatch in ") + g_kernel_name + ": thread " + std::to_string(i) +
                 " passed " + std::to_string(fibers[i].nsync_block) + " __syncthreads, thread 0 " +
                 std::to_string(fibers[0].nsync_block));
#ifdef EMU_TSAN
    for (int i = 0; i < threads; ++i) __tsan_destroy_fiber(fibers[i].tsan);
#endif
  }
  return ok;
}

// A `kernel<<<grid, block, smem, stream>>>(args)` of host code, as tests/emu/translate.py
// rewrites it for the emulated-device build: checks the configuration as CUDA does (dynamic
// shared memory above 48 KiB needs cudaFuncSetAttribute first) and that every pointer argument is
// null or points into device memory (a host pointer is an illegal address on a GPU, while here
// it would just work), then queues the kernel on its stream (emu_runtime.h). When it runs (blocks
// in reverse order), a deadlock or an emulator report becomes the sticky launch error that
// cudaGetLastError and every later synchronizing call return.
template <typename G, typename B, typename F, typename... A>
void device_launch(const char* name, const void* kernel, G grid, B block, std::size_t smem, cudaStream_t stream, F fn,
                   std::tuple<A...> args) {
  int limit = rt::kSmemDefault;
  {
    std::lock_guard<std::mutex> lock(rt::g_mutex);
    auto it = rt::smem_limits().find(kernel);
    if (it != rt::smem_limits().end()) limit = std::max(limit, it->second);
  }
  if (smem > static_cast<std::size_t>(limit)) {
    std::fprintf(stderr, "emulated device: %s launched with %zu bytes of dynamic shared memory, over its limit %d\n", name,
                 smem, limit);
    rt::fail(cudaErrorInvalidValue);
    return;
  }
  bool host_pointer = false;
  std::size_t index = 0;
  std::apply(
      [&](const auto&... a) {
        auto check = [&](const auto& v) {
          if constexpr (std::is_pointer_v<std::decay_t<decltype(v)>>) {
            if (v && !rt::is_device(v)) {
              std::fprintf(stderr, "emulated device: %s argument %zu is %p, not device memory\n", name, index,
                           static_cast<const void*>(v));
              host_pointer = true;
            }
          }
          ++index;
        };
        (check(a), ...);
      },
      args);
  if (host_pointer) {
    rt::fail(cudaErrorInvalidValue);
    return;
  }
  const dim3 g(grid), b(block);
  rt::enqueue(stream, [name, g, b, smem, fn, args = std::move(args)] {
    const std::size_t errors = g_errors.size();
    const bool ok = launch(name, g, b, smem, [fn, &args] { std::apply(fn, args); }, /*reverse_blocks=*/true);
    if (!ok || g_errors.size() != errors) {
      for (std::size_t i = errors; i < g_errors.size(); ++i) std::fprintf(stderr, "emulated device: %s\n", g_errors[i].c_str());
      rt::fail_async(cudaErrorLaunchFailure);
    }
  });
}

}  // namespace emu

#define threadIdx (::emu::cur()->tidx)
#define blockIdx (::emu::blk()->bidx)
#define blockDim (::emu::blk()->bdim)
#define gridDim (::emu::blk()->gdim)

inline void __syncthreads() { ::emu::block_sync(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) ::emu::report("__syncwarp with a partial mask");
  ::emu::warp_sync();
}
// Shuffles of CUDA's 4- and 8-byte overloads (int, unsigned, long, long long and their
// unsigned forms, float, double): the value travels bit for bit.
namespace emu {
template <typename T>
concept ShflType = std::is_same_v<T, int> || std::is_same_v<T, unsigned> || std::is_same_v<T, long> ||
                   std::is_same_v<T, unsigned long> || std::is_same_v<T, long long> ||
                   std::is_same_v<T, unsigned long long> || std::is_same_v<T, float> || std::is_same_v<T, double>;
// Every lane writes its value, one warp barrier, every lane reads its source's. Consecutive
// shuffles alternate between two buffers: a lane can write buffer k % 2 again only after the
// barrier of shuffle k + 1, which every lane reaches after its read of shuffle k.
template <typename T>
inline T shfl(T v, int src_lane) {
  Fiber* f = cur();
  Block* b = blk();
  auto& buf = b->shfl[f->nshfl++ & 1][f->warp];
  std::memcpy(buf[f->lane], &v, sizeof(T));
  warp_sync();
  T r;
  std::memcpy(&r, buf[src_lane & 31], sizeof(T));
  return r;
}
}  // namespace emu
template <emu::ShflType T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32) ::emu::report("__shfl_xor_sync with a partial mask or width");
  return emu::shfl(v, emu::cur()->lane ^ (lane_mask & 31));
}
template <emu::ShflType T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  if (mask != 0xffffffffu || width != 32) ::emu::report("__shfl_sync with a partial mask or width");
  return emu::shfl(v, src);
}

// ---------------------------------------------------------------- atomics
// Fibers switch only at barriers, so a read-modify-write is never interleaved with another
// thread's; std::atomic_ref (relaxed, as CUDA's atomics) also makes them atomics for TSan.
// Each returns the old value, as CUDA's.
template <typename T>
  requires(std::is_same_v<T, int> || std::is_same_v<T, unsigned> || std::is_same_v<T, unsigned long long> ||
           std::is_same_v<T, float>)
inline T atomicExch(T* p, std::type_identity_t<T> v) {
  return std::atomic_ref<T>(*p).exchange(v, std::memory_order_relaxed);
}
template <typename T>
  requires(std::is_same_v<T, int> || std::is_same_v<T, unsigned> || std::is_same_v<T, unsigned long long> ||
           std::is_same_v<T, float> || std::is_same_v<T, double>)
inline T atomicAdd(T* p, std::type_identity_t<T> v) {
  return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed);
}
template <typename T>
  requires(std::is_same_v<T, int> || std::is_same_v<T, unsigned> || std::is_same_v<T, unsigned long long>)
inline T atomicCAS(T* p, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  std::atomic_ref<T>(*p).compare_exchange_strong(compare, v, std::memory_order_relaxed);
  return compare;  // the old value (unchanged compare when it matched)
}

// ---------------------------------------------------------------- WMMA
// Each lane holds the whole 16x16 matrix (every lane loads and computes the same); a lane stores
// its own accumulator elements (see acc_owned). Implicit warp barriers as set by emu::g_strict.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "emulated shape is 16x16x16");
  T m[16][16];  // matrix_a: (i, k); matrix_b: (k, n); accumulator: (i, j)
};

namespace detail {
template <typename T>
inline void check_ptr(const T* p, unsigned ldm, const char* op) {
  const bool bad_ptr = reinterpret_cast<std::uintptr_t>(p) % 32 != 0;
  const bool bad_ldm = ldm % (16 / sizeof(T)) != 0;
  if (bad_ptr || bad_ldm) {
    [[maybe_unused]] ::emu::IgnoreScope ig;
    ++::emu::g_wmma_violations;
    char buf[256];
    const long off = reinterpret_cast<const unsigned char*>(p) - ::emu::blk()->smem;
    std::snprintf(buf, sizeof buf, "WMMA %s in %s: pointer %p (smem offset %ld) %s, ldm %u %s", op,
                  ::emu::g_kernel_name, static_cast<const void*>(p), off,
                  bad_ptr ? "NOT 32-byte aligned" : "aligned", ldm, bad_ldm ? "NOT a multiple of 16 bytes" : "ok");
    ::emu::report(buf);
  }
}
inline void before() {
  if (::emu::g_strict < 2) ::emu::warp_sync();
}
inline void after() {
  if (::emu::g_strict == 0) ::emu::warp_sync();
}
}  // namespace detail

template <typename Use, typename T, typename L>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, const std::type_identity_t<T>& v) {
  for (auto& r : f.m)
    for (auto& x : r) x = v;
}

// matrix_a (element (i, k)) and matrix_b (element (k, n)): m[r][c] is p[r * ldm + c] for
// row_major, p[c * ldm + r] for col_major.
template <typename Use, typename T, typename L>
  requires(std::is_same_v<L, row_major> || std::is_same_v<L, col_major>)
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  detail::check_ptr(p, ldm, std::is_same_v<L, row_major> ? "load a/b row_major" : "load a/b col_major");
  detail::before();
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.m[r][c] = std::is_same_v<L, row_major> ? p[r * ldm + c] : p[c * ldm + r];
  detail::after();
}
// Accumulator element (i, j) belongs to lane 4 (i % 8) + (j % 8) / 2 (the sm_80+ m16n16k16 f32
// layout: rows lane/4 and lane/4 + 8, columns 2 (lane%4) + {0, 1} and + 8). A lane stores only its
// own elements, and of an accumulator load only its own elements are visible to TSan (the rest
// is read with TSan ignoring it), so that load -> mma -> store of the same tile by one warp is
// not mistaken for a cross-lane hazard: on the hardware every lane reads and writes back the
// same elements.
inline bool acc_owned(int lane, int i, int j) { return i % 8 == lane / 4 && (j % 8) / 2 == lane % 4; }

template <typename T>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, T, void>& c, const T* p, unsigned ldm, layout_t layout) {
  detail::check_ptr(p, ldm, "load accumulator");
  detail::before();
  const int lane = ::emu::cur()->lane;
  {
    [[maybe_unused]] ::emu::IgnoreScope ig;
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 16; ++j) c.m[i][j] = layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i];
  }
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      if (acc_owned(lane, i, j)) c.m[i][j] = layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i];
  detail::after();
}
template <typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T, void>& c, unsigned ldm,
                              layout_t layout) {
  detail::check_ptr(p, ldm, "store accumulator");
  detail::before();
  const int lane = ::emu::cur()->lane;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      if (acc_owned(lane, i, j)) (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = c.m[i][j];
  detail::after();
}

template <typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float, void>& d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float, void>& c) {
  if (::emu::g_strict == 0) detail::before();
  float r[16][16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = c.m[i][j];
      for (int k = 0; k < 16; ++k) acc += __bfloat162float(a.m[i][k]) * __bfloat162float(b.m[k][j]);  // exact products
      r[i][j] = acc;
    }
  std::memcpy(d.m, r, sizeof r);
  detail::after();
}
}  // namespace wmma
}  // namespace nvcuda

// ---------------------------------------------------------------- sm_80 PTX: ldmatrix, mma.m16n8k16, cp.async
// kernels/cuda/warp_mma.cuh takes these instead of its inline PTX. Lanes exchange their
// registers (or row addresses) through a warp gather: every lane writes, one warp barrier,
// every lane reads what the instruction's layout gives it. Layouts as warp_mma.cuh states
// them (the PTX ISA's): lane = 4 g + t.
#define SPPFT_EMU_DEVICE 1
namespace emu {
// Extra shared-memory wavefronts of ldmatrix from bank conflicts (0: every matrix's 8 rows in
// distinct banks), summed over all ldmatrix of all launches.
inline long g_ldmatrix_extra_wavefronts = 0;
// Writes `bytes` of this lane's data, waits for the warp, returns the warp's [32][32] bytes.
// Double-buffered like shfl: a lane rewrites buffer k % 2 only after the barrier of gather k + 1.
inline const unsigned char (*warp_gather(const void* mine, std::size_t bytes))[32] {
  Fiber* f = cur();
  auto& buf = blk()->gather[f->ngather++ & 1][f->warp];
  std::memcpy(buf[f->lane], mine, bytes);
  warp_sync();
  return buf;
}
inline bool in_dynamic_smem(const void* p, std::size_t bytes) {
  const auto* c = static_cast<const unsigned char*>(p);
  return c >= blk()->smem && c + bytes <= blk()->smem + blk()->smem_size;
}
namespace ptx {
inline unsigned bf16_pair(const __nv_bfloat16* lo, const __nv_bfloat16* hi) {
  return static_cast<unsigned>(lo->x) | static_cast<unsigned>(hi->x) << 16;
}
inline float bf16_half(unsigned reg, int half) {
  return __bfloat162float(__nv_bfloat16{static_cast<unsigned short>(half ? reg >> 16 : reg & 0xffffu)});
}
template <bool Trans>
inline void ldmatrix(unsigned (&r)[4], const void* row) {
  const std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(row);
  if (mine % 16 != 0 || !in_dynamic_smem(row, 16)) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "ldmatrix in %s: lane %d row address %p %s", g_kernel_name, cur()->lane, row,
                  mine % 16 ? "not 16-byte aligned" : "outside the block's dynamic shared memory");
    report(buf);
  }
  const auto* all = warp_gather(&mine, sizeof mine);
  auto addr = [&](int lane) {
    std::uintptr_t a;
    std::memcpy(&a, all[lane], sizeof a);
    return reinterpret_cast<const __nv_bfloat16*>(a);
  };
  const int l = cur()->lane;
  if (l == 0) {  // bank conflicts: each matrix is one 128-byte phase; its 8 rows need distinct 16-byte bank groups
    [[maybe_unused]] IgnoreScope ig;  // emulator bookkeeping, not the kernel's memory
    for (int i = 0; i < 4; ++i) {
      int count[8] = {}, worst = 0;
      for (int r = 0; r < 8; ++r)
        worst = std::max(worst, ++count[(reinterpret_cast<std::uintptr_t>(addr(8 * i + r)) >> 4) & 7]);
      g_ldmatrix_extra_wavefronts += worst - 1;
    }
  }
  for (int i = 0; i < 4; ++i) {
    if (Trans)  // elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4) of matrix i
      r[i] = bf16_pair(addr(8 * i + 2 * (l % 4)) + l / 4, addr(8 * i + 2 * (l % 4) + 1) + l / 4);
    else  // elements (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1)
      r[i] = bf16_pair(addr(8 * i + l / 4) + 2 * (l % 4), addr(8 * i + l / 4) + 2 * (l % 4) + 1);
  }
  warp_sync();  // every lane has read the rows before any lane goes on (a warp-wide instruction)
}
inline void ldmatrix_x4(unsigned (&r)[4], const void* row) { ldmatrix<false>(r, row); }
inline void ldmatrix_x4_trans(unsigned (&r)[4], const void* row) { ldmatrix<true>(r, row); }

// d += A B: products of bf16 exact in fp32, summed in k order onto d (the hardware's order
// within the 16 is unspecified; the tests' tolerances cover it).
inline void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  unsigned mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const auto* all = warp_gather(mine, sizeof mine);
  auto reg = [&](int lane, int i) {
    unsigned v;
    std::memcpy(&v, all[lane] + 4 * i, 4);
    return v;
  };
  const int l = cur()->lane, g = l / 4, t = l % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) {
      // A (row, k): lane 4 (row % 8) + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k % 2.
      const float av = bf16_half(reg(4 * (row % 8) + (k % 8) / 2, (row >= 8) + 2 * (k >= 8)), k & 1);
      // B (k, col): lane 4 col + (k % 8) / 2, register b0 / b1 (k >= 8), half k % 2.
      const float bv = bf16_half(reg(4 * col + (k % 8) / 2, 4 + (k >= 8)), k & 1);
      acc += av * bv;
    }
    out[e] = acc;
  }
  std::memcpy(d, out, sizeof out);
}

inline void cp_async_16(void* smem_dst, const void* gmem_src) {
  if (reinterpret_cast<std::uintptr_t>(smem_dst) % 16 || reinterpret_cast<std::uintptr_t>(gmem_src) % 16 ||
      !in_dynamic_smem(smem_dst, 16))
    report(std::string("cp.async in ") + g_kernel_name + ": destination not 16-byte aligned shared memory or source not 16-byte aligned");
  cur()->cp_open.emplace_back(smem_dst, gmem_src);
}
inline void cp_async_commit() {
  Fiber* f = cur();
  f->cp_groups.push_back(std::move(f->cp_open));
  f->cp_open.clear();
}
// Lands every committed group but the newest N (uncommitted copies stay pending, as on the hardware).
template <int N>
inline void cp_async_wait() {
  Fiber* f = cur();
  while (f->cp_groups.size() > static_cast<std::size_t>(N)) {
    for (const auto& [dst, src] : f->cp_groups.front()) std::memcpy(dst, src, 16);
    f->cp_groups.erase(f->cp_groups.begin());
  }
}
}  // namespace ptx
}  // namespace emu
