// quantizers.h - the weight and activation quantizers of METHOD.md section 2.
//
// Each quantizer is a small function composed from the primitives of tensor/ops.h (so its
// gradient comes from autograd), except PACT, whose gradients the method fixes exactly and which
// is therefore one fused op with its own backward, and DoReFa with the round store, the default,
// which runs as one fused op too (kernel::dorefa_forward: the composition's values bit for bit,
// its gradient written out; tests/test_quantizers.cpp holds the two together) because a dozen
// small ops per layer and step cost the quantized step about 3% of its time. Every quantizer has a scalar reference
// (namespace ref, at the end of quant/quantizers.cpp) that the tests compare it with.
// The objects at the end (DoReFaWeights, PactActs) wrap the functions in the quantizer interface
// of quant/quantizer.h, under the registry names "dorefa" and "pact".
// Read next: quant/quantizer.h (the interface), quant/qlayers.h (layers built from these).
#pragma once
#include <vector>

#include "quant/quantizer.h"
#include "tensor/ops.h"

namespace anybit::quant {

// DoReFa weights. w: any shape (the shared FP weights); returns w_q of the same shape:
//   u = tanh(w) / (2 max|tanh(w)|) + 1/2                   in [0, 1]
//   b < 32:  w_q = 2 round((2^b - 1) u) / (2^b - 1) - 1    at most 2^b values in [-1, 1]
//   b = 32:  w_q = tanh(w) / max|tanh(w)|
//   (b = 1 by the formula above: +-1, the sign of w, straight through round)
// Truncate store: q_B = round((2^B - 1) u), q_b = floor(q_B / 2^(B-b)) 2^(B-b), dequantised as
// q_b / (2^B - 1) and rescaled so its mean equals the B-bit tensor's mean. Gradients: straight
// through round/floor; tanh, max (arg-max subgradient), the affine maps and the truncate store's
// rescaling by mean(q_B) / mean(q_b) are differentiated (tests/test_golden_qjoint.cpp checks this
// against PyTorch).
// SAT: w_q * 1 / sqrt(fan_in) / std(w_q), fan_in = numel / out_channels.
// Mean (Any-Precision): w_q * E at every bit-width, E = mean|w| (detached); b = 1 is then
// Any-Precision's two levels +-E (w = 0 rounds to -E). One scale rule for all bit-widths keeps
// the 1-bit and b-bit weights on the same scale at residual additions without a BN.
Tensor quantize_weight(const Tensor& w, int bits, const WeightQuantOptions& opt = {});

// The integer codes a deployment stores for w at bit-width b < 32 (int64, same shape as w):
// round store: round((2^b - 1) u) in [0, 2^b - 1]; truncate store: the B-bit codes with their
// low B - b bits dropped, floor(q_B / 2^(B-b)) 2^(B-b), so every b-bit code is a B-bit code.
Tensor weight_codes(const Tensor& w, int bits, const WeightQuantOptions& opt = {});

// PACT with a learnable clip a (a one-element tensor, > 0). x: the layer's input, any shape.
//   unsigned (x post-ReLU):  y = clamp(x, 0, a);   b < 32: x_q = round(y (2^b - 1) / a) a / (2^b - 1)
//   signed (x may be < 0):   y = clamp(x, -a, a);  b < 32: x_q = round(y n / a) a / n, n = 2^(b-1) - 1
//                            (2^b - 1 levels symmetric about 0, so 0 is exact; needs b >= 2)
//   b = 32: x_q = y (the FP member clips too, without rounding)
// Gradients (METHOD.md): dx = g where lo <= x <= a (lo = 0, or -a when signed), else 0;
//   da = sum of g where x >= a, minus (signed) the sum of g where x <= -a.
Tensor pact_quantize(const Tensor& x, const Tensor& a, int bits, bool is_signed = false);

namespace ref {
// Scalar loops over float64 vectors: the specification the ops above are tested against.
std::vector<double> quantize_weight(const std::vector<double>& w, int64_t out_channels, int bits,
                                    const WeightQuantOptions& opt = {});
std::vector<double> pact_quantize(const std::vector<double>& x, double a, int bits, bool is_signed = false);
}  // namespace ref

// ---- the interface objects (quant/quantizer.h) ----------------------------------------------------

// "dorefa": quantize_weight / weight_codes above, with the options of the spec. No parameters.
class DoReFaWeights : public WeightQuantizer {
 public:
  explicit DoReFaWeights(const QuantizerSpec& spec) : opt_(spec.weight) {}
  std::string name() const override { return "dorefa"; }
  Tensor forward(const Tensor& w, int bits) override { return quantize_weight(w, bits, opt_); }
  IntegerWeights integer_weights(const Tensor& w, int bits) override;
  const WeightQuantOptions& options() const { return opt_; }

 private:
  WeightQuantOptions opt_;
};

// "pact": pact_quantize above with one learnable clip value per bit-width, named clip_b<bits>.
class PactActs : public ActQuantizer {
 public:
  explicit PactActs(const QuantizerSpec& spec);
  std::string name() const override { return "pact"; }
  Tensor forward(const Tensor& x, int bits) override;
  int constrain() override;  // keeps every clip value >= 1e-3
  Tensor& clip(int bits);    // the one-element clip value of bit-width `bits`
  bool is_signed() const { return signed_; }

 private:
  bool signed_;
};

}  // namespace anybit::quant
