// lsq.h - LSQ, learned step size quantization (Esser, McKinstry, Bablani, Appuswamy, Modha, ICLR
// 2020), for weights and activations: the second quantizer family behind quant/quantizer.h, and the
// worked example of adding one (this file, lsq.cpp, tests/test_lsq.cpp and one registry line).
//
// A layer holds one learnable step s_b per bit-width b of its set, for its weights
// (weight_step_b<b>) and for its input (act_step_b<b>):
//   v_q = round(clamp(v / s, -Qn, Qp)) s
//   weights, and signed inputs:   Qn = 2^(b-1), Qp = 2^(b-1) - 1   (2^b levels, two's complement)
//   unsigned (post-ReLU) inputs:  Qn = 0,       Qp = 2^b - 1
//   b = 32 (the FP member): v_q = v, no step.
// Gradients, straight through round (the paper's equations 3 and 5):
//   dv = g where -Qn <= v / s <= Qp, else 0
//   ds = gscale * sum of g * ( -Qn              where v / s <= -Qn
//                              Qp               where v / s >= Qp
//                              round(v/s) - v/s otherwise )
//   gscale = 1 / sqrt(N Qp), N = the number of weights of the layer, or of input features per
//   sample (the paper's N_W and N_F).
// Initial step (the paper's): s = 2 mean|v| / sqrt(Qp), computed from the first tensor the layer
// quantizes at b: the weights once they are loaded (e.g. from an FP checkpoint), the first batch's
// activations. A step of exactly 0 means "not initialised yet" (what a new layer holds); a learned
// step is saved in checkpoints, so a resumed or reloaded model is never re-initialised.
// LSQ is b >= 2 only for weights and signed inputs (at b = 1, Qp = 0); use DoReFa/PACT for 1 bit.
// Read next: quant/quantizer.h (the interface), tests/test_lsq.cpp.
#pragma once
#include <vector>

#include "quant/quantizer.h"

namespace anybit::quant {

// The fused op. v: any shape; s: a one-element tensor > 0; qn, qp: the integer range;
// features: N of gscale. Returns v_q of v's shape, with the gradients above.
Tensor lsq_quantize(const Tensor& v, const Tensor& s, int64_t qn, int64_t qp, int64_t features);

// The integer range of bit-width b: {Qn, Qp}.
struct LsqRange {
  int64_t qn, qp;
};
LsqRange lsq_range(int bits, bool is_signed);

// "lsq" weights: signed, one step per bit-width, named weight_step_b<bits>.
class LsqWeights : public WeightQuantizer {
 public:
  explicit LsqWeights(const QuantizerSpec& spec);
  std::string name() const override { return "lsq"; }
  Tensor forward(const Tensor& w, int bits) override;  // w: the layer's FP weights
  // codes u = q + Qn for q = forward(w, bits) / s in [-Qn, Qp]: scale s, offset -s Qn
  IntegerWeights integer_weights(const Tensor& w, int bits) override;
  int constrain() override;
  Tensor& step(int bits);
};

// "lsq" activations: unsigned after a ReLU, signed where the layer's input can be negative;
// one step per bit-width, named act_step_b<bits>.
class LsqActs : public ActQuantizer {
 public:
  explicit LsqActs(const QuantizerSpec& spec);
  std::string name() const override { return "lsq"; }
  Tensor forward(const Tensor& x, int bits) override;  // x: (N, ...), the layer's input
  int constrain() override;
  Tensor& step(int bits);

 private:
  bool is_signed_;
};

namespace ref {
// Scalar loops in float64: v_q, dv and ds (with gscale) for an upstream gradient g.
struct LsqResult {
  std::vector<double> vq, dv;
  double ds;
};
LsqResult lsq_quantize(const std::vector<double>& v, const std::vector<double>& g, double s, int64_t qn,
                       int64_t qp, int64_t features);
}  // namespace ref

}  // namespace anybit::quant
