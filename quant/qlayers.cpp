// qlayers.cpp - quantized conv/linear, multi-bit-width BN, and the quantized layer factory.
#include "quant/qlayers.h"

#include <cmath>

#include "autograd/autograd.h"
#include "quant/quantizers.h"
#include "tensor/random.h"

namespace anybit::quant {

// ---- what quantized layers share -------------------------------------------------------------------

static QuantizerSpec quantizer_spec(const QuantOptions& opt, bool signed_input) {
  QuantizerSpec spec;
  spec.bit_set = opt.bit_set;
  spec.weight = opt.weight;
  spec.act_init = opt.clip_init;
  spec.signed_input = signed_input;
  return spec;
}

QuantizedLayer::QuantizedLayer(std::shared_ptr<BlockBits> block, const QuantOptions& opt, bool signed_input)
    : block_(std::move(block)),
      wq_(make_weight_quantizer(opt.weight_quant, quantizer_spec(opt, signed_input))),
      aq_(make_act_quantizer(opt.act_quant, quantizer_spec(opt, signed_input))) {}

std::vector<QuantParam> QuantizedLayer::quant_params() const {
  std::vector<QuantParam> all = wq_->params();
  for (auto& p : aq_->params()) all.push_back(p);
  return all;
}

// "bits=8,6,4,2, weights=dorefa, acts=pact" (", signed" when the input may be negative)
static std::string quant_repr(const QuantOptions& opt, bool signed_input) {
  return "bits=" + bit_set_str(opt.bit_set) + ", weights=" + opt.weight_quant + ", acts=" + opt.act_quant +
         (signed_input ? " (signed)" : "");
}

// ---- QConv2d -------------------------------------------------------------------------------------

QConv2d::QConv2d(const nn::ConvSpec& spec, std::shared_ptr<BlockBits> block, const QuantOptions& opt,
                 Generator& gen)
    : nn::Conv2d(spec), QuantizedLayer(std::move(block), opt, spec.signed_input), bits_str_(quant_repr(opt, spec.signed_input)) {
  // Kaiming normal, fan_out, ReLU gain: torchvision's initialisation of ResNet convs.
  NoGradGuard ng;
  double fan_out = (double)spec.out * spec.kernel * spec.kernel / spec.groups;
  weight_.copy_(Tensor::randn(weight_.shape(), gen, 0, std::sqrt(2.0 / fan_out)));
  for (auto& p : quant_params()) register_parameter(p.name, p.tensor);
}

Tensor QConv2d::forward(const Tensor& x) {
  int b = block_->bits();
  // Two statements, not two arguments of one call: C++ leaves the order in which arguments are
  // evaluated to the compiler, and the order of the ops decides the order of autograd's work.
  Tensor xq = aq_->forward(x, b);
  Tensor wq = wq_->forward(weight_, b);
  return forward_with(xq, wq);
}

bool QConv2d::input_pact(PactAfter* pact) {
  auto* p = dynamic_cast<PactActs*>(aq_.get());
  if (!p || p->is_signed()) return false;
  const int b = block_->bits();
  *pact = {p->clip(b), b};
  return true;
}

Tensor QConv2d::forward_quantized(const Tensor& xq) {
  Tensor wq = wq_->forward(weight_, block_->bits());
  return forward_with(xq, wq);
}

std::string QConv2d::extra_repr() const { return nn::Conv2d::extra_repr() + ", " + bits_str_; }

// ---- QLinear -------------------------------------------------------------------------------------

QLinear::QLinear(int64_t in, int64_t out, bool bias, std::shared_ptr<BlockBits> block, const QuantOptions& opt,
                 Generator& gen)
    : nn::Linear(in, out, bias), QuantizedLayer(std::move(block), opt, false), bits_str_(quant_repr(opt, false)) {
  // PyTorch's default Linear initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
  NoGradGuard ng;
  double bound = 1.0 / std::sqrt((double)in);
  weight_.copy_(Tensor::rand(weight_.shape(), gen, -bound, bound));
  if (bias) bias_.copy_(Tensor::rand(bias_.shape(), gen, -bound, bound));
  for (auto& p : quant_params()) register_parameter(p.name, p.tensor);
}

Tensor QLinear::forward(const Tensor& x) {
  int b = block_->bits();
  Tensor xq = aq_->forward(x, b);  // input first, weights second (see QConv2d::forward)
  Tensor wq = wq_->forward(weight_, b);
  return forward_with(xq, wq);
}

std::string QLinear::extra_repr() const { return nn::Linear::extra_repr() + ", " + bits_str_; }

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

Tensor MultiBatchNorm2d::forward(const Tensor& x, bool relu, const Tensor& residual, const PactAfter& pact,
                                 Tensor* tapped) {
  nn::BatchNorm2d& s = set(block_->bits());
  // A block swapped to the teacher's bit-width inside a student pass must not move the teacher's
  // running statistics (METHOD.md section 5).
  if (is_training() && block_->freeze_bn_stats) return s.forward_frozen(x, relu, residual, pact, tapped);
  return s.forward(x, relu, residual, pact, tapped);
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
