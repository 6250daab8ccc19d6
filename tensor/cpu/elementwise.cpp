// elementwise.cpp - CPU twins of the elementwise and reduction kernels (see tensor/elementwise.h).
//
// Each op is one scalar function of tensor/formulas.h (shared with the CUDA kernels); the loops
// below apply it over contiguous memory (OpenMP over large tensors) or over strided/broadcast
// views (strided.h).
#include <cmath>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/strided.h"
#include "tensor/elementwise.h"
#include "tensor/formulas.h"

namespace anybit::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save

using formula::apply_binary;
using formula::apply_unary;

// The switch sits outside the loop: each instantiation of `loop` sees one constant op, so the
// compiler vectorises it.
template <typename T, UnaryOp OP>
void unary_loop(const T* x, T* y, int64_t n, T p0, T p1) {
#pragma omp parallel for simd if (n >= kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = apply_unary(OP, x[i], p0, p1);
}

template <typename T, BinaryOp OP>
void binary_loop(const T* a, const T* b, T* y, int64_t n, T p0, T p1) {
#pragma omp parallel for simd if (n >= kParallelMin) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = apply_binary(OP, a[i], b[i], p0, p1);
}

template <typename T>
void unary_contig(UnaryOp op, const T* x, T* y, int64_t n, T p0, T p1) {
  switch (op) {
#define CASE(o) case UnaryOp::o: return unary_loop<T, UnaryOp::o>(x, y, n, p0, p1);
    CASE(Neg) CASE(Exp) CASE(Log) CASE(Sqrt) CASE(Pow) CASE(Tanh) CASE(Abs) CASE(Relu) CASE(Relu6)
    CASE(Clamp) CASE(Round) CASE(Floor) CASE(AddScalar) CASE(MulScalar) CASE(Sign)
#undef CASE
  }
}

template <typename T>
void binary_contig(BinaryOp op, const T* a, const T* b, T* y, int64_t n, T p0, T p1) {
  switch (op) {
#define CASE(o) case BinaryOp::o: return binary_loop<T, BinaryOp::o>(a, b, y, n, p0, p1);
    CASE(Add) CASE(Sub) CASE(Mul) CASE(Div) CASE(ReluGrad) CASE(Relu6Grad) CASE(ClampGrad)
    CASE(TanhGrad) CASE(PowGrad) CASE(GreaterEq) CASE(Less)
#undef CASE
  }
}

}  // namespace

void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0, double p1) {
  AB_CHECK(out.is_contiguous() && out.shape() == x.shape(), "unary kernel: bad output ", out.str());
  AB_DISPATCH_FLOAT(x.dtype(), "unary kernel", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = out.data<scalar_t>();
    if (x.is_contiguous()) {
      unary_contig<scalar_t>(op, px, py, x.numel(), (scalar_t)p0, (scalar_t)p1);
    } else {
      for_each_strided<1>(x.shape(), {&x.strides()}, [&](int64_t i, const std::array<int64_t, 1>& o) {
        py[i] = apply_unary<scalar_t>(op, px[o[0]], (scalar_t)p0, (scalar_t)p1);
      });
    }
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0, double p1) {
  AB_CHECK(out.is_contiguous() && a.shape() == out.shape() && b.shape() == out.shape(),
           "binary kernel: operands ", a.str(), ", ", b.str(), " must match output ", out.str());
  AB_DISPATCH_FLOAT(out.dtype(), "binary kernel", [&] {
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    scalar_t* py = out.data<scalar_t>();
    if (a.is_contiguous() && b.is_contiguous()) {
      binary_contig<scalar_t>(op, pa, pb, py, out.numel(), (scalar_t)p0, (scalar_t)p1);
    } else {
      for_each_strided<2>(out.shape(), {&a.strides(), &b.strides()},
                          [&](int64_t i, const std::array<int64_t, 2>& o) {
                            py[i] = apply_binary<scalar_t>(op, pa[o[0]], pb[o[1]], (scalar_t)p0, (scalar_t)p1);
                          });
    }
  });
}

template <typename T>
static void reduce_sum_impl(const T* px, T* py, int64_t outer, int64_t R, int64_t inner) {
  if (inner == 1) {
    // Row sums, accumulated in double so long rows of float32 lose nothing.
#pragma omp parallel for if (outer * R >= kParallelMin) schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      double acc = 0;
      const T* row = px + o * R;
      for (int64_t r = 0; r < R; ++r) acc += row[r];
      py[o] = (T)acc;
    }
    return;
  }
#pragma omp parallel for if (outer * R * inner >= kParallelMin) schedule(static)
  for (int64_t o = 0; o < outer; ++o) {
    T* y = py + o * inner;
    for (int64_t i = 0; i < inner; ++i) y[i] = 0;
    for (int64_t r = 0; r < R; ++r) {
      const T* row = px + (o * R + r) * inner;
#pragma omp simd
      for (int64_t i = 0; i < inner; ++i) y[i] += row[i];
    }
  }
}

void reduce_sum(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& out) {
  AB_DISPATCH_FLOAT(x.dtype(), "sum kernel", [&] {
    reduce_sum_impl<scalar_t>(x.data<scalar_t>(), out.data<scalar_t>(), outer, R, inner);
  });
}

void reduce_max(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& values, Tensor& indices) {
  AB_DISPATCH_FLOAT(x.dtype(), "max kernel", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* pv = values.data<scalar_t>();
    int64_t* pi = indices.data<int64_t>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        int64_t best = 0;
        scalar_t bv = px[o * R * inner + i];
        for (int64_t r = 1; r < R; ++r) {
          scalar_t v = px[(o * R + r) * inner + i];
          if (v > bv || (std::isnan(v) && !std::isnan(bv))) {
            bv = v;
            best = r;
          }
        }
        pv[o * inner + i] = bv;
        pi[o * inner + i] = best;
      }
  });
}

void max_backward(const Tensor& g, const Tensor& idx, int64_t outer, int64_t R, int64_t inner, Tensor& gx) {
  AB_DISPATCH_FLOAT(g.dtype(), "max backward", [&] {
    const scalar_t* pg = g.data<scalar_t>();
    const int64_t* pi = idx.data<int64_t>();
    scalar_t* px = gx.data<scalar_t>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t i = 0; i < inner; ++i)
          px[(o * R + r) * inner + i] = pi[o * inner + i] == r ? pg[o * inner + i] : scalar_t(0);
  });
}

}  // namespace anybit::cpu
