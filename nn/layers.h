// layers.h - the float layers networks are built from, named and initialised as in PyTorch.
//
// Each layer is a thin Module around one op of tensor/ops.h: it owns its parameters (registered
// under PyTorch's names, so state dicts match torch.nn one to one) and calls the op in forward().
// Default initialisation is PyTorch's: conv and linear weights kaiming_uniform_(a = sqrt(5)),
// i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); BN weight
// 1, bias 0. Models re-initialise as torchvision does (nn/models.cpp, init_* below).
// Read next: nn/layer_factory.h (how models ask for layers), nn/models.h (the model zoo).
#pragma once
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "nn/layer_factory.h"
#include "nn/module.h"
#include "tensor/random.h"

namespace anybit::nn {

// x: (N, C, H, W) -> (N, out, OH, OW); weight (out, C / groups, k, k), bias (out) when spec.bias.
class Conv2d : public Module {
 public:
  Conv2d(const ConvSpec& spec, Generator& gen);
  Tensor forward(const Tensor& x) override { return forward_with(x, weight_); }
  // The same convolution with another weight tensor of weight_'s shape: a quantized layer passes
  // its fake-quantized weights (quant/qlayers.h).
  Tensor forward_with(const Tensor& x, const Tensor& weight);
  std::string type_name() const override { return "Conv2d"; }
  std::string extra_repr() const override;
  int64_t last_macs() const override { return last_macs_; }
  const ConvSpec& spec() const { return spec_; }
  Conv2dOptions options() const;

  Tensor weight_, bias_;

 protected:
  // Checks the spec and registers weight (and bias) filled with zeros, drawing no random numbers:
  // for derived layers that initialise their own way.
  explicit Conv2d(const ConvSpec& spec);

 private:
  ConvSpec spec_;
  int64_t last_macs_ = 0;
};

// x: (N, in) -> (N, out); weight (out, in), bias (out).
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override { return forward_with(x, weight_); }
  // The same layer with another weight tensor of weight_'s shape (see Conv2d::forward_with).
  Tensor forward_with(const Tensor& x, const Tensor& weight);
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;
  int64_t last_macs() const override { return last_macs_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  Tensor weight_, bias_;

 protected:
  // Registers weight (and bias) filled with zeros, drawing no random numbers (see Conv2d).
  Linear(int64_t in, int64_t out, bool bias);

 private:
  int64_t in_, out_;
  int64_t last_macs_ = 0;
};

// A module whose output can go through a ReLU inside its own kernels: batch norm, whose BN + ReLU
// then costs no pass of its own, forward or backward (tensor/ops.h, batch_norm's `relu`), nor
// does the addition of a residual block's shortcut before that ReLU (batch_norm's `residual`).
class FusesRelu {
 public:
  virtual ~FusesRelu() = default;
  // relu(forward(x) + residual) in one op; an undefined residual adds nothing. With pact.clip
  // defined, the ReLU's output also goes through the next layer's PACT in the same passes
  // (batch_norm's `pact`): into the output, or, given `tapped`, into *tapped beside the plain
  // output (batch_norm's `tapped`: one op, two outputs).
  virtual Tensor forward_relu(const Tensor& x, const Tensor& residual, const PactAfter& pact, Tensor* tapped) = 0;
};
// relu(m.forward(x)): in one op where m is a FusesRelu, else forward, then relu.
Tensor relu_after(Module& m, const Tensor& x);
// relu(m.forward(x) + residual): in one op where m is a FusesRelu, else forward, add, relu.
Tensor add_relu_after(Module& m, const Tensor& x, const Tensor& residual);

// A layer whose input quantizer can run inside the op before it (quant::QConv2d with PACT):
// input_pact() says what that quantizer applies now (false: it cannot be handed over), and
// forward_quantized(xq) is forward() for an input already quantized so.
class QuantizesInput {
 public:
  virtual ~QuantizesInput() = default;
  virtual bool input_pact(PactAfter* pact) = 0;
  virtual Tensor forward_quantized(const Tensor& xq) = 0;
};
// next.forward(relu(m.forward(x))): where m is a FusesRelu and next a QuantizesInput that can
// hand its PACT over, m's op writes the quantized input directly (a residual block's first BN and
// second conv: one pass over the activations fewer each way), else relu_after, then next.forward.
Tensor relu_into(Module& m, const Tensor& x, Module& next);

// A residual block whose input two layers read: its first convolution, through PACT, and its
// shortcut, as it is. The op that makes that input (the stem's BN or the block before's last BN)
// can write the convolution's quantized copy too, as a second output of the same pass (batch_norm's
// `tapped`): one pass over the activations fewer each way, and backward the two branches'
// gradients are added inside the BN's first pass instead of by an add of their own.
//   input_pact(): the PACT the first convolution applies now (false: it cannot be handed over,
//                 e.g. a float layer, LSQ, or a temporal shift before it).
//   forward_chained(x, xq, next, next_xq): forward(x), given xq = x through input_pact's PACT
//                 (undefined: the convolution quantizes x itself); when `next` (the block after,
//                 or null) can take it, *next_xq receives the output's copy for it (else undefined;
//                 next_xq may be null: no copy).
class SharesQuantizedInput {
 public:
  virtual ~SharesQuantizedInput() = default;
  virtual bool input_pact(PactAfter* pact) = 0;
  virtual Tensor forward_chained(const Tensor& x, const Tensor& xq, SharesQuantizedInput* next, Tensor* next_xq) = 0;
};
// relu(m.forward(x) [+ residual]) (residual may be undefined); where m is a FusesRelu and `next`
// can take its input quantized, next's copy goes to *next_xq in the same op, which is left
// undefined otherwise (next and next_xq may be null: no copy).
Tensor relu_tapped(Module& m, const Tensor& x, const Tensor& residual, SharesQuantizedInput* next, Tensor* next_xq);
// The blocks in order, from x and its quantized copy xq for blocks[0] (may be undefined), each
// block handing the next its input's copy where both can (SharesQuantizedInput).
Tensor forward_blocks(const std::vector<Module*>& blocks, Tensor x, Tensor xq);

// x: (N, C, H, W) or (N, C). Training normalises with the batch statistics and updates the
// running ones (momentum 0.1, unbiased variance, as PyTorch); eval uses the running ones.
// State dict: weight, bias, running_mean, running_var, num_batches_tracked (int64, shape []).
class BatchNorm2d : public Module, public FusesRelu {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override { return forward(x, false); }
  Tensor forward_relu(const Tensor& x, const Tensor& residual, const PactAfter& pact, Tensor* tapped) override {
    return forward(x, true, residual, pact, tapped);
  }
  // relu: relu(forward(x)), fused; residual (optional): added before the ReLU, in the same pass;
  // pact (optional): PACT after the ReLU, in the same pass, into the output or (tapped) into
  // *tapped (batch_norm's arguments)
  Tensor forward(const Tensor& x, bool relu, const Tensor& residual = Tensor(), const PactAfter& pact = PactAfter(),
                 Tensor* tapped = nullptr);
  std::string type_name() const override { return "BatchNorm2d"; }
  std::string extra_repr() const override;
  int64_t channels() const { return channels_; }
  // Training-mode normalisation (batch statistics) that leaves the running statistics alone:
  // block swapping runs a block at another bit-width without moving that bit-width's statistics.
  Tensor forward_frozen(const Tensor& x, bool relu = false, const Tensor& residual = Tensor(),
                        const PactAfter& pact = PactAfter(), Tensor* tapped = nullptr);
  // BN recalibration sets 1 / (k + 1) at batch k: a cumulative average of the batch statistics.
  void set_momentum(double m) { momentum_ = m; }
  double momentum() const { return momentum_; }
  double eps() const { return eps_; }

  Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
  // Synchronised BN (data-parallel training, nn/distributed.h): in training, the batch statistics
  // are those of every process's batch together (batch_norm_sync). Off: each process normalises
  // with its own batch, as PyTorch's DDP does by default.
  bool sync = false;

 private:
  int64_t channels_;
  double eps_, momentum_;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

class ReLU6 : public Module {
 public:
  Tensor forward(const Tensor& x) override { return relu6(x); }
  std::string type_name() const override { return "ReLU6"; }
};

class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  std::string type_name() const override { return "Identity"; }
};

// x: (N, C, H, W) -> (N, C, OH, OW); stride defaults to the kernel size, as in PyTorch.
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t kernel, int64_t stride = -1, int64_t pad = 0);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;

 private:
  int64_t kernel_, stride_, pad_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = -1, int64_t pad = 0);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override;

 private:
  int64_t kernel_, stride_, pad_;
};

// Output size 1 only: x (N, C, H, W) -> (N, C, 1, 1), as nn.AdaptiveAvgPool2d(1).
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(int64_t output_size = 1);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
  std::string extra_repr() const override { return "output_size=1"; }
};

// Zeroes elements with probability p in training (scaling the rest by 1 / (1 - p)). The layer
// owns its Generator, so a checkpoint can save and restore it.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5, uint64_t seed = 0);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  Generator& generator() { return gen_; }

 private:
  double p_;
  Generator gen_;
};

// x: (N, d1, d2, ...) -> (N, d1 * d2 * ...) (dimensions start_dim..end flattened).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1) : start_dim_(start_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim_); }
  std::string type_name() const override { return "Flatten"; }

 private:
  int64_t start_dim_;
};

// Runs its children in order; they are named "0", "1", ... as in nn.Sequential.
class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<ModulePtr> modules);
  Sequential& add(ModulePtr m);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return children().size(); }
  Module& operator[](size_t i) const;
  ModulePtr at(size_t i) const;
};

// ---- initialisation (in place, no autograd) -------------------------------------------------------

// fan_in = size(1) * receptive field; fan_out = size(0) * receptive field (as torch.nn.init).
int64_t fan_in(const Tensor& w);
int64_t fan_out(const Tensor& w);
// N(0, 2 / fan_out): torchvision's conv init (kaiming_normal_, mode="fan_out", relu).
void kaiming_normal_fan_out_(Tensor& w, Generator& gen);
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default (kaiming_uniform_ with a = sqrt(5)).
void kaiming_uniform_default_(Tensor& w, Generator& gen);
void uniform_(Tensor& t, double lo, double hi, Generator& gen);
void normal_(Tensor& t, double mean, double std, Generator& gen);

}  // namespace anybit::nn
