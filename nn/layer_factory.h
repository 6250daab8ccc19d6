// layer_factory.h - how the model zoo builds its layers, so one zoo serves FP and quantized nets.
//
// Every model in nn/models.h takes a LayerFactory and asks it for each conv, linear and BN layer.
// FloatLayers (the default) gives the plain nn layers. quant/ provides a factory that gives
// quantized conv/linear layers and multi-bit-width BN (METHOD.md section 2) instead, while
// stem_conv() and classifier() stay full precision in every factory.
//
// Blocks: models call begin_block(name) at the start of every residual block (BasicBlock,
// Bottleneck, inverted residual) and, for networks without residual blocks, before every
// quantized layer (LeNet). The quantized factory uses this to give the layers of one block a
// shared bit-width setting that dynamic block swapping (METHOD.md section 5) can override.
#pragma once
#include <memory>
#include <string>

#include "nn/module.h"
#include "tensor/random.h"

namespace anybit::nn {

struct ConvSpec {
  int64_t in, out, kernel, stride = 1, pad = 0, dilation = 1, groups = 1;
  bool bias = false;
  // The conv's input can be negative (no ReLU before it, e.g. MobileNetV2's expand conv after a
  // linear bottleneck): a quantized factory then gives it a signed activation quantizer.
  bool signed_input = false;
};

class LayerFactory {
 public:
  virtual ~LayerFactory() = default;
  // The first conv and the last linear layer: always full precision.
  virtual ModulePtr stem_conv(const ConvSpec& s);
  virtual ModulePtr classifier(int64_t in, int64_t out);
  // Every other conv / linear / BN layer of the network.
  virtual ModulePtr conv(const ConvSpec& s);
  virtual ModulePtr linear(int64_t in, int64_t out, bool bias = true);
  virtual ModulePtr batch_norm(int64_t channels);
  virtual void begin_block(const std::string& name) {}
  // Initialisation generator (models are initialised as torchvision does it).
  Generator& gen();
  void seed(uint64_t s);

 private:
  std::shared_ptr<Generator> gen_;
};

// The plain float layers: Conv2d, Linear, BatchNorm2d of nn/layers.h (the base class's defaults).
class FloatLayers : public LayerFactory {
 public:
  explicit FloatLayers(uint64_t seed = 0) { this->seed(seed); }
};

}  // namespace anybit::nn
