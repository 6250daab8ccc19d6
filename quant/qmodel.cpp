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

int QuantModel::clamp_clips(double min) {
  NoGradGuard ng;
  int raised = 0;
  for (auto& [name, t] : net_->named_parameters()) {
    if (name.find("clip_b") == std::string::npos) continue;
    if (t.item<double>() < min) {
      t.fill_(min);
      ++raised;
    }
  }
  return raised;
}

void QuantModel::load_fp_state_dict(const nn::NamedTensors& fp) {
  // Expand each FP BN entry "X.<field>" to "X.bn.<i>.<field>" for every BN set i, when the
  // quantized model has no "X.<field>" of its own.
  std::set<std::string> own;
  for (auto& kv : net_->state_dict()) own.insert(kv.first);
  nn::NamedTensors mapped;
  for (auto& [name, t] : fp) {
    if (own.count(name)) {
      mapped.emplace_back(name, t);
      continue;
    }
    auto dot = name.rfind('.');
    std::string prefix = dot == std::string::npos ? "" : name.substr(0, dot + 1);
    std::string field = dot == std::string::npos ? name : name.substr(dot + 1);
    bool expanded = false;
    for (size_t i = 0; i < state_->bit_set.size(); ++i) {
      std::string q = prefix + "bn." + std::to_string(i) + "." + field;
      if (own.count(q)) {
        mapped.emplace_back(q, t);
        expanded = true;
      }
    }
    if (!expanded) mapped.emplace_back(name, t);  // reported as unexpected by the strict load
  }
  // Clip values are not in an FP checkpoint: keep the model's own.
  std::set<std::string> have;
  for (auto& kv : mapped) have.insert(kv.first);
  for (auto& kv : net_->state_dict())
    if (!have.count(kv.first) && kv.first.find("clip_b") != std::string::npos) mapped.push_back(kv);
  net_->load_state_dict(mapped, true);
}

QuantModel::DeployStats QuantModel::deploy_stats(int bits, const Shape& input) {
  int saved = state_->active;
  set_bits(bits);
  DeployStats st{bits, 0, 0, 0};
  Shape in = input;
  double total_macs = (double)nn::macs_per_sample(*net_, in);  // also runs a forward at `bits`
  double qmacs = 0;
  std::set<const Tensor*> quantized_weights;
  double weight_bits = 0;
  for (auto& [name, m] : net_->named_modules()) {
    if (auto* c = dynamic_cast<QConv2d*>(m.get())) {
      qmacs += c->last_macs();
      weight_bits += (double)c->weight_.numel() * bits;
      quantized_weights.insert(&c->weight_);
    } else if (auto* l = dynamic_cast<QLinear*>(m.get())) {
      qmacs += l->last_macs();
      weight_bits += (double)l->weight_.numel() * bits;
      quantized_weights.insert(&l->weight_);
    }
  }
  int q = bits == kFullPrecision ? 32 : bits;
  st.macs = total_macs;
  st.bitops = qmacs * q * q + (total_macs - qmacs) * 32.0 * 32.0;
  // Everything else is stored in FP32: the stem, the classifier, biases, this bit-width's BN set
  // and clip value. Other bit-widths' BN sets and clips are not part of the b-bit model.
  int idx = state_->index_of(bits);
  for (auto& [name, t] : net_->state_dict()) {
    bool is_qweight = false;
    for (const Tensor* w : quantized_weights)
      if (w->same(t)) is_qweight = true;
    if (is_qweight) continue;
    auto bn = name.find(".bn.");
    if (bn != std::string::npos) {
      size_t s = bn + 4, e = name.find('.', s);
      if (std::stoi(name.substr(s, e - s)) != idx) continue;
    }
    auto clip = name.find("clip_b");
    if (clip != std::string::npos && std::stoi(name.substr(clip + 6)) != bits) continue;
    if (name.find("num_batches_tracked") != std::string::npos) continue;
    weight_bits += 32.0 * t.numel();
  }
  st.weight_bytes = weight_bits / 8;
  set_bits(saved);
  return st;
}

}  // namespace anybit::quant
