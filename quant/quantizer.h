// quantizer.h - the quantizer interface: what a quantized layer asks of its weight and activation
// quantizers, and the registry that maps a config name ("dorefa", "pact", "lsq") to one.
//
// A quantized layer is a float layer composed with two quantizers (STYLE.md rule 13, brevitas'
// QuantConv2d): QConv2d runs conv2d(act_quant(x, b), weight_quant(w, b)). A quantizer is a small
// object that
//   - computes the fake-quantized tensor at bit-width b (forward), with its gradients;
//   - owns its learnable parameters, one or more per bit-width (PACT: a clip value a_b; LSQ: a step
//     s_b), and reports them as QuantParam entries. The layer registers them under their names, so
//     they are in the state dict and checkpoints; the app puts them in one optimizer group per
//     bit-width; deployment statistics count the ones of the deployed bit-width;
//   - keeps them valid after every optimizer step (constrain);
//   - has a scalar reference (namespace ref) that its test compares it with.
//
// Adding a quantizer: write it in its own file (a class derived from WeightQuantizer and/or
// ActQuantizer, plus a factory function), give it a test, and add one line to the table in
// quant/quantizer_registry.cpp. Models, layers, the trainer and the app need no change: the config
// keys `weight_quant` and `act_quant` select it by name. quant/lsq.cpp is the worked example.
// Read next: quant/quantizers.h (DoReFa and PACT), quant/lsq.h, quant/qlayers.h (the layers).
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/ops.h"

namespace anybit::quant {

enum class WeightStore { Round, Truncate };  // --weight-store
enum class WeightScale { None, Sat, Mean };  // --weight-scale: none, sat (AdaBits), mean (Any-Precision)

// DoReFa's options (METHOD.md section 2).
struct WeightQuantOptions {
  WeightStore store = WeightStore::Round;
  WeightScale scale = WeightScale::None;
  int store_bits = 8;  // B: the largest bit-width < 32 of the set (truncate mode)
};

// One learnable tensor of a quantizer, used at one bit-width.
struct QuantParam {
  std::string name;  // relative to the layer: "clip_b4", "weight_step_b4"
  int bits;          // the bit-width that uses it
  Tensor* tensor;    // owned by the quantizer; its address is stable for the quantizer's life
};

// What a quantizer is told about the layer it serves when it is built.
struct QuantizerSpec {
  std::vector<int> bit_set;        // every bit-width the layer runs at (32: the FP member)
  WeightQuantOptions weight;       // DoReFa's store and scale options (store_bits: B)
  double act_init = 8.0;           // initial clip value (PACT); 2 when fine-tuning from FP weights
  bool signed_input = false;       // activations: the input can be negative (no ReLU before it)
};

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  virtual std::string name() const = 0;  // the registry name: "dorefa", "pact", "lsq"
  // x: the tensor to quantize (weights: the shared FP weights; activations: the layer's input),
  // any shape. Returns the fake-quantized tensor of x's shape at bit-width `bits`.
  virtual Tensor forward(const Tensor& x, int bits) = 0;
  // The learnable parameters, in registration order.
  const std::vector<QuantParam>& params() const { return params_; }
  // Called after every optimizer step: moves parameters back into their valid range (a clip or a
  // step driven to zero or below would make the quantizer undefined). Returns how many moved.
  virtual int constrain() { return 0; }
  // Bits needed to store a tensor of `numel` elements at bit-width b, beyond this quantizer's own
  // FP32 parameters of b (which deployment counts separately): b per element; 32 per element at
  // b = 32.
  virtual double storage_bits(int64_t numel, int bits) const { return (double)numel * (bits >= 32 ? 32 : bits); }

 protected:
  // Creates a learnable one-element parameter of bit-width `bits` with value `init`.
  Tensor& add_param(const std::string& name, int bits, double init);

 private:
  std::deque<Tensor> storage_;  // a deque: adding a tensor never moves the earlier ones
  std::vector<QuantParam> params_;
};

// The integer form of a weight quantizer's output at one bit-width, for deployment (quant/export.h):
//   forward(w, bits) == scale * codes + offset     (elementwise, to float32 rounding)
// with unsigned integer codes in [0, 2^code_bits - 1]. code_bits is `bits`, or, where the lower
// bit-widths are the top bits of one stored code set (DoReFa's truncate store, Any-Precision's
// idea), the stored set's B: the codes at b are then the B-bit codes with their low B - b bits
// zeroed, i.e. (codes >> (B - b)) << (B - b), and scale applies to those.
struct IntegerWeights {
  Tensor codes;  // int64, w's shape
  double scale = 1, offset = 0;
  int code_bits = 0;
};

class WeightQuantizer : public Quantizer {
 public:
  // The integer form of forward(w, bits) for bits < 32 (see IntegerWeights). A quantizer without
  // one cannot be exported; the default says so.
  virtual IntegerWeights integer_weights(const Tensor& w, int bits);
};
class ActQuantizer : public Quantizer {};

// ---- registry: config name -> factory (quant/quantizer_registry.cpp holds the table) -------------

using WeightQuantizerMaker = std::function<std::unique_ptr<WeightQuantizer>(const QuantizerSpec&)>;
using ActQuantizerMaker = std::function<std::unique_ptr<ActQuantizer>(const QuantizerSpec&)>;

// One registered family. A family may provide weights, activations or both.
struct QuantizerEntry {
  std::string name;
  WeightQuantizerMaker weights;  // empty: not a weight quantizer
  ActQuantizerMaker acts;        // empty: not an activation quantizer
  std::string summary;           // one line for --help and docs
};

const std::vector<QuantizerEntry>& quantizer_registry();
// Errors name the key and list the valid choices: "--weight-quant: 'foo' (expected dorefa or lsq)".
std::unique_ptr<WeightQuantizer> make_weight_quantizer(const std::string& name, const QuantizerSpec& spec);
std::unique_ptr<ActQuantizer> make_act_quantizer(const std::string& name, const QuantizerSpec& spec);
std::string weight_quantizer_names();  // "dorefa or lsq"
std::string act_quantizer_names();

}  // namespace anybit::quant
