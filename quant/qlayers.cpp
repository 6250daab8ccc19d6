// qlayers.cpp - quantized conv/linear, multi-bit-width BN, and the quantized layer factory.
#include "quant/qlayers.h"

#include <cmath>

#include "autograd/autograd.h"
#include "tensor/random.h"

namespace anybit::quant {

// ---- clips ---------------------------------------------------------------------------------------

ActClips::ActClips(const std::vector<int>& bit_set, double init) : bit_set_(bit_set) {
  for (size_t i = 0; i < bit_set.size(); ++i) clips_.push_back(Tensor::full({1}, init));
}

Tensor& ActClips::clip(int bits) {
  for (size_t i = 0; i < bit_set_.size(); ++i)
    if (bit_set_[i] == bits) return clips_[i];
  AB_FAIL("no clip value for bit-width ", bits);
}

static std::string clip_name(int bits) { return "clip_b" + std::to_string(bits); }

// ---- QConv2d -------------------------------------------------------------------------------------

QConv2d::QConv2d(const nn::ConvSpec& spec, std::shared_ptr<BlockBits> block, const QuantOptions& opt,
                 Generator& gen)
    : spec_(spec), block_(std::move(block)), opt_(opt), clips_(opt.bit_set, opt.clip_init) {
  AB_CHECK(spec.in % spec.groups == 0 && spec.out % spec.groups == 0, "QConv2d: channels ", spec.in,
           " -> ", spec.out, " not divisible by groups ", spec.groups);
  // Kaiming normal, fan_out, ReLU gain: torchvision's initialisation of ResNet convs.
  double fan_out = (double)spec.out * spec.kernel * spec.kernel / spec.groups;
  weight_ = Tensor::randn({spec.out, spec.in / spec.groups, spec.kernel, spec.kernel}, gen, 0,
                          std::sqrt(2.0 / fan_out));
  register_parameter("weight", &weight_);
  if (spec.bias) {
    bias_ = Tensor::zeros({spec.out});
    register_parameter("bias", &bias_);
  }
  for (size_t i = 0; i < opt.bit_set.size(); ++i)
    register_parameter(clip_name(opt.bit_set[i]), &clips_.all()[i]);
}

Tensor QConv2d::forward(const Tensor& x) {
  int b = block_->bits();
  Tensor xq = pact_quantize(x, clips_.clip(b), b);
  Tensor wq = quantize_weight(weight_, b, opt_.weight);
  Tensor y = conv2d(xq, wq, bias_, {spec_.stride, spec_.stride, spec_.pad, spec_.pad, spec_.dilation,
                                    spec_.dilation, spec_.groups});
  // MACs per sample: every output element costs (C_in / groups) * KH * KW multiply-adds.
  last_macs_ = y.numel() / std::max<int64_t>(y.size(0), 1) * (spec_.in / spec_.groups) * spec_.kernel * spec_.kernel;
  return y;
}

std::string QConv2d::extra_repr() const {
  return std::to_string(spec_.in) + ", " + std::to_string(spec_.out) + ", kernel_size=" +
         std::to_string(spec_.kernel) + ", stride=" + std::to_string(spec_.stride) + ", bits=" +
         bit_set_str(opt_.bit_set);
}

// ---- QLinear -------------------------------------------------------------------------------------

QLinear::QLinear(int64_t in, int64_t out, bool bias, std::shared_ptr<BlockBits> block, const QuantOptions& opt,
                 Generator& gen)
    : in_(in), out_(out), block_(std::move(block)), opt_(opt), clips_(opt.bit_set, opt.clip_init) {
  // PyTorch's default Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
  double bound = 1.0 / std::sqrt((double)in);
  weight_ = Tensor::rand({out, in}, gen, -bound, bound);
  register_parameter("weight", &weight_);
  if (bias) {
    bias_ = Tensor::rand({out}, gen, -bound, bound);
    register_parameter("bias", &bias_);
  }
  for (size_t i = 0; i < opt.bit_set.size(); ++i)
    register_parameter(clip_name(opt.bit_set[i]), &clips_.all()[i]);
}

Tensor QLinear::forward(const Tensor& x) {
  int b = block_->bits();
  return linear(pact_quantize(x, clips_.clip(b), b), quantize_weight(weight_, b, opt_.weight), bias_);
}

std::string QLinear::extra_repr() const {
  return "in_features=" + std::to_string(in_) + ", out_features=" + std::to_string(out_) + ", bits=" +
         bit_set_str(opt_.bit_set);
}

// ---- BN ------------------------------------------------------------------------------------------

namespace {
// The BN sets of one layer, named 0, 1, ... (a PyTorch ModuleList).
class BNList : public nn::Module {
 public:
  explicit BNList(const std::vector<std::shared_ptr<nn::BatchNorm2d>>& sets) {
    for (size_t i = 0; i < sets.size(); ++i) register_module(std::to_string(i), sets[i]);
  }
  Tensor forward(const Tensor&) override { AB_FAIL("BNList: call a set, not the list"); }
  std::string type_name() const override { return "ModuleList"; }
};
}  // namespace

MultiBatchNorm2d::MultiBatchNorm2d(int64_t channels, std::shared_ptr<BlockBits> block) : block_(std::move(block)) {
  for (size_t i = 0; i < block_->model->bit_set.size(); ++i) sets_.push_back(std::make_shared<nn::BatchNorm2d>(channels));
  register_module("bn", std::make_shared<BNList>(sets_));
}

nn::BatchNorm2d& MultiBatchNorm2d::set(int bits) { return *sets_[block_->model->index_of(bits)]; }

Tensor MultiBatchNorm2d::forward(const Tensor& x) {
  nn::BatchNorm2d& s = set(block_->bits());
  // A block swapped to the teacher's bit-width inside a student pass must not move the teacher's
  // running statistics (METHOD.md section 5).
  if (is_training() && block_->freeze_bn_stats) return s.forward_frozen(x);
  return s.forward(x);
}

// ---- factory -------------------------------------------------------------------------------------

QuantLayers::QuantLayers(const QuantOptions& opt) : opt_(opt), state_(std::make_shared<BitState>()) {
  state_->bit_set = opt.bit_set;
  state_->active = opt.bit_set.front();
  // B for the truncate store: the largest bit-width below 32 of the set.
  int B = 0;
  for (int b : opt.bit_set)
    if (b != kFullPrecision) B = std::max(B, b);
  opt_.weight.store_bits = B;
  stem_ = std::make_shared<BlockBits>();
  stem_->name = "stem";
  stem_->model = state_;
  current_ = stem_;
}

nn::ModulePtr QuantLayers::conv(const nn::ConvSpec& s) {
  return std::make_shared<QConv2d>(s, current_, opt_, gen());
}

nn::ModulePtr QuantLayers::linear(int64_t in, int64_t out, bool bias) {
  return std::make_shared<QLinear>(in, out, bias, current_, opt_, gen());
}

nn::ModulePtr QuantLayers::batch_norm(int64_t channels) {
  return std::make_shared<MultiBatchNorm2d>(channels, current_);
}

void QuantLayers::begin_block(const std::string& name) {
  current_ = std::make_shared<BlockBits>();
  current_->name = name;
  current_->model = state_;
  blocks_.push_back(current_);
}

}  // namespace anybit::quant
