// fused.cpp - CPU twins of the quantizers' and optimizers' fused kernels (tensor/kernels.inc): PACT,
// LSQ, SGD, Adam. Each element's formula is the one in tensor/formulas.h that the CUDA twins
// (tensor/cuda/fused.cu) apply; the loops here decide only how the elements are shared among
// threads and vector lanes, and in which order the backward's one sum adds them up.
#include <algorithm>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/formulas.h"

namespace anybit::cpu {

namespace {

using namespace anybit::formula;

// ---- PACT ------------------------------------------------------------------------------------------
// The clip range is [lo, a] with lo = 0 (unsigned) or -a (signed); `levels` is the number of
// rounding steps per unit of a: (2^b - 1) unsigned, 2^(b-1) - 1 signed, 0 at b = 32 (no rounding).
template <typename T>
void pact_fwd(const T* x, T* y, int64_t n, T lo, T a, T levels) {
  const T scale = levels / a, inv = a / levels;
#pragma omp parallel for simd if (n >= (1 << 15)) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = pact_value(x[i], lo, a, levels, scale, inv);
}

// dx = g where lo <= x <= a; returns da = sum of g where x >= a, minus (Signed: lo = -a) the sum
// of g where x <= lo. The sum runs in chunks: each chunk is summed in T with `omp simd` (vector
// lanes), and the chunks' sums are added in double, in chunk order, so the result is the same
// whatever the number of threads. Signed is a template parameter so that the unsigned loop, the
// one every ReLU network runs, carries no test of it: a branch in the loop changes how the
// compiler vectorises the float sum, hence its rounding, hence a training run's last digits.
// (The same happens if the loop moves into a lambda of a shared chunked-sum helper, which is why
// PACT and LSQ each keep this loop written out.)
template <typename T, bool Signed>
double pact_bwd(const T* x, const T* g, T* gx, int64_t n, T lo, T a) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> sums(chunks);
#pragma omp parallel for if (n >= (1 << 15)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    T part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = begin; i < end; ++i) {
      gx[i] = pact_grad_x(x[i], g[i], lo, a);
      part += pact_grad_a(x[i], g[i], lo, a, Signed);
    }
    sums[c] = part;
  }
  double ga = 0;
  for (double v : sums) ga += v;
  return ga;
}

// ---- LSQ -------------------------------------------------------------------------------------------
template <typename T>
void lsq_fwd(const T* v, T* y, int64_t n, T s, T qn, T qp) {
#pragma omp parallel for simd if (n >= (1 << 15)) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = lsq_value(v[i], s, qn, qp);
}

// dv = g inside (-Qn, Qp); returns the unscaled sum for ds (quant/lsq.h), chunked like PACT's
// backward: each chunk summed in T across vector lanes, the chunks' sums added in double in chunk
// order (the same result whatever the number of threads).
template <typename T>
double lsq_bwd(const T* v, const T* g, T* gv, int64_t n, T s, T qn, T qp) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> sums(chunks);
#pragma omp parallel for if (n >= (1 << 15)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    T part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = begin; i < end; ++i) {
      gv[i] = lsq_grad_v(v[i], g[i], s, qn, qp);
      part += lsq_grad_s(v[i], g[i], s, qn, qp);
    }
    sums[c] = part;
  }
  double ds = 0;
  for (double v : sums) ds += v;
  return ds;
}

// ---- optimizers ------------------------------------------------------------------------------------
// One fused pass over a parameter. The cases are separate loops so that in each the constant
// arguments of sgd_update fold away and the loop is branch-free and vectorises.
template <typename T>
void sgd(T* p, const T* g, T* buf, int64_t n, T lr, T wd, T momentum, bool nesterov, bool first) {
  if (!buf) {
#pragma omp parallel for simd if (n > (1 << 16)) schedule(static)
    for (int64_t i = 0; i < n; ++i) sgd_update(p[i], g[i], (T*)nullptr, lr, wd, momentum, false, false);
  } else if (first) {  // buf = d
#pragma omp parallel for simd if (n > (1 << 16)) schedule(static)
    for (int64_t i = 0; i < n; ++i) sgd_update(p[i], g[i], buf + i, lr, wd, momentum, nesterov, true);
  } else {  // buf = momentum buf + d
#pragma omp parallel for simd if (n > (1 << 16)) schedule(static)
    for (int64_t i = 0; i < n; ++i) sgd_update(p[i], g[i], buf + i, lr, wd, momentum, nesterov, false);
  }
}

// (GCC keeps this loop scalar: with errno semantics, the default, every sqrt is a possible
// library call. apps/bench_optim measures it.)
template <typename T>
void adam(T* p, const T* g, T* m, T* v, int64_t n, T decay, T wd_grad, T b1, T b2, T eps, T step_size, T bc2_sqrt) {
#pragma omp parallel for if (n > (1 << 16)) schedule(static)
  for (int64_t i = 0; i < n; ++i) adam_update(p[i], g[i], m[i], v[i], decay, wd_grad, b1, b2, eps, step_size, bc2_sqrt);
}

}  // namespace

void pact_forward(const Tensor& x, const Tensor& a, bool is_signed, double levels, Tensor& y) {
  AB_DISPATCH_FLOAT(x.dtype(), "pact_quantize", [&] {
    const scalar_t av = *a.data<scalar_t>();
    pact_fwd<scalar_t>(x.data<scalar_t>(), y.data<scalar_t>(), x.numel(), is_signed ? -av : scalar_t(0), av,
                       (scalar_t)levels);
  });
}

void pact_backward(const Tensor& x, const Tensor& a, bool is_signed, const Tensor& g, Tensor& gx, Tensor& ga) {
  AB_DISPATCH_FLOAT(x.dtype(), "pact_quantize backward", [&] {
    const scalar_t av = *a.data<scalar_t>();
    const double sum = is_signed ? pact_bwd<scalar_t, true>(x.data<scalar_t>(), g.data<scalar_t>(), gx.data<scalar_t>(),
                                                            x.numel(), -av, av)
                                 : pact_bwd<scalar_t, false>(x.data<scalar_t>(), g.data<scalar_t>(),
                                                             gx.data<scalar_t>(), x.numel(), scalar_t(0), av);
    *ga.data<scalar_t>() = scalar_t(sum);
  });
}

void lsq_forward(const Tensor& v, const Tensor& s, double qn, double qp, Tensor& y) {
  AB_DISPATCH_FLOAT(v.dtype(), "lsq_quantize", [&] {
    lsq_fwd<scalar_t>(v.data<scalar_t>(), y.data<scalar_t>(), v.numel(), *s.data<scalar_t>(), (scalar_t)qn,
                      (scalar_t)qp);
  });
}

void lsq_backward(const Tensor& v, const Tensor& s, double qn, double qp, double gscale, const Tensor& g, Tensor& gv,
                  Tensor& gs) {
  AB_DISPATCH_FLOAT(v.dtype(), "lsq_quantize backward", [&] {
    const double sum = lsq_bwd<scalar_t>(v.data<scalar_t>(), g.data<scalar_t>(), gv.data<scalar_t>(), v.numel(),
                                         *s.data<scalar_t>(), (scalar_t)qn, (scalar_t)qp);
    *gs.data<scalar_t>() = scalar_t(sum * gscale);
  });
}

void sgd_step(Tensor& p, const Tensor& g, Tensor* buf, double lr, double wd, double momentum, bool nesterov,
              bool first) {
  AB_DISPATCH_FLOAT(p.dtype(), "SGD.step", [&] {
    sgd<scalar_t>(p.data<scalar_t>(), g.data<scalar_t>(), buf ? buf->data<scalar_t>() : nullptr, p.numel(),
                  (scalar_t)lr, (scalar_t)wd, (scalar_t)momentum, nesterov, first);
  });
}

void adam_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double decay, double wd_grad, double b1, double b2,
               double eps, double step_size, double bc2_sqrt) {
  AB_DISPATCH_FLOAT(p.dtype(), "Adam.step", [&] {
    adam<scalar_t>(p.data<scalar_t>(), g.data<scalar_t>(), m.data<scalar_t>(), v.data<scalar_t>(), p.numel(),
                   (scalar_t)decay, (scalar_t)wd_grad, (scalar_t)b1, (scalar_t)b2, (scalar_t)eps, (scalar_t)step_size,
                   (scalar_t)bc2_sqrt);
  });
}

}  // namespace anybit::cpu
