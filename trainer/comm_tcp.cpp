// TCP backend: a star through rank 0 over plain sockets. Rank 0 listens on
// MASTER_PORT, every other rank connects and says who it is. Reductions sum
// on rank 0 in rank order (deterministic), then send results back. Meant for
// CPU runs launched torchrun-style and for handing NCCL its unique id; the
// bytes through rank 0 grow with the world size, so large CPU jobs use MPI.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "engine/error.h"
#include "trainer/comm.h"

namespace sppft {

namespace {

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(const LaunchInfo& l, std::chrono::seconds timeout) : Communicator(l.rank, l.world) {
    peers_.assign(world_, -1);
    if (rank_ == 0)
      accept_all(l, timeout);
    else
      connect_root(l, timeout);
  }
  ~TcpCommunicator() override {
    for (int fd : peers_)
      if (fd >= 0) ::close(fd);
  }
  std::string backend() const override { return "tcp"; }

  void all_reduce_sum(void* data, std::size_t n, DType dtype) override {
    require_f32(dtype, "tcp");
    reduce_to_all(static_cast<float*>(data), n);
  }
  void all_reduce_sum(double* data, std::size_t n) override { reduce_to_all(data, n); }

  void reduce_scatter_sum(void* buffer, const std::vector<std::size_t>& counts, DType dtype) override {
    require_f32(dtype, "tcp");
    float* data = static_cast<float*>(buffer);
    std::size_t total = 0;
    for (auto c : counts) total += c;
    if (rank_ != 0) {
      send(0, data, total * sizeof(float));
      recv(0, data + offset(counts, rank_), counts[rank_] * sizeof(float));
      return;
    }
    sum_from_peers(data, total);
    for (int r = 1; r < world_; ++r) send(r, data + offset(counts, r), counts[r] * sizeof(float));
  }

  void all_gather(void* buffer, const std::vector<std::size_t>& counts, DType dtype) override {
    require_f32(dtype, "tcp");
    float* data = static_cast<float*>(buffer);
    std::size_t total = 0;
    for (auto c : counts) total += c;
    if (rank_ != 0) {
      send(0, data + offset(counts, rank_), counts[rank_] * sizeof(float));
      recv(0, data, total * sizeof(float));
      return;
    }
    for (int r = 1; r < world_; ++r) recv(r, data + offset(counts, r), counts[r] * sizeof(float));
    for (int r = 1; r < world_; ++r) send(r, data, total * sizeof(float));
  }

  void broadcast(void* bytes, std::size_t n, int root) override {
    if (root != 0) {  // relay through rank 0
      if (rank_ == root) send(0, bytes, n);
      if (rank_ == 0) recv(root, bytes, n);
    }
    if (rank_ == 0) {
      for (int r = 1; r < world_; ++r)
        if (r != root) send(r, bytes, n);
    } else if (rank_ != root) {
      recv(0, bytes, n);
    }
  }

 private:
  static std::size_t offset(const std::vector<std::size_t>& counts, int r) {
    std::size_t o = 0;
    for (int i = 0; i < r; ++i) o += counts[i];
    return o;
  }

  template <typename T>
  void sum_from_peers(T* data, std::size_t n) {
    std::vector<T> in(n);
    for (int r = 1; r < world_; ++r) {
      recv(r, in.data(), n * sizeof(T));
      for (std::size_t i = 0; i < n; ++i) data[i] += in[i];
    }
  }

  template <typename T>
  void reduce_to_all(T* data, std::size_t n) {
    if (rank_ != 0) {
      send(0, data, n * sizeof(T));
      recv(0, data, n * sizeof(T));
      return;
    }
    sum_from_peers(data, n);
    for (int r = 1; r < world_; ++r) send(r, data, n * sizeof(T));
  }

  [[noreturn]] void fail(int peer, const std::string& what) const {
    throw RuntimeFailure("rank " + std::to_string(rank_) + " (tcp): " + what + " rank " + std::to_string(peer) +
                         (errno ? std::string(": ") + std::strerror(errno) : std::string()) +
                         " (did it die? see its log)");
  }

  void send(int peer, const void* p, std::size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n) {
      errno = 0;
      const ssize_t k = ::send(peers_[peer], c, n, MSG_NOSIGNAL);
      if (k <= 0) {
        if (k < 0 && errno == EINTR) continue;
        fail(peer, "lost the connection to");
      }
      c += k;
      n -= static_cast<std::size_t>(k);
    }
  }

  void recv(int peer, void* p, std::size_t n) {
    char* c = static_cast<char*>(p);
    while (n) {
      errno = 0;
      const ssize_t k = ::recv(peers_[peer], c, n, 0);
      if (k == 0) fail(peer, "connection closed by");
      if (k < 0) {
        if (errno == EINTR) continue;
        fail(peer, "lost the connection to");
      }
      c += k;
      n -= static_cast<std::size_t>(k);
    }
  }

  static void tune(int fd) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

  void accept_all(const LaunchInfo& l, std::chrono::seconds timeout) {
    const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<std::uint16_t>(l.master_port));
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lfd, world_) != 0) {
      const std::string err = std::strerror(errno);
      ::close(lfd);
      throw RuntimeFailure("rank 0 (tcp): cannot listen on port " + std::to_string(l.master_port) + ": " + err +
                           " (MASTER_PORT must be free on rank 0's host)");
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int joined = 1; joined < world_;) {
      pollfd pfd{lfd, POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
        ::close(lfd);
        throw RuntimeFailure("rank 0 (tcp): only " + std::to_string(joined) + " of " + std::to_string(world_) +
                             " ranks connected to port " + std::to_string(l.master_port) + " within " +
                             std::to_string(timeout.count()) + " s");
      }
      const int fd = ::accept(lfd, nullptr, nullptr);
      if (fd < 0) continue;
      tune(fd);
      std::int32_t who = -1;
      peers_[0] = fd;  // temporarily, to read the hello
      recv(0, &who, sizeof who);
      peers_[0] = -1;
      if (who < 1 || who >= world_ || peers_[who] >= 0) {
        ::close(fd);
        ::close(lfd);
        throw RuntimeFailure("rank 0 (tcp): a process connected as rank " + std::to_string(who) + ", expected a rank in 1.." +
                             std::to_string(world_ - 1) + " not yet connected (two jobs on one MASTER_PORT?)");
      }
      peers_[who] = fd;
      ++joined;
    }
    ::close(lfd);
  }

  void connect_root(const LaunchInfo& l, std::chrono::seconds timeout) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    const std::string port = std::to_string(l.master_port);
    if (::getaddrinfo(l.master_addr.c_str(), port.c_str(), &hints, &res) != 0 || !res)
      throw InputError("MASTER_ADDR=" + l.master_addr + ": cannot resolve this host name");
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {  // rank 0 may not listen yet: retry until the timeout
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
        ::freeaddrinfo(res);
        tune(fd);
        peers_[0] = fd;
        const std::int32_t me = rank_;
        send(0, &me, sizeof me);
        return;
      }
      ::close(fd);
      if (std::chrono::steady_clock::now() > deadline) {
        ::freeaddrinfo(res);
        throw RuntimeFailure("rank " + std::to_string(rank_) + " (tcp): cannot reach rank 0 at " + l.master_addr + ":" + port +
                             " within " + std::to_string(timeout.count()) + " s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::vector<int> peers_;  // rank 0: a socket per peer; others: peers_[0] only
};

}  // namespace

std::unique_ptr<Communicator> make_tcp_communicator(const LaunchInfo& launch, std::chrono::seconds timeout) {
  return std::make_unique<TcpCommunicator>(launch, timeout);
}

}  // namespace sppft
