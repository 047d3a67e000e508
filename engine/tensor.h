// Tensor: a shape, a dtype and a device over shared, tagged storage. Always
// row-major contiguous; views (row slices) share the storage of their parent.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/dtype.h"

namespace sppft {

using Shape = std::vector<std::int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
std::int64_t shape_numel(const Shape& s);

class Storage {
 public:
  Storage(std::size_t bytes, Device d, MemCategory cat);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemCategory category() const { return category_; }

 private:
  void* ptr_;
  std::size_t bytes_;
  Device device_;
  MemCategory category_;
};

class Tensor {
 public:
  Tensor() = default;
  // Allocates uninitialised storage from the device's tagged allocator.
  static Tensor empty(Shape shape, DType dtype, MemCategory cat, Device device = Device::CPU);
  static Tensor zeros(Shape shape, DType dtype, MemCategory cat, Device device = Device::CPU);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  std::int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int rank() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const { return shape_numel(shape_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::CPU; }
  MemCategory category() const { return storage_->category(); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  template <typename T>
  T* data() const { return static_cast<T*>(raw()); }

  // Rows [begin, end) of the first dimension, sharing storage.
  Tensor rows(std::int64_t begin, std::int64_t end) const;
  // Same storage, new shape with the same number of elements.
  Tensor reshape(Shape shape) const;
  // Elements [offset, offset + numel(shape)) of this tensor, read flat, as a
  // tensor of `shape` sharing storage (parameters packed into one buffer).
  Tensor view(std::int64_t offset, Shape shape) const;

 private:
  std::shared_ptr<Storage> storage_;
  std::size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace sppft
