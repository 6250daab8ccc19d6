// layers.cpp - the float layers. See layers.h.
#include "nn/layers.h"

#include <cmath>
#include <sstream>

#include "autograd/autograd.h"
#include "tensor/kernels.h"

namespace anybit::nn {

// ---- initialisation -------------------------------------------------------------------------------

static int64_t receptive_field(const Tensor& w) {
  int64_t r = 1;
  for (int64_t d = 2; d < w.dim(); ++d) r *= w.size(d);
  return r;
}

int64_t fan_in(const Tensor& w) {
  AB_CHECK(w.dim() >= 2, "fan_in: expected a weight with at least 2 dimensions, got ", shape_str(w.shape()));
  return w.size(1) * receptive_field(w);
}

int64_t fan_out(const Tensor& w) {
  AB_CHECK(w.dim() >= 2, "fan_out: expected a weight with at least 2 dimensions, got ", shape_str(w.shape()));
  return w.size(0) * receptive_field(w);
}

void uniform_(Tensor& t, double lo, double hi, Generator& gen) {
  NoGradGuard ng;
  t.copy_(Tensor::rand(t.shape(), gen, lo, hi, t.dtype()));
}

void normal_(Tensor& t, double mean, double std, Generator& gen) {
  NoGradGuard ng;
  t.copy_(Tensor::randn(t.shape(), gen, mean, std, t.dtype()));
}

void kaiming_normal_fan_out_(Tensor& w, Generator& gen) {
  // gain(relu) = sqrt(2); std = gain / sqrt(fan_out)
  normal_(w, 0.0, std::sqrt(2.0 / double(fan_out(w))), gen);
}

void kaiming_uniform_default_(Tensor& w, Generator& gen) {
  // kaiming_uniform_ with a = sqrt(5): gain = sqrt(2 / (1 + 5)), bound = gain * sqrt(3 / fan_in)
  // = 1 / sqrt(fan_in).
  double bound = 1.0 / std::sqrt(double(fan_in(w)));
  uniform_(w, -bound, bound, gen);
}

// ---- Conv2d -----------------------------------------------------------------------------------------

Conv2d::Conv2d(const ConvSpec& s) : spec_(s) {
  AB_CHECK(s.in > 0 && s.out > 0 && s.kernel > 0 && s.stride > 0 && s.pad >= 0 && s.dilation > 0 && s.groups > 0,
           "Conv2d: invalid spec in=", s.in, " out=", s.out, " kernel=", s.kernel, " stride=", s.stride,
           " pad=", s.pad, " dilation=", s.dilation, " groups=", s.groups);
  AB_CHECK(s.in % s.groups == 0 && s.out % s.groups == 0, "Conv2d: in (", s.in, ") and out (", s.out,
           ") channels must be divisible by groups (", s.groups, ")");
  weight_ = Tensor::zeros({s.out, s.in / s.groups, s.kernel, s.kernel});
  register_parameter("weight", &weight_);
  if (s.bias) {
    bias_ = Tensor::zeros({s.out});
    register_parameter("bias", &bias_);
  }
}

Conv2d::Conv2d(const ConvSpec& s, Generator& gen) : Conv2d(s) {
  kaiming_uniform_default_(weight_, gen);
  if (s.bias) {
    double bound = 1.0 / std::sqrt(double(fan_in(weight_)));
    uniform_(bias_, -bound, bound, gen);
  }
}

Conv2dOptions Conv2d::options() const {
  return Conv2dOptions::make(spec_.stride, spec_.pad, spec_.dilation, spec_.groups);
}

Tensor Conv2d::forward_with(const Tensor& x, const Tensor& weight) {
  Tensor y = conv2d(x, weight, bias_, options());
  // per sample: every output element is a dot product of (in / groups) * k * k terms
  last_macs_ = y.numel() / std::max<int64_t>(1, y.size(0)) * (spec_.in / spec_.groups) * spec_.kernel * spec_.kernel;
  return y;
}

std::string Conv2d::extra_repr() const {
  std::ostringstream os;
  os << spec_.in << ", " << spec_.out << ", kernel_size=(" << spec_.kernel << ", " << spec_.kernel << "), stride=("
     << spec_.stride << ", " << spec_.stride << ")";
  if (spec_.pad) os << ", padding=(" << spec_.pad << ", " << spec_.pad << ")";
  if (spec_.dilation != 1) os << ", dilation=(" << spec_.dilation << ", " << spec_.dilation << ")";
  if (spec_.groups != 1) os << ", groups=" << spec_.groups;
  if (!spec_.bias) os << ", bias=False";
  return os.str();
}

// ---- Linear -----------------------------------------------------------------------------------------

Linear::Linear(int64_t in, int64_t out, bool bias) : in_(in), out_(out) {
  AB_CHECK(in > 0 && out > 0, "Linear: in (", in, ") and out (", out, ") features must be positive");
  weight_ = Tensor::zeros({out, in});
  register_parameter("weight", &weight_);
  if (bias) {
    bias_ = Tensor::zeros({out});
    register_parameter("bias", &bias_);
  }
}

Linear::Linear(int64_t in, int64_t out, bool bias, Generator& gen) : Linear(in, out, bias) {
  kaiming_uniform_default_(weight_, gen);
  if (bias) {
    double bound = 1.0 / std::sqrt(double(in));
    uniform_(bias_, -bound, bound, gen);
  }
}

Tensor Linear::forward_with(const Tensor& x, const Tensor& weight) {
  last_macs_ = in_ * out_;
  return linear(x, weight, bias_);
}

std::string Linear::extra_repr() const {
  std::ostringstream os;
  os << "in_features=" << in_ << ", out_features=" << out_ << ", bias=" << (bias_.defined() ? "True" : "False");
  return os.str();
}

// ---- BatchNorm2d --------------------------------------------------------------------------------------

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum)
    : channels_(channels), eps_(eps), momentum_(momentum) {
  AB_CHECK(channels > 0, "BatchNorm2d: channels must be positive, got ", channels);
  weight_ = Tensor::ones({channels});
  bias_ = Tensor::zeros({channels});
  running_mean_ = Tensor::zeros({channels});
  running_var_ = Tensor::ones({channels});
  num_batches_tracked_ = Tensor::zeros({}, DType::I64);
  register_parameter("weight", &weight_);
  register_parameter("bias", &bias_);
  register_buffer("running_mean", &running_mean_);
  register_buffer("running_var", &running_var_);
  register_buffer("num_batches_tracked", &num_batches_tracked_);
}

Tensor BatchNorm2d::forward(const Tensor& x, bool relu, const Tensor& residual, const PactAfter& pact,
                            Tensor* tapped) {
  AB_CHECK((x.dim() == 2 || x.dim() == 4) && x.size(1) == channels_, "BatchNorm2d(", channels_,
           "): expected x (N, ", channels_, ") or (N, ", channels_, ", H, W), got ", shape_str(x.shape()));
  if (is_training()) {
    // A counter only (momentum is fixed, as PyTorch's default); kept for state-dict parity.
    // Incremented where it lives (on a GPU, without a round trip to the host).
    kernel::increment(num_batches_tracked_);
  }
  if (sync && is_training())
    return batch_norm_sync(x, weight_, bias_, running_mean_, running_var_, momentum_, eps_, relu, residual, pact,
                           tapped);
  return batch_norm(x, weight_, bias_, running_mean_, running_var_, is_training(), momentum_, eps_, relu, residual,
                    pact, tapped);
}

Tensor BatchNorm2d::forward_frozen(const Tensor& x, bool relu, const Tensor& residual, const PactAfter& pact,
                                   Tensor* tapped) {
  if (sync)
    return batch_norm_sync(x, weight_, bias_, Tensor(), Tensor(), momentum_, eps_, relu, residual, pact, tapped);
  return batch_norm(x, weight_, bias_, Tensor(), Tensor(), true, momentum_, eps_, relu, residual, pact, tapped);
}

Tensor relu_after(Module& m, const Tensor& x) {
  if (auto* f = dynamic_cast<FusesRelu*>(&m)) return f->forward_relu(x, Tensor(), PactAfter(), nullptr);
  return relu(m.forward(x));
}

Tensor add_relu_after(Module& m, const Tensor& x, const Tensor& residual) {
  if (auto* f = dynamic_cast<FusesRelu*>(&m)) return f->forward_relu(x, residual, PactAfter(), nullptr);
  return relu(add(m.forward(x), residual));
}

Tensor relu_into(Module& m, const Tensor& x, Module& next) {
  auto* f = dynamic_cast<FusesRelu*>(&m);
  auto* q = dynamic_cast<QuantizesInput*>(&next);
  PactAfter pact;
  if (f && q && q->input_pact(&pact)) return q->forward_quantized(f->forward_relu(x, Tensor(), pact, nullptr));
  return next.forward(relu_after(m, x));
}

Tensor relu_tapped(Module& m, const Tensor& x, const Tensor& residual, SharesQuantizedInput* next, Tensor* next_xq) {
  if (next_xq) *next_xq = Tensor();
  auto* f = dynamic_cast<FusesRelu*>(&m);
  PactAfter pact;
  if (f && next && next_xq && next->input_pact(&pact)) return f->forward_relu(x, residual, pact, next_xq);
  return residual.defined() ? add_relu_after(m, x, residual) : relu_after(m, x);
}

Tensor forward_blocks(const std::vector<Module*>& blocks, Tensor x, Tensor xq) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto* block = dynamic_cast<SharesQuantizedInput*>(blocks[i]);
    SharesQuantizedInput* next = i + 1 < blocks.size() ? dynamic_cast<SharesQuantizedInput*>(blocks[i + 1]) : nullptr;
    AB_CHECK(block || !xq.defined(), "forward_blocks: block ", i, " (", blocks[i]->type_name(),
             ") was handed a quantized input it cannot take");
    Tensor next_xq;
    x = block ? block->forward_chained(x, xq, next, &next_xq) : blocks[i]->forward(x);
    xq = next_xq;
  }
  return x;
}

std::string BatchNorm2d::extra_repr() const {
  std::ostringstream os;
  os << channels_ << ", eps=" << eps_ << ", momentum=" << momentum_;
  return os.str();
}

// ---- pooling ------------------------------------------------------------------------------------------

MaxPool2d::MaxPool2d(int64_t kernel, int64_t stride, int64_t pad)
    : kernel_(kernel), stride_(stride < 0 ? kernel : stride), pad_(pad) {}

Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, kernel_, stride_, pad_); }

std::string MaxPool2d::extra_repr() const {
  std::ostringstream os;
  os << "kernel_size=" << kernel_ << ", stride=" << stride_ << ", padding=" << pad_;
  return os.str();
}

AvgPool2d::AvgPool2d(int64_t kernel, int64_t stride, int64_t pad)
    : kernel_(kernel), stride_(stride < 0 ? kernel : stride), pad_(pad) {}

Tensor AvgPool2d::forward(const Tensor& x) { return avg_pool2d(x, kernel_, stride_, pad_); }

std::string AvgPool2d::extra_repr() const {
  std::ostringstream os;
  os << "kernel_size=" << kernel_ << ", stride=" << stride_ << ", padding=" << pad_;
  return os.str();
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t output_size) {
  AB_CHECK(output_size == 1, "AdaptiveAvgPool2d: only output_size 1 is supported, got ", output_size);
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  check_dim("AdaptiveAvgPool2d", "x", x, 4);
  return global_avg_pool2d(x).reshape({x.size(0), x.size(1), 1, 1});
}

// ---- Dropout ------------------------------------------------------------------------------------------

Dropout::Dropout(double p, uint64_t seed) : p_(p), gen_(seed) {
  AB_CHECK(p >= 0 && p < 1, "Dropout: p must be in [0, 1), got ", p);
}

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p_, is_training(), gen_); }

std::string Dropout::extra_repr() const {
  std::ostringstream os;
  os << "p=" << p_;
  return os.str();
}

// ---- Sequential ---------------------------------------------------------------------------------------

Sequential::Sequential(std::initializer_list<ModulePtr> modules) {
  for (auto& m : modules) add(m);
}

Sequential& Sequential::add(ModulePtr m) {
  AB_CHECK(m, "Sequential.add: null module");
  register_module(std::to_string(children().size()), m);
  return *this;
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& c : children()) y = c.second->forward(y);
  return y;
}

Module& Sequential::operator[](size_t i) const { return *at(i); }

ModulePtr Sequential::at(size_t i) const {
  AB_CHECK(i < children().size(), "Sequential: index ", i, " out of range (", children().size(), " modules)");
  return children()[i].second;
}

}  // namespace anybit::nn
