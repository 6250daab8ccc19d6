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
  Round /* ties to even */, Floor, AddScalar /* x + p0 */, MulScalar /* x * p0 */, Sign,
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

// The kernels that apply these ops: unary() and binary() in tensor/kernels.inc; the formulas:
// tensor/formulas.h.

}  // namespace anybit
