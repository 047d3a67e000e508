// MPI backend (OpenMPI from the OS packages): the CPU data-parallel path, so
// the distributed logic runs and is tested on machines without GPUs. MPI is
// initialised with MPI_THREAD_SERIALIZED: only the CommQueue's worker thread
// calls collectives, the main thread only initialises and finalises.
#include "engine/error.h"
#include "trainer/comm.h"

#ifdef SPPFT_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstring>
#include <utility>

namespace sppft {

namespace {

int to_int(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw RuntimeFailure(std::string("mpi: ") + what + " of " + std::to_string(n) + " elements exceeds MPI's int counts");
  return static_cast<int>(n);
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw RuntimeFailure(std::string("mpi: ") + what + " failed: " + std::string(msg, len));
}

// Initialises MPI (once) and returns {rank, size}.
std::pair<int, int> init_mpi() {
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited) MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  else MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_SERIALIZED)
    throw RuntimeFailure("mpi: the MPI library does not support MPI_THREAD_SERIALIZED");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return {rank, size};
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::pair<int, int> rank_size) : Communicator(rank_size.first, rank_size.second) {}
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  std::string backend() const override { return "mpi"; }

  void all_reduce_sum(void* data, std::size_t n, DType dtype) override {
    require_f32(dtype, "mpi");
    check(MPI_Allreduce(MPI_IN_PLACE, data, to_int(n, "all-reduce"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }
  void all_reduce_sum(double* data, std::size_t n) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, to_int(n, "all-reduce"), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  }
  void reduce_scatter_sum(void* buffer, const std::vector<std::size_t>& counts, DType dtype) override {
    require_f32(dtype, "mpi");
    float* data = static_cast<float*>(buffer);
    std::vector<int> c(counts.size());
    std::size_t off = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      c[r] = to_int(counts[r], "reduce-scatter");
      if (static_cast<int>(r) < rank_) off += counts[r];
    }
    // In place, MPI leaves this rank's sum at the front of the buffer.
    check(MPI_Reduce_scatter(MPI_IN_PLACE, data, c.data(), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Reduce_scatter");
    if (off) std::memmove(data + off, data, counts[rank_] * sizeof(float));
  }
  void all_gather(void* data, const std::vector<std::size_t>& counts, DType dtype) override {
    require_f32(dtype, "mpi");
    std::vector<int> c(counts.size()), displs(counts.size());
    std::size_t off = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      c[r] = to_int(counts[r], "all-gather");
      displs[r] = to_int(off, "all-gather");
      off += counts[r];
    }
    check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, c.data(), displs.data(), MPI_FLOAT, MPI_COMM_WORLD),
          "MPI_Allgatherv");
  }
  void broadcast(void* bytes, std::size_t n, int root) override {
    check(MPI_Bcast(bytes, to_int(n, "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
  }
};

}  // namespace

bool mpi_available() { return true; }
std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(init_mpi()); }

}  // namespace sppft

#else

namespace sppft {
bool mpi_available() { return false; }
std::unique_ptr<Communicator> make_mpi_communicator() {
  throw InputError("--dist mpi: this build has no MPI (install libopenmpi-dev and rebuild)");
}
}  // namespace sppft

#endif
