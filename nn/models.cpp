// models.cpp - the model zoo (see models.h for the names and the conventions).
#include "nn/models.h"

#include <cmath>
#include <sstream>

#include "autograd/autograd.h"

namespace anybit::nn {

namespace {

ConvSpec conv_spec(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t pad = 0, int64_t groups = 1,
                   bool bias = false) {
  ConvSpec s{in, out, k};
  s.stride = stride;
  s.pad = pad;
  s.groups = groups;
  s.bias = bias;
  return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// torchvision's ResNet / MobileNetV2 initialisation: every conv weight (a 4-D ".weight")
// ~ N(0, 2 / fan_out) and conv biases 0; with `linear_normal`, every linear weight (2-D) ~
// N(0, 0.01) and its bias 0. BN layers are already 1 / 0. Works on the names, so it applies to the
// quantized layers of any factory too.
void init_torchvision(Module& m, Generator& gen, bool linear_normal) {
  NoGradGuard ng;
  NamedTensors ps = m.named_parameters();
  std::vector<std::string> zero_bias;
  for (auto& [name, p] : ps) {
    if (!ends_with(name, "weight")) continue;
    std::string prefix = name.substr(0, name.size() - 6);
    if (p.dim() == 4) {
      kaiming_normal_fan_out_(p, gen);
      zero_bias.push_back(prefix + "bias");
    } else if (p.dim() == 2 && linear_normal) {
      normal_(p, 0.0, 0.01, gen);
      zero_bias.push_back(prefix + "bias");
    }
  }
  for (auto& [name, p] : ps)
    for (auto& b : zero_bias)
      if (name == b) p.zero_();
}

// The residual blocks of `stages` (Sequentials), in order.
std::vector<Module*> blocks_of(const std::vector<ModulePtr>& stages) {
  std::vector<Module*> blocks;
  for (auto& stage : stages)
    for (auto& child : stage->children()) blocks.push_back(child.second.get());
  return blocks;
}

// The blocks of `stages` from relu(bn(stem)): that op also writes the first block's quantized
// input where it can, and so does each block's last op for the next (SharesQuantizedInput,
// nn/layers.h: the stem's BN and every block's last BN then hand over PACT's values too).
Tensor forward_stages(Module& bn, const Tensor& stem, const std::vector<ModulePtr>& stages) {
  const std::vector<Module*> blocks = blocks_of(stages);
  Tensor xq;
  Tensor x = relu_tapped(bn, stem, Tensor(), blocks.empty() ? nullptr : dynamic_cast<SharesQuantizedInput*>(blocks[0]),
                         &xq);
  return forward_blocks(blocks, x, xq);
}

// ---- CIFAR ResNet-20 ---------------------------------------------------------------------------------

class CifarResNet : public Module {
 public:
  CifarResNet(LayerFactory& f, int64_t num_classes, int64_t blocks_per_stage) {
    conv1_ = register_module("conv1", f.stem_conv(conv_spec(3, 16, 3, 1, 1)));
    bn1_ = register_module("bn1", f.batch_norm(16));
    int64_t in = 16;
    const int64_t widths[3] = {16, 32, 64};
    for (int s = 0; s < 3; ++s) {
      auto stage = std::make_shared<Sequential>();
      std::string sname = "layer" + std::to_string(s + 1);
      for (int64_t b = 0; b < blocks_per_stage; ++b) {
        f.begin_block(sname + "." + std::to_string(b));
        int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        stage->add(std::make_shared<BasicBlock>(f, in, widths[s], stride, "shortcut"));
        in = widths[s];
      }
      layers_.push_back(register_module(sname, stage));
    }
    fc_ = register_module("fc", f.classifier(64, num_classes));
    init_torchvision(*this, f.gen(), /*linear_normal=*/false);
  }
  // x: (N, 3, 32, 32) -> (N, num_classes)
  Tensor forward(const Tensor& x) override {
    return fc_->forward(global_avg_pool2d(forward_stages(*bn1_, conv1_->forward(x), layers_)));
  }
  std::string type_name() const override { return "ResNet20"; }

 private:
  ModulePtr conv1_, bn1_, fc_;
  std::vector<ModulePtr> layers_;
};

// ---- pre-activation ResNet-20 with a width multiplier ----------------------------------------------------

class PreActResNet : public Module {
 public:
  PreActResNet(LayerFactory& f, int64_t num_classes, int64_t blocks_per_stage, double width) {
    AB_CHECK(width > 0, "preact_resnet20: width must be positive, got ", width);
    const int64_t widths[3] = {(int64_t)std::lround(16 * width), (int64_t)std::lround(32 * width),
                               (int64_t)std::lround(64 * width)};
    AB_CHECK(widths[0] > 0, "preact_resnet20: width ", width, " gives no channels");
    conv1_ = register_module("conv1", f.stem_conv(conv_spec(3, widths[0], 3, 1, 1)));
    // The final BN is built here, before the first begin_block, and registered after the stages
    // (its place in the state dict): a factory gives a layer to the block begun last, and this BN
    // belongs to no residual block, so block swapping (METHOD.md section 5) must not move it to the
    // teacher's bit-width with layer3.2. (Building a BN draws no random numbers: the other layers'
    // initial weights are unchanged.)
    ModulePtr final_bn = f.batch_norm(widths[2]);
    int64_t in = widths[0];
    for (int s = 0; s < 3; ++s) {
      auto stage = std::make_shared<Sequential>();
      std::string sname = "layer" + std::to_string(s + 1);
      for (int64_t b = 0; b < blocks_per_stage; ++b) {
        f.begin_block(sname + "." + std::to_string(b));
        int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        stage->add(std::make_shared<PreActBlock>(f, in, widths[s], stride));
        in = widths[s];
      }
      layers_.push_back(register_module(sname, stage));
    }
    bn_ = register_module("bn", final_bn);
    fc_ = register_module("fc", f.classifier(in, num_classes));
    init_torchvision(*this, f.gen(), /*linear_normal=*/false);
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = conv1_->forward(x);
    for (auto& l : layers_) y = l->forward(y);
    y = relu_after(*bn_, y);
    return fc_->forward(global_avg_pool2d(y));
  }
  std::string type_name() const override { return "PreActResNet20"; }

 private:
  ModulePtr conv1_, bn_, fc_;
  std::vector<ModulePtr> layers_;
};

// ---- torchvision ResNet-18 / 50 ---------------------------------------------------------------------

template <typename Block>
class TorchvisionResNet : public Module {
 public:
  TorchvisionResNet(LayerFactory& f, int64_t num_classes, std::vector<int64_t> blocks, bool small_input,
                    std::string name)
      : name_(std::move(name)), small_input_(small_input) {
    if (small_input)
      conv1_ = register_module("conv1", f.stem_conv(conv_spec(3, 64, 3, 1, 1)));
    else
      conv1_ = register_module("conv1", f.stem_conv(conv_spec(3, 64, 7, 2, 3)));
    bn1_ = register_module("bn1", f.batch_norm(64));
    int64_t in = 64;
    for (size_t s = 0; s < blocks.size(); ++s) {
      int64_t planes = 64 << s;
      auto stage = std::make_shared<Sequential>();
      std::string sname = "layer" + std::to_string(s + 1);
      for (int64_t b = 0; b < blocks[s]; ++b) {
        f.begin_block(sname + "." + std::to_string(b));
        int64_t stride = (s > 0 && b == 0) ? 2 : 1;
        stage->add(std::make_shared<Block>(f, in, planes, stride, "downsample"));
        in = planes * Block::expansion;
      }
      layers_.push_back(register_module(sname, stage));
    }
    fc_ = register_module("fc", f.classifier(in, num_classes));
    init_torchvision(*this, f.gen(), /*linear_normal=*/false);
  }
  // x: (N, 3, 224, 224) (or (N, 3, 32, 32) with small_input) -> (N, num_classes)
  Tensor forward(const Tensor& x) override {
    Tensor y;
    if (small_input_) {
      y = forward_stages(*bn1_, conv1_->forward(x), layers_);
    } else {  // the max pool between the stem and the first block: that block quantizes its input itself
      y = max_pool2d(relu_after(*bn1_, conv1_->forward(x)), 3, 2, 1);
      y = forward_blocks(blocks_of(layers_), y, Tensor());
    }
    return fc_->forward(global_avg_pool2d(y));
  }
  std::string type_name() const override { return name_; }

 private:
  std::string name_;
  bool small_input_;
  ModulePtr conv1_, bn1_, fc_;
  std::vector<ModulePtr> layers_;
};

// ---- MobileNetV2 ------------------------------------------------------------------------------------

// torchvision's _make_divisible: round to a multiple of 8, never down by more than 10%.
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, (int64_t)(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

// conv-BN-ReLU6 (torchvision's Conv2dNormActivation): children 0, 1, 2. signed_input: the conv's
// input can be negative (see ConvSpec).
std::shared_ptr<Sequential> conv_bn_relu6(LayerFactory& f, int64_t in, int64_t out, int64_t k, int64_t stride,
                                          int64_t groups, bool stem = false, bool signed_input = false) {
  ConvSpec s = conv_spec(in, out, k, stride, (k - 1) / 2, groups);
  s.signed_input = signed_input;
  auto seq = std::make_shared<Sequential>();
  seq->add(stem ? f.stem_conv(s) : f.conv(s));
  seq->add(f.batch_norm(out));
  seq->add(std::make_shared<ReLU6>());
  return seq;
}

class MobileNetV2 : public Module {
 public:
  MobileNetV2(LayerFactory& f, int64_t num_classes, double width, bool small_input) {
    AB_CHECK(width > 0, "mobilenetv2: width must be positive, got ", width);
    int64_t in = make_divisible(32 * width);
    int64_t last = make_divisible(1280 * std::max(1.0, width));
    // t (expansion), c (channels), n (blocks), s (stride of the first block)
    const int64_t settings[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                    {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    features_ = register_module("features", std::make_shared<Sequential>());
    features_->add(conv_bn_relu6(f, 3, in, 3, small_input ? 1 : 2, 1, /*stem=*/true));
    for (int i = 0; i < 7; ++i) {
      int64_t t = settings[i][0], c = make_divisible(settings[i][1] * width), n = settings[i][2];
      int64_t s = settings[i][3];
      if (small_input && i == 1) s = 1;
      for (int64_t b = 0; b < n; ++b) {
        f.begin_block("features." + std::to_string(features_->size()));
        features_->add(std::make_shared<InvertedResidual>(f, in, c, b == 0 ? s : 1, t));
        in = c;
      }
    }
    f.begin_block("features." + std::to_string(features_->size()));
    // Its input is the last block's linear output: it can be negative.
    features_->add(conv_bn_relu6(f, in, last, 1, 1, 1, false, /*signed_input=*/true));
    classifier_ = register_module("classifier", std::make_shared<Sequential>());
    classifier_->add(std::make_shared<Dropout>(0.2, f.gen().next_u64()));
    classifier_->add(f.classifier(last, num_classes));
    init_torchvision(*this, f.gen(), /*linear_normal=*/true);
  }
  // x: (N, 3, 224, 224) (or (N, 3, 32, 32) with small_input) -> (N, num_classes)
  Tensor forward(const Tensor& x) override {
    return classifier_->forward(global_avg_pool2d(features_->forward(x)));
  }
  std::string type_name() const override { return "MobileNetV2"; }

 private:
  std::shared_ptr<Sequential> features_, classifier_;
};

}  // namespace

// ---- blocks -------------------------------------------------------------------------------------------

LeNet5::LeNet5(LayerFactory& f, int64_t num_classes) {
  conv1_ = register_module("conv1", f.stem_conv(conv_spec(1, 6, 5, 1, 2, 1, true)));
  f.begin_block("conv2");
  conv2_ = register_module("conv2", f.conv(conv_spec(6, 16, 5, 1, 0, 1, true)));
  f.begin_block("fc1");
  fc1_ = register_module("fc1", f.linear(400, 120, true));
  f.begin_block("fc2");
  fc2_ = register_module("fc2", f.linear(120, 84, true));
  fc3_ = register_module("fc3", f.classifier(84, num_classes));
}

Tensor LeNet5::forward(const Tensor& x) {
  // (N, 1, 28, 28) -> (N, 6, 28, 28) -> (N, 6, 14, 14) -> (N, 16, 10, 10) -> (N, 16, 5, 5)
  Tensor y = max_pool2d(relu(conv1_->forward(x)), 2, 2);
  y = max_pool2d(relu(conv2_->forward(y)), 2, 2);
  y = relu(fc1_->forward(y.flatten(1)));  // (N, 400) -> (N, 120)
  y = relu(fc2_->forward(y));             // -> (N, 84)
  return fc3_->forward(y);                // -> (N, num_classes)
}

BasicBlock::BasicBlock(LayerFactory& f, int64_t in, int64_t planes, int64_t stride, const std::string& shortcut_name) {
  conv1_ = register_module("conv1", f.conv(conv_spec(in, planes, 3, stride, 1)));
  bn1_ = register_module("bn1", f.batch_norm(planes));
  conv2_ = register_module("conv2", f.conv(conv_spec(planes, planes, 3, 1, 1)));
  bn2_ = register_module("bn2", f.batch_norm(planes));
  if (stride != 1 || in != planes) {
    auto sc = std::make_shared<Sequential>();
    sc->add(f.conv(conv_spec(in, planes, 1, stride)));
    sc->add(f.batch_norm(planes));
    shortcut_ = register_module(shortcut_name, sc);
  }
}

Tensor BasicBlock::forward(const Tensor& x) { return forward_chained(x, Tensor(), nullptr, nullptr); }

namespace {
// A block's first conv, when it can take its input already quantized (not after a temporal shift).
QuantizesInput* quantized_input_of(Module& conv, bool shifts) {
  return shifts ? nullptr : dynamic_cast<QuantizesInput*>(&conv);
}
// conv(x) of a block's first conv, given x's quantized copy xq when the block before made one.
Tensor first_conv(Module& conv, const Tensor& x, const Tensor& xq, bool shifts) {
  if (!xq.defined()) return conv.forward(x);
  QuantizesInput* q = quantized_input_of(conv, shifts);
  AB_CHECK(q, "a residual block was handed its input quantized, but its first conv cannot take it");
  return q->forward_quantized(xq);
}
}  // namespace

bool BasicBlock::input_pact(PactAfter* pact) {
  QuantizesInput* q = quantized_input_of(*conv1_, shifts());
  return q && q->input_pact(pact);
}

Tensor BasicBlock::forward_chained(const Tensor& x, const Tensor& xq, SharesQuantizedInput* next, Tensor* next_xq) {
  // conv2(relu(bn1(conv1(x)))), bn1 writing conv2's quantized input where it can (relu_into)
  Tensor y = relu_into(*bn1_, first_conv(*conv1_, shift_in_time(x), xq, shifts()), *conv2_);
  Tensor shortcut = shortcut_ ? shortcut_->forward(x) : x;
  // relu(bn2(y) + shortcut), one op, which also writes the next block's quantized input where it can
  return relu_tapped(*bn2_, y, shortcut, next, next_xq);
}

Bottleneck::Bottleneck(LayerFactory& f, int64_t in, int64_t planes, int64_t stride, const std::string& shortcut_name) {
  conv1_ = register_module("conv1", f.conv(conv_spec(in, planes, 1)));
  bn1_ = register_module("bn1", f.batch_norm(planes));
  conv2_ = register_module("conv2", f.conv(conv_spec(planes, planes, 3, stride, 1)));
  bn2_ = register_module("bn2", f.batch_norm(planes));
  conv3_ = register_module("conv3", f.conv(conv_spec(planes, planes * expansion, 1)));
  bn3_ = register_module("bn3", f.batch_norm(planes * expansion));
  if (stride != 1 || in != planes * expansion) {
    auto sc = std::make_shared<Sequential>();
    sc->add(f.conv(conv_spec(in, planes * expansion, 1, stride)));
    sc->add(f.batch_norm(planes * expansion));
    shortcut_ = register_module(shortcut_name, sc);
  }
}

Tensor Bottleneck::forward(const Tensor& x) { return forward_chained(x, Tensor(), nullptr, nullptr); }

bool Bottleneck::input_pact(PactAfter* pact) {
  QuantizesInput* q = quantized_input_of(*conv1_, shifts());
  return q && q->input_pact(pact);
}

Tensor Bottleneck::forward_chained(const Tensor& x, const Tensor& xq, SharesQuantizedInput* next, Tensor* next_xq) {
  // conv2(relu(bn1(conv1(x)))), then conv3(relu(bn2(y)))
  Tensor y = relu_into(*bn1_, first_conv(*conv1_, shift_in_time(x), xq, shifts()), *conv2_);
  y = relu_into(*bn2_, y, *conv3_);
  Tensor shortcut = shortcut_ ? shortcut_->forward(x) : x;
  return relu_tapped(*bn3_, y, shortcut, next, next_xq);  // relu(bn3(y) + shortcut), one op
}

PreActBlock::PreActBlock(LayerFactory& f, int64_t in, int64_t planes, int64_t stride) {
  bn1_ = register_module("bn1", f.batch_norm(in));
  conv1_ = register_module("conv1", f.conv(conv_spec(in, planes, 3, stride, 1)));
  bn2_ = register_module("bn2", f.batch_norm(planes));
  conv2_ = register_module("conv2", f.conv(conv_spec(planes, planes, 3, 1, 1)));
  if (stride != 1 || in != planes) {
    auto sc = std::make_shared<Sequential>();
    sc->add(f.conv(conv_spec(in, planes, 1, stride)));
    shortcut_ = register_module("shortcut", sc);
  }
}

Tensor PreActBlock::forward(const Tensor& x) {
  Tensor o = relu_after(*bn1_, x);
  Tensor s = shortcut_ ? shortcut_->forward(o) : x;
  Tensor y = conv1_->forward(shift_in_time(o));
  y = relu_into(*bn2_, y, *conv2_);  // conv2(relu(bn2(y)))
  return y + s;
}

InvertedResidual::InvertedResidual(LayerFactory& f, int64_t in, int64_t out, int64_t stride, int64_t expand_ratio) {
  AB_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
  int64_t hidden = (int64_t)std::lround(double(in) * expand_ratio);
  residual_ = stride == 1 && in == out;
  conv_ = register_module("conv", std::make_shared<Sequential>());
  // The expand conv's input is the previous block's linear output: it can be negative, unlike
  // the input of every other quantized layer of the zoo (a quantized factory quantizes it signed).
  if (expand_ratio != 1) conv_->add(conv_bn_relu6(f, in, hidden, 1, 1, 1, false, /*signed_input=*/true));
  conv_->add(conv_bn_relu6(f, hidden, hidden, 3, stride, hidden));
  conv_->add(f.conv(conv_spec(hidden, out, 1)));
  conv_->add(f.batch_norm(out));
}

Tensor InvertedResidual::forward(const Tensor& x) {
  Tensor y = conv_->forward(x);
  return residual_ ? x + y : y;
}

// ---- registry -------------------------------------------------------------------------------------------

std::vector<std::string> model_names() {
  return {"lenet5", "resnet20", "preact_resnet20", "resnet18", "resnet50", "mobilenetv2"};
}

static std::string valid_names() {
  std::string s;
  for (auto& n : model_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// ---- video: TSN and TSM ---------------------------------------------------------------------------

Tensor TemporalShiftable::shift_in_time(const Tensor& x) const {
  return shift_segments_ > 0 ? temporal_shift(x, shift_segments_, shift_div_) : x;
}

TemporalSegmentNetwork::TemporalSegmentNetwork(ModulePtr backbone, int64_t segments)
    : backbone_(std::move(backbone)), segments_(segments) {
  AB_CHECK(segments_ >= 1, "TemporalSegmentNetwork: segments must be >= 1, got ", segments_);
  for (auto& [name, child] : backbone_->children()) register_module(name, child);
}

Tensor TemporalSegmentNetwork::forward(const Tensor& x) {
  AB_CHECK(x.dim() == 4 && x.size(0) % segments_ == 0, "TemporalSegmentNetwork: expected (N * ", segments_,
           ", C, H, W) frames of N clips, got ", shape_str(x.shape()));
  Tensor logits = backbone_->forward(x);  // (N * T, K): one prediction per frame
  return mean(logits.reshape({x.size(0) / segments_, segments_, logits.size(1)}), {1});  // TSN's average
}

std::string TemporalSegmentNetwork::extra_repr() const {
  bool shift = false;
  for (auto& [name, m] : backbone_->named_modules())
    if (auto* b = dynamic_cast<TemporalShiftable*>(m.get())) shift = shift || b->shifts();
  return std::string(shift ? "TSM" : "TSN") + " of " + backbone_->type_name() + ", segments=" +
         std::to_string(segments_);
}

static ModulePtr make_backbone(const std::string& name, int64_t num_classes, LayerFactory& f, const ModelOptions& opt);

ModulePtr make_model(const std::string& name, int64_t num_classes, LayerFactory& f, const ModelOptions& opt) {
  AB_CHECK(opt.segments >= 1, "make_model(", name, "): segments must be >= 1, got ", opt.segments);
  AB_CHECK(!opt.temporal_shift || opt.segments > 1, "make_model(", name, "): temporal_shift needs segments > 1 ",
           "(the frames of a clip to shift between)");
  ModulePtr net = make_backbone(name, num_classes, f, opt);
  if (opt.temporal_shift) {
    int64_t blocks = 0;
    for (auto& [n, m] : net->named_modules())
      if (auto* b = dynamic_cast<TemporalShiftable*>(m.get())) {
        b->enable_temporal_shift(opt.segments, opt.shift_div);
        ++blocks;
      }
    AB_CHECK(blocks > 0, "make_model(", name, "): temporal_shift needs a residual network (resnet20, ",
             "preact_resnet20, resnet18, resnet50)");
  }
  if (opt.segments > 1) return std::make_shared<TemporalSegmentNetwork>(net, opt.segments);
  return net;
}

static ModulePtr make_backbone(const std::string& name, int64_t num_classes, LayerFactory& f, const ModelOptions& opt) {
  AB_CHECK(num_classes > 0, "make_model(", name, "): num_classes must be positive, got ", num_classes);
  bool uses_width = name == "preact_resnet20" || name == "mobilenetv2";
  AB_CHECK(uses_width || opt.width == 1.0, "make_model(", name, "): this model has no width multiplier (got ",
           opt.width, "); width applies to preact_resnet20 and mobilenetv2");
  if (name == "lenet5") return std::make_shared<LeNet5>(f, num_classes);
  if (name == "resnet20") return std::make_shared<CifarResNet>(f, num_classes, 3);
  if (name == "preact_resnet20") return std::make_shared<PreActResNet>(f, num_classes, 3, opt.width);
  if (name == "resnet18")
    return std::make_shared<TorchvisionResNet<BasicBlock>>(f, num_classes, std::vector<int64_t>{2, 2, 2, 2},
                                                           opt.small_input, "ResNet18");
  if (name == "resnet50")
    return std::make_shared<TorchvisionResNet<Bottleneck>>(f, num_classes, std::vector<int64_t>{3, 4, 6, 3},
                                                           opt.small_input, "ResNet50");
  if (name == "mobilenetv2") return std::make_shared<MobileNetV2>(f, num_classes, opt.width, opt.small_input);
  AB_FAIL("make_model: unknown model '", name, "'; valid names: ", valid_names());
}

ModulePtr make_model(const std::string& name, int64_t num_classes, const ModelOptions& opt, uint64_t seed) {
  FloatLayers f(seed);
  return make_model(name, num_classes, f, opt);
}

Shape default_input_shape(const std::string& name, const ModelOptions& opt) {
  if (name == "lenet5") return {1, 28, 28};
  if (name == "resnet20" || name == "preact_resnet20") return {3, 32, 32};
  if (name == "resnet18" || name == "resnet50" || name == "mobilenetv2")
    return opt.small_input ? Shape{3, 32, 32} : Shape{3, 224, 224};
  AB_FAIL("default_input_shape: unknown model '", name, "'; valid names: ", valid_names());
}

int64_t count_parameters(const Module& m) {
  int64_t n = 0;
  for (auto& p : m.named_parameters()) n += p.second.numel();
  return n;
}

int64_t macs_per_sample(Module& m, const Shape& input) {
  bool was_training = m.is_training();
  m.eval();
  int64_t total = 0;
  try {
    NoGradGuard ng;
    auto* tsn = dynamic_cast<TemporalSegmentNetwork*>(&m);
    Shape s = {tsn ? tsn->segments() : 1};  // a video model's sample is a clip of T frames
    s.insert(s.end(), input.begin(), input.end());
    m.forward(Tensor::zeros(s, DType::F32, m.device()));
    total = m.last_macs();
    for (auto& [name, sub] : m.named_modules()) total += sub->last_macs();
    total *= s[0];  // last_macs() counts one frame
  } catch (...) {
    m.train(was_training);
    throw;
  }
  m.train(was_training);
  return total;
}

}  // namespace anybit::nn
