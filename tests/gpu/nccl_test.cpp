// The NCCL communicator (trainer/comm_nccl.cpp) at world size 1 on the local
// GPU: every collective runs through NCCL on device buffers and leaves the
// values a one-rank job must have (sums over one rank, slices in place), through
// the CommQueue worker thread the trainer uses. Without a GPU, or without CUDA
// and NCCL in the build, it prints "skipped: no CUDA device" and passes.
#include <doctest/doctest.h>

#include <cstdio>
#include <vector>

#include "engine/device.h"
#include "trainer/comm.h"
#if defined(SPPFT_HAVE_CUDA) && defined(SPPFT_HAVE_NCCL)
#include <cuda_runtime.h>
#endif

using namespace sppft;

TEST_CASE("NCCL collectives at world size 1") {
#if defined(SPPFT_HAVE_CUDA) && defined(SPPFT_HAVE_NCCL)
  if (cuda_device_count() == 0) {
    std::printf("skipped: no CUDA device\n");
    return;
  }
  LaunchInfo one;
  auto comm = make_nccl_communicator(one, nullptr);
  CHECK(comm->backend() == "nccl");
  CommQueue queue(*comm, std::chrono::seconds(60));
  const std::size_t n = 1001;  // odd on purpose
  std::vector<float> host(n), back(n);
  for (std::size_t i = 0; i < n; ++i) host[i] = 0.5f * static_cast<float>(i) - 7.0f;
  float* dev = nullptr;
  REQUIRE(cudaMalloc(&dev, n * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMemcpy(dev, host.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
  queue.run("all-reduce", [&] { comm->all_reduce_sum(dev, n); });
  queue.run("reduce-scatter", [&] { comm->reduce_scatter_sum(dev, {n}); });
  queue.run("all-gather", [&] { comm->all_gather(dev, {n}); });
  REQUIRE(cudaMemcpy(back.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(back == host);
  double scalars[2] = {1.25, -3.0};
  queue.run("scalars", [&] { comm->all_reduce_sum(scalars, 2); });
  CHECK(scalars[0] == 1.25);
  CHECK(scalars[1] == -3.0);
  char bytes[8] = "nccl-id";
  queue.run("broadcast", [&] { comm->broadcast(bytes, sizeof bytes, 0); });
  CHECK(std::string(bytes) == "nccl-id");
  cudaFree(dev);
#else
  std::printf("skipped: no CUDA device (built without CUDA or NCCL)\n");
#endif
}
