// captured_step.h - a training step's forward and backward recorded once as a CUDA graph and
// replayed every step after: one launch instead of the hundreds of kernels of a small network,
// whose launch overhead dominates its step on a large GPU (issue "GPU training end to end").
//
// For steps whose inputs keep their shape and whose forward and backward never read a GPU value
// on the host: the FP trainer's step (the joint trainer reads the teachers' votes on the host to
// draw its block swaps, so it runs eagerly). The first `warmup` steps run eagerly (they create the
// optimizer's state and fill the allocator's cache); the next one is captured (cuda::Graph) and
// replayed; after that each step copies its batch into the graph's input tensors, gives the
// parameters back the gradient tensors the graph writes, and replays. Each replay checks its
// labels on the GPU (a label out of range is reported at the next wait for the GPU:
// tensor/cuda/launch.h, KernelError). A batch of another shape runs eagerly. The optimizer step stays outside the graph: the learning rate changes every step.
// On the CPU, or when switched off, run() just calls the step.
#pragma once
#include <functional>
#include <vector>

#include "nn/module.h"
#include "tensor/cuda/cuda.h"

namespace anybit::nn {

class CapturedStep {
 public:
  // step(x, y): forward and backward from zeroed gradients; returns the tensors the caller reads
  // after it (the loss, the logits), which after a replay hold that step's values.
  using Step = std::function<std::vector<Tensor>(const Tensor& x, const Tensor& y)>;
  CapturedStep(Step step, NamedTensors params, bool on, int warmup = 2);

  std::vector<Tensor> run(const Tensor& x, const Tensor& y);
  bool replaying() const { return graph_.captured(); }

 private:
  void zero_grads();

  Step step_;
  NamedTensors params_;
  bool on_;
  int warmup_, calls_ = 0;
  cuda::Graph graph_;
  Tensor xs_, ys_;              // the graph's inputs
  std::vector<Tensor> outs_;    // the graph's outputs
  std::vector<Tensor> grads_;   // the gradient tensors the graph writes, one per parameter
};

}  // namespace anybit::nn
