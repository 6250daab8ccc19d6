// qlayers.h - quantized layers and the model-building factory (METHOD.md section 2).
//
// A quantized layer is the float op composed with quantizers (STYLE.md rule 13): QConv2d runs
//   conv2d(pact_quantize(x, a_b, b), quantize_weight(w, b), bias)
// where b is the bit-width of the layer's block (bits.h). Its parameters are named as the float
// layer's (weight, bias), plus one clip value per bit-width (clip_b8, clip_b4, ...), so an FP
// checkpoint loads into it directly. MultiBatchNorm2d holds one BN set per bit-width of the set
// (bn.0, bn.1, ... in bit-set order, as AdaBits names them) and uses the active one.
//
// QuantLayers is the nn::LayerFactory that builds any model of the zoo (nn/models.h) with these
// layers, keeping the stem conv and the classifier in full precision.
// Read next: quant/qmodel.h (a quantized model as a whole), quant/joint_trainer.h.
#pragma once
#include <memory>
#include <vector>

#include "nn/layer_factory.h"
#include "nn/layers.h"
#include "quant/bits.h"
#include "quant/quantizers.h"

namespace anybit::quant {

struct QuantOptions {
  std::vector<int> bit_set{8, 6, 4, 2};
  WeightQuantOptions weight;
  double clip_init = 8.0;  // 2.0 when fine-tuning from FP weights (METHOD.md section 2)
};

// The per-bit-width learnable clip values of one layer's input.
class ActClips {
 public:
  ActClips(const std::vector<int>& bit_set, double init);
  Tensor& clip(int bits);  // the one-element parameter of bit-width `bits`
  std::vector<Tensor>& all() { return clips_; }

 private:
  std::vector<int> bit_set_;
  std::vector<Tensor> clips_;
};

class QConv2d : public nn::Module {
 public:
  QConv2d(const nn::ConvSpec& spec, std::shared_ptr<BlockBits> block, const QuantOptions& opt, Generator& gen);
  Tensor forward(const Tensor& x) override;  // x: (N, C, H, W), non-negative
  std::string type_name() const override { return "QConv2d"; }
  std::string extra_repr() const override;
  // The quantized weights the layer uses at bit-width b (what a deployment would store).
  Tensor quantized_weight(int bits) const { return quantize_weight(weight_, bits, opt_.weight); }
  BlockBits& block() { return *block_; }
  int64_t last_macs() const { return last_macs_; }  // per sample, of the last forward

  Tensor weight_, bias_;

 private:
  int64_t last_macs_ = 0;
  nn::ConvSpec spec_;
  std::shared_ptr<BlockBits> block_;
  QuantOptions opt_;
  ActClips clips_;
};

class QLinear : public nn::Module {
 public:
  QLinear(int64_t in, int64_t out, bool bias, std::shared_ptr<BlockBits> block, const QuantOptions& opt,
          Generator& gen);
  Tensor forward(const Tensor& x) override;  // x: (N, in), non-negative
  std::string type_name() const override { return "QLinear"; }
  std::string extra_repr() const override;
  Tensor quantized_weight(int bits) const { return quantize_weight(weight_, bits, opt_.weight); }
  BlockBits& block() { return *block_; }
  int64_t last_macs() const { return in_ * out_; }

  Tensor weight_, bias_;

 private:
  int64_t in_, out_;
  std::shared_ptr<BlockBits> block_;
  QuantOptions opt_;
  ActClips clips_;
};

class MultiBatchNorm2d : public nn::Module {
 public:
  MultiBatchNorm2d(int64_t channels, std::shared_ptr<BlockBits> block);
  Tensor forward(const Tensor& x) override;  // x: (N, C, H, W) or (N, C)
  std::string type_name() const override { return "MultiBatchNorm2d"; }
  nn::BatchNorm2d& set(int bits);  // the BN set of bit-width `bits`

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
