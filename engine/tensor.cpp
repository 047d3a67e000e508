#include "engine/tensor.h"

#include <cstring>
#include <stdexcept>

namespace sppft {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Storage::Storage(std::size_t bytes, Device d, MemCategory cat)
    : ptr_(Allocator::for_device(d).allocate(bytes, cat)), bytes_(bytes), device_(d), category_(cat) {}

Storage::~Storage() { Allocator::for_device(device_).release(ptr_, bytes_, category_); }

Tensor Tensor::empty(Shape shape, DType dtype, MemCategory cat, Device device) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), device, cat);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, MemCategory cat, Device device) {
  Tensor t = empty(std::move(shape), dtype, cat, device);
  if (device != Device::CPU) throw std::logic_error("Tensor::zeros: use the device's fill op for non-CPU tensors");
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::rows(std::int64_t begin, std::int64_t end) const {
  if (rank() < 1 || begin < 0 || end > shape_[0] || begin > end)
    throw std::out_of_range("Tensor::rows: [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") outside " + shape_str(shape_));
  Tensor t = *this;
  std::int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  t.offset_ += static_cast<std::size_t>(begin * row_elems) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel())
    throw std::invalid_argument("Tensor::reshape: " + shape_str(shape_) + " -> " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::view(std::int64_t offset, Shape shape) const {
  if (offset < 0 || offset + shape_numel(shape) > numel())
    throw std::out_of_range("Tensor::view: " + std::to_string(offset) + " + " + shape_str(shape) + " outside " + shape_str(shape_));
  Tensor t = *this;
  t.offset_ += static_cast<std::size_t>(offset) * dtype_size(dtype_);
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace sppft
