// quantizer.cpp - the quantizer base class and the registry lookups. See quantizer.h; the table of
// registered quantizers is in quant/quantizer_registry.cpp.
#include "quant/quantizer.h"

namespace anybit::quant {

Tensor& Quantizer::add_param(const std::string& name, int bits, double init) {
  for (auto& p : params_) AB_CHECK(p.name != name, this->name(), ": parameter '", name, "' added twice");
  storage_.push_back(Tensor::full({1}, init));
  params_.push_back({name, bits, &storage_.back()});
  return storage_.back();
}

namespace {

const QuantizerEntry* find(const std::string& name) {
  for (auto& e : quantizer_registry())
    if (e.name == name) return &e;
  return nullptr;
}

std::string names_where(bool weights) {
  std::vector<std::string> names;
  for (auto& e : quantizer_registry())
    if (weights ? bool(e.weights) : bool(e.acts)) names.push_back(e.name);
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : (i + 1 == names.size() ? " or " : ", ")) + names[i];
  return s;
}

}  // namespace

std::string weight_quantizer_names() { return names_where(true); }
std::string act_quantizer_names() { return names_where(false); }

std::unique_ptr<WeightQuantizer> make_weight_quantizer(const std::string& name, const QuantizerSpec& spec) {
  const QuantizerEntry* e = find(name);
  AB_CHECK(e && e->weights, "--weight-quant: '", name, "' (expected ", weight_quantizer_names(), ")");
  return e->weights(spec);
}

std::unique_ptr<ActQuantizer> make_act_quantizer(const std::string& name, const QuantizerSpec& spec) {
  const QuantizerEntry* e = find(name);
  AB_CHECK(e && e->acts, "--act-quant: '", name, "' (expected ", act_quantizer_names(), ")");
  return e->acts(spec);
}

}  // namespace anybit::quant
