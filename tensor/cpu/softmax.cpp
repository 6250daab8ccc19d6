// softmax.cpp - CPU kernels for softmax, log-softmax and cross-entropy (tensor/kernels.inc).
//
// Layout: x viewed as (outer, K, inner), contiguous. For each o the kernel walks k in the outer
// loop and i in the inner loop, keeping running maxima and sums in per-thread buffers of size
// inner, so memory is read in order both when inner == 1 and when it is large (softmax over
// channels of an NCHW tensor). Threads split the outer dimension.
#include "tensor/kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/formulas.h"

namespace anybit::cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements below which threads cost more than they save

template <typename T>
void softmax_t(const T* x, T* y, int64_t outer, int64_t K, int64_t inner, bool log) {
#pragma omp parallel if (outer * K * inner >= kParallelMin && outer > 1)
  {
    std::vector<T> m(inner), s(inner);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const T* xo = x + o * K * inner;
      T* yo = y + o * K * inner;
      // m_i = max_k x[k, i]
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < inner; ++i) m[i] = std::max(m[i], xo[k * inner + i]);
      // s_i = sum_k exp(x[k, i] - m_i); softmax keeps the exponentials in y
      std::fill(s.begin(), s.end(), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < inner; ++i) {
          T e = std::exp(xo[k * inner + i] - m[i]);
          s[i] += e;
          if (!log) yo[k * inner + i] = e;
        }
      if (log) {
        // log softmax = x - m - log s
        for (int64_t i = 0; i < inner; ++i) s[i] = m[i] + std::log(s[i]);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t i = 0; i < inner; ++i) yo[k * inner + i] = xo[k * inner + i] - s[i];
      } else {
        for (int64_t i = 0; i < inner; ++i) s[i] = T(1) / s[i];
        for (int64_t k = 0; k < K; ++k)
          for (int64_t i = 0; i < inner; ++i) yo[k * inner + i] *= s[i];
      }
    }
  }
}

template <typename T>
void softmax_backward_t(const T* y, const T* dy, T* dx, int64_t outer, int64_t K, int64_t inner, bool log) {
#pragma omp parallel if (outer * K * inner >= kParallelMin && outer > 1)
  {
    std::vector<T> s(inner);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const T* yo = y + o * K * inner;
      const T* go = dy + o * K * inner;
      T* dxo = dx + o * K * inner;
      // softmax: s_i = sum_k dy * y;  log_softmax: s_i = sum_k dy
      std::fill(s.begin(), s.end(), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < inner; ++i) s[i] += log ? go[k * inner + i] : go[k * inner + i] * yo[k * inner + i];
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < inner; ++i) {
          int64_t j = k * inner + i;
          dxo[j] = log ? go[j] - std::exp(yo[j]) * s[i] : yo[j] * (go[j] - s[i]);
        }
    }
  }
}

template <typename T>
void cross_entropy_backward_t(const T* lp, const int64_t* lab, int64_t ls, T* d, int64_t N, int64_t K, double eps,
                              double scale) {
  const T sc = T(scale), off = T(eps / K), on = T(1 - eps);
#pragma omp parallel for if (N * K >= kParallelMin) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    // d[n, k] = scale * (p[n, k] - eps / K - (1 - eps) [k == label_n]),  p = exp(logp)
    for (int64_t k = 0; k < K; ++k) d[n * K + k] = sc * (std::exp(lp[n * K + k]) - off);
    d[n * K + lab[n * ls]] -= sc * on;
  }
}

}  // namespace

void softmax(const Tensor& x, int64_t outer, int64_t K, int64_t inner, bool log, Tensor& y) {
  AB_CHECK(x.is_contiguous() && y.is_contiguous() && x.dtype() == y.dtype(),
           "cpu::softmax: expects contiguous x and y of one dtype, got ", x.str(), " and ", y.str());
  AB_DISPATCH_FLOAT(x.dtype(), "softmax", [&] {
    softmax_t(x.data<scalar_t>(), y.data<scalar_t>(), outer, K, inner, log);
  });
}

void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t K, int64_t inner, bool log,
                      Tensor& dx) {
  AB_CHECK(y.is_contiguous() && dy.is_contiguous() && dx.is_contiguous() && y.dtype() == dy.dtype() &&
               y.dtype() == dx.dtype(),
           "cpu::softmax_backward: expects contiguous tensors of one dtype, got ", y.str(), ", ", dy.str(),
           ", ", dx.str());
  AB_DISPATCH_FLOAT(y.dtype(), "softmax_backward", [&] {
    softmax_backward_t(y.data<scalar_t>(), dy.data<scalar_t>(), dx.data<scalar_t>(), outer, K, inner, log);
  });
}

void cross_entropy_loss(const Tensor& logp, const Tensor& labels, double eps, Tensor& loss) {
  const int64_t N = logp.size(0), K = logp.size(1);
  const int64_t* lab = labels.data<int64_t>();
  const int64_t ls = labels.strides()[0];
  AB_DISPATCH_FLOAT(logp.dtype(), "cross_entropy", [&] {
    const scalar_t* lp = logp.data<scalar_t>();
    double total = 0;  // accumulated in double: N * K terms
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* row = lp + n * K;
      double row_sum = 0;
      if (eps != 0)
        for (int64_t k = 0; k < K; ++k) row_sum += row[k];
      total += -(1 - eps) * row[lab[n * ls]] - eps / K * row_sum;
    }
    *loss.data<scalar_t>() = scalar_t(N ? total / N : 0.0);
  });
}

void add_step_stats(const Tensor& logits, const Tensor& labels, const Tensor& loss, Tensor& acc) {
  check_step_stats(logits, labels, loss, acc);
  const int64_t N = logits.size(0), K = logits.size(1), ls = labels.strides()[0];
  const int64_t* lab = labels.data<int64_t>();
  AB_DISPATCH_FLOAT(logits.dtype(), "add_step_stats", [&] {
    const scalar_t* p = logits.data<scalar_t>();
    int64_t hits = 0;
    for (int64_t i = 0; i < N; ++i) {
      const scalar_t* row = p + i * K;
      int64_t best = 0;
      for (int64_t k = 1; k < K; ++k)
        if (formula::ranks_above(row[k], row[best])) best = k;
      hits += K > 0 && best == lab[i * ls];
    }
    double* a = acc.data<double>();
    a[0] += double(*loss.data<scalar_t>()) * double(N);
    a[1] += double(hits);
  });
}

void collab_teachers(const std::vector<Tensor>& probs, const std::vector<Tensor>& logits, const Tensor& labels,
                     Tensor& out, Tensor& counts) {
  check_collab_teachers(probs, logits, labels, out, counts);
  const int J = (int)probs.size();
  const int64_t N = out.size(0), K = out.size(1), ls = labels.strides()[0];
  const int64_t* lab = labels.data<int64_t>();
  int64_t* cnt = counts.data<int64_t>();
  std::fill_n(cnt, J + 1, 0);
  AB_DISPATCH_FLOAT(out.dtype(), "collab_teachers", [&] {
    std::vector<const scalar_t*> p, z;
    for (int j = 0; j < J; ++j) p.push_back(probs[j].data<scalar_t>()), z.push_back(logits[j].data<scalar_t>());
    scalar_t* o = out.data<scalar_t>();
    for (int64_t i = 0; i < N; ++i) {
      const int j = formula::collab_choice(p.data(), J, i, K, lab[i * ls]);
      if (j < 0) {
        if (cnt[J] == 0) cnt[J] = i + 1;
        continue;
      }
      cnt[j]++;
      std::copy_n(z[j] + i * K, K, o + i * K);
    }
  });
}

void cross_entropy_backward(const Tensor& logp, const Tensor& labels, double eps, const Tensor& dloss,
                            Tensor& dlogits) {
  AB_DISPATCH_FLOAT(logp.dtype(), "cross_entropy", [&] {
    const double scale = double(*dloss.data<scalar_t>()) / double(std::max<int64_t>(logp.size(0), 1));
    cross_entropy_backward_t(logp.data<scalar_t>(), labels.data<int64_t>(), labels.strides()[0],
                             dlogits.data<scalar_t>(), logp.size(0), logp.size(1), eps, scale);
  });
}

}  // namespace anybit::cpu
