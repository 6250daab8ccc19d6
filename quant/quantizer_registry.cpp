// quantizer_registry.cpp - the table of quantizers the config keys `weight_quant` and `act_quant`
// choose from. Adding a quantizer adds one line here (see quant/quantizer.h).
#include "quant/quantizer.h"
#include "quant/lsq.h"
#include "quant/quantizers.h"

namespace anybit::quant {

template <typename T, typename Base>
static std::function<std::unique_ptr<Base>(const QuantizerSpec&)> maker() {
  return [](const QuantizerSpec& spec) -> std::unique_ptr<Base> { return std::make_unique<T>(spec); };
}

const std::vector<QuantizerEntry>& quantizer_registry() {
  static const std::vector<QuantizerEntry> table = {
      {"dorefa", maker<DoReFaWeights, WeightQuantizer>(), nullptr, "DoReFa weights (METHOD.md section 2)"},
      {"pact", nullptr, maker<PactActs, ActQuantizer>(), "PACT activations, a learnable clip per bit-width"},
      {"lsq", maker<LsqWeights, WeightQuantizer>(), maker<LsqActs, ActQuantizer>(), "LSQ, a learned step per bit-width"},
  };
  return table;
}

IntegerWeights WeightQuantizer::integer_weights(const Tensor&, int bits) {
  AB_FAIL("weight quantizer '", name(), "' has no integer form (bit-width ", bits, "): it cannot be exported");
}

}  // namespace anybit::quant
