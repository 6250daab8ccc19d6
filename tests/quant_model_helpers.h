// quant_model_helpers.h - the quantized model the export, integer-engine and ONNX tests start from.
#pragma once
#include <memory>

#include "quant/qmodel.h"
#include "tests/helpers.h"

namespace anybit::test {

// A quantized ResNet-20 (10 classes, seed 5) with random weights, run once at every bit-width of
// opt.bit_set on `batch` random images (seed 9) in training mode, without gradients: LSQ's
// data-initialised steps get their values and the BN statistics move off their defaults. It is
// left in training mode; call net().eval() for inference.
inline std::unique_ptr<quant::QuantModel> random_quant_resnet20(const quant::QuantOptions& opt, int64_t batch) {
  auto m = std::make_unique<quant::QuantModel>("resnet20", 10, opt, 5);
  Tensor x = randn({batch, 3, 32, 32}, 9, DType::F32);
  NoGradGuard ng;
  for (int b : m->bit_set()) {
    m->set_bits(b);
    m->forward(x);
  }
  return m;
}

}  // namespace anybit::test
