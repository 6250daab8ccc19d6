// captured_step.cpp - see captured_step.h.
#include "nn/captured_step.h"

namespace anybit::nn {

CapturedStep::CapturedStep(Step step, NamedTensors params, bool on, int warmup)
    : step_(std::move(step)), params_(std::move(params)), on_(on), warmup_(warmup) {}

void CapturedStep::zero_grads() {
  for (auto& [name, p] : params_) p.zero_grad();
}

std::vector<Tensor> CapturedStep::run(const Tensor& x, const Tensor& y) {
  const bool same_shape = !xs_.defined() || (x.shape() == xs_.shape() && y.shape() == ys_.shape());
  if (!on_ || !x.device().is_cuda() || calls_ < warmup_ || !same_shape) {
    ++calls_;
    zero_grads();
    return step_(x, y);
  }
  if (!graph_.captured()) {
    // The inputs are made before the capture, so they live outside the graph's pool; the step's
    // own tensors (activations, gradients, outputs) are the graph's.
    xs_ = Tensor::empty(x.shape(), x.dtype(), x.device());
    ys_ = Tensor::empty(y.shape(), y.dtype(), y.device());
    xs_.copy_(x);
    ys_.copy_(y);
    zero_grads();
    graph_.capture([&] { outs_ = step_(xs_, ys_); });
    grads_.clear();
    for (auto& [name, p] : params_) grads_.push_back(p.grad());
  } else {
    xs_.copy_(x);
    ys_.copy_(y);
    for (size_t i = 0; i < params_.size(); ++i) params_[i].second.set_grad(grads_[i]);
  }
  graph_.replay();  // the capture itself ran nothing on the GPU: this is the step
  ++calls_;
  return outs_;
}

}  // namespace anybit::nn
