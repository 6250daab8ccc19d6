// models.h - the model zoo: LeNet-5, CIFAR ResNet-20 (plain and pre-activation), torchvision's
// ResNet-18/50 and MobileNetV2, all built through a LayerFactory so that one definition serves
// the float network and every quantized one (nn/layer_factory.h).
//
// Names follow PyTorch, so a state dict maps one to one onto the PyTorch definitions (those in
// scripts/check_checkpoint.py for lenet5 and resnet20; torchvision's for resnet18/50 and
// mobilenet_v2):
//   lenet5           conv1, conv2, fc1, fc2, fc3
//   resnet20         conv1, bn1, layer{1,2,3}.{0,1,2}.{conv1,bn1,conv2,bn2}, fc; where a block
//                    changes the shape (layer2.0, layer3.0) its shortcut is a 1x1 stride-2 conv
//                    and a BN ("option B"): layerN.0.shortcut.0 (conv) and .shortcut.1 (BN)
//   preact_resnet20  conv1, layer{1,2,3}.{0,1,2}.{bn1,conv1,bn2,conv2}, bn, fc; the shortcut
//                    where the shape changes is a 1x1 conv alone: layerN.0.shortcut.0
//   resnet18/50      torchvision: conv1, bn1, layer1..4 (BasicBlock / Bottleneck with
//                    downsample.0 / downsample.1), fc
//   mobilenetv2      torchvision: features.0.{0,1}, features.{1..17}.conv..., features.18.{0,1},
//                    classifier.1
// Blocks: every residual block (and, in LeNet, every quantized layer but the first; in
// MobileNetV2 also the final 1x1 conv, features.18) starts with factory.begin_block(name).
// A layer belongs to the block begun last, so a layer after the blocks that belongs to none
// (preact_resnet20's final bn) is built before the first begin_block and registered in its place.
// The stem conv and the classifier come from factory.stem_conv() / classifier().
// Initialisation: ResNets and MobileNetV2 as torchvision (conv weights kaiming_normal_ with
// mode fan_out; BN 1 and 0; MobileNetV2's linear N(0, 0.01) and bias 0); LeNet-5 and the fc of
// the ResNets keep PyTorch's default.
// Read next: nn/optim.h, nn/checkpoint.h.
#pragma once
#include <string>
#include <vector>

#include "nn/layer_factory.h"
#include "nn/layers.h"

namespace anybit::nn {

struct ModelOptions {
  // Channel multiplier (preact_resnet20: 16w, 32w, 64w channels; mobilenetv2: as torchvision's
  // width_mult). Other models reject width != 1.
  double width = 1.0;
  // resnet18/50: a 3x3 stride-1 stem without max-pool (for 32x32 inputs); mobilenetv2: stem
  // stride 1 and the first stride-2 stage (24 channels) at stride 1.
  bool small_input = false;
  // Video (TSN / TSM). segments > 1: the model reads N clips of `segments` frames as
  // (N * segments, C, H, W), runs the 2D network on every frame and averages each clip's logits
  // (TSN's consensus) -> (N, num_classes). temporal_shift: a temporal shift (TSM, tensor/ops.h
  // temporal_shift with fold_div = shift_div) at the start of every residual block's branch,
  // before its first conv (the shortcut keeps the unshifted input); residual models only.
  int64_t segments = 1;
  bool temporal_shift = false;
  int64_t shift_div = 8;
};

// Builds a model by name: lenet5, resnet20, preact_resnet20, resnet18, resnet50, mobilenetv2.
// Throws, listing the valid names, for any other name. With opt.segments > 1 the model is the
// TSN (or, with temporal_shift, TSM) of that backbone: a TemporalSegmentNetwork below, whose
// parameter names are the backbone's own, so an image checkpoint of the backbone loads into it.
ModulePtr make_model(const std::string& name, int64_t num_classes, LayerFactory& factory,
                     const ModelOptions& opt = {});
// With FloatLayers seeded by `seed`.
ModulePtr make_model(const std::string& name, int64_t num_classes, const ModelOptions& opt = {}, uint64_t seed = 0);

std::vector<std::string> model_names();
// The shape of one input sample the model is designed for, e.g. {1, 28, 28} for lenet5.
Shape default_input_shape(const std::string& name, const ModelOptions& opt = {});

int64_t count_parameters(const Module& m);
// Multiply-accumulates for one sample of shape `input` (e.g. {3, 32, 32}; for a TSN, one clip of
// `segments` frames of that shape): runs one forward in
// evaluation mode without gradients and sums every module's last_macs() (conv: output elements
// x in / groups x k x k; linear: in x out). The training mode is restored afterwards.
int64_t macs_per_sample(Module& m, const Shape& input);

// TSN / TSM: runs the backbone on the (N * T, C, H, W) frames of N clips and averages the logits
// of each clip's T frames. The backbone's children are registered as this module's own children,
// under their own names, so the state dict (names and order) is exactly the backbone's.
class TemporalSegmentNetwork : public Module {
 public:
  TemporalSegmentNetwork(ModulePtr backbone, int64_t segments);
  Tensor forward(const Tensor& x) override;  // (N * T, C, H, W) -> (N, num_classes)
  std::string type_name() const override { return "TemporalSegmentNetwork"; }
  std::string extra_repr() const override;
  int64_t segments() const { return segments_; }
  Module& backbone() { return *backbone_; }

 private:
  ModulePtr backbone_;
  int64_t segments_;
};

// A residual block that can shift its branch's input in time (TSM). shift_segments 0: off.
class TemporalShiftable {
 public:
  void enable_temporal_shift(int64_t segments, int64_t fold_div) {
    shift_segments_ = segments;
    shift_div_ = fold_div;
  }
  bool shifts() const { return shift_segments_ > 0; }

 protected:
  Tensor shift_in_time(const Tensor& x) const;  // x itself when the shift is off
  int64_t shift_segments_ = 0, shift_div_ = 8;
};

// ---- the models' building blocks (public so that tests and tools can inspect them) ---------------

class LeNet5 : public Module {
 public:
  LeNet5(LayerFactory& f, int64_t num_classes);
  Tensor forward(const Tensor& x) override;  // x: (N, 1, 28, 28) -> (N, num_classes)
  std::string type_name() const override { return "LeNet5"; }

 private:
  ModulePtr conv1_, conv2_, fc1_, fc2_, fc3_;
};

// conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU. The shortcut (1x1 conv stride s + BN)
// exists where the stride or the channel count changes; it is registered as `shortcut_name`
// ("shortcut" in the CIFAR ResNets, "downsample" in torchvision's).
class BasicBlock : public Module, public TemporalShiftable, public SharesQuantizedInput {
 public:
  static constexpr int64_t expansion = 1;
  BasicBlock(LayerFactory& f, int64_t in, int64_t planes, int64_t stride, const std::string& shortcut_name);
  Tensor forward(const Tensor& x) override;  // x: (N, in, H, W) -> (N, planes, H / s, W / s)
  bool input_pact(PactAfter* pact) override;
  Tensor forward_chained(const Tensor& x, const Tensor& xq, SharesQuantizedInput* next, Tensor* next_xq) override;
  std::string type_name() const override { return "BasicBlock"; }

 private:
  ModulePtr conv1_, bn1_, conv2_, bn2_, shortcut_;
};

// 1x1 (in -> planes), 3x3 stride s, 1x1 (planes -> 4 planes), each followed by BN, plus the
// downsample shortcut, then ReLU (torchvision's ResNet v1.5: the stride is on the 3x3 conv).
class Bottleneck : public Module, public TemporalShiftable, public SharesQuantizedInput {
 public:
  static constexpr int64_t expansion = 4;
  Bottleneck(LayerFactory& f, int64_t in, int64_t planes, int64_t stride, const std::string& shortcut_name);
  Tensor forward(const Tensor& x) override;  // x: (N, in, H, W) -> (N, 4 planes, H / s, W / s)
  bool input_pact(PactAfter* pact) override;
  Tensor forward_chained(const Tensor& x, const Tensor& xq, SharesQuantizedInput* next, Tensor* next_xq) override;
  std::string type_name() const override { return "Bottleneck"; }

 private:
  ModulePtr conv1_, bn1_, conv2_, bn2_, conv3_, bn3_, shortcut_;
};

// Pre-activation block: o = relu(bn1(x)); y = conv2(relu(bn2(conv1(o)))) + shortcut, where the
// shortcut is x, or a 1x1 conv of o where the shape changes (so every conv's input is post-ReLU,
// as the quantized layers' PACT activations need).
class PreActBlock : public Module, public TemporalShiftable {
 public:
  PreActBlock(LayerFactory& f, int64_t in, int64_t planes, int64_t stride);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "PreActBlock"; }

 private:
  ModulePtr bn1_, conv1_, bn2_, conv2_, shortcut_;
};

// MobileNetV2's inverted residual: [1x1 expand conv-BN-ReLU6], 3x3 depthwise conv-BN-ReLU6,
// 1x1 project conv-BN, plus x when the stride is 1 and the channels match. Children: `conv`, a
// Sequential numbered as torchvision's.
class InvertedResidual : public Module {
 public:
  InvertedResidual(LayerFactory& f, int64_t in, int64_t out, int64_t stride, int64_t expand_ratio);
  Tensor forward(const Tensor& x) override;
  std::string type_name() const override { return "InvertedResidual"; }

 private:
  std::shared_ptr<Sequential> conv_;
  bool residual_;
};

}  // namespace anybit::nn
