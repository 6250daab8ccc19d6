// linalg.cpp - matmul and linear: forward, backward formulas, and the GEMM call.
//
// Both reduce to one GEMM, kernel::gemm: OpenBLAS on the CPU, cuBLAS on the GPU. A 2-D operand
// that is a transposed or row-sliced view is handed to GEMM as it lies in memory, with the
// transpose flag and row stride set, instead of being copied: the backward passes (dW = dY^T X)
// rely on that. Read next: tensor/cpu/gemm.cpp, tensor/ref.h (the spec).
#include "autograd/autograd.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

// A 2-D tensor as GEMM reads it: data laid out row-major (trans = false) or as the transpose
// (trans = true), with row stride ld.
struct Operand {
  Tensor t;
  bool trans = false;
  int64_t ld = 1;
};

Operand as_operand(const Tensor& a) {
  const int64_t rows = a.size(0), cols = a.size(1);
  const Shape& st = a.strides();
  if (a.is_contiguous()) return {a, false, std::max<int64_t>(cols, 1)};
  if (cols > 1 && rows > 1 && st[1] == 1 && st[0] >= cols) return {a, false, st[0]};  // row slice
  if (cols > 1 && rows > 1 && st[0] == 1 && st[1] >= rows) return {a, true, st[1]};   // transpose
  return {a.contiguous(), false, std::max<int64_t>(cols, 1)};
}

// y (M, N) = a (M, K) * b (K, N) + beta * y, on a's device.
void mm_kernel(const Tensor& a, const Tensor& b, Tensor& y, double beta, const char* op) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Operand A = as_operand(a.detach()), B = as_operand(b.detach());
  AB_CHECK(is_floating(a.dtype()), op, ": expected float32 or float64, got ", a.str());
  kernel::gemm(A.trans, B.trans, M, N, K, A.t, A.ld, B.t, B.ld, beta, y);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  AB_CHECK(a.dim() == 2 && b.dim() == 2, "matmul: expected two 2-D tensors (M, K) x (K, N), got ",
           shape_str(a.shape()), " x ", shape_str(b.shape()), "; reshape batched inputs to 2-D first");
  check_same_device("matmul", a, b);
  check_same_dtype("matmul", a, b);
  AB_CHECK(a.size(1) == b.size(0), "matmul: inner dimensions differ: ", shape_str(a.shape()), " x ",
           shape_str(b.shape()), " (", dtype_name(a.dtype()), "); a's columns must equal b's rows");
  Tensor y = Tensor::empty({a.size(0), b.size(1)}, a.dtype(), a.device());
  mm_kernel(a, b, y, 0.0, "matmul");
  // dA = dY B^T, dB = A^T dY
  if (needs_grad({a, b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    record("matmul", y, {a, b}, [=](const Tensor& g) {
      return Grads{ga ? matmul(g, sb.t()) : Tensor(), gb ? matmul(sa.t(), g) : Tensor()};
    });
  }
  return y;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  AB_CHECK(x.dim() == 2 && weight.dim() == 2, "linear: expected x (N, in) and weight (out, in), got x ",
           shape_str(x.shape()), " and weight ", shape_str(weight.shape()),
           "; flatten the input first (x.flatten(1))");
  check_same_device("linear", x, weight);
  check_same_dtype("linear", x, weight);
  AB_CHECK(x.size(1) == weight.size(1), "linear: x ", shape_str(x.shape()), " has ", x.size(1),
           " features but weight ", shape_str(weight.shape()), " expects ", weight.size(1), " (",
           dtype_name(x.dtype()), "); weight is (out, in)");
  const int64_t N = x.size(0), O = weight.size(0);
  if (bias.defined()) {
    check_same_device("linear", x, bias);
    check_same_dtype("linear", x, bias);
    AB_CHECK(bias.dim() == 1 && bias.size(0) == O, "linear: bias ", shape_str(bias.shape()),
             " does not match weight ", shape_str(weight.shape()), "; bias must be (out) = [", O, "]");
  }
  // y = x W^T + b: y starts as b broadcast over the rows, then GEMM adds x W^T (beta = 1).
  Tensor y = Tensor::empty({N, O}, x.dtype(), x.device());
  if (bias.defined()) y.copy_(bias.detach().expand({N, O}));
  mm_kernel(x, weight.detach().t(), y, bias.defined() ? 1.0 : 0.0, "linear");
  // dX = dY W, dW = dY^T X, db = sum over N of dY
  if (needs_grad({x, weight, bias})) {
    Tensor sx = x.detach(), sw = weight.detach();
    bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record("linear", y, {x, weight, bias}, [=](const Tensor& g) {
      return Grads{gx ? matmul(g, sw) : Tensor(), gw ? matmul(g.t(), sx) : Tensor(),
                   gb ? sum(g, {0}) : Tensor()};
    });
  }
  return y;
}

}  // namespace anybit
