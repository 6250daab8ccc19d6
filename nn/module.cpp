// module.cpp - parameter registry, naming, devices, state dicts. See module.h.
#include "nn/module.h"

#include <functional>
#include <set>
#include <sstream>

#include "autograd/autograd.h"

namespace anybit::nn {

void Module::register_parameter(const std::string& name, Tensor* t) {
  AB_CHECK(t->defined(), type_name(), ": parameter '", name, "' is undefined");
  t->requires_grad_(true);
  params_.emplace_back(name, t);
}

void Module::register_buffer(const std::string& name, Tensor* t) { buffers_.emplace_back(name, t); }

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& c : children_) c.second->train(on);
}

void Module::to(Device device) {
  for (auto& p : params_) {
    *p.second = p.second->detach().to(device);
    p.second->requires_grad_(true);
  }
  for (auto& b : buffers_)
    if (b.second->defined()) *b.second = b.second->to(device);
  for (auto& c : children_) c.second->to(device);
}

void Module::to(DType dtype) {
  AB_CHECK(is_floating(dtype), "Module::to: expected a floating-point dtype, got ", dtype_name(dtype),
           "; hint: parameters are F32 or F64");
  for (auto& p : params_) {
    *p.second = p.second->detach().to(dtype);
    p.second->requires_grad_(true);
  }
  for (auto& b : buffers_)
    if (b.second->defined() && is_floating(b.second->dtype())) *b.second = b.second->to(dtype);
  for (auto& c : children_) c.second->to(dtype);
}

Device Module::device() const {
  auto ps = named_parameters();
  return ps.empty() ? Device() : ps.front().second.device();
}

void Module::collect(const std::string& prefix, bool params, NamedTensors& out) const {
  for (auto& p : params ? params_ : buffers_)
    if (p.second->defined()) out.emplace_back(prefix + p.first, *p.second);
  for (auto& c : children_) c.second->collect(prefix + c.first + ".", params, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& p : named_parameters()) out.push_back(p.second);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_modules() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (auto& c : children_) {
    out.push_back(c);
    for (auto& sub : c.second->named_modules()) out.emplace_back(c.first + "." + sub.first, sub.second);
  }
  return out;
}

void Module::zero_grad() {
  for (auto& p : named_parameters()) p.second.zero_grad();
}

NamedTensors Module::state_dict() const {
  // PyTorch's order: each module's own parameters, then its own buffers, then its children.
  NamedTensors out;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& pre) {
    for (auto& p : m.params_)
      if (p.second->defined()) out.emplace_back(pre + p.first, *p.second);
    for (auto& b : m.buffers_)
      if (b.second->defined()) out.emplace_back(pre + b.first, *b.second);
    for (auto& c : m.children_) walk(*c.second, pre + c.first + ".");
  };
  walk(*this, "");
  return out;
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  // Gather pointers to every registered tensor under its full name.
  std::vector<std::pair<std::string, Tensor*>> slots;
  std::function<void(const Module&, const std::string&)> walk = [&](const Module& m, const std::string& pre) {
    for (auto& p : m.params_) slots.emplace_back(pre + p.first, p.second);
    for (auto& b : m.buffers_) slots.emplace_back(pre + b.first, b.second);
    for (auto& c : m.children_) walk(*c.second, pre + c.first + ".");
  };
  walk(*this, "");
  std::map<std::string, Tensor> given(state.begin(), state.end());
  std::vector<std::string> problems;
  std::set<std::string> used;
  for (auto& [name, slot] : slots) {
    auto it = given.find(name);
    if (it == given.end()) {
      if (strict) problems.push_back(name + ": missing from the checkpoint");
      continue;
    }
    used.insert(name);
    if (it->second.shape() != slot->shape()) {
      problems.push_back(name + ": expected " + shape_str(slot->shape()) + ", got " +
                         shape_str(it->second.shape()));
      continue;
    }
  }
  if (strict)
    for (auto& kv : given)
      if (!used.count(kv.first)) problems.push_back(kv.first + ": not a parameter or buffer of this model");
  if (!problems.empty()) {
    std::ostringstream os;
    os << "load_state_dict: the checkpoint does not match the model (" << problems.size() << " difference"
       << (problems.size() > 1 ? "s" : "") << "):";
    for (size_t i = 0; i < problems.size() && i < 40; ++i) os << "\n  " << problems[i];
    if (problems.size() > 40) os << "\n  ... and " << problems.size() - 40 << " more";
    AB_FAIL(os.str());
  }
  NoGradGuard ng;
  for (auto& [name, slot] : slots) {
    auto it = given.find(name);
    if (it == given.end()) continue;
    slot->copy_(it->second.to(slot->device()).to(slot->dtype()));
  }
}

std::string Module::repr(int indent) const {
  std::ostringstream os;
  os << type_name() << "(" << extra_repr();
  if (!children_.empty()) {
    os << "\n";
    for (auto& c : children_)
      os << std::string(indent + 2, ' ') << "(" << c.first << "): " << c.second->repr(indent + 2) << "\n";
    os << std::string(indent, ' ');
  }
  os << ")";
  return os.str();
}

}  // namespace anybit::nn
