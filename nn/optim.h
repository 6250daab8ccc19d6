// optim.h - optimizers (SGD, Adam, AdamW) and learning-rate schedules, with PyTorch's semantics.
//
// An optimizer holds parameter groups, each with its own learning rate and weight decay (e.g.
// PACT clip values get their own group without weight decay). step() updates every parameter that
// has a gradient IN PLACE, in its own storage, under NoGradGuard: one fused loop per parameter on
// the CPU that reads the gradient and the state once and allocates nothing. (On CUDA the update
// is composed from elementwise ops, which allocates temporaries.) Parameters without a gradient
// are skipped and their state is left as it is, as in PyTorch.
//
// The update rules, with g the gradient, p the parameter, lr and wd the group's values:
//   SGD    g += wd p;  buf = g on the first step, else buf = momentum buf + g (dampening 0);
//          d = g + momentum buf (Nesterov) or d = buf;  p -= lr d
//   Adam   t += 1;  g += wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//   AdamW  as Adam, but the decay is decoupled: p *= 1 - lr wd first, and g is not decayed.
//
// State (momentum buffers, moments, step counts) is exported by state_dict() under the
// parameter's name ("layer1.0.conv1.weight.momentum_buffer", ".exp_avg", ".exp_avg_sq", ".step")
// and restored by load_state_dict(), so a checkpoint resumes bit for bit.
// state_dict() returns the live buffers (no copies): save or clone them before the next step.
// The optimizer holds the parameter tensors themselves: build it after Module::to(device) (which
// replaces them), as in PyTorch.
// Schedules set each group's lr = base_lr * factor(iteration) and are stepped once per iteration.
// Speed: apps/bench_optim (SGD momentum and AdamW steps in GB/s next to memcpy).
// Read next: nn/checkpoint.h (where optimizer state is saved).
#pragma once
#include <string>
#include <vector>

#include "nn/module.h"

namespace anybit::nn {

struct ParamGroup {
  NamedTensors params;      // (name, parameter); names must be unique across groups
  double lr = 0.1;          // the current learning rate (schedules change it)
  double weight_decay = 0;
  double base_lr = -1;      // the schedule's reference; set to lr by the optimizer when negative
  std::string name;         // for messages and logs ("weights", "clip")
};

class Optimizer {
 public:
  explicit Optimizer(std::vector<ParamGroup> groups);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  virtual std::string type_name() const = 0;
  // Drops every parameter's gradient (the next backward writes a fresh one).
  void zero_grad();
  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // State by "<parameter name>.<slot>"; slots that have not been created yet are absent.
  NamedTensors state_dict() const;
  // Replaces the state. Unknown names, unknown slots and shape mismatches are an error that lists
  // them all; parameters absent from `state` start fresh.
  void load_state_dict(const NamedTensors& state);

 protected:
  // One parameter and its state: buf[0], buf[1] are the momentum buffer (SGD) or the two moments
  // (Adam); step counts this parameter's updates.
  struct Slot {
    std::string name;
    Tensor param;
    Tensor buf[2];
    int64_t step = 0;
    size_t group = 0;
  };
  // Names of buf[0] and buf[1] in the state dict ("" when unused), and whether `step` is saved.
  virtual const char* buf_name(int k) const = 0;
  virtual bool saves_step() const { return false; }

  std::vector<ParamGroup> groups_;
  std::vector<Slot> slots_;
};

struct SGDOptions {
  double momentum = 0.9;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, SGDOptions opt = {});
  // One group.
  SGD(const NamedTensors& params, double lr, double momentum = 0.9, double weight_decay = 0, bool nesterov = false);
  void step() override;
  std::string type_name() const override { return "SGD"; }

 private:
  const char* buf_name(int k) const override { return k == 0 ? "momentum_buffer" : ""; }
  SGDOptions opt_;
};

struct AdamOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool decoupled_weight_decay = false;  // true: AdamW
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions opt = {});
  Adam(const NamedTensors& params, double lr, double weight_decay = 0, AdamOptions opt = {});
  void step() override;
  std::string type_name() const override { return opt_.decoupled_weight_decay ? "AdamW" : "Adam"; }

 private:
  const char* buf_name(int k) const override { return k == 0 ? "exp_avg" : "exp_avg_sq"; }
  bool saves_step() const override { return true; }
  AdamOptions opt_;
};

// AdamW: Adam with decoupled weight decay (PyTorch's default weight_decay for AdamW is 1e-2).
class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, AdamOptions opt = {});
  AdamW(const NamedTensors& params, double lr, double weight_decay = 1e-2, AdamOptions opt = {});
};

// ---- learning-rate schedules -------------------------------------------------------------------

class LRSchedule {
 public:
  explicit LRSchedule(Optimizer& opt) : opt_(opt) {}
  virtual ~LRSchedule() = default;
  // The multiplier of base_lr at a given iteration (0-based: the iteration about to run).
  virtual double factor(int64_t iteration) const = 0;
  // Call once after each optimizer step: advances the iteration and sets the groups' lr.
  void step() { set_iteration(iteration_ + 1); }
  // Restores a saved position (the schedule's whole state) and sets the groups' lr.
  void set_iteration(int64_t it);
  int64_t iteration() const { return iteration_; }
  double lr(size_t group = 0) const;

 protected:
  void apply();  // subclasses call this at the end of their constructor
  Optimizer& opt_;
  int64_t iteration_ = 0;
};

// Linear warm-up from base_lr / warmup to base_lr over `warmup` iterations (factor (i + 1) / warmup),
// then a cosine decay from base_lr to min_factor * base_lr at iteration `total`; flat after.
class CosineSchedule : public LRSchedule {
 public:
  CosineSchedule(Optimizer& opt, int64_t total, int64_t warmup = 0, double min_factor = 0);
  double factor(int64_t iteration) const override;

 private:
  int64_t total_, warmup_;
  double min_factor_;
};

// factor = gamma ^ (number of milestones <= iteration); milestones in iterations (for PyTorch's
// MultiStepLR at epochs e, pass e * iterations_per_epoch).
class MultiStepSchedule : public LRSchedule {
 public:
  MultiStepSchedule(Optimizer& opt, std::vector<int64_t> milestones, double gamma = 0.1);
  double factor(int64_t iteration) const override;

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

}  // namespace anybit::nn
