// Collective communication between the ranks of a data-parallel run.
//
// One process per device. How a process learns its rank (detect_launch):
//   mpirun          OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK (or PMI_RANK / PMI_SIZE)
//   torchrun-style  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
//   Slurm srun      SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (+ MASTER_ADDR / MASTER_PORT)
// Backends: MPI (CPU, when launched by mpirun), TCP (CPU, a star through rank
// 0, when launched with the environment variables; also the rendezvous that
// hands NCCL its unique id), NCCL (GPU buffers). World size 1 needs none.
//
// Every collective runs on one worker thread (CommQueue), in submission order:
// the trainer starts a block's gradient reduction as soon as its backward is
// done and keeps computing; a collective that does not finish within the
// timeout (a peer died or hangs) ends the process with a one-line error
// instead of hanging the job.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/dtype.h"

namespace sppft {

struct LaunchInfo {
  int rank = 0, world = 1, local_rank = 0;
  std::string launcher = "single";  // "single", "mpirun", "env" (torchrun/Slurm variables)
  std::string master_addr;           // env launches
  int master_port = 0;
};
// Reads the launcher's environment variables; InputError when they are
// inconsistent (rank outside the world, a missing MASTER_ADDR for world > 1, ...).
LaunchInfo detect_launch();

// Blocking collectives over float buffers, in place, on the communicator's
// device (host memory for MPI and TCP, device memory for NCCL). Counts may
// differ per rank; slices of `counts` lie back to back in rank order.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;
  int rank() const { return rank_; }
  int world() const { return world_; }

  // Buffers of `dtype` elements: F32 everywhere; BF16 (GPU gradients and weights) with
  // NCCL only - the host backends throw for it.
  virtual void all_reduce_sum(void* data, std::size_t n, DType dtype) = 0;
  virtual void all_reduce_sum(double* data, std::size_t n) = 0;  // host scalars (loss sums, norms)
  // data holds every rank's full buffer; afterwards this rank's slice holds the sum over ranks.
  virtual void reduce_scatter_sum(void* data, const std::vector<std::size_t>& counts, DType dtype) = 0;
  // data holds this rank's slice; afterwards every slice holds its owner's values.
  virtual void all_gather(void* data, const std::vector<std::size_t>& counts, DType dtype) = 0;
  virtual void broadcast(void* bytes, std::size_t n, int root) = 0;  // host memory

  // Ordering with the device's compute stream, for backends whose collectives run on a stream
  // of their own (NCCL): mark_queued_work(), on the thread that submits a collective, marks the
  // work queued on the compute stream so far (the backward kernels writing a gradient, the
  // optimizer writing weights); wait_for(mark), on the thread that runs it, makes the
  // collective's stream wait for that work before it reads the buffer. CommQueue calls both for
  // every job. Host backends: no-ops (their buffers are complete when submitted).
  using Mark = std::shared_ptr<void>;
  virtual Mark mark_queued_work() { return {}; }
  virtual void wait_for(const Mark&) {}

  // fp32 shorthands.
  void all_reduce_sum(float* data, std::size_t n) { all_reduce_sum(static_cast<void*>(data), n, DType::F32); }
  void reduce_scatter_sum(float* data, const std::vector<std::size_t>& counts) { reduce_scatter_sum(data, counts, DType::F32); }
  void all_gather(float* data, const std::vector<std::size_t>& counts) { all_gather(data, counts, DType::F32); }

 protected:
  Communicator(int rank, int world) : rank_(rank), world_(world) {}
  int rank_, world_;
};

std::unique_ptr<Communicator> make_single_communicator();
// Throws RuntimeFailure unless dtype is F32 (the host backends).
void require_f32(DType dtype, const std::string& backend);
// Backends that are not built throw InputError naming the missing library.
std::unique_ptr<Communicator> make_mpi_communicator();
std::unique_ptr<Communicator> make_tcp_communicator(const LaunchInfo& launch, std::chrono::seconds timeout);
// NCCL over the GPU `launch.local_rank`; the unique id travels over `bootstrap`
// (null for world size 1).
std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, Communicator* bootstrap);
bool mpi_available();
bool nccl_available();

// `--dist auto|none|mpi|tcp`: auto picks MPI under mpirun, TCP under an
// environment launch, none for one process.
std::unique_ptr<Communicator> make_host_communicator(const LaunchInfo& launch, const std::string& backend,
                                                     std::chrono::seconds timeout);

// Runs collectives on one worker thread in submission order.
class CommQueue {
 public:
  using Ticket = std::uint64_t;
  CommQueue(Communicator& comm, std::chrono::seconds timeout);
  ~CommQueue();
  CommQueue(const CommQueue&) = delete;
  CommQueue& operator=(const CommQueue&) = delete;

  Communicator& comm() { return comm_; }
  // Queues `job` (a call on comm()) under a name for error messages. The job runs after the
  // device work queued before this call (Communicator::mark_queued_work).
  Ticket submit(std::string what, std::function<void()> job);
  // Waits for one ticket / for everything queued. A job that threw rethrows
  // here; one that outlives the timeout prints which collective stalled and
  // ends the process (exit 3), since a stuck collective cannot be cancelled.
  void wait(Ticket t);
  void wait_all();
  // submit + wait.
  void run(std::string what, std::function<void()> job) { wait(submit(std::move(what), std::move(job))); }
  // Seconds the worker spent inside collectives since the last call (then reset).
  double take_busy_seconds();

 private:
  struct Job {
    Ticket ticket;
    std::string what;
    std::function<void()> fn;
  };
  void worker();
  Communicator& comm_;
  std::chrono::seconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  Ticket next_ = 1, done_ = 0;  // tickets finish in order
  std::string running_;
  std::exception_ptr error_;
  bool stop_ = false;
  double busy_s_ = 0;
  std::thread thread_;
};

}  // namespace sppft
