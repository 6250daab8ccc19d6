// softmax.h - the fused softmax / log-softmax / cross-entropy kernels (CPU).
//
// Softmax over one dimension of a contiguous tensor is planned as a view (outer, K, inner): the
// kernel normalises over k for every (o, i). Rows with inner == 1 (softmax over the last
// dimension, the common case) are contiguous and vectorise.
//
// The ops that use these kernels, with their backward formulas, are in autograd/loss.cpp; the
// scalar references they are tested against are in tensor/ref_loss.h. There are no CUDA twins
// yet: the ops say so with an error when given CUDA tensors.
#pragma once
#include "tensor/tensor.h"

namespace anybit::cpu {

// y = softmax(x) or log_softmax(x) over k of x viewed as (outer, K, inner).
// x, y: contiguous, same shape and float dtype. Numerically stable: the max over k is
// subtracted before exp.
void softmax(const Tensor& x, int64_t outer, int64_t K, int64_t inner, bool log, Tensor& y);

// The backward of softmax (log = false) or log_softmax (log = true) over k, from the saved output y:
//   softmax:      dx = y * (dy - sum_k dy * y)
//   log_softmax:  dx = dy - exp(y) * sum_k dy
// y, dy, dx: contiguous, same shape and dtype.
void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t K, int64_t inner, bool log,
                      Tensor& dx);

// Cross-entropy of logits (N, K) with labels (N) int64, from the log-probabilities logp (N, K)
// (computed by softmax(..., log = true)): returns
//   mean_n [ -(1 - eps) logp[n, label_n] - (eps / K) sum_k logp[n, k] ].
// Labels must already be checked to lie in [0, K).
double cross_entropy_loss(const Tensor& logp, const Tensor& labels, double eps);

// dlogits (N, K) = scale * (softmax - target), softmax = exp(logp),
// target = (1 - eps) one_hot(label) + eps / K. scale = dLoss / N.
void cross_entropy_backward(const Tensor& logp, const Tensor& labels, double eps, double scale, Tensor& dlogits);

}  // namespace anybit::cpu
