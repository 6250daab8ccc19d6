// reduce.cpp - sum, mean, max, argmax, and sum_to (the engine's broadcast reduction).
//
// Every reduction is planned the same way: the reduced dimensions are moved to form one block,
// so that x is viewed as (outer, R, inner) and the kernel reduces over R.
#include <algorithm>

#include "autograd/autograd.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

struct Plan {
  Tensor x;  // contiguous, laid out as (outer, R, inner)
  int64_t outer = 1, R = 1, inner = 1;
  Shape out_shape;   // with the reduced dims removed (or kept as 1 when keepdim)
  Shape keep_shape;  // with the reduced dims kept as 1
};

Plan plan_reduce(const Tensor& x, std::vector<int64_t> dims, bool keepdim, const char* op) {
  const int64_t nd = x.dim();
  for (auto& d : dims) d = wrap_dim(d, nd, op);
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  std::vector<bool> red(nd, false);
  for (int64_t d : dims) red[d] = true;
  Plan p;
  for (int64_t i = 0; i < nd; ++i) {
    p.keep_shape.push_back(red[i] ? 1 : x.shape()[i]);
    if (!red[i] || keepdim) p.out_shape.push_back(red[i] ? 1 : x.shape()[i]);
  }
  bool block = dims.empty() || dims.back() - dims.front() + 1 == (int64_t)dims.size();
  if (block) {
    p.x = x.contiguous();
    int64_t lo = dims.empty() ? nd : dims.front(), hi = dims.empty() ? nd : dims.back() + 1;
    for (int64_t i = 0; i < lo; ++i) p.outer *= x.shape()[i];
    for (int64_t i = lo; i < hi; ++i) p.R *= x.shape()[i];
    for (int64_t i = hi; i < nd; ++i) p.inner *= x.shape()[i];
  } else {  // move the reduced dims to the end
    std::vector<int64_t> perm;
    for (int64_t i = 0; i < nd; ++i)
      if (!red[i]) perm.push_back(i);
    for (int64_t d : dims) perm.push_back(d);
    p.x = x.detach().permute(perm).contiguous();
    for (int64_t i = 0; i < nd; ++i) (red[i] ? p.R : p.outer) *= x.shape()[i];
  }
  return p;
}

void sum_kernel(const Plan& p, Tensor& out) {
  kernel::reduce_sum(p.x, p.outer, p.R, p.inner, out);
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  AB_CHECK(is_floating(x.dtype()), "sum: expected a float tensor, got ", x.str());
  Plan p = plan_reduce(x.detach(), dims, keepdim, "sum");
  Tensor y = Tensor::empty(p.out_shape, x.dtype(), x.device());
  sum_kernel(p, y);
  // dX = dY broadcast back over the reduced dimensions
  if (needs_grad({x})) {
    Shape keep = p.keep_shape, in_shape = x.shape();
    record("sum", y, {x}, [keep, in_shape](const Tensor& g) {
      return Grads{g.reshape(keep).expand(in_shape).contiguous()};
    });
  }
  return y;
}

Tensor sum(const Tensor& x) {
  std::vector<int64_t> all(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) all[i] = i;
  return sum(x, all, false);
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Tensor s = sum(x, dims, keepdim);
  int64_t n = s.numel() ? x.numel() / s.numel() : 1;
  return mul(s, 1.0 / std::max<int64_t>(n, 1));
}

Tensor mean(const Tensor& x) { return mul(sum(x), 1.0 / std::max<int64_t>(x.numel(), 1)); }

Tensor sum_to(const Tensor& x, const Shape& shape) {
  // Dimensions that broadcasting added in front, and dimensions of size 1 that it expanded.
  AB_CHECK(x.dim() >= (int64_t)shape.size(), "sum_to: cannot reduce ", shape_str(x.shape()), " to ",
           shape_str(shape));
  size_t lead = x.dim() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < (size_t)x.dim(); ++i) {
    if (i < lead) {
      dims.push_back(i);
    } else if (shape[i - lead] == 1 && x.shape()[i] != 1) {
      dims.push_back(i);
    } else {
      AB_CHECK(shape[i - lead] == x.shape()[i], "sum_to: cannot reduce ", shape_str(x.shape()), " to ",
               shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

// Max along one dimension; values are differentiable, the gradient goes to the arg-max.
static std::pair<Tensor, Tensor> max_impl(const Tensor& x, std::vector<int64_t> dims, bool keepdim) {
  AB_CHECK(x.numel() > 0, "max: empty tensor ", x.str());
  Plan p = plan_reduce(x.detach(), dims, keepdim, "max");
  Tensor v = Tensor::empty(p.out_shape, x.dtype(), x.device());
  Tensor idx = Tensor::empty(p.out_shape, DType::I64, x.device());
  kernel::reduce_max(p.x, p.outer, p.R, p.inner, v, idx);
  if (needs_grad({x})) {
    // dX = dY scattered to the arg-max position of each slice, 0 elsewhere, over the
    // (outer, R, inner) layout of the plan (kernel::max_backward).
    Shape in_shape = x.shape();
    int64_t outer = p.outer, R = p.R, inner = p.inner;
    bool block = p.x.shape() == x.shape();  // x itself is (outer, R, inner): no permutation was needed
    Tensor sidx = idx;
    record("max", v, {x}, [=](const Tensor& g) {
      AB_CHECK(block, "max: backward over non-adjacent dimensions is not supported");
      Tensor gx = Tensor::empty(in_shape, g.dtype(), g.device());
      kernel::max_backward(g.contiguous(), sidx, outer, R, inner, gx);
      return Grads{gx};
    });
  }
  return {v, idx};
}

Tensor max(const Tensor& x) {
  std::vector<int64_t> all(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) all[i] = i;
  return max_impl(x, all, false).first;
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) { return max_impl(x, {dim}, keepdim).first; }

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  NoGradGuard ng;
  return max_impl(x, {dim}, keepdim).second;
}

}  // namespace anybit
