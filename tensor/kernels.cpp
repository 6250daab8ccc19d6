// kernels.cpp - the facade of tensor/kernels.h: each kernel::f calls cpu::f or cuda::f by the device
// of its first tensor argument. This file is the only place where an op's device is looked at.
//
// A CUDA tensor in a build without CUDA never gets this far (it cannot be allocated); a CUDA twin
// that meets a tensor on the wrong device says so (tensor/cuda/launch.h, check_cuda).
#include "tensor/kernels.h"

namespace anybit::kernel {

// The rule, written once: the twin of the device that `t` lives on.
#define ON_DEVICE_OF(t, call) \
  do {                        \
    if ((t).device().is_cuda()) \
      return cuda::call;      \
    return cpu::call;         \
  } while (0)

void strided_copy(const Tensor& src, Tensor& dst) { ON_DEVICE_OF(dst, strided_copy(src, dst)); }
void fill(Tensor& dst, double value) { ON_DEVICE_OF(dst, fill(dst, value)); }

void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0, double p1) {
  ON_DEVICE_OF(out, unary(op, x, out, p0, p1));
}
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0, double p1) {
  ON_DEVICE_OF(out, binary(op, a, b, out, p0, p1));
}
void reduce_sum(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& out) {
  ON_DEVICE_OF(x, reduce_sum(x, outer, R, inner, out));
}
void reduce_max(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& values, Tensor& indices) {
  ON_DEVICE_OF(x, reduce_max(x, outer, R, inner, values, indices));
}
void max_backward(const Tensor& g, const Tensor& idx, int64_t outer, int64_t R, int64_t inner, Tensor& gx) {
  ON_DEVICE_OF(g, max_backward(g, idx, outer, R, inner, gx));
}

void increment(Tensor& counter) { ON_DEVICE_OF(counter, increment(counter)); }

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Tensor& a, int64_t lda, const Tensor& b,
          int64_t ldb, double beta, Tensor& y) {
  ON_DEVICE_OF(y, gemm(trans_a, trans_b, M, N, K, a, lda, b, ldb, beta, y));
}

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const ConvShape& s, Tensor& y) {
  ON_DEVICE_OF(x, conv2d_forward(x, w, b, s, y));
}
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const ConvShape& s, Tensor* dx, Tensor* dw,
                     Tensor* db) {
  ON_DEVICE_OF(x, conv2d_backward(x, w, dy, s, dx, dw, db));
}

void max_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& argmax) {
  ON_DEVICE_OF(x, max_pool2d_forward(x, k, s, p, y, argmax));
}
void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, int64_t k, int64_t s, int64_t p, Tensor& dx) {
  ON_DEVICE_OF(dy, max_pool2d_backward(dy, argmax, k, s, p, dx));
}
void avg_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y) {
  ON_DEVICE_OF(x, avg_pool2d_forward(x, k, s, p, y));
}
void avg_pool2d_backward(const Tensor& dy, int64_t k, int64_t s, int64_t p, Tensor& dx) {
  ON_DEVICE_OF(dy, avg_pool2d_backward(dy, k, s, p, dx));
}

void batch_norm_train_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y,
                              Tensor& mean, Tensor& var, Tensor& invstd, Tensor& affine, const ChannelSum* across,
                              const Tensor& residual, const BnPact* pact, const BnRunning* running) {
  ON_DEVICE_OF(x, batch_norm_train_forward(x, w, b, eps, relu, y, mean, var, invstd, affine, across, residual, pact,
                                           running));
}
void batch_norm_eval_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& var,
                             double eps, bool relu, Tensor& y, Tensor& invstd, Tensor& affine, const Tensor& residual,
                             const BnPact* pact) {
  ON_DEVICE_OF(x, batch_norm_eval_forward(x, w, b, mean, var, eps, relu, y, invstd, affine, residual, pact));
}
void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd, bool training,
                         const BnRelu& relu, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db,
                         const ChannelSum* across, Tensor* dy_relu, Tensor* dclip) {
  ON_DEVICE_OF(x, batch_norm_backward(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, dy_relu, dclip));
}

void add_step_stats(const Tensor& logits, const Tensor& labels, const Tensor& loss, Tensor& acc) {
  ON_DEVICE_OF(acc, add_step_stats(logits, labels, loss, acc));
}
void collab_teachers(const std::vector<Tensor>& probs, const std::vector<Tensor>& logits, const Tensor& labels,
                     Tensor& out, Tensor& counts) {
  ON_DEVICE_OF(out, collab_teachers(probs, logits, labels, out, counts));
}
void softmax(const Tensor& x, int64_t outer, int64_t K, int64_t inner, bool log, Tensor& y) {
  ON_DEVICE_OF(x, softmax(x, outer, K, inner, log, y));
}
void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t K, int64_t inner, bool log,
                      Tensor& dx) {
  ON_DEVICE_OF(y, softmax_backward(y, dy, outer, K, inner, log, dx));
}
void cross_entropy_loss(const Tensor& logp, const Tensor& labels, double eps, Tensor& loss) {
  ON_DEVICE_OF(logp, cross_entropy_loss(logp, labels, eps, loss));
}
void cross_entropy_backward(const Tensor& logp, const Tensor& labels, double eps, const Tensor& dloss,
                            Tensor& dlogits) {
  ON_DEVICE_OF(logp, cross_entropy_backward(logp, labels, eps, dloss, dlogits));
}

void temporal_shift(const Tensor& x, Tensor& y, int64_t frames, int64_t fold, int dir) {
  ON_DEVICE_OF(x, temporal_shift(x, y, frames, fold, dir));
}

void pact_forward(const Tensor& x, const Tensor& a, bool is_signed, double levels, Tensor& y) {
  ON_DEVICE_OF(x, pact_forward(x, a, is_signed, levels, y));
}
void pact_backward(const Tensor& x, const Tensor& a, bool is_signed, const Tensor& g, Tensor& gx, Tensor& ga) {
  ON_DEVICE_OF(x, pact_backward(x, a, is_signed, g, gx, ga));
}
void dorefa_forward(const Tensor& w, double levels, Tensor& t, Tensor& y, Tensor& m, Tensor& k) {
  ON_DEVICE_OF(w, dorefa_forward(w, levels, t, y, m, k));
}
void dorefa_backward(const Tensor& t, const Tensor& m, const Tensor& k, const Tensor& g, Tensor& gw) {
  ON_DEVICE_OF(t, dorefa_backward(t, m, k, g, gw));
}
void lsq_forward(const Tensor& v, const Tensor& s, double qn, double qp, Tensor& y) {
  ON_DEVICE_OF(v, lsq_forward(v, s, qn, qp, y));
}
void lsq_backward(const Tensor& v, const Tensor& s, double qn, double qp, double gscale, const Tensor& g, Tensor& gv,
                  Tensor& gs) {
  ON_DEVICE_OF(v, lsq_backward(v, s, qn, qp, gscale, g, gv, gs));
}
// A list of parameters: each item goes to the twin of its parameter's device, in one call per device.
template <typename Item, typename Cpu, typename Cuda>
void on_devices_of(const std::vector<Item>& items, Cpu on_cpu, Cuda on_cuda) {
  std::vector<Item> cpu_items, cuda_items;
  for (const Item& it : items) (it.p.device().is_cuda() ? cuda_items : cpu_items).push_back(it);
  if (!cpu_items.empty()) on_cpu(cpu_items);
  if (!cuda_items.empty()) on_cuda(cuda_items);
}
void sgd_steps(const std::vector<SgdItem>& items, double momentum, bool nesterov) {
  on_devices_of(
      items, [&](const std::vector<SgdItem>& some) { cpu::sgd_steps(some, momentum, nesterov); },
      [&](const std::vector<SgdItem>& some) { cuda::sgd_steps(some, momentum, nesterov); });
}
void adam_steps(const std::vector<AdamItem>& items, double b1, double b2, double eps) {
  on_devices_of(
      items, [&](const std::vector<AdamItem>& some) { cpu::adam_steps(some, b1, b2, eps); },
      [&](const std::vector<AdamItem>& some) { cuda::adam_steps(some, b1, b2, eps); });
}

#undef ON_DEVICE_OF

}  // namespace anybit::kernel
