// ref_loss.cpp - the scalar references declared in tensor/ref_loss.h.
#include "tensor/ref_loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace anybit::ref {

namespace {

// y = softmax or log-softmax of x along dim; x is read as a row-major copy in double, viewed as
// (outer, K, inner).
Tensor softmax_ref(const Tensor& x, int64_t dim, bool log) {
  const int64_t d = wrap_dim(dim, x.dim(), "ref::softmax");
  int64_t outer = 1, K = 1, inner = 1;
  for (int64_t i = 0; i < x.dim(); ++i) (i < d ? outer : i == d ? K : inner) *= x.shape()[i];
  std::vector<double> v = x.to_vector<double>(), y(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return (o * K + k) * inner + i; };
      double m = -INFINITY;
      for (int64_t k = 0; k < K; ++k) m = std::max(m, v[at(k)]);
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += std::exp(v[at(k)] - m);
      for (int64_t k = 0; k < K; ++k)
        y[at(k)] = log ? v[at(k)] - m - std::log(s) : std::exp(v[at(k)] - m) / s;
    }
  return Tensor::from_vector(y, x.shape()).to(x.dtype());
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_ref(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_ref(x, dim, true); }

double cross_entropy(const Tensor& logits, const Tensor& labels, double eps) {
  const int64_t N = logits.size(0), K = logits.size(1);
  std::vector<double> logp = log_softmax(logits.to(DType::F64), 1).to_vector<double>();
  std::vector<int64_t> lab = labels.to_vector<int64_t>();
  double total = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double target = (1 - eps) * (k == lab[n]) + eps / K;
      total -= target * logp[n * K + k];
    }
  return total / N;
}

}  // namespace anybit::ref
