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

// ---- DoReFa weights, round store ------------------------------------------------------------------
// A layer's weights are a few thousand to a few million values, so the loops run in chunks on the
// threads from 4096 values up (the composed ops ran serially below 32768, one pass per op).
constexpr int64_t kDoReFaChunk = 4096;

// t = tanh(w), then m = max|t| and its first index k: each chunk finds its own, and the chunks are
// compared in order, so k is the first arg-max whatever the number of threads (the max op's rule).
// Then y from t.
template <typename T>
void dorefa_fwd(const T* w, T* t, T* y, int64_t n, T levels, T* m_out, int64_t* k_out) {
  const int64_t chunks = (n + kDoReFaChunk - 1) / kDoReFaChunk;
  std::vector<T> best(chunks);
  std::vector<int64_t> where(chunks);
#pragma omp parallel for if (chunks > 1) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kDoReFaChunk, end = std::min(n, begin + kDoReFaChunk);
    for (int64_t i = begin; i < end; ++i) t[i] = m_tanh(w[i]);
    T b = m_abs(t[begin]);
    int64_t at = begin;
    for (int64_t i = begin + 1; i < end; ++i)
      if (m_abs(t[i]) > b) b = m_abs(t[i]), at = i;
    best[c] = b;
    where[c] = at;
  }
  int64_t k = where[0];
  for (int64_t c = 1; c < chunks; ++c)
    if (best[c] > m_abs(t[k])) k = where[c];
  const T m = m_abs(t[k]), m2 = m * T(2), inv_n = T(1.0 / double(levels));
#pragma omp parallel for simd if (chunks > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = dorefa_value(t[i], m2, levels, inv_n);
  *m_out = m;
  *k_out = k;
}

// gw = (1 - t^2) g / m in one pass that also sums g t (chunked like PACT's backward: each chunk in
// T across vector lanes, the chunks in double in order); then the arg-max's share of dm at k.
template <typename T>
void dorefa_bwd(const T* t, const T* g, T* gw, int64_t n, T m, int64_t k) {
  const int64_t chunks = (n + kDoReFaChunk - 1) / kDoReFaChunk;
  std::vector<double> sums(chunks);
#pragma omp parallel for if (chunks > 1) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kDoReFaChunk, end = std::min(n, begin + kDoReFaChunk);
    T part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = begin; i < end; ++i) {
      gw[i] = dorefa_grad_w(t[i], g[i] / m);
      part += g[i] * t[i];
    }
    sums[c] = part;
  }
  double sum_gt = 0;
  for (double v : sums) sum_gt += v;
  const T dm = T(-sum_gt / (double(m) * double(m)));
  gw[k] = dorefa_grad_w(t[k], dorefa_grad_t_argmax(t[k], g[k], m, dm));
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

void dorefa_forward(const Tensor& w, double levels, Tensor& t, Tensor& y, Tensor& m, Tensor& k) {
  AB_CHECK(w.numel() > 0, "dorefa_forward: no weights");
  AB_DISPATCH_FLOAT(w.dtype(), "dorefa_quantize", [&] {
    dorefa_fwd<scalar_t>(w.data<scalar_t>(), t.data<scalar_t>(), y.data<scalar_t>(), w.numel(), (scalar_t)levels,
                         m.data<scalar_t>(), k.data<int64_t>());
  });
}

void dorefa_backward(const Tensor& t, const Tensor& m, const Tensor& k, const Tensor& g, Tensor& gw) {
  AB_DISPATCH_FLOAT(t.dtype(), "dorefa_quantize backward", [&] {
    dorefa_bwd<scalar_t>(t.data<scalar_t>(), g.data<scalar_t>(), gw.data<scalar_t>(), t.numel(), *m.data<scalar_t>(),
                         *k.data<int64_t>());
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

void sgd_steps(const std::vector<SgdItem>& items, double momentum, bool nesterov) {
  for (const SgdItem& it : items) {
    AB_DISPATCH_FLOAT(it.p.dtype(), "SGD.step", [&] {
      sgd<scalar_t>(it.p.data<scalar_t>(), it.g.data<scalar_t>(), it.buf.defined() ? it.buf.data<scalar_t>() : nullptr,
                    it.p.numel(), (scalar_t)it.lr, (scalar_t)it.wd, (scalar_t)momentum, nesterov, it.first);
    });
  }
}

void adam_steps(const std::vector<AdamItem>& items, double b1, double b2, double eps) {
  for (const AdamItem& it : items) {
    AB_DISPATCH_FLOAT(it.p.dtype(), "Adam.step", [&] {
      adam<scalar_t>(it.p.data<scalar_t>(), it.g.data<scalar_t>(), it.m.data<scalar_t>(), it.v.data<scalar_t>(),
                     it.p.numel(), (scalar_t)it.decay, (scalar_t)it.wd_grad, (scalar_t)b1, (scalar_t)b2, (scalar_t)eps,
                     (scalar_t)it.step_size, (scalar_t)it.bc2_sqrt);
    });
  }
}

}  // namespace anybit::cpu
