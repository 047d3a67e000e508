#include "trainer/comm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/error.h"

namespace sppft {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, const char* what) {
  const char* v = env(name);
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (!end || *end || x < 0 || x > 1 << 24)
    throw InputError(std::string("environment variable ") + name + "='" + v + "': expected a non-negative integer (" + what + ")");
  return static_cast<int>(x);
}

class SingleCommunicator final : public Communicator {
 public:
  SingleCommunicator() : Communicator(0, 1) {}
  std::string backend() const override { return "none"; }
  void all_reduce_sum(void*, std::size_t, DType) override {}
  void all_reduce_sum(double*, std::size_t) override {}
  void reduce_scatter_sum(void*, const std::vector<std::size_t>&, DType) override {}
  void all_gather(void*, const std::vector<std::size_t>&, DType) override {}
  void broadcast(void*, std::size_t, int) override {}
};

}  // namespace

LaunchInfo detect_launch() {
  LaunchInfo l;
  auto pick = [&](const char* rank, const char* size, const char* local, const char* launcher) {
    if (!env(rank) || !env(size)) return false;
    l.rank = env_int(rank, "this process's rank");
    l.world = env_int(size, "the number of ranks");
    l.local_rank = env(local) ? env_int(local, "the rank on this node") : 0;
    l.launcher = launcher;
    return true;
  };
  if (!pick("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun") &&
      !pick("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "mpirun") && !pick("RANK", "WORLD_SIZE", "LOCAL_RANK", "env"))
    pick("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "env");
  if (l.world < 1 || l.rank >= l.world)
    throw InputError("launch environment: rank " + std::to_string(l.rank) + " outside a world of " + std::to_string(l.world) +
                     " ranks");
  if (l.launcher == "env" && l.world > 1) {
    if (!env("MASTER_ADDR") || !env("MASTER_PORT"))
      throw InputError("launch environment: WORLD_SIZE=" + std::to_string(l.world) +
                       " but MASTER_ADDR or MASTER_PORT is not set (rank 0's host and a free TCP port)");
    l.master_addr = env("MASTER_ADDR");
    l.master_port = env_int("MASTER_PORT", "rank 0's TCP port");
    if (l.master_port < 1 || l.master_port > 65535)
      throw InputError("environment variable MASTER_PORT=" + std::to_string(l.master_port) + ": expected a port in 1..65535");
  }
  return l;
}

std::unique_ptr<Communicator> make_single_communicator() { return std::make_unique<SingleCommunicator>(); }

void require_f32(DType dtype, const std::string& backend) {
  if (dtype != DType::F32)
    throw RuntimeFailure(backend + " collectives take fp32 buffers; " + std::string(dtype_name(dtype)) + " needs NCCL");
}

std::unique_ptr<Communicator> make_host_communicator(const LaunchInfo& launch, const std::string& backend,
                                                     std::chrono::seconds timeout) {
  if (backend != "auto" && backend != "none" && backend != "mpi" && backend != "tcp")
    throw InputError("--dist: unknown backend '" + backend + "' (expected auto, none, mpi or tcp)");
  if (backend == "none" || (backend == "auto" && launch.world == 1)) {
    if (launch.world > 1)
      throw InputError("--dist none: the launcher started " + std::to_string(launch.world) + " ranks; use --dist auto");
    return make_single_communicator();
  }
  if (backend == "mpi" || (backend == "auto" && launch.launcher == "mpirun")) {
    if (launch.launcher != "mpirun")
      throw InputError("--dist mpi: not started by mpirun (no OMPI_COMM_WORLD_RANK / PMI_RANK in the environment)");
    return make_mpi_communicator();
  }
  if (launch.launcher != "env" || launch.world < 2)
    throw InputError("--dist tcp: needs RANK, WORLD_SIZE (> 1), MASTER_ADDR and MASTER_PORT in the environment");
  return make_tcp_communicator(launch, timeout);
}

CommQueue::CommQueue(Communicator& comm, std::chrono::seconds timeout) : comm_(comm), timeout_(timeout) {
  thread_ = std::thread([this] { worker(); });
}

CommQueue::~CommQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

CommQueue::Ticket CommQueue::submit(std::string what, std::function<void()> job) {
  Communicator::Mark ready = comm_.mark_queued_work();  // here, on the submitting thread
  if (ready)
    job = [this, ready = std::move(ready), job = std::move(job)] {
      comm_.wait_for(ready);
      job();
    };
  std::lock_guard<std::mutex> lock(mu_);
  const Ticket t = next_++;
  queue_.push_back({t, std::move(what), std::move(job)});
  cv_.notify_all();
  return t;
}

void CommQueue::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    running_ = job.what;
    lock.unlock();
    std::exception_ptr err;
    const auto t0 = std::chrono::steady_clock::now();
    if (!error_) {  // after a failure the rest is skipped: their inputs may be stale
      try {
        job.fn();
      } catch (...) {
        err = std::current_exception();
      }
    }
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    lock.lock();
    busy_s_ += took;
    if (err && !error_) error_ = err;
    done_ = job.ticket;
    running_.clear();
    cv_.notify_all();
  }
}

void CommQueue::wait(Ticket t) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout_, [&] { return done_ >= t; })) {
    std::fprintf(stderr, "sppft: rank %d of %d: collective '%s' (%s) did not finish within %lld s; "
                 "a peer rank died or hangs, stopping\n", comm_.rank(), comm_.world(),
                 running_.empty() ? "(queued)" : running_.c_str(), comm_.backend().c_str(), (long long)timeout_.count());
    std::fflush(stderr);
    std::_Exit(3);  // the worker is stuck inside the collective; nothing can unwind it
  }
  if (error_) std::rethrow_exception(error_);
}

double CommQueue::take_busy_seconds() {
  std::lock_guard<std::mutex> lock(mu_);
  const double b = busy_s_;
  busy_s_ = 0;
  return b;
}

void CommQueue::wait_all() {
  Ticket last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    last = next_ - 1;
  }
  wait(last);
}

}  // namespace sppft
