// layer_factory.cpp - FloatLayers: the LayerFactory's default methods give the plain float layers
// of nn/layers.h. See layer_factory.h.
#include "nn/layer_factory.h"

#include "nn/layers.h"

namespace anybit::nn {

Generator& LayerFactory::gen() {
  if (!gen_) gen_ = std::make_shared<Generator>(0);
  return *gen_;
}

void LayerFactory::seed(uint64_t s) { gen().seed_(s); }

ModulePtr LayerFactory::stem_conv(const ConvSpec& s) { return std::make_shared<Conv2d>(s, gen()); }
ModulePtr LayerFactory::classifier(int64_t in, int64_t out) { return std::make_shared<Linear>(in, out, true, gen()); }
ModulePtr LayerFactory::conv(const ConvSpec& s) { return std::make_shared<Conv2d>(s, gen()); }
ModulePtr LayerFactory::linear(int64_t in, int64_t out, bool bias) {
  return std::make_shared<Linear>(in, out, bias, gen());
}
ModulePtr LayerFactory::batch_norm(int64_t channels) { return std::make_shared<BatchNorm2d>(channels); }

}  // namespace anybit::nn
