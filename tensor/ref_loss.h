// ref_loss.h - scalar reference implementations of softmax, log-softmax and cross-entropy.
//
// These are the spec (STYLE.md rule 1): plain loops in double over a row-major copy of the input,
// written for clarity, never for speed. The fused kernels of autograd/loss.cpp are tested against
// them in tests/test_loss.cpp. (The references of the other ops are in tensor/ref.h.)
#pragma once
#include "tensor/tensor.h"

namespace anybit::ref {

// x: any shape, any strides -> softmax over dim, same shape and dtype as x. Not differentiable.
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// logits: (N, K), labels: (N) int64 -> mean_n of -sum_k target[n, k] log p[n, k], with
// target = (1 - eps) one_hot(label_n) + eps / K. Returns a double.
double cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing = 0.0);

}  // namespace anybit::ref
