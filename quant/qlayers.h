// qlayers.h - quantized layers and the model-building factory (METHOD.md section 2).
//
// A quantized layer is the float layer composed with two quantizers (STYLE.md rule 13): QConv2d
// is an nn::Conv2d whose forward runs
//   conv2d(act_quant(x, b), weight_quant(w, b), bias)
// where b is the bit-width of the layer's block (bits.h) and the quantizers are the objects of
// quant/quantizer.h chosen by name (QuantOptions::weight_quant, act_quant: DoReFa and PACT by
// default). Its parameters are the float layer's (weight, bias), named as in nn::Conv2d, plus the
// quantizers' own (clip_b8, clip_b4, ... for PACT), so an FP checkpoint loads into it directly.
// MultiBatchNorm2d holds one BN set per bit-width of the set (bn.0, bn.1, ... in bit-set order, as
// AdaBits names them) and uses the active one.
//
// QuantLayers is the nn::LayerFactory that builds any model of the zoo (nn/models.h) with these
// layers, keeping the stem conv and the classifier in full precision.
// Read next: quant/qmodel.h (a quantized model as a whole), quant/joint_trainer.h.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layer_factory.h"
#include "nn/layers.h"
#include "quant/bits.h"
#include "quant/quantizer.h"

namespace anybit::quant {

struct QuantOptions {
  std::vector<int> bit_set{8, 6, 4, 2};
  std::string weight_quant = "dorefa";  // a name of the registry (quant/quantizer_registry.cpp)
  std::string act_quant = "pact";
  WeightQuantOptions weight;            // DoReFa's options
  double clip_init = 8.0;  // 2.0 when fine-tuning from FP weights (METHOD.md section 2)
};

// What QConv2d and QLinear share: the float weight they quantize, their two quantizers, and the
// block whose bit-width they follow.
class QuantizedLayer {
 public:
  virtual ~QuantizedLayer() = default;
  WeightQuantizer& weight_quantizer() { return *wq_; }
  ActQuantizer& act_quantizer() { return *aq_; }
  BlockBits& block() { return *block_; }
  virtual Tensor& float_weight() = 0;
  // The quantized weights the layer uses at bit-width b (what a deployment would store).
  Tensor quantized_weight(int bits) { return wq_->forward(float_weight(), bits); }
  // Both quantizers' parameters: the weight quantizer's first.
  std::vector<QuantParam> quant_params() const;
  virtual int64_t quantized_macs() const = 0;  // per sample, of the last forward

 protected:
  QuantizedLayer(std::shared_ptr<BlockBits> block, const QuantOptions& opt, bool signed_input);

  std::shared_ptr<BlockBits> block_;
  std::unique_ptr<WeightQuantizer> wq_;
  std::unique_ptr<ActQuantizer> aq_;
};

class QConv2d : public nn::Conv2d, public QuantizedLayer, public nn::QuantizesInput {
 public:
  QConv2d(const nn::ConvSpec& spec, std::shared_ptr<BlockBits> block, const QuantOptions& opt, Generator& gen);
  Tensor forward(const Tensor& x) override;  // x: (N, C, H, W)
  // With unsigned PACT as its activation quantizer: the clip and bit-width it applies now (the
  // layer before, a BN + ReLU, can then apply it in its own op: nn::relu_into)
  bool input_pact(PactAfter* pact) override;
  Tensor forward_quantized(const Tensor& xq) override;  // forward() of an input that input_pact's PACT made
  std::string type_name() const override { return "QConv2d"; }
  std::string extra_repr() const override;
  Tensor& float_weight() override { return weight_; }
  int64_t quantized_macs() const override { return last_macs(); }

 private:
  std::string bits_str_;
};

class QLinear : public nn::Linear, public QuantizedLayer {
 public:
  QLinear(int64_t in, int64_t out, bool bias, std::shared_ptr<BlockBits> block, const QuantOptions& opt,
          Generator& gen);
  Tensor forward(const Tensor& x) override;  // x: (N, in), non-negative
  std::string type_name() const override { return "QLinear"; }
  std::string extra_repr() const override;
  Tensor& float_weight() override { return weight_; }
  int64_t quantized_macs() const override { return last_macs(); }

 private:
  std::string bits_str_;
};

class MultiBatchNorm2d : public nn::Module, public nn::FusesRelu {
 public:
  MultiBatchNorm2d(int64_t channels, std::shared_ptr<BlockBits> block);
  Tensor forward(const Tensor& x) override { return forward(x, false); }  // x: (N, C, H, W) or (N, C)
  Tensor forward_relu(const Tensor& x, const Tensor& residual, const PactAfter& pact, Tensor* tapped) override {
    return forward(x, true, residual, pact, tapped);
  }
  // relu: relu(forward(x)), fused; residual (optional): added before the ReLU; pact (optional):
  // PACT after the ReLU, into the output or *tapped (nn::BatchNorm2d)
  Tensor forward(const Tensor& x, bool relu, const Tensor& residual = Tensor(), const PactAfter& pact = PactAfter(),
                 Tensor* tapped = nullptr);
  std::string type_name() const override { return "MultiBatchNorm2d"; }
  nn::BatchNorm2d& set(int bits);  // the BN set of bit-width `bits`
  // The full-precision BN this layer replaces has the state of one set: an FP checkpoint's
  // "<this>.<field>" loads into every set's "<this>.bn.<i>.<field>" (QuantModel::load_fp_state_dict).
  const std::vector<std::shared_ptr<nn::BatchNorm2d>>& sets() const { return sets_; }

 private:
  std::shared_ptr<BlockBits> block_;
  std::vector<std::shared_ptr<nn::BatchNorm2d>> sets_;
};

class QuantLayers : public nn::LayerFactory {
 public:
  explicit QuantLayers(const QuantOptions& opt);
  nn::ModulePtr conv(const nn::ConvSpec& s) override;
  nn::ModulePtr linear(int64_t in, int64_t out, bool bias) override;
  nn::ModulePtr batch_norm(int64_t channels) override;
  void begin_block(const std::string& name) override;

  std::shared_ptr<BitState> state() const { return state_; }
  // The swappable blocks, in forward order (the stem's BN belongs to no block).
  const std::vector<std::shared_ptr<BlockBits>>& blocks() const { return blocks_; }

 private:
  QuantOptions opt_;
  std::shared_ptr<BitState> state_;
  std::shared_ptr<BlockBits> stem_;     // layers before the first block follow the model
  std::shared_ptr<BlockBits> current_;
  std::vector<std::shared_ptr<BlockBits>> blocks_;
};

}  // namespace anybit::quant
