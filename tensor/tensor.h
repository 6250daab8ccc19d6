// tensor.h - a Tensor is a refcounted Storage plus a view: shape, strides, offset, dtype.
//
// Copying a Tensor copies a handle: both handles see the same TensorImpl. View operations
// (reshape of a contiguous tensor, permute, transpose, slice, expand) make a new TensorImpl that
// shares the Storage. Kernels that need contiguous memory call contiguous() first and say so.
//
// Autograd state lives here too (requires_grad, grad, grad_fn): autograd/ records the graph as
// differentiable ops run. The differentiable ops themselves are declared in tensor/ops.h.
// Read next: autograd/autograd.h, tensor/ops.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/storage.h"

namespace anybit {

struct Node;  // autograd/autograd.h
class Generator;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;        // in elements
  int64_t offset = 0;   // in elements
  DType dtype = DType::F32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated by the engine for leaves
  std::shared_ptr<Node> grad_fn;     // the op that made this tensor (null for leaves)
  int output_nr = 0;                 // which of grad_fn's outputs this tensor is (0 but for multi-output ops)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories --------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device());
  static Tensor scalar(double value, DType dtype = DType::F32) { return full({}, value, dtype); }
  template <typename T>
  static Tensor from_vector(const std::vector<T>& v, const Shape& shape);
  static Tensor arange(int64_t n, DType dtype = DType::F32);
  // Normal(mean, std) and Uniform[lo, hi) samples from gen (a per-run seeded generator).
  static Tensor randn(const Shape& shape, Generator& gen, double mean = 0, double std = 1,
                      DType dtype = DType::F32);
  static Tensor rand(const Shape& shape, Generator& gen, double lo = 0, double hi = 1,
                     DType dtype = DType::F32);

  // ---- metadata ---------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t dim() const { return (int64_t)impl().shape.size(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  int64_t offset() const { return impl().offset; }
  bool is_contiguous() const;
  std::string str() const;  // "Tensor[2, 3] float32 cpu"
  TensorImpl& impl() const {
    AB_CHECK(impl_, "use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- element access (CPU) ---------------------------------------------------------------
  // data<T>() points at element 0 of the view; T must match dtype().
  template <typename T> T* data() const;
  void* raw_data() const;
  template <typename T> T item() const;           // value of a one-element tensor, any dtype
  template <typename T> std::vector<T> to_vector() const;  // row-major copy, converting dtype
  double at(const std::vector<int64_t>& idx) const;  // slow; for tests and printing

  // ---- copies and conversion (not differentiable unless noted) -------------------------------
  Tensor contiguous() const;           // differentiable; returns *this when already contiguous
  Tensor clone() const;                // differentiable; always a fresh contiguous copy
  Tensor to(Device device) const;      // differentiable
  Tensor to(DType dtype) const;        // differentiable between float types
  Tensor& copy_(const Tensor& src);    // in place, broadcasting src; no autograd
  Tensor& fill_(double value);         // in place; no autograd
  Tensor& zero_() { return fill_(0.0); }

  // ---- views (differentiable) -----------------------------------------------------------------
  Tensor reshape(const Shape& shape) const;  // one dimension may be -1
  Tensor view(const Shape& shape) const;     // like reshape but throws if a copy would be needed
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor t() const { return transpose(0, 1); }
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t dim, int64_t index) const;  // slice of width 1, dimension removed
  Tensor expand(const Shape& shape) const;           // broadcast by stride 0
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;

  // ---- autograd -------------------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& requires_grad_(bool on = true);
  Tensor grad() const;                   // undefined until a backward pass reaches this leaf
  void set_grad(const Tensor& g);        // replaces the accumulated gradient (may be undefined)
  void zero_grad() { impl().grad.reset(); }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor detach() const;                 // same storage, no history
  // Backpropagates from this tensor. Without `grad` the tensor must hold one element.
  // retain_graph keeps the saved buffers so that a second backward through the graph works.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Contiguous row-major strides for a shape.
Shape contiguous_strides(const Shape& shape);
// Normalizes a possibly negative dimension index, checking range; `op` names the caller.
int64_t wrap_dim(int64_t d, int64_t ndim, const char* op);
// The broadcast shape of a and b (NumPy rules), or an error naming op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Checks used by every op; the messages name the op, the shapes and the dtypes.
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_dim(const char* op, const char* arg, const Tensor& t, int64_t ndim);

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace anybit
