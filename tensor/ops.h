// ops.h - every differentiable primitive of anybit, listed in one place (STYLE.md rule 4).
//
// Each op works on CPU and on CUDA tensors (float32 and float64; float64 is what gradient checks
// use), runs the kernel of its inputs' device (tensor/kernels.h), and records its backward when grad mode is on and an input
// requires grad (autograd/autograd.h). Composite functions (nn/, quant/) are built from these and
// get their gradients for free.
//
// Where each op lives: the op's forward, its backward formula (as a comment above the code) and
// its kernels are in one file of autograd/ named after its family:
//   elementwise.cpp  add sub mul div neg exp log sqrt pow tanh abs relu relu6 clamp round_ste
//                    clamp_bounds
//   reduce.cpp       sum mean max argmax sum_to
//   views.cpp        cat, split (the views themselves, reshape, permute, slice, expand, are
//                    Tensor methods with their gradients, in tensor/tensor.cpp)
//   linalg.cpp       matmul linear
//   conv.cpp         conv2d
//   pool.cpp         max_pool2d avg_pool2d global_avg_pool2d
//   norm.cpp         batch_norm batch_norm_sync
//   loss.cpp         softmax log_softmax cross_entropy soft_cross_entropy dropout
//   temporal.cpp     temporal_shift (TSM)
// Scalar reference implementations (the spec every fast kernel is tested against) are in
// tensor/ref.h (conv, linear, pooling, batch norm) and tensor/ref_loss.h (softmax, losses).
#pragma once
#include <vector>

#include "tensor/tensor.h"

namespace anybit {

class Generator;

// ---- elementwise, with NumPy broadcasting (CPU and CUDA) -------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, double p);
Tensor tanh(const Tensor& x);
Tensor abs(const Tensor& x);  // d|x| = sign(x), 0 at 0
Tensor relu(const Tensor& x);
Tensor relu6(const Tensor& x);
// clamp to constant bounds: gradient passes where lo <= x <= hi.
Tensor clamp(const Tensor& x, double lo, double hi);
// clamp to tensor bounds (broadcast): y = min(max(x, lo), hi). The gradient goes to x where
// lo <= x <= hi, to lo where x < lo, to hi where x > hi (PACT's learnable clip uses hi).
Tensor clamp_bounds(const Tensor& x, const Tensor& lo, const Tensor& hi);
// round to nearest, ties to even (as torch.round), with a straight-through gradient: dx = g.
Tensor round_ste(const Tensor& x);
// Sums x over broadcast dimensions so that the result has `shape` (the inverse of expand).
Tensor sum_to(const Tensor& x, const Shape& shape);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return add(a, -b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return mul(a, 1.0 / b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }

// ---- reductions (CPU and CUDA) -----------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> shape []
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// max over all elements -> shape []; the gradient goes to the first arg-max element.
Tensor max(const Tensor& x);
// max along dim; the gradient goes to the first arg-max of each slice.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // int64, not differentiable

// ---- linear algebra (CPU through OpenBLAS, CUDA through cuBLAS) ------------------------------
Tensor matmul(const Tensor& a, const Tensor& b);  // (M, K) x (K, N) -> (M, N)
// x: (N, in), weight: (out, in), bias: (out) or undefined -> (N, out)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// ---- convolution and pooling -----------------------------------------------------------------
struct Conv2dOptions {
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  static Conv2dOptions make(int64_t stride, int64_t pad, int64_t dil = 1, int64_t groups = 1) {
    return {stride, stride, pad, pad, dil, dil, groups};
  }
};
// x: (N, C, H, W), weight: (O, C / groups, KH, KW), bias: (O) or undefined -> (N, O, OH, OW)
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt);
// x: (N, C, H, W) -> (N, C, OH, OW); padding with -inf for max, counted as zeros for avg
// (count_include_pad = true, as PyTorch's default).
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad = 0);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad = 0);
Tensor global_avg_pool2d(const Tensor& x);  // (N, C, H, W) -> (N, C)

// ---- video ----------------------------------------------------------------------------------
// x: (N * T, C, H, W), N clips of T frames. The first C / fold_div channels of frame t take frame
// t + 1's values, the next C / fold_div frame t - 1's, zero padded at the clip's ends; the other
// channels are unchanged (TSM's shift; temporal.cpp has the formulas).
Tensor temporal_shift(const Tensor& x, int64_t frames, int64_t fold_div = 8);

// ---- normalization -----------------------------------------------------------------------------
// x: (N, C) or (N, C, H, W); weight, bias, running_mean, running_var: (C).
// training: normalise with the batch statistics (biased variance) and update the running ones
// in place (running = (1 - momentum) * running + momentum * batch, with the unbiased variance),
// unless running_mean is undefined. Evaluation: normalise with the running statistics.
// relu: return relu(batch_norm(...)), computed in the same passes (forward and backward) instead
// of one more pass each, as the ResNets' BN + ReLU pairs do. residual (x's shape, optional):
// return relu(batch_norm(...) + residual) (without relu: batch_norm(...) + residual), a ResNet
// block's output in one pass. pact (with relu, without a residual; ignored when pact.clip is
// undefined): return pact_quantize(relu(batch_norm(...)), pact.clip, pact.bits) (unsigned PACT,
// quant/quantizers.h) in the same passes, for a BN whose output only a quantized layer reads.
// Its values are those of the three ops bit for bit; its gradients add the same terms in another
// order, so they equal the three ops' within float rounding.
// tapped (with relu and pact; a residual allowed): return relu(batch_norm(...) [+ residual]) as
// usual, and write pact_quantize of it to *tapped, in the same passes: a block output that the
// next block's shortcut reads as it is and its first quantized convolution reads through PACT.
// The op then has two outputs (one autograd node): backward adds the gradient that reached
// *tapped, through PACT's backward, to the output's own in the BN's first pass (the same one
// addition per element the engine makes when the branches are separate ops, so the residual's
// gradient is the same bit for bit), and sums the clip's gradient there too. Values are the
// separate ops' bit for bit; the other gradients equal theirs within float rounding (the sums are
// vectorised in another order).
struct PactAfter {
  Tensor clip;    // PACT's clip value: one element, > 0, x's dtype and device
  int bits = 32;  // 1..16, or 32: the clip alone
};
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, bool training, double momentum = 0.1, double eps = 1e-5, bool relu = false,
                  const Tensor& residual = Tensor(), const PactAfter& pact = PactAfter(), Tensor* tapped = nullptr);
// Synchronised batch norm (training only): batch_norm whose batch statistics are those of the
// batches of every process of dist::world() together, as if one process held them all; the running
// statistics (when defined) move with those. Every process must call it for the same layer in the
// same order (tensor/process_group.h). On CUDA the per-channel sums go through the host.
Tensor batch_norm_sync(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, double momentum = 0.1, double eps = 1e-5, bool relu = false,
                       const Tensor& residual = Tensor(), const PactAfter& pact = PactAfter(),
                       Tensor* tapped = nullptr);

// ---- softmax, losses, dropout ------------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// logits: (N, K), labels: (N) int64 in [0, K) -> mean over N of -log p(label), with label
// smoothing eps: the target is (1 - eps) one-hot + eps / K.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing = 0.0);
// Distillation loss: T^2 * mean over N of -sum_k p_t log softmax(z_s / T), with
// p_t = softmax(teacher_logits / T). The teacher receives no gradient.
Tensor soft_cross_entropy(const Tensor& student_logits, const Tensor& teacher_logits,
                          double temperature = 1.0);
// Zeroes each element with probability p and scales the rest by 1 / (1 - p); identity when
// !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- joining and splitting ---------------------------------------------------------------------
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

}  // namespace anybit
