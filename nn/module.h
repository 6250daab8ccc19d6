// module.h - Module: the unit networks are built from.
//
// A Module owns named parameters (trainable tensors), named buffers (state that is saved but not
// trained, such as BN running statistics) and named child modules. Names compose with dots in
// registration order, exactly as PyTorch names them ("layer1.0.conv1.weight"), so a state dict
// maps one to one onto a PyTorch model's.
//
// Parameters and buffers are registered by pointer to the layer's own Tensor member, so layers
// use their members directly (weight_, bias_) and moving the module to a device or loading a
// state dict updates those members in place.
// Read next: nn/layers.h (the layers), nn/models.h (the model zoo), nn/layer_factory.h.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/ops.h"

namespace anybit::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  // x: the module's input; most modules map one tensor to one tensor.
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
  // The class name as PyTorch prints it ("Conv2d") and the arguments shown by info().
  virtual std::string type_name() const = 0;
  virtual std::string extra_repr() const { return ""; }

  void train(bool on = true);  // recursive
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void to(Device device);      // moves every parameter and buffer, recursively
  // Converts every floating-point parameter and buffer to `dtype` (PyTorch's model.double());
  // integer buffers such as num_batches_tracked keep theirs. Build the optimizer afterwards.
  void to(DType dtype);
  Device device() const;       // of the first parameter (CPU when none)

  NamedTensors named_parameters() const;  // recursive, registration order, dotted names
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_modules() const;  // recursive
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  void zero_grad();

  // Every parameter and buffer, in PyTorch's state_dict() order: each module's own parameters,
  // then its own buffers, then its children's, recursively.
  NamedTensors state_dict() const;
  // Copies values into the registered tensors. With strict, missing or unexpected names and
  // shape mismatches are an error that lists every difference ("layer1.0.conv1.weight: expected
  // [16, 16, 3, 3], got [32, 16, 3, 3]").
  void load_state_dict(const NamedTensors& state, bool strict = true);

  // A tree printout with parameter counts (`anybit info`).
  std::string repr(int indent = 0) const;

  // Multiply-accumulates per sample of this module's own computation (not its children's) in its
  // last forward: conv and linear layers override it; nn::macs_per_sample (nn/models.h) sums it.
  virtual int64_t last_macs() const { return 0; }

 protected:
  // Registers a member tensor (requires_grad is set for parameters).
  void register_parameter(const std::string& name, Tensor* t);
  void register_buffer(const std::string& name, Tensor* t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  // A recursive hook for subclasses that must react to train()/eval().
  virtual void on_train(bool on) {}

 private:
  void collect(const std::string& prefix, bool params, NamedTensors& out) const;
  std::vector<std::pair<std::string, Tensor*>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

using ModulePtr = std::shared_ptr<Module>;

}  // namespace anybit::nn
