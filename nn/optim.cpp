// optim.cpp - SGD, Adam, AdamW and the learning-rate schedules. See optim.h for the update rules.
#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "autograd/autograd.h"
#include "tensor/kernels.h"

namespace anybit::nn {

// ---- the base: groups, slots, state ----------------------------------------------------------------

Optimizer::Optimizer(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  std::set<std::string> names;
  std::set<const TensorImpl*> seen;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    if (g.base_lr < 0) g.base_lr = g.lr;
    for (auto& [name, p] : g.params) {
      AB_CHECK(p.defined(), "optimizer: parameter '", name, "' is undefined");
      AB_CHECK(names.insert(name).second, "optimizer: parameter name '", name,
               "' appears twice (hint: each parameter belongs to exactly one group)");
      AB_CHECK(seen.insert(&p.impl()).second, "optimizer: parameter '", name, "' is listed twice under two names");
      AB_CHECK(is_floating(p.dtype()), "optimizer: parameter '", name, "' is ", dtype_name(p.dtype()),
               "; only float32/float64 tensors can be optimized");
      Slot s;
      s.name = name;
      s.param = p;
      s.group = gi;
      slots_.push_back(s);
    }
  }
}

void Optimizer::zero_grad() {
  for (auto& s : slots_) s.param.zero_grad();
}

NamedTensors Optimizer::state_dict() const {
  NamedTensors out;
  for (auto& s : slots_) {
    for (int k = 0; k < 2; ++k)
      if (*buf_name(k) && s.buf[k].defined()) out.emplace_back(s.name + "." + buf_name(k), s.buf[k]);
    if (saves_step() && s.step > 0) {
      Tensor t = Tensor::empty({}, DType::I64);
      *t.data<int64_t>() = s.step;
      out.emplace_back(s.name + ".step", t);
    }
  }
  return out;
}

void Optimizer::load_state_dict(const NamedTensors& state) {
  std::map<std::string, Slot*> by_name;
  for (auto& s : slots_) by_name[s.name] = &s;
  std::vector<std::string> problems;
  // Check everything before changing anything.
  for (auto& [key, t] : state) {
    size_t dot = key.rfind('.');
    std::string pname = dot == std::string::npos ? "" : key.substr(0, dot);
    std::string slot = dot == std::string::npos ? key : key.substr(dot + 1);
    auto it = by_name.find(pname);
    if (it == by_name.end()) {
      problems.push_back(key + ": no parameter '" + pname + "' in this optimizer");
      continue;
    }
    const Tensor& p = it->second->param;
    if (slot == "step" && saves_step()) {
      if (t.numel() != 1) problems.push_back(key + ": expected one element, got " + shape_str(t.shape()));
    } else if ((slot == buf_name(0) || slot == buf_name(1)) && !slot.empty()) {
      if (t.shape() != p.shape())
        problems.push_back(key + ": expected " + shape_str(p.shape()) + ", got " + shape_str(t.shape()));
    } else {
      problems.push_back(key + ": '" + slot + "' is not state of " + type_name());
    }
  }
  if (!problems.empty()) {
    std::ostringstream os;
    os << type_name() << ".load_state_dict: the state does not match the optimizer (" << problems.size()
       << " problem" << (problems.size() > 1 ? "s" : "") << "):";
    for (size_t i = 0; i < problems.size() && i < 40; ++i) os << "\n  " << problems[i];
    if (problems.size() > 40) os << "\n  ... and " << problems.size() - 40 << " more";
    AB_FAIL(os.str());
  }
  for (auto& s : slots_) {
    s.buf[0] = s.buf[1] = Tensor();
    s.step = 0;
  }
  for (auto& [key, t] : state) {
    size_t dot = key.rfind('.');
    Slot& s = *by_name[key.substr(0, dot)];
    std::string slot = key.substr(dot + 1);
    if (slot == "step") {
      s.step = (int64_t)t.to_vector<double>()[0];
    } else {
      int k = slot == buf_name(0) ? 0 : 1;
      // A private copy on the parameter's device and dtype: the caller's tensor is not aliased.
      s.buf[k] = t.detach().to(s.param.dtype()).to(s.param.device()).clone();
    }
  }
}

// ---- SGD ----------------------------------------------------------------------------------------------

namespace {

// The parameter's gradient, contiguous, or undefined when there is none.
Tensor grad_of(const std::string& name, const Tensor& p) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  AB_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype(), "optimizer: gradient of '", name, "' is ",
           g.str(), " but the parameter is ", p.str());
  AB_CHECK(p.is_contiguous(), "optimizer: parameter '", name, "' must be contiguous to be updated in place");
  return g.contiguous();
}

}  // namespace

SGD::SGD(std::vector<ParamGroup> groups, SGDOptions opt) : Optimizer(std::move(groups)), opt_(opt) {
  AB_CHECK(opt_.momentum >= 0, "SGD: momentum must be >= 0, got ", opt_.momentum);
  AB_CHECK(!opt_.nesterov || opt_.momentum > 0, "SGD: Nesterov momentum needs momentum > 0");
}

SGD::SGD(const NamedTensors& params, double lr, double momentum, double weight_decay, bool nesterov)
    : SGD(std::vector<ParamGroup>{ParamGroup{params, lr, weight_decay, -1, "all"}}, SGDOptions{momentum, nesterov}) {}

void SGD::step() {
  NoGradGuard ng;
  std::vector<SgdItem> items;
  for (auto& s : slots_) {
    Tensor g = grad_of(s.name, s.param);
    if (!g.defined()) continue;
    const ParamGroup& grp = groups_[s.group];
    bool first = !s.buf[0].defined();
    if (opt_.momentum > 0 && first) s.buf[0] = Tensor::empty(s.param.shape(), s.param.dtype(), s.param.device());
    ++s.step;
    items.push_back({s.param, g, opt_.momentum > 0 ? s.buf[0] : Tensor(), grp.lr, grp.weight_decay, first});
  }
  // The fused update of every parameter (tensor/kernels.inc: sgd_steps; the formula: formula::sgd_update).
  kernel::sgd_steps(items, opt_.momentum, opt_.nesterov);
}

// ---- Adam, AdamW ------------------------------------------------------------------------------------

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions opt) : Optimizer(std::move(groups)), opt_(opt) {
  AB_CHECK(opt_.beta1 >= 0 && opt_.beta1 < 1 && opt_.beta2 >= 0 && opt_.beta2 < 1, type_name(),
           ": betas must be in [0, 1), got (", opt_.beta1, ", ", opt_.beta2, ")");
  AB_CHECK(opt_.eps >= 0, type_name(), ": eps must be >= 0");
}

Adam::Adam(const NamedTensors& params, double lr, double weight_decay, AdamOptions opt)
    : Adam(std::vector<ParamGroup>{ParamGroup{params, lr, weight_decay, -1, "all"}}, opt) {}

void Adam::step() {
  NoGradGuard ng;
  std::vector<AdamItem> items;
  for (auto& s : slots_) {
    Tensor g = grad_of(s.name, s.param);
    if (!g.defined()) continue;
    const ParamGroup& grp = groups_[s.group];
    if (!s.buf[0].defined()) {
      s.buf[0] = Tensor::zeros(s.param.shape(), s.param.dtype(), s.param.device());
      s.buf[1] = Tensor::zeros(s.param.shape(), s.param.dtype(), s.param.device());
    }
    ++s.step;
    double bc1 = 1 - std::pow(opt_.beta1, (double)s.step);
    double bc2 = 1 - std::pow(opt_.beta2, (double)s.step);
    double step_size = grp.lr / bc1, bc2_sqrt = std::sqrt(bc2);
    // Adam: decay = 1, the weight decay added to the gradient; AdamW: decay = 1 - lr wd (decoupled).
    const bool dec = opt_.decoupled_weight_decay;
    items.push_back({s.param, g, s.buf[0], s.buf[1], dec ? 1 - grp.lr * grp.weight_decay : 1.0,
                     dec ? 0.0 : grp.weight_decay, step_size, bc2_sqrt});
  }
  // The fused update of every parameter (tensor/kernels.inc: adam_steps; formula::adam_update).
  kernel::adam_steps(items, opt_.beta1, opt_.beta2, opt_.eps);
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamOptions opt)
    : Adam(std::move(groups), [&] {
        opt.decoupled_weight_decay = true;
        return opt;
      }()) {}

AdamW::AdamW(const NamedTensors& params, double lr, double weight_decay, AdamOptions opt)
    : AdamW(std::vector<ParamGroup>{ParamGroup{params, lr, weight_decay, -1, "all"}}, opt) {}

// ---- schedules -----------------------------------------------------------------------------------

void LRSchedule::set_iteration(int64_t it) {
  AB_CHECK(it >= 0, "LRSchedule: iteration must be >= 0, got ", it);
  iteration_ = it;
  apply();
}

void LRSchedule::apply() {
  double f = factor(iteration_);
  for (auto& g : opt_.groups()) g.lr = g.base_lr * f;
}

double LRSchedule::lr(size_t group) const {
  AB_CHECK(group < opt_.groups().size(), "LRSchedule: no group ", group);
  return opt_.groups()[group].lr;
}

CosineSchedule::CosineSchedule(Optimizer& opt, int64_t total, int64_t warmup, double min_factor)
    : LRSchedule(opt), total_(total), warmup_(warmup), min_factor_(min_factor) {
  AB_CHECK(total > 0 && warmup >= 0 && warmup <= total, "CosineSchedule: need 0 <= warmup (", warmup,
           ") <= total (", total, "), total > 0");
  apply();
}

double CosineSchedule::factor(int64_t it) const {
  if (it < warmup_) return double(it + 1) / double(warmup_);
  double span = double(std::max<int64_t>(1, total_ - warmup_));
  double progress = std::min(1.0, double(it - warmup_) / span);
  return min_factor_ + (1 - min_factor_) * 0.5 * (1 + std::cos(M_PI * progress));
}

MultiStepSchedule::MultiStepSchedule(Optimizer& opt, std::vector<int64_t> milestones, double gamma)
    : LRSchedule(opt), milestones_(std::move(milestones)), gamma_(gamma) {
  for (size_t i = 1; i < milestones_.size(); ++i)
    AB_CHECK(milestones_[i] > milestones_[i - 1], "MultiStepSchedule: milestones must increase");
  apply();
}

double MultiStepSchedule::factor(int64_t it) const {
  int passed = 0;
  for (int64_t m : milestones_) passed += it >= m;
  return std::pow(gamma_, passed);
}

}  // namespace anybit::nn
