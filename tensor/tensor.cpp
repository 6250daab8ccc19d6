// tensor.cpp - Tensor: factories, metadata, copies, and the view operations with their
// gradients (a view's backward maps the gradient of the view back onto the base's shape).
#include "tensor/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <numeric>

#include "autograd/autograd.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cuda/cuda.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace anybit {

// ---- errors, dtypes, devices, shapes -------------------------------------------------------------

void detail::fail(const char* file, int line, const std::string& msg) {
  // Users get the message alone: it names the option, file or op. The source location is for
  // developers, on demand: ANYBIT_DEBUG=1 (read at every failure, so a program may set it late).
  const char* debug = std::getenv("ANYBIT_DEBUG");
  if (!debug || !*debug || std::string(debug) == "0") throw Error(msg);
  // Strip the directory so messages stay short: "tensor/tensor.cpp:12: ..."
  std::string f = file;
  for (const char* top : {"/tensor/", "/autograd/", "/nn/", "/quant/", "/data/", "/apps/", "/tests/"}) {
    auto p = f.rfind(top);
    if (p != std::string::npos) {
      f = f.substr(p + 1);
      break;
    }
  }
  throw Error(f + ":" + std::to_string(line) + ": " + msg);
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F64: case DType::I64: return 8;
    case DType::U8: case DType::I8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F64: return "float64";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U8: return "uint8";
    case DType::I8: return "int8";
  }
  return "?";
}

bool is_floating(DType t) { return t == DType::F32 || t == DType::F64; }

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(const std::string& s) {
  if (s == "cpu") return Device(CPU);
  if (s == "cuda") return Device(CUDA, 0);
  if (s.rfind("cuda:", 0) == 0) {
    try {
      return Device(CUDA, std::stoi(s.substr(5)));
    } catch (...) {
    }
  }
  AB_FAIL("bad device '", s, "': expected cpu, cuda or cuda:N");
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t i = (int64_t)shape.size() - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  int64_t r = d < 0 ? d + ndim : d;
  AB_CHECK(r >= 0 && r < std::max<int64_t>(ndim, 1), op, ": dimension ", d,
           " is out of range for a tensor with ", ndim, " dimensions");
  return r;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    AB_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
             " cannot be broadcast together");
    r[i] = da == 1 ? db : da;
  }
  return r;
}

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  AB_CHECK(a.device() == b.device(), op, ": tensors are on different devices: ", a.str(), " and ",
           b.str(), " (move one with .to(device))");
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  AB_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.str(), " and ", b.str());
}

void check_dim(const char* op, const char* arg, const Tensor& t, int64_t ndim) {
  AB_CHECK(t.dim() == ndim, op, ": ", arg, " must have ", ndim, " dimensions, got shape ",
           shape_str(t.shape()));
}

// ---- factories ----------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) AB_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& v, const Shape& shape) {
  AB_CHECK((int64_t)v.size() == shape_numel(shape), "from_vector: ", v.size(),
           " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value);
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<uint8_t>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int8_t>&, const Shape&);

Tensor Tensor::arange(int64_t n, DType dtype) {
  std::vector<double> v(n);
  std::iota(v.begin(), v.end(), 0.0);
  return from_vector(v, {n}).to(dtype);
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype) {
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = mean + std * gen.normal();
  return from_vector(v, shape).to(dtype);
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, double lo, double hi, DType dtype) {
  std::vector<double> v(shape_numel(shape));
  for (auto& x : v) x = lo + (hi - lo) * gen.uniform();
  return from_vector(v, shape).to(dtype);
}

// ---- metadata and access --------------------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to lay out
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] != 1 && strides()[i] != expect) return false;
    expect *= shape()[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor" + shape_str(shape()) + " " + dtype_name(dtype()) + " " + device().str();
}

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data()) + offset() * dtype_size(dtype());
}

template <typename T>
T* Tensor::data() const {
  AB_CHECK(dtype() == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value), ">() called on a ",
           str());
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template int8_t* Tensor::data<int8_t>() const;

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor c = to(Device()).to(dtype_of<T>::value).contiguous();
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<uint8_t> Tensor::to_vector() const;
template std::vector<int8_t> Tensor::to_vector() const;

template <typename T>
T Tensor::item() const {
  AB_CHECK(numel() == 1, "item: tensor of shape ", shape_str(shape()), " has ", numel(),
           " elements, expected 1");
  return to_vector<T>()[0];
}
template float Tensor::item() const;
template double Tensor::item() const;
template int64_t Tensor::item() const;
template int32_t Tensor::item() const;

double Tensor::at(const std::vector<int64_t>& idx) const {
  AB_CHECK((int64_t)idx.size() == dim(), "at: ", idx.size(), " indices for a ", dim(), "-d tensor");
  int64_t off = 0;
  for (int64_t i = 0; i < dim(); ++i) {
    AB_CHECK(idx[i] >= 0 && idx[i] < shape()[i], "at: index ", idx[i], " out of range for dim ", i,
             " of ", str());
    off += idx[i] * strides()[i];
  }
  Tensor one(std::make_shared<TensorImpl>(impl()));
  one.impl().shape = {};
  one.impl().strides = {};
  one.impl().offset = offset() + off;
  one.impl().grad_fn = nullptr;
  one.impl().requires_grad = false;
  return one.item<double>();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  os << t.str();
  if (!t.defined() || t.numel() > 64) return os;
  auto v = t.to_vector<double>();
  os << " {";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << std::setprecision(6) << v[i];
  return os << "}";
}

// ---- copies ---------------------------------------------------------------------------------------

// A raw copy of src into a new contiguous tensor of dtype `dt` on `dev` (no autograd).
static Tensor copy_raw(const Tensor& src, DType dt, Device dev) {
  Tensor out = Tensor::empty(src.shape(), dt, dev);
  Device sd = src.device();
  if (sd.is_cpu() == dev.is_cpu()) {  // on one device: that device's kernel
    kernel::strided_copy(src, out);
  } else if (sd.is_cpu()) {  // host -> device: make it contiguous of the target dtype first
    Tensor host = src.is_contiguous() && src.dtype() == dt ? src : copy_raw(src, dt, sd);
    cuda::memcpy_h2d(out.raw_data(), host.raw_data(), host.numel() * dtype_size(dt));
  } else {  // device -> host
    Tensor dev_c = src.is_contiguous() && src.dtype() == dt ? src : copy_raw(src, dt, sd);
    cuda::memcpy_d2h(out.raw_data(), dev_c.raw_data(), dev_c.numel() * dtype_size(dt));
  }
  return out;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = copy_raw(*this, dtype(), device());
  // d(clone)/dx = identity
  if (needs_grad({*this})) record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  Tensor out = copy_raw(*this, dtype(), d);
  Device back = device();
  if (needs_grad({*this}))
    record("to(device)", out, {*this}, [back](const Tensor& g) { return std::vector<Tensor>{g.to(back)}; });
  return out;
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = copy_raw(*this, t, device());
  DType back = dtype();
  if (needs_grad({*this}) && is_floating(t) && is_floating(back))
    record("to(dtype)", out, {*this}, [back](const Tensor& g) { return std::vector<Tensor>{g.to(back)}; });
  return out;
}

Tensor& Tensor::copy_(const Tensor& src) {
  Tensor s = src.shape() == shape() ? src : src.expand(shape());
  // Through a contiguous copy on this tensor's device first: src may live on the other device, or
  // overlap this tensor's elements (x.copy_(x.t())). Then one kernel writes through this tensor's
  // strides, whatever they are.
  Tensor tmp = copy_raw(s.detach(), dtype(), device());
  kernel::strided_copy(tmp, *this);
  return *this;
}

Tensor& Tensor::fill_(double value) {
  if (is_contiguous()) {
    kernel::fill(*this, value);
  } else {
    AB_CHECK(device().is_cpu(), "fill_: non-contiguous CUDA tensor ", str());
    copy_(Tensor::full({}, value, dtype()));
  }
  return *this;
}

// ---- views --------------------------------------------------------------------------------------

// A new TensorImpl on the same storage with the given geometry and no autograd history.
static Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(impl);
}

static Shape infer_shape(Shape shape, int64_t numel, const Shape& from) {
  int64_t known = 1, neg = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      AB_CHECK(neg < 0, "reshape: more than one -1 in ", shape_str(shape));
      neg = (int64_t)i;
    } else {
      known *= shape[i];
    }
  }
  if (neg >= 0) {
    AB_CHECK(known > 0 && numel % known == 0, "reshape: cannot reshape ", shape_str(from), " into ",
             shape_str(shape));
    shape[neg] = numel / known;
  }
  AB_CHECK(shape_numel(shape) == numel, "reshape: cannot reshape ", shape_str(from), " (", numel,
           " elements) into ", shape_str(shape));
  return shape;
}

Tensor Tensor::view(const Shape& s) const {
  Shape shape = infer_shape(s, numel(), this->shape());
  AB_CHECK(is_contiguous(), "view: tensor ", str(), " is not contiguous; use reshape()");
  Tensor out = make_view(*this, shape, contiguous_strides(shape), offset());
  Shape in_shape = this->shape();
  // dX = reshape(dY, shape of X)
  if (needs_grad({*this}))
    record("view", out, {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
  return out;
}

Tensor Tensor::reshape(const Shape& s) const {
  return is_contiguous() ? view(s) : contiguous().view(s);
}

Tensor Tensor::flatten(int64_t start, int64_t end) const {
  if (dim() == 0) return reshape({1});
  start = wrap_dim(start, dim(), "flatten");
  end = wrap_dim(end, dim(), "flatten");
  Shape s;
  for (int64_t i = 0; i < start; ++i) s.push_back(shape()[i]);
  int64_t m = 1;
  for (int64_t i = start; i <= end; ++i) m *= shape()[i];
  s.push_back(m);
  for (int64_t i = end + 1; i < dim(); ++i) s.push_back(shape()[i]);
  return reshape(s);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  AB_CHECK((int64_t)dims.size() == dim(), "permute: ", dims.size(), " dims given for ", str());
  Shape s(dim()), st(dim());
  std::vector<int64_t> inv(dim(), -1);
  for (int64_t i = 0; i < dim(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    AB_CHECK(inv[d] < 0, "permute: dimension ", d, " repeated");
    inv[d] = i;
    s[i] = shape()[d];
    st[i] = strides()[d];
  }
  Tensor out = make_view(*this, s, st, offset());
  // dX = permute(dY, inverse permutation)
  if (needs_grad({*this}))
    record("permute", out, {*this}, [inv](const Tensor& g) { return std::vector<Tensor>{g.permute(inv)}; });
  return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(d0, dim(), "transpose")], p[wrap_dim(d1, dim(), "transpose")]);
  return permute(p);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, dim(), "slice");
  int64_t n = shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  AB_CHECK(step >= 1 && start >= 0 && start <= end, "slice: bad range [", start, ", ", end, ") step ",
           step, " for dimension ", d, " of ", str());
  Shape s = shape(), st = strides();
  s[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor out = make_view(*this, s, st, offset() + start * strides()[d]);
  Shape in_shape = shape();
  DType dt = dtype();
  Device dev = device();
  // dX = zeros with dY written into the sliced positions
  if (needs_grad({*this}))
    record("slice", out, {*this}, [=](const Tensor& g) {
      Tensor gx = Tensor::zeros(in_shape, dt, dev);
      gx.slice(d, start, end, step).copy_(g);
      return std::vector<Tensor>{gx};
    });
  return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  if (index < 0) index += shape()[d];
  AB_CHECK(index >= 0 && index < shape()[d], "select: index ", index, " out of range for dim ", d,
           " of ", str());
  return slice(d, index, index + 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& s) const {
  AB_CHECK(s.size() >= shape().size(), "expand: cannot expand ", shape_str(shape()), " to ",
           shape_str(s));
  size_t lead = s.size() - shape().size();
  Shape st(s.size(), 0);
  for (size_t i = 0; i < s.size(); ++i) {
    if (i < lead) continue;
    int64_t have = shape()[i - lead];
    AB_CHECK(have == s[i] || have == 1, "expand: cannot expand ", shape_str(shape()), " to ",
             shape_str(s));
    st[i] = have == 1 && s[i] != 1 ? 0 : strides()[i - lead];
  }
  Tensor out = make_view(*this, s, st, offset());
  // dX = dY summed over the expanded dimensions (the engine's sum_to does it)
  if (needs_grad({*this})) record("expand", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape s = shape();
  s.insert(s.begin() + d, 1);
  return reshape(s);
}

Tensor Tensor::squeeze(int64_t d) const {
  d = wrap_dim(d, dim(), "squeeze");
  AB_CHECK(shape()[d] == 1, "squeeze: dimension ", d, " of ", str(), " is not 1");
  Shape s = shape(), st = strides();
  s.erase(s.begin() + d);
  st.erase(st.begin() + d);
  Tensor out = make_view(*this, s, st, offset());
  Shape in_shape = shape();
  if (needs_grad({*this}))
    record("squeeze", out, {*this}, [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
  return out;
}

// ---- autograd -------------------------------------------------------------------------------------

Tensor& Tensor::requires_grad_(bool on) {
  AB_CHECK(!on || is_floating(dtype()), "requires_grad_: only float tensors can require grad, got ",
           str());
  AB_CHECK(is_leaf(), "requires_grad_: can only be set on a leaf tensor (use detach())");
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) { impl().grad = g.defined() ? g.impl_ptr() : nullptr; }

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  run_backward(*this, grad, retain_graph);
}

}  // namespace anybit
