// ref.h - scalar reference implementations: the spec every fast kernel is tested against.
//
// Plain loops over plain index arithmetic, computed in double whatever the input dtype, no BLAS,
// no threads, no tricks (STYLE.md rule 1). The fast paths (tensor/cpu/*.cpp through autograd/*.cpp)
// are checked against these in tests/test_conv.cpp and apps/bench_kernels.cpp. Inputs may have any
// strides; results are contiguous, in the dtype of the first input. Never used in training.
// Read next: tensor/ref.cpp, then the fast versions in tensor/cpu/conv.cpp and tensor/cpu/nn.h.
#pragma once
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace anybit::ref {

// a: (M, K), b: (K, N) -> (M, N)
Tensor matmul(const Tensor& a, const Tensor& b);
// dA = dY B^T: (M, K); dB = A^T dY: (K, N)
void matmul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor& da, Tensor& db);

// x: (N, in), w: (out, in), b: (out) or undefined -> y: (N, out), y = x w^T + b
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
// dX = dY W: (N, in); dW = dY^T X: (out, in); dB = sum_n dY: (out) (left undefined without b)
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, Tensor& dx,
                     Tensor& dw, Tensor& db);

// x: (N, C, H, W), w: (O, C / groups, KH, KW), b: (O) or undefined -> y: (N, O, OH, OW),
// OH = (H + 2 pad_h - dil_h (KH - 1) - 1) / stride_h + 1 (floor), OW likewise;
// y[n, o, oh, ow] = b[o] + sum_{c in group(o), kh, kw} x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//                                                     * w[o, c - first channel of group(o), kh, kw]
// (x read as 0 outside the image).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt);
// Gradients of the sum above: dx (N, C, H, W), dw (O, C / groups, KH, KW), db (O) (undefined
// without b).
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy,
                     const Conv2dOptions& opt, Tensor& dx, Tensor& dw, Tensor& db);

// x: (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2 pad - kernel) / stride + 1.
// max: padding is -inf; the gradient goes to the first maximum of each window in (kh, kw) order.
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);
Tensor max_pool2d_backward(const Tensor& x, const Tensor& dy, int64_t kernel, int64_t stride, int64_t pad);
// avg: the sum over the window divided by kernel^2 (padding counts as zeros).
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad);
Tensor avg_pool2d_backward(const Tensor& x, const Tensor& dy, int64_t kernel, int64_t stride, int64_t pad);
// (N, C, H, W) -> (N, C): mean over H, W.
Tensor global_avg_pool2d(const Tensor& x);
Tensor global_avg_pool2d_backward(const Tensor& x, const Tensor& dy);

// x: (N, C) or (N, C, H, W); w, b: (C) or undefined (then 1 and 0); running_mean/var: (C) or
// undefined. Training: mean_c, var_c (biased) over n, h, w; y = (x - mean) / sqrt(var + eps) * w + b;
// running = (1 - momentum) running + momentum * batch (the unbiased variance for running_var).
// Evaluation: the running statistics take the place of the batch ones.
Tensor batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor running_mean,
                  Tensor running_var, bool training, double momentum, double eps);
// With M = N*H*W, xhat = (x - mean) * invstd:
// training: dx = (1/M) w invstd (M dy - sum dy - xhat sum(dy xhat)); evaluation: dx = dy w invstd;
// dw = sum dy xhat (undefined without w), db = sum dy (undefined without b).
// In evaluation the statistics are running_mean / running_var.
void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& running_mean,
                         const Tensor& running_var, bool training, double eps, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db);

}  // namespace anybit::ref
