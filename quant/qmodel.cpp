// qmodel.cpp - building, switching and measuring a quantized model. See qmodel.h.
#include "quant/qmodel.h"

#include <algorithm>
#include <map>
#include <set>

#include "autograd/autograd.h"
#include "nn/models.h"

namespace anybit::quant {

QuantModel::QuantModel(const std::string& arch, int64_t num_classes, const QuantOptions& opt, uint64_t seed,
                       const nn::ModelOptions& model_opt)
    : arch_(arch) {
  QuantLayers factory(opt);
  factory.seed(seed);
  net_ = nn::make_model(arch, num_classes, factory, model_opt);
  state_ = factory.state();
  blocks_ = factory.blocks();
  set_bits(bits_descending().front());
}

std::vector<int> QuantModel::bits_descending() const {
  std::vector<int> b = state_->bit_set;
  std::sort(b.rbegin(), b.rend());
  return b;
}

void QuantModel::set_bits(int b) {
  state_->index_of(b);  // checks that b is in the set
  state_->active = b;
  clear_overrides();
}

void QuantModel::clear_overrides() {
  for (auto& blk : blocks_) {
    blk->override_bits = 0;
    blk->freeze_bn_stats = false;
  }
}

std::vector<std::pair<std::string, QuantParam>> QuantModel::quant_params() {
  std::vector<std::pair<std::string, QuantParam>> out;
  for (auto& [name, m] : net_->named_modules())
    if (auto* q = dynamic_cast<QuantizedLayer*>(m.get()))
      for (auto& p : q->quant_params()) out.emplace_back(name + "." + p.name, p);
  return out;
}

int QuantModel::constrain_quantizers() {
  int moved = 0;
  for (auto& [name, m] : net_->named_modules())
    if (auto* q = dynamic_cast<QuantizedLayer*>(m.get()))
      moved += q->weight_quantizer().constrain() + q->act_quantizer().constrain();
  return moved;
}

void QuantModel::load_fp_state_dict(const nn::NamedTensors& fp) {
  // An FP model has one BatchNorm2d where this model has a MultiBatchNorm2d: its entry
  // "<bn>.<field>" loads into every set "<bn>.bn.<i>.<field>" (METHOD.md section 2).
  std::map<std::string, std::vector<std::string>> expand;  // FP name -> names in this model
  for (auto& [name, m] : net_->named_modules()) {
    auto* mb = dynamic_cast<MultiBatchNorm2d*>(m.get());
    if (!mb) continue;
    for (size_t i = 0; i < mb->sets().size(); ++i)
      for (auto& [field, t] : mb->sets()[i]->state_dict())
        expand[name + "." + field].push_back(name + ".bn." + std::to_string(i) + "." + field);
  }
  nn::NamedTensors mapped;
  for (auto& [name, t] : fp) {
    auto it = expand.find(name);
    if (it == expand.end()) {
      mapped.emplace_back(name, t);  // a name this model lacks is reported by the strict load
      continue;
    }
    for (auto& q : it->second) mapped.emplace_back(q, t);
  }
  // The quantizers' parameters are not in an FP checkpoint: they keep their initial values.
  for (auto& [name, p] : quant_params()) mapped.emplace_back(name, *p.tensor);
  net_->load_state_dict(mapped, true);
}

QuantModel::DeployStats QuantModel::deploy_stats(int bits, const Shape& input) {
  int saved = state_->active;
  set_bits(bits);
  DeployStats st{bits, 0, 0, 0};
  Shape in = input;
  double total_macs = (double)nn::macs_per_sample(*net_, in);  // also runs a forward at `bits`
  double qmacs = 0, weight_bits = 0;
  // Tensors that are not stored in FP32 at this bit-width, or not stored at all: the quantized
  // weights (their quantizer says how many bits they take), the quantizers' parameters (FP32, only
  // those of this bit-width are kept) and the BN sets of other bit-widths.
  std::vector<Tensor> counted;
  for (auto& [name, m] : net_->named_modules()) {
    if (auto* q = dynamic_cast<QuantizedLayer*>(m.get())) {
      qmacs += q->quantized_macs();
      Tensor& w = q->float_weight();
      weight_bits += q->weight_quantizer().storage_bits(w.numel(), bits);
      counted.push_back(w);
      for (auto& p : q->quant_params()) {
        if (p.bits == bits) weight_bits += 32.0 * p.tensor->numel();
        counted.push_back(*p.tensor);
      }
    } else if (auto* mb = dynamic_cast<MultiBatchNorm2d*>(m.get())) {
      // Only this bit-width's set is deployed; its step counter (num_batches_tracked) is not.
      for (auto& set : mb->sets()) {
        bool deployed = set.get() == &mb->set(bits);
        for (auto& [field, t] : set->state_dict()) {
          if (deployed && field != "num_batches_tracked") weight_bits += 32.0 * t.numel();
          counted.push_back(t);
        }
      }
    }
  }
  // A video model's sample is a clip: its layers counted one frame each.
  if (auto* tsn = dynamic_cast<nn::TemporalSegmentNetwork*>(net_.get())) qmacs *= (double)tsn->segments();
  int q = bits == kFullPrecision ? 32 : bits;
  st.macs = total_macs;
  st.bitops = qmacs * q * q + (total_macs - qmacs) * 32.0 * 32.0;
  // Every other floating-point tensor is stored in FP32: the stem, the classifier, the biases.
  for (auto& [name, t] : net_->state_dict()) {
    bool done = false;
    for (auto& c : counted) done = done || c.same(t);
    if (!done && is_floating(t.dtype())) weight_bits += 32.0 * t.numel();
  }
  st.weight_bytes = weight_bits / 8;
  set_bits(saved);
  return st;
}

}  // namespace anybit::quant
