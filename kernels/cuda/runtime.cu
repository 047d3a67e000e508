// Runtime pieces of the CUDA backend: host <-> device copies, the stream, and
// per-device cached state (multiprocessor count, grow-only scratch, error flag).
//
// Cached device buffers come from the CUDA tagged allocator (MemCategory::Workspace)
// and are owned by RAII DeviceBuffer objects. The per-device registry itself is
// heap-allocated and deliberately never destroyed: at process exit the CUDA runtime
// may already be torn down, so freeing there is unsafe; release_cached_resources()
// frees explicitly.
#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <string>

#include "engine/allocator.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/device_scratch.h"

namespace sppft::cuda {

namespace detail {
namespace {

// One tagged device allocation, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes)
      : ptr_(Allocator::for_device(Device::CUDA).allocate(bytes, MemCategory::Workspace)), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = o.ptr_, bytes_ = o.bytes_;
      o.ptr_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  void reset() {
    if (ptr_) Allocator::for_device(Device::CUDA).release(ptr_, bytes_, MemCategory::Workspace);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

struct DeviceState {
  int sms = 0;
  DeviceBuffer scratch;
  DeviceBuffer flag;
};


struct Registry {
  std::mutex mutex;
  std::array<std::unique_ptr<DeviceState>, kMaxDevices> devices;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed, see the file comment
  return *r;
}

// Caller holds registry().mutex.
DeviceState& state_locked(int dev) {
  auto& slot = registry().devices[dev];
  if (!slot) {
    auto s = std::make_unique<DeviceState>();
    SPPFT_CUDA_CHECK(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, dev));
    slot = std::move(s);
  }
  return *slot;
}

}  // namespace

cudaStream_t stream() { return nullptr; }  // legacy default stream

int sm_count() {
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(registry().mutex);
  return state_locked(dev).sms;
}

void* scratch(std::size_t bytes) {
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(registry().mutex);
  auto& s = state_locked(dev);
  if (s.scratch.bytes() < bytes) {
    // cudaFree (in reset) synchronises the device, so in-flight users of the old buffer are done.
    s.scratch.reset();
    s.scratch = DeviceBuffer(device_scratch::buffer_bytes(bytes));
  }
  return s.scratch.get();
}

int* error_flag() {
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(registry().mutex);
  auto& s = state_locked(dev);
  if (!s.flag.get()) s.flag = DeviceBuffer(device_scratch::kErrorFlagBytes);
  return static_cast<int*>(s.flag.get());
}

void release_runtime_cache() {
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(registry().mutex);
  auto& slot = registry().devices[dev];
  if (slot) {
    slot->scratch.reset();
    slot->flag.reset();
  }
}

}  // namespace detail

void reserve_scratch(std::size_t bytes) {
  if (bytes) detail::scratch(bytes);
}

namespace {
void check_copy(const Tensor& src, const Tensor& dst, Device from, Device to, const char* op) {
  detail::check(src.defined() && dst.defined(), op, "tensors must be defined");
  detail::check(src.device() == from, op, std::string("source must be on the ") + std::string(device_name(from)));
  detail::check(dst.device() == to, op, std::string("destination must be on the ") + std::string(device_name(to)));
  detail::check(src.dtype() == dst.dtype(), op,
                std::string("dtypes differ: ") + std::string(dtype_name(src.dtype())) + " vs " +
                    std::string(dtype_name(dst.dtype())));
  detail::check(src.numel() == dst.numel(), op,
                "element counts differ: " + shape_str(src.shape()) + " vs " + shape_str(dst.shape()));
}
}  // namespace

void copy_to_device(const Tensor& host_src, Tensor& device_dst) {
  check_copy(host_src, device_dst, Device::CPU, Device::CUDA, "copy_to_device");
  if (host_src.nbytes() == 0) return;
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(device_dst.raw(), host_src.raw(), host_src.nbytes(), cudaMemcpyHostToDevice,
                                   detail::stream()));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(detail::stream()));
}

void copy_to_host(const Tensor& device_src, Tensor& host_dst) {
  check_copy(device_src, host_dst, Device::CUDA, Device::CPU, "copy_to_host");
  if (device_src.nbytes() == 0) return;
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(host_dst.raw(), device_src.raw(), device_src.nbytes(), cudaMemcpyDeviceToHost,
                                   detail::stream()));
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(detail::stream()));
}

void copy_on_device(const Tensor& src, Tensor& dst) {
  check_copy(src, dst, Device::CUDA, Device::CUDA, "copy_on_device");
  if (src.nbytes() == 0 || src.raw() == dst.raw()) return;
  SPPFT_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, detail::stream()));
}

void fill_zero(Tensor& t) {
  detail::check_cuda_tensor(t, "fill_zero", "t");
  if (t.nbytes()) SPPFT_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), detail::stream()));
}

Tensor to_device(const Tensor& host_src, MemCategory cat) {
  Tensor t = Tensor::empty(host_src.shape(), host_src.dtype(), cat, Device::CUDA);
  copy_to_device(host_src, t);
  return t;
}

Tensor to_host(const Tensor& device_src, MemCategory cat) {
  Tensor t = Tensor::empty(device_src.shape(), device_src.dtype(), cat, Device::CPU);
  copy_to_host(device_src, t);
  return t;
}

void synchronize() {
  SPPFT_CUDA_CHECK(cudaStreamSynchronize(detail::stream()));
  SPPFT_CUDA_CHECK(cudaGetLastError());
}

void* compute_stream() { return static_cast<void*>(detail::stream()); }

void release_cached_resources() {
  synchronize();
  detail::release_linear_cache();
  detail::release_runtime_cache();
}

}  // namespace sppft::cuda
