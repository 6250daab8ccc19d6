// elementwise.h - the elementwise kernels' vocabulary, shared by the CPU and CUDA twins.
//
// Unary:  out[i] = f(x[i]; p0, p1).
// Binary: out[i] = f(a[i], b[i]; p0, p1), where a and b are views already broadcast (expanded) to
//         out's shape, so they may have zero strides. The *Grad entries are the backward
//         formulas of unary ops written as binary ops f(g, saved): keeping them here lets one
//         CPU loop and one CUDA kernel serve every forward and backward.
#pragma once
#include "tensor/tensor.h"

namespace anybit {

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Pow /* x^p0 */, Tanh, Abs, Relu, Relu6, Clamp /* to [p0, p1] */,
  Round /* ties to even */, AddScalar /* x + p0 */, MulScalar /* x * p0 */, Sign,
};

enum class BinaryOp {
  Add, Sub, Mul, Div,
  ReluGrad,   // g * (x > 0)
  Relu6Grad,  // g * (0 < x < 6)
  ClampGrad,  // g * (p0 <= x <= p1)
  TanhGrad,   // g * (1 - y^2), b = y = tanh(x)
  PowGrad,    // g * p0 * x^(p0 - 1)
  GreaterEq,  // 1 if a >= b else 0
  Less,       // 1 if a < b else 0
};

namespace cpu {
void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0 = 0, double p1 = 0);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0 = 0, double p1 = 0);
// out (outer, inner) = sum over r of x (outer, R, inner); x contiguous.
void reduce_sum(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& out);
// values and first arg-max indices (int64) over r of x (outer, R, inner); x contiguous.
void reduce_max(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& values, Tensor& indices);
}  // namespace cpu

namespace cuda {
void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0 = 0, double p1 = 0);
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0 = 0, double p1 = 0);
void reduce_sum(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& out);
void reduce_max(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& values, Tensor& indices);
}  // namespace cuda

// The facade: picks the twin by device.
void unary_kernel(UnaryOp op, const Tensor& x, Tensor& out, double p0 = 0, double p1 = 0);
void binary_kernel(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0 = 0, double p1 = 0);

}  // namespace anybit
