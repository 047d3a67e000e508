// Emulated-device build (tests/emudev.cmake): the part of NCCL trainer/comm_nccl.cpp uses, so
// that data-parallel GPU training runs as several processes on emulated GPUs. Ranks meet over a
// Unix socket in the abstract namespace named by the unique id; rank 0 is the hub. A collective is
// queued on its stream like any device work (emu_runtime.h) and, when the stream runs it, sends the
// rank's buffer to the hub, which checks that every rank called the same collective (kind, count,
// type, root), reduces in rank order and sends each rank its result. Sums round once per rank
// added, in the buffer's type, as NCCL's ring does for two ranks. Buffers must lie inside one
// device allocation each.
// A failure (mismatched calls, a peer gone, host pointers) is printed and becomes the sticky
// device error the next synchronizing call returns.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "emu_cuda.h"

enum ncclResult_t {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
};
enum ncclDataType_t { ncclInt8 = 0, ncclUint8 = 1, ncclInt32 = 2, ncclUint32 = 3, ncclInt64 = 4, ncclUint64 = 5,
                      ncclFloat16 = 6, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9 };
enum ncclRedOp_t { ncclSum = 0 };
#define NCCL_UNIQUE_ID_BYTES 128
struct ncclUniqueId {
  char internal[NCCL_UNIQUE_ID_BYTES];
};

struct EmuNcclComm {
  int rank = 0, world = 1;
  int hub = -1;               // ranks > 0: the connection to rank 0
  std::vector<int> peers;     // rank 0: the connection to rank r at r (peers[0] unused)
  std::uint64_t calls = 0;    // collectives run so far (checked equal across ranks)
  bool broken = false;
};
using ncclComm_t = EmuNcclComm*;

namespace emu::nccl {
enum Kind : std::int32_t { kAllReduce = 0, kReduce = 1, kBroadcast = 2 };
struct Header {
  std::int32_t kind, type, root, pad;
  std::uint64_t count, call;
};
inline const char* kind_name(std::int32_t k) {
  return k == kAllReduce ? "all-reduce" : k == kReduce ? "reduce" : k == kBroadcast ? "broadcast" : "?";
}
inline std::size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  }
  return 0;
}
inline bool send_all(int fd, const void* p, std::size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k, n -= static_cast<std::size_t>(k);
  }
  return true;
}
inline bool recv_all(int fd, void* p, std::size_t n) {
  char* c = static_cast<char*>(p);
  while (n) {
    const ssize_t k = ::recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    c += k, n -= static_cast<std::size_t>(k);
  }
  return true;
}
inline sockaddr_un address(const ncclUniqueId& id, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::size_t n = strnlen(id.internal, sizeof a.sun_path - 2);
  std::memcpy(a.sun_path + 1, id.internal, n);  // sun_path[0] = 0: the abstract namespace, no file
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}
// acc (+)= x elementwise in the buffer's type, rounding once per addition.
inline bool accumulate(void* acc, const void* x, std::size_t n, ncclDataType_t t) {
  switch (t) {
    case ncclFloat32: {
      auto* a = static_cast<float*>(acc);
      auto* b = static_cast<const float*>(x);
      for (std::size_t i = 0; i < n; ++i) a[i] += b[i];
      return true;
    }
    case ncclFloat64: {
      auto* a = static_cast<double*>(acc);
      auto* b = static_cast<const double*>(x);
      for (std::size_t i = 0; i < n; ++i) a[i] += b[i];
      return true;
    }
    case ncclBfloat16: {
      auto* a = static_cast<__nv_bfloat16*>(acc);
      auto* b = static_cast<const __nv_bfloat16*>(x);
      for (std::size_t i = 0; i < n; ++i) a[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
      return true;
    }
    default: return false;  // sums of the other types are not emulated (the product uses none)
  }
}
inline void failed(EmuNcclComm* c, const std::string& what) {
  std::fprintf(stderr, "emulated NCCL (rank %d of %d): %s\n", c->rank, c->world, what.c_str());
  c->broken = true;
  rt::fail_async(cudaErrorLaunchFailure);
}

// One collective, run when its stream reaches it. Every rank sends its header and buffer to the
// hub; the hub answers each with a status byte and, where that rank receives one, the result.
inline void run(EmuNcclComm* c, Header h, const void* send, void* recv) {
  if (c->broken) return failed(c, std::string(kind_name(h.kind)) + " after an earlier failure");
  const std::size_t bytes = h.count * type_size(static_cast<ncclDataType_t>(h.type));
  auto receives = [&](int r) { return h.kind != kReduce || r == h.root; };
  if (c->world == 1) {
    if (send != recv) std::memmove(recv, send, bytes);
    return;
  }
  if (c->rank != 0) {
    char status = 0;
    if (!send_all(c->hub, &h, sizeof h) || !send_all(c->hub, send, bytes) || !recv_all(c->hub, &status, 1))
      return failed(c, std::string(kind_name(h.kind)) + ": the connection to rank 0 closed");
    if (status) return failed(c, std::string(kind_name(h.kind)) + ": rank 0 reported a mismatched collective (see its message)");
    if (receives(c->rank) && !recv_all(c->hub, recv, bytes)) return failed(c, "rank 0 closed the connection mid-result");
    return;
  }
  std::vector<std::vector<char>> data(c->world);
  data[0].assign(static_cast<const char*>(send), static_cast<const char*>(send) + bytes);
  std::string mismatch;
  for (int r = 1; r < c->world; ++r) {
    Header o{};
    if (!recv_all(c->peers[r], &o, sizeof o)) return failed(c, "the connection to rank " + std::to_string(r) + " closed");
    const std::size_t obytes = o.count * type_size(static_cast<ncclDataType_t>(o.type));
    data[r].resize(obytes);
    if (!recv_all(c->peers[r], data[r].data(), obytes)) return failed(c, "rank " + std::to_string(r) + " closed mid-buffer");
    if (mismatch.empty() && (o.kind != h.kind || o.type != h.type || o.root != h.root || o.count != h.count || o.call != h.call))
      mismatch = "collective " + std::to_string(h.call) + ": rank 0 called " + kind_name(h.kind) + " of " +
                 std::to_string(h.count) + " elements (type " + std::to_string(h.type) + ", root " + std::to_string(h.root) +
                 "), rank " + std::to_string(r) + " called " + kind_name(o.kind) + " of " + std::to_string(o.count) +
                 " elements (type " + std::to_string(o.type) + ", root " + std::to_string(o.root) + ") as its collective " +
                 std::to_string(o.call);
  }
  const char status = mismatch.empty() ? 0 : 1;
  for (int r = 1; r < c->world; ++r) send_all(c->peers[r], &status, 1);
  if (status) return failed(c, mismatch);
  std::vector<char> result;
  if (h.kind == kBroadcast) {
    result = std::move(data[h.root]);
  } else {
    result = data[0];
    for (int r = 1; r < c->world; ++r)
      if (!accumulate(result.data(), data[r].data(), h.count, static_cast<ncclDataType_t>(h.type)))
        return failed(c, "sum of type " + std::to_string(h.type) + " is not emulated");
  }
  for (int r = 1; r < c->world; ++r)
    if (receives(r) && !send_all(c->peers[r], result.data(), bytes))
      return failed(c, "the connection to rank " + std::to_string(r) + " closed");
  if (receives(0)) std::memcpy(recv, result.data(), bytes);
}

inline ncclResult_t enqueue(Kind kind, const void* send, void* recv, std::size_t count, ncclDataType_t type, int root,
                            ncclComm_t c, cudaStream_t stream) {
  if (!c || !type_size(type) || root < 0 || root >= c->world) return ncclInvalidArgument;
  const std::size_t bytes = count * type_size(type);
  if (count && (!rt::is_device(send, bytes) || !rt::is_device(recv, bytes))) {
    std::fprintf(stderr, "emulated NCCL: %s of %zu bytes given a buffer that is not inside one device allocation\n",
                 kind_name(kind), bytes);
    return ncclInvalidArgument;
  }
  const Header h{kind, static_cast<std::int32_t>(type), root, 0, count, c->calls++};
  rt::enqueue(stream, [c, h, send, recv] { run(c, h, send, recv); });
  return ncclSuccess;
}
}  // namespace emu::nccl

inline const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error (emulated NCCL)";
    case ncclSystemError: return "system error (emulated NCCL: a socket call failed, see above)";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    default: return "error (emulated NCCL)";
  }
}
inline ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  static int counter = 0;
  *id = ncclUniqueId{};
  std::snprintf(id->internal, sizeof id->internal, "sppft-emu-nccl-%d-%d-%lld", static_cast<int>(::getpid()), counter++,
                static_cast<long long>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return ncclSuccess;
}
// Rank 0 listens and accepts the others (each sends its rank first); they connect, retrying
// until rank 0 listens. Up to 120 s, as a stand-in for NCCL's bootstrap timeout.
inline ncclResult_t ncclCommInitRank(ncclComm_t* out, int world, ncclUniqueId id, int rank) {
  if (world < 1 || rank < 0 || rank >= world) return ncclInvalidArgument;
  auto* c = new EmuNcclComm;
  c->rank = rank, c->world = world;
  *out = c;
  if (world == 1) return ncclSuccess;
  socklen_t len = 0;
  const sockaddr_un addr = emu::nccl::address(id, &len);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto fail = [&](const char* what) {
    std::fprintf(stderr, "emulated NCCL (rank %d of %d): %s: %s\n", rank, world, what, std::strerror(errno));
    return ncclSystemError;
  };
  if (rank == 0) {
    const int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (lfd < 0 || ::bind(lfd, reinterpret_cast<const sockaddr*>(&addr), len) != 0 || ::listen(lfd, world) != 0)
      return fail("listen");
    c->peers.assign(world, -1);
    for (int accepted = 1; accepted < world;) {
      pollfd p{lfd, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) {
        if (std::chrono::steady_clock::now() > deadline) return fail("waiting for the other ranks");
        continue;
      }
      const int fd = ::accept(lfd, nullptr, nullptr);
      std::int32_t r = -1;
      if (fd < 0 || !emu::nccl::recv_all(fd, &r, sizeof r) || r < 1 || r >= world || c->peers[r] != -1) return fail("accept");
      c->peers[r] = fd;
      ++accepted;
    }
    ::close(lfd);
    return ncclSuccess;
  }
  for (;;) {
    c->hub = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (c->hub < 0) return fail("socket");
    if (::connect(c->hub, reinterpret_cast<const sockaddr*>(&addr), len) == 0) break;
    ::close(c->hub);
    if (std::chrono::steady_clock::now() > deadline) return fail("connecting to rank 0");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const std::int32_t r = rank;
  return emu::nccl::send_all(c->hub, &r, sizeof r) ? ncclSuccess : fail("greeting rank 0");
}
inline ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (!c) return ncclSuccess;
  if (c->hub >= 0) ::close(c->hub);
  for (int fd : c->peers)
    if (fd >= 0) ::close(fd);
  delete c;
  return ncclSuccess;
}
inline ncclResult_t ncclGroupStart() { return ncclSuccess; }  // collectives run in call order anyway
inline ncclResult_t ncclGroupEnd() { return ncclSuccess; }
inline ncclResult_t ncclAllReduce(const void* send, void* recv, std::size_t count, ncclDataType_t type, ncclRedOp_t op,
                                  ncclComm_t c, cudaStream_t s) {
  if (op != ncclSum) return ncclInvalidArgument;
  return emu::nccl::enqueue(emu::nccl::kAllReduce, send, recv, count, type, 0, c, s);
}
inline ncclResult_t ncclReduce(const void* send, void* recv, std::size_t count, ncclDataType_t type, ncclRedOp_t op, int root,
                               ncclComm_t c, cudaStream_t s) {
  if (op != ncclSum) return ncclInvalidArgument;
  return emu::nccl::enqueue(emu::nccl::kReduce, send, recv, count, type, root, c, s);
}
inline ncclResult_t ncclBroadcast(const void* send, void* recv, std::size_t count, ncclDataType_t type, int root, ncclComm_t c,
                                  cudaStream_t s) {
  return emu::nccl::enqueue(emu::nccl::kBroadcast, send, recv, count, type, root, c, s);
}
