// autograd.h - reverse-mode automatic differentiation: the graph, grad mode, and how ops record.
//
// As a differentiable op runs (tensor/ops.h), it calls record(): the output gets a Node whose
// backward function maps the gradient of the output to gradients of the inputs, and whose edges
// point at the inputs' own Nodes (or, for leaves such as weights, at the leaf tensor). Nothing is
// recorded when grad mode is off (NoGradGuard) or when no input requires grad.
//
// Tensor::backward() (engine.cpp) orders the Nodes topologically and runs each backward once,
// after all gradients for its outputs have been summed. Most ops have one output; an op with
// several (a batch norm that also writes the next layer's quantized input, say) records them
// together with record_outputs(), and its backward gets one gradient per output. The engine owns
// accumulation: it reduces a gradient over broadcast dimensions to the input's shape, checks
// shape and dtype, sums gradients that reach the same output of a Node or the same leaf, and
// stores leaf gradients in Tensor::grad().
//
// Rule for op authors: a backward lambda may capture inputs and outputs it needs, but an output
// must be captured as out.detach() (capturing the output itself would make a reference cycle
// output -> Node -> output and leak it).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace anybit {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;
// The backward of an op with several outputs: grad_outs[i] is output i's gradient, undefined when
// no gradient reached that output (the op's backward treats it as zeros).
using MultiBackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outs)>;

// Where a gradient goes: to the Node that produced an input (its output number `output`), or to
// a leaf that requires grad.
struct Edge {
  std::shared_ptr<Node> fn;
  int output = 0;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;
  DType dtype = DType::F32;
  bool active() const { return fn || leaf; }
};

struct Node {
  std::string name;          // the op, for error messages ("conv2d")
  std::vector<Edge> next;    // one per input, in the order the backward returns gradients
  int outputs = 1;           // how many outputs the op has, hence how many gradients backward takes
  MultiBackwardFn backward;  // released (empty) after a backward without retain_graph
  bool released = false;
};

// Grad mode is thread-local; NoGradGuard turns it off for a scope (evaluation, optimizer steps).
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and at least one defined input requires grad.
bool needs_grad(std::initializer_list<Tensor> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Makes `out` the result of a differentiable op: sets out.requires_grad and its grad_fn, with one
// edge per input (inputs that need no gradient get an inactive edge; their backward result is
// ignored). Call it only after needs_grad(inputs) is true.
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn);
// record() for an op with several outputs: *outs[i] becomes output i of one Node, whose backward
// receives their gradients in that order.
void record_outputs(const char* name, const std::vector<Tensor*>& outs, const std::vector<Tensor>& inputs,
                    MultiBackwardFn fn);

// The engine (engine.cpp): backpropagates grad_root from root; see Tensor::backward.
void run_backward(const Tensor& root, const Tensor& grad_root, bool retain_graph);

}  // namespace anybit
