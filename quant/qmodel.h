// qmodel.h - a model of the zoo built with quantized layers: one network, every bit-width.
//
// QuantModel owns the network (built through QuantLayers), the shared BitState and the list of
// blocks. set_bits(b) switches the whole model to bit-width b instantly: quantized weights,
// clip values and BN sets all follow. The deploy figures of METHOD.md section 6 (BitOPs and
// weight size per bit-width) are computed here.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/models.h"
#include "quant/qlayers.h"

namespace anybit::quant {

class QuantModel {
 public:
  // arch: a name of nn::make_model ("lenet5", "resnet20", ...).
  QuantModel(const std::string& arch, int64_t num_classes, const QuantOptions& opt, uint64_t seed,
             const nn::ModelOptions& model_opt = {});

  Tensor forward(const Tensor& x) { return net_->forward(x); }
  void set_bits(int b);  // the whole model at b, block overrides cleared
  int bits() const { return state_->active; }
  const std::vector<int>& bit_set() const { return state_->bit_set; }
  std::vector<int> bits_descending() const;  // the joint trainer's visiting order
  std::vector<std::shared_ptr<BlockBits>>& blocks() { return blocks_; }
  void clear_overrides();
  // Every quantizer's learnable parameter with its full name ("layer1.0.conv1.clip_b4") and the
  // bit-width that uses it: the app gives them their own optimizer group per bit-width.
  std::vector<std::pair<std::string, QuantParam>> quant_params();
  // Calls every quantizer's constrain() (after each optimizer step): keeps clip values and steps
  // valid. Returns how many parameters were moved.
  int constrain_quantizers();
  nn::Module& net() { return *net_; }
  const std::string& arch() const { return arch_; }

  // Loads a full-precision checkpoint of the same architecture: conv/linear weights are shared
  // by every bit-width; every BN set starts from the FP BN (METHOD.md section 2). Clip values
  // keep their initial values. Errors list the names and shapes that differ.
  void load_fp_state_dict(const nn::NamedTensors& fp);

  struct DeployStats {
    int bits;
    double bitops;        // per sample: sum over layers of MACs x b_w x b_a (FP layers at 32 x 32)
    double weight_bytes;  // packed b-bit weights + FP stem, classifier, biases, the BN set of b
    double macs;          // per sample
  };
  // input: the shape of one sample, e.g. {1, 28, 28}.
  DeployStats deploy_stats(int bits, const Shape& input);

 private:
  std::string arch_;
  std::shared_ptr<nn::Module> net_;
  std::shared_ptr<BitState> state_;
  std::vector<std::shared_ptr<BlockBits>> blocks_;
};

}  // namespace anybit::quant
