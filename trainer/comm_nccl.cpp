// NCCL backend over device buffers: one process per GPU (the GPU is
// LOCAL_RANK), the unique id made by rank 0 and handed to the others over the
// bootstrap communicator (MPI or TCP). Each collective is enqueued on the
// communicator's own stream and waited for on the CommQueue's worker thread,
// so the queue's timeout covers NCCL hangs too. The compute stream queues work without waiting,
// so each collective first waits, through an event recorded when it was submitted, for the
// kernels queued before it (the gradient it reduces, the weights it gathers).
#include "engine/error.h"
#include "trainer/comm.h"

#if defined(SPPFT_HAVE_CUDA) && defined(SPPFT_HAVE_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>

#include "engine/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace sppft {

namespace {

void check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw RuntimeFailure(std::string("nccl: ") + what + " failed: " + ncclGetErrorString(rc));
}

ncclDataType_t nccl_type(DType dt) {
  if (dt == DType::F32) return ncclFloat32;
  if (dt == DType::BF16) return ncclBfloat16;
  throw RuntimeFailure("nccl: collectives take F32 or BF16 buffers, not " + std::string(dtype_name(dt)));
}

// Element e of a buffer of `dt`.
void* at(void* data, std::size_t e, DType dt) { return static_cast<char*>(data) + e * dtype_size(dt); }

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const LaunchInfo& l, Communicator* bootstrap) : Communicator(l.rank, l.world) {
    int devices = 0;
    SPPFT_CUDA_CHECK(cudaGetDeviceCount(&devices));
    if (l.local_rank >= devices)
      throw InputError("LOCAL_RANK " + std::to_string(l.local_rank) + ": this node has only " + std::to_string(devices) + " GPUs");
    device_ = l.local_rank;
    SPPFT_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id{};
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    if (world_ > 1) {
      if (!bootstrap) throw std::logic_error("NcclCommunicator: world > 1 needs a bootstrap communicator");
      bootstrap->broadcast(&id, sizeof id, 0);
    }
    check(ncclCommInitRank(&comm_, world_, id, rank_), "ncclCommInitRank");
    SPPFT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    SPPFT_CUDA_CHECK(cudaMalloc(&scratch_, kScratchDoubles * sizeof(double)));
  }
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }
  std::string backend() const override { return "nccl"; }

  Mark mark_queued_work() override {
    on_device();
    cudaEvent_t ev = nullptr;
    SPPFT_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    SPPFT_CUDA_CHECK(cudaEventRecord(ev, static_cast<cudaStream_t>(cuda::compute_stream())));
    return Mark(static_cast<void*>(ev), [](void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); });
  }
  void wait_for(const Mark& mark) override {
    on_device();
    SPPFT_CUDA_CHECK(cudaStreamWaitEvent(stream_, static_cast<cudaEvent_t>(mark.get()), 0));
  }

  void all_reduce_sum(void* data, std::size_t n, DType dtype) override {
    on_device();
    check(ncclAllReduce(data, data, n, nccl_type(dtype), ncclSum, comm_, stream_), "ncclAllReduce");
    sync();
  }
  void all_reduce_sum(double* host, std::size_t n) override {  // host scalars through a device scratch buffer
    on_device();
    for (std::size_t i = 0; i < n; i += kScratchDoubles) {
      const std::size_t m = std::min(kScratchDoubles, n - i);
      SPPFT_CUDA_CHECK(cudaMemcpyAsync(scratch_, host + i, m * sizeof(double), cudaMemcpyHostToDevice, stream_));
      check(ncclAllReduce(scratch_, scratch_, m, ncclFloat64, ncclSum, comm_, stream_), "ncclAllReduce");
      SPPFT_CUDA_CHECK(cudaMemcpyAsync(host + i, scratch_, m * sizeof(double), cudaMemcpyDeviceToHost, stream_));
      sync();
    }
  }
  // NCCL wants equal slices: ranks' slices here may differ by the remainder,
  // so the collective runs as grouped reduces / broadcasts, one per owner.
  void reduce_scatter_sum(void* data, const std::vector<std::size_t>& counts, DType dtype) override {
    on_device();
    check(ncclGroupStart(), "ncclGroupStart");
    std::size_t off = 0;
    for (int r = 0; r < world_; ++r) {
      void* p = at(data, off, dtype);
      check(ncclReduce(p, p, counts[r], nccl_type(dtype), ncclSum, r, comm_, stream_), "ncclReduce");
      off += counts[r];
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    sync();
  }
  void all_gather(void* data, const std::vector<std::size_t>& counts, DType dtype) override {
    on_device();
    check(ncclGroupStart(), "ncclGroupStart");
    std::size_t off = 0;
    for (int r = 0; r < world_; ++r) {
      void* p = at(data, off, dtype);
      check(ncclBroadcast(p, p, counts[r], nccl_type(dtype), r, comm_, stream_), "ncclBroadcast");
      off += counts[r];
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
    sync();
  }
  void broadcast(void* host, std::size_t n, int root) override {
    on_device();
    void* dev = nullptr;
    SPPFT_CUDA_CHECK(cudaMalloc(&dev, n));
    SPPFT_CUDA_CHECK(cudaMemcpyAsync(dev, host, n, cudaMemcpyHostToDevice, stream_));
    check(ncclBroadcast(dev, dev, n, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    SPPFT_CUDA_CHECK(cudaMemcpyAsync(host, dev, n, cudaMemcpyDeviceToHost, stream_));
    sync();
    SPPFT_CUDA_CHECK(cudaFree(dev));
  }

 private:
  static constexpr std::size_t kScratchDoubles = 1024;
  void on_device() { SPPFT_CUDA_CHECK(cudaSetDevice(device_)); }  // the worker thread starts on device 0
  void sync() { SPPFT_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  double* scratch_ = nullptr;
};

}  // namespace

bool nccl_available() { return true; }
std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, Communicator* bootstrap) {
  return std::make_unique<NcclCommunicator>(launch, bootstrap);
}

}  // namespace sppft

#else

namespace sppft {
bool nccl_available() { return false; }
std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo&, Communicator*) {
  throw InputError("nccl: this build has no NCCL (needs the CUDA toolkit with nccl.h and libnccl)");
}
}  // namespace sppft

#endif
