// elementwise.cpp - elementwise differentiable ops: forward, backward formula, kernel call.
//
// Broadcasting: binary ops expand both inputs to the broadcast shape (views with zero strides)
// and return gradients of the broadcast shape; the engine sums them back to each input's shape.
#include "autograd/autograd.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"

namespace anybit {

namespace {

Tensor unary_fwd(UnaryOp op, const Tensor& x, double p0 = 0, double p1 = 0) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernel::unary(op, x, out, p0, p1);
  return out;
}

// f(a, b) over the broadcast shape of a and b; `name` is the op for error messages.
Tensor binary_fwd(const char* name, BinaryOp op, const Tensor& a, const Tensor& b, double p0 = 0, double p1 = 0) {
  check_same_device(name, a, b);
  check_same_dtype(name, a, b);
  Shape s = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  Tensor ea = a.shape() == s ? a.detach() : a.detach().expand(s);
  Tensor eb = b.shape() == s ? b.detach() : b.detach().expand(s);
  kernel::binary(op, ea, eb, out, p0, p1);
  return out;
}

using Grads = std::vector<Tensor>;

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary_fwd("add", BinaryOp::Add, a, b);
  // dA = dY, dB = dY (reduced to each shape by the engine)
  if (needs_grad({a, b})) record("add", y, {a, b}, [](const Tensor& g) { return Grads{g, g}; });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary_fwd("sub", BinaryOp::Sub, a, b);
  // dA = dY, dB = -dY
  if (needs_grad({a, b})) record("sub", y, {a, b}, [](const Tensor& g) { return Grads{g, neg(g)}; });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary_fwd("mul", BinaryOp::Mul, a, b);
  // dA = dY * B, dB = dY * A
  if (needs_grad({a, b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    record("mul", y, {a, b}, [=](const Tensor& g) {
      return Grads{ga ? mul(g, sb) : Tensor(), gb ? mul(g, sa) : Tensor()};
    });
  }
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = binary_fwd("div", BinaryOp::Div, a, b);
  // dA = dY / B, dB = -dY * A / B^2 = -dY * Y / B
  if (needs_grad({a, b})) {
    Tensor sb = b.detach(), sy = y.detach();
    bool ga = a.requires_grad(), gb = b.requires_grad();
    record("div", y, {a, b}, [=](const Tensor& g) {
      return Grads{ga ? div(g, sb) : Tensor(), gb ? neg(div(mul(g, sy), sb)) : Tensor()};
    });
  }
  return y;
}

Tensor add(const Tensor& a, double b) {
  Tensor y = unary_fwd(UnaryOp::AddScalar, a, b);
  // dA = dY
  if (needs_grad({a})) record("add_scalar", y, {a}, [](const Tensor& g) { return Grads{g}; });
  return y;
}

Tensor mul(const Tensor& a, double b) {
  Tensor y = unary_fwd(UnaryOp::MulScalar, a, b);
  // dA = dY * b
  if (needs_grad({a})) record("mul_scalar", y, {a}, [b](const Tensor& g) { return Grads{mul(g, b)}; });
  return y;
}

Tensor neg(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Neg, x);
  // dX = -dY
  if (needs_grad({x})) record("neg", y, {x}, [](const Tensor& g) { return Grads{neg(g)}; });
  return y;
}

Tensor exp(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Exp, x);
  // dX = dY * exp(X) = dY * Y
  if (needs_grad({x})) {
    Tensor sy = y.detach();
    record("exp", y, {x}, [sy](const Tensor& g) { return Grads{mul(g, sy)}; });
  }
  return y;
}

Tensor log(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Log, x);
  // dX = dY / X
  if (needs_grad({x})) {
    Tensor sx = x.detach();
    record("log", y, {x}, [sx](const Tensor& g) { return Grads{div(g, sx)}; });
  }
  return y;
}

Tensor sqrt(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Sqrt, x);
  // dX = dY / (2 sqrt(X)) = dY * 0.5 / Y
  if (needs_grad({x})) {
    Tensor sy = y.detach();
    record("sqrt", y, {x}, [sy](const Tensor& g) { return Grads{div(mul(g, 0.5), sy)}; });
  }
  return y;
}

Tensor pow(const Tensor& x, double p) {
  Tensor y = unary_fwd(UnaryOp::Pow, x, p);
  // dX = dY * p * X^(p-1)
  if (needs_grad({x})) {
    Tensor sx = x.detach();
    record("pow", y, {x}, [sx, p](const Tensor& g) {
      Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
      kernel::binary(BinaryOp::PowGrad, g, sx, gx, p);
      return Grads{gx};
    });
  }
  return y;
}

// Shared shape of the backward of unary ops whose derivative is a mask or function of a saved
// tensor: dX = f(dY, saved) computed by one binary kernel.
static void record_masked(const char* name, Tensor& y, const Tensor& x, BinaryOp grad_op, const Tensor& saved,
                          double p0 = 0, double p1 = 0) {
  Tensor s = saved.detach();
  record(name, y, {x}, [=](const Tensor& g) {
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    kernel::binary(grad_op, g, s, gx, p0, p1);
    return Grads{gx};
  });
}

Tensor tanh(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Tanh, x);
  // dX = dY * (1 - Y^2)
  if (needs_grad({x})) record_masked("tanh", y, x, BinaryOp::TanhGrad, y);
  return y;
}

Tensor abs(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Abs, x);
  // dX = dY * sign(X)
  if (needs_grad({x})) {
    Tensor sign = unary_fwd(UnaryOp::Sign, x.detach());
    record("abs", y, {x}, [sign](const Tensor& g) { return Grads{mul(g, sign)}; });
  }
  return y;
}

Tensor relu(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Relu, x);
  // dX = dY where X > 0 (equivalently Y > 0), else 0
  if (needs_grad({x})) record_masked("relu", y, x, BinaryOp::ReluGrad, y);
  return y;
}

Tensor relu6(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Relu6, x);
  // dX = dY where 0 < X < 6, else 0
  if (needs_grad({x})) record_masked("relu6", y, x, BinaryOp::Relu6Grad, x);
  return y;
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  AB_CHECK(lo <= hi, "clamp: lower bound ", lo, " is above upper bound ", hi);
  Tensor y = unary_fwd(UnaryOp::Clamp, x, lo, hi);
  // dX = dY where lo <= X <= hi, else 0
  if (needs_grad({x})) record_masked("clamp", y, x, BinaryOp::ClampGrad, x, lo, hi);
  return y;
}

Tensor clamp_bounds(const Tensor& x, const Tensor& lo, const Tensor& hi) {
  // Built from primitives: y = x + (lo - x) * [x < lo] + (hi - x) * [x > hi]. The masks are
  // constants, so the gradients come out as documented in ops.h for free.
  Tensor xd = x.detach();
  Tensor below = binary_fwd("clamp_bounds", BinaryOp::Less, xd, lo.detach());
  Tensor above = binary_fwd("clamp_bounds", BinaryOp::Less, hi.detach(), xd);
  Tensor y = add(x, add(mul(sub(lo, x), below), mul(sub(hi, x), above)));
  return y;
}

Tensor round_ste(const Tensor& x) {
  Tensor y = unary_fwd(UnaryOp::Round, x);
  // Straight-through estimator: dX = dY (round is treated as the identity in backward)
  if (needs_grad({x})) record("round_ste", y, {x}, [](const Tensor& g) { return Grads{g}; });
  return y;
}

}  // namespace anybit
