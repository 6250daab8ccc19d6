// test_qmodel.cpp - quantized layers inside models, switching, checkpoints, and the joint
// trainer's rules (METHOD.md sections 2-5).
#include <cstdio>
#include <map>
#include <set>
#include <unistd.h>

#include "autograd/autograd.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "quant/joint_trainer.h"
#include "quant/qmodel.h"
#include "quant/quantizers.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::quant;
using namespace anybit::test;

namespace {

QuantOptions opts(std::vector<int> bits, double clip = 2.0) {
  QuantOptions o;
  o.bit_set = bits;
  o.clip_init = clip;
  o.weight.scale = WeightScale::Sat;
  return o;
}

Tensor images(int64_t n, int64_t c, int64_t h, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn({n, c, h, h}, g);
}

Tensor labels(int64_t n, int64_t k, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> v(n);
  for (auto& x : v) x = (int64_t)g.below(k);
  return Tensor::from_vector(v, {n});
}

// The Nodes of y's graph whose op name contains `part`.
int count_nodes(const Tensor& y, const std::string& part) {
  std::set<Node*> seen;
  std::vector<Node*> todo = {y.impl().grad_fn.get()};
  int count = 0;
  while (!todo.empty()) {
    Node* n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n).second) continue;
    count += n->name.find(part) != std::string::npos;
    for (const Edge& e : n->next) todo.push_back(e.fn.get());
  }
  return count;
}

std::string temp_path(const std::string& name) {
  return "/tmp/anybit_test_" + std::to_string(getpid()) + "_" + name;
}

}  // namespace

TEST_CASE("every quantized layer of a model at b bits has at most 2^b weight values", "[quant]") {
  QuantModel m("resnet20", 10, opts({8, 4, 2}), 1);
  int layers = 0;
  for (auto& [name, mod] : m.net().named_modules()) {
    auto* c = dynamic_cast<QConv2d*>(mod.get());
    if (!c) continue;
    ++layers;
    for (int b : {8, 4, 2}) {
      auto v = c->quantized_weight(b).to_vector<float>();
      REQUIRE(std::set<float>(v.begin(), v.end()).size() <= (size_t(1) << b));
    }
  }
  REQUIRE(layers == 18 + 2);  // 9 blocks x 2 convs + 2 shortcut convs; the stem stays FP
  // The stem and the classifier are full precision.
  for (auto& [name, mod] : m.net().named_modules()) {
    if (name == "conv1") REQUIRE(mod->type_name() == "Conv2d");
    if (name == "fc") REQUIRE(mod->type_name() == "Linear");
  }
}

TEST_CASE("a quantized layer is the float op composed with its quantizers", "[quant]") {
  auto state = std::make_shared<BitState>();
  state->bit_set = {8, 4};
  auto block = std::make_shared<BlockBits>();
  block->model = state;
  Generator gen(3);
  QuantOptions o = opts({8, 4}, 1.5);
  QLinear l(6, 5, true, block, o, gen);
  Tensor x = mul(abs(randn({3, 6}, 4, DType::F32)), 2.0);
  for (int b : {8, 4}) {
    state->active = b;
    Tensor expect = linear(pact_quantize(x, Tensor::full({1}, 1.5), b), quantize_weight(l.weight_, b, o.weight), l.bias_);
    require_close(l.forward(x), expect, 0, 0, "qlinear");
  }
}

TEST_CASE("relu_into: a BN applies the next QConv2d's PACT in its own op, as the two layers apart", "[quant]") {
  // A residual block's first BN and second conv (nn::relu_into): the BN's op writes the conv's
  // PACT-quantized input, and the conv takes it as it is. Against the same layers run apart
  // (relu_after, then the conv's own forward): the same output, running statistics and conv
  // weight gradient bit for bit; the gradients of x, the BN's weight and bias and the clip, whose
  // sums the fused op adds in another order, within float rounding. At 8 and 4 bits and in the
  // FP member (32: the clip alone).
  auto state = std::make_shared<BitState>();
  state->bit_set = {8, 4, 32};
  auto block = std::make_shared<BlockBits>();
  block->model = state;
  const QuantOptions o = opts({8, 4, 32}, 1.2);
  std::shared_ptr<MultiBatchNorm2d> bns[2];
  std::shared_ptr<QConv2d> convs[2];
  for (int k = 0; k < 2; ++k) {
    Generator gen(7);  // the same weights in both
    bns[k] = std::make_shared<MultiBatchNorm2d>(6, block);
    convs[k] = std::make_shared<QConv2d>(nn::ConvSpec{6, 5, 3, 1, 1}, block, o, gen);
    NoGradGuard ng;
    for (auto& set : bns[k]->sets()) {
      set->weight_.copy_(add(randn({6}, 11, DType::F32), 1.0));
      set->bias_.copy_(mul(randn({6}, 12, DType::F32), 0.5));
    }
  }
  PactAfter pact;
  state->active = 8;
  REQUIRE(convs[0]->input_pact(&pact));
  for (bool training : {true, false})
    for (int b : {8, 4, 32}) {
      INFO((training ? "training, " : "eval, ") << b << " bits");
      state->active = b;
      Tensor ys[2], gx[2];
      for (int k = 0; k < 2; ++k) {
        bns[k]->train(training), convs[k]->train(training);
        bns[k]->zero_grad(), convs[k]->zero_grad();
        Tensor x = randn({4, 6, 5, 5}, 13, DType::F32).requires_grad_();
        ys[k] = k ? relu_into(*bns[k], x, *convs[k]) : convs[k]->forward(nn::relu_after(*bns[k], x));
        ys[k].backward(randn(ys[k].shape(), 14, DType::F32));
        gx[k] = x.grad();
      }
      require_close(ys[1], ys[0], 0, 0, "output");
      require_close(gx[1], gx[0], 1e-5, 1e-5, "dx");
      nn::BatchNorm2d &s0 = bns[0]->set(b), &s1 = bns[1]->set(b);
      require_close(s1.weight_.grad(), s0.weight_.grad(), 1e-5, 1e-5, "BN weight gradient");
      require_close(s1.bias_.grad(), s0.bias_.grad(), 1e-5, 1e-5, "BN bias gradient");
      require_close(s1.running_mean_, s0.running_mean_, 0, 0, "running_mean");
      require_close(s1.running_var_, s0.running_var_, 0, 0, "running_var");
      require_close(convs[1]->weight_.grad(), convs[0]->weight_.grad(), 0, 0, "conv weight gradient");
      Tensor clips[2];
      for (int k = 0; k < 2; ++k)
        for (auto& p : convs[k]->quant_params())
          if (p.bits == b && p.name.rfind("clip", 0) == 0) clips[k] = p.tensor->grad();
      REQUIRE(clips[0].defined());
      REQUIRE(std::abs(clips[0].item<double>()) > 1e-3);  // some inputs reach the clip
      require_close(clips[1], clips[0], 1e-5, 1e-6, "clip gradient");
    }
}

TEST_CASE("relu_into hands PACT over only when the next layer's quantizer is unsigned PACT", "[quant]") {
  auto state = std::make_shared<BitState>();
  state->bit_set = {4};
  state->active = 4;
  auto block = std::make_shared<BlockBits>();
  block->model = state;
  Generator gen(3);
  PactAfter pact;
  QuantOptions lsq = opts({4});
  lsq.act_quant = "lsq";
  REQUIRE_FALSE(QConv2d(nn::ConvSpec{4, 4, 3, 1, 1}, block, lsq, gen).input_pact(&pact));
  nn::ConvSpec signed_in{4, 4, 3, 1, 1};
  signed_in.signed_input = true;
  REQUIRE_FALSE(QConv2d(signed_in, block, opts({4}), gen).input_pact(&pact));
  REQUIRE(QConv2d(nn::ConvSpec{4, 4, 3, 1, 1}, block, opts({4}), gen).input_pact(&pact));
  REQUIRE(pact.bits == 4);
}

TEST_CASE("ResNet-20's blocks hand their outputs over quantized, as the layers run apart", "[quant]") {
  // The model's forward chains its blocks (nn::SharesQuantizedInput): the stem's BN and every
  // block's last BN also write the next block's first conv's PACT input, and the backward adds the
  // shortcut's and the conv's gradients inside that BN. Against the same modules run one by one
  // (the stem, then each stage's own forward, which hands nothing over): the logits and the
  // running statistics equal bit for bit; the gradients, whose per-channel sums in those BNs are
  // vectorised in another order (test_pool_norm.cpp), within float rounding. At 4 bits, in the FP
  // member (32) and in evaluation.
  QuantModel m("resnet20", 10, opts({4, 32}, 1.0), 5);
  nn::Module& net = m.net();
  std::map<std::string, nn::ModulePtr> child;
  for (auto& [name, c] : net.children()) child[name] = c;
  REQUIRE(child.count("layer3"));
  auto apart = [&](const Tensor& x) {
    Tensor y = nn::relu_after(*child["bn1"], child["conv1"]->forward(x));
    for (const char* stage : {"layer1", "layer2", "layer3"}) y = child[stage]->forward(y);
    return child["fc"]->forward(global_avg_pool2d(y));
  };
  for (bool training : {true, false})
    for (int b : {4, 32}) {
      INFO((training ? "training, " : "eval, ") << b << " bits");
      m.set_bits(b);
      net.train(training);
      Tensor logits[2];
      std::map<std::string, Tensor> grads[2], stats[2];
      nn::NamedTensors sd0;  // a copy: state_dict's tensors are the model's own
      for (auto& [name, t] : net.state_dict()) sd0.emplace_back(name, t.clone());
      for (int chained = 0; chained < 2; ++chained) {
        net.load_state_dict(sd0, true);  // the same running statistics to start from
        net.zero_grad();
        Tensor x = images(4, 3, 8, 9).requires_grad_();
        logits[chained] = chained ? m.forward(x) : apart(x);
        // the chained forward really hands over: the stem's BN and the 8 block outputs that feed
        // a next block are two-output ops ("..._tap"); run apart, none is
        REQUIRE(count_nodes(logits[chained], "_tap") == (chained ? 9 : 0));
        cross_entropy(logits[chained], labels(4, 10, 3)).backward();
        for (auto& [name, p] : net.named_parameters())
          if (p.grad().defined()) grads[chained][name] = p.grad().clone();
        grads[chained]["input"] = x.grad();
        for (auto& [name, t] : net.state_dict()) stats[chained][name] = t.clone();
      }
      require_close(logits[1], logits[0], 0, 0, "logits");
      REQUIRE(grads[1].size() == grads[0].size());
      int clips = 0;
      for (auto& [name, g] : grads[0]) {
        INFO(name);
        REQUIRE(grads[1].count(name));
        clips += name.find("clip") != std::string::npos;
        const std::vector<double> v = g.to_vector<double>();
        double top = 0;
        for (double e : v) top = std::max(top, std::abs(e));
        require_close(grads[1][name], g, 1e-5, 1e-5 * top, "gradient");  // sums with cancellation: against the largest
      }
      REQUIRE(clips > 0);
      for (auto& [name, t] : stats[0]) {
        INFO(name);
        require_close(stats[1][name], t, 0, 0, "state");
      }
    }
  // A temporal shift before the first conv: that block quantizes its input itself.
  PactAfter pact;
  auto* block = dynamic_cast<nn::BasicBlock*>(&(*std::dynamic_pointer_cast<nn::Sequential>(child["layer1"]))[1]);
  REQUIRE(block);
  m.set_bits(4);
  REQUIRE(block->input_pact(&pact));
  block->enable_temporal_shift(2, 8);
  REQUIRE_FALSE(block->input_pact(&pact));
}

TEST_CASE("switching the bit-width switches the BN set and the clip value", "[quant]") {
  QuantModel m("resnet20", 10, opts({8, 4}), 2);
  auto sd = m.net().state_dict();
  // Make bit-width 4's BN sets and clips differ from 8's.
  {
    NoGradGuard ng;
    for (auto& [name, t] : m.net().named_parameters()) {
      if (name.find(".bn.1.weight") != std::string::npos) t.fill_(0.5);
      if (name.find("clip_b4") != std::string::npos) t.fill_(0.7);
    }
  }
  m.net().eval();
  Tensor x = images(2, 3, 8, 5);
  m.set_bits(4);
  Tensor y4 = m.forward(x);
  // The same network built with only the 4-bit set and clips, loaded from the 4-bit entries.
  QuantModel only4("resnet20", 10, opts({4}), 2);
  nn::NamedTensors mapped;
  for (auto& [name, t] : m.net().state_dict()) {
    std::string n = name;
    auto p = n.find(".bn.1.");
    if (n.find(".bn.0.") != std::string::npos || n.find("clip_b8") != std::string::npos) continue;
    if (p != std::string::npos) n.replace(p, 6, ".bn.0.");
    mapped.emplace_back(n, t);
  }
  only4.net().load_state_dict(mapped, true);
  only4.net().eval();
  require_close(y4, only4.forward(x), 1e-5, 1e-5, "4-bit model");
  m.set_bits(8);
  Tensor y8 = m.forward(x);
  auto d = sub(y8, y4).to_vector<float>();
  float diff = 0;
  for (float v : d) diff = std::max(diff, std::abs(v));
  REQUIRE(diff > 1e-3);  // a different BN set and clip give a different network
}

TEST_CASE("a model saved after joint training and reloaded gives the same logits at every bit-width", "[quant][checkpoint]") {
  QuantModel m("lenet5", 10, opts({8, 4, 2}), 3);
  nn::SGD sgd(m.net().named_parameters(), 0.05, 0.9);
  JointTrainer jt(m, MethodConfig{}, 4);
  for (int s = 0; s < 3; ++s) {
    jt.accumulate_gradients(images(16, 1, 28, 10 + s), labels(16, 10, 20 + s), s / 3.0);
    sgd.step();
  }
  std::string path = temp_path("qmodel.safetensors");
  nn::save_model(path, m.net());
  QuantModel fresh("lenet5", 10, opts({8, 4, 2}), 99);
  nn::load_model(path, fresh.net());
  std::remove(path.c_str());
  m.net().eval();
  fresh.net().eval();
  Tensor x = images(8, 1, 28, 30);
  for (int b : {8, 4, 2}) {
    m.set_bits(b);
    fresh.set_bits(b);
    require_close(m.forward(x), fresh.forward(x), 0, 0, "bits " + std::to_string(b));
  }
}

TEST_CASE("an FP checkpoint loads into a quantized model: shared weights, every BN set from the FP BN", "[quant]") {
  auto fp = nn::make_model("resnet20", 10, {}, 5);
  {
    NoGradGuard ng;
    for (auto& [name, t] : fp->state_dict())
      if (name.find("running_mean") != std::string::npos) t.fill_(0.25);
  }
  QuantModel q("resnet20", 10, opts({8, 6, 4, 2}), 6);
  q.load_fp_state_dict(fp->state_dict());
  auto qs = q.net().state_dict();
  std::map<std::string, Tensor> qm(qs.begin(), qs.end());
  auto fs = fp->state_dict();
  std::map<std::string, Tensor> fm(fs.begin(), fs.end());
  require_close(qm.at("layer1.0.conv1.weight"), fm.at("layer1.0.conv1.weight"), 0, 0, "shared conv weight");
  for (int i = 0; i < 4; ++i)
    REQUIRE(qm.at("layer2.1.bn2.bn." + std::to_string(i) + ".running_mean").to_vector<float>() ==
            std::vector<float>(32, 0.25f));
  REQUIRE(qm.at("layer1.0.conv1.clip_b2").item<float>() == 2.0f);  // clips keep their initial value
  // A checkpoint of another model is refused with the differing names listed.
  auto lenet = nn::make_model("lenet5", 10, {}, 1);
  REQUIRE_THROWS_WITH(q.load_fp_state_dict(lenet->state_dict()), Catch::Contains("layer1.0.conv1.weight"));
}

TEST_CASE("joint training accumulates the gradients of every bit-width into the shared weights", "[quant]") {
  MethodConfig plain;
  plain.teacher = TeacherRule::None;
  plain.swap = false;
  QuantModel m("lenet5", 10, opts({8, 2}), 7);
  Tensor x = images(8, 1, 28, 1), y = labels(8, 10, 2);
  JointTrainer jt(m, plain, 1);
  jt.accumulate_gradients(x, y, 0);
  Tensor joint = m.net().named_parameters()[2].second.grad().clone();  // conv2.weight
  REQUIRE(m.net().named_parameters()[2].first == "conv2.weight");
  Tensor sum_grad;
  for (int b : {8, 2}) {
    m.net().zero_grad();
    m.set_bits(b);
    cross_entropy(m.forward(x), y).backward();
    Tensor g = m.net().named_parameters()[2].second.grad();
    sum_grad = sum_grad.defined() ? add(sum_grad, g) : g.clone();
  }
  require_close(joint, sum_grad, 1e-4, 1e-6, "accumulated");
}

TEST_CASE("a frozen FP teacher adds its distillation to the highest bit-width's loss only", "[quant]") {
  MethodConfig c;
  c.teacher = TeacherRule::None;
  c.swap = false;
  c.fp_kd_weight = 0.5;
  QuantModel m("lenet5", 10, opts({8, 2}), 7);
  Tensor x = images(16, 1, 28, 5), y = labels(16, 10, 6);
  Generator g(11);
  Tensor fp_logits = mul(Tensor::randn({16, 10}, g), 3.0);
  JointTrainer jt(m, c, 1);
  jt.accumulate_gradients(x, y, 0, fp_logits);
  // the recorded losses, against CE (+ 0.5 KD at 8 bits) recomputed on the same weights
  double expect8, expect2;
  {
    NoGradGuard ng;
    m.set_bits(8);
    Tensor out8 = m.forward(x);
    expect8 = cross_entropy(out8, y).item<double>() + 0.5 * soft_cross_entropy(out8, fp_logits, 1.0).item<double>();
    m.set_bits(2);
    expect2 = cross_entropy(m.forward(x), y).item<double>();
  }
  auto& st = jt.stats();
  REQUIRE(st.at(8).loss_sum / st.at(8).count == Approx(expect8).epsilon(1e-5));
  REQUIRE(st.at(2).loss_sum / st.at(2).count == Approx(expect2).epsilon(1e-5));
  REQUIRE(st.at(8).teacher_counts.at(0) == 16);  // bit-width 0: the FP teacher
  REQUIRE(st.at(2).teacher_counts.empty());
  // and its gradient reaches the weights: without the teacher, the accumulated gradient differs
  Tensor with_fp = m.net().named_parameters()[2].second.grad().clone();
  JointTrainer plain(m, c, 1);
  plain.accumulate_gradients(x, y, 0);
  std::vector<float> a = with_fp.to_vector<float>(), b = m.net().named_parameters()[2].second.grad().to_vector<float>();
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
  REQUIRE(diff > 1e-4);
}

TEST_CASE("teacher rules: collab picks, per sample, the higher bit-width most confident in the label", "[quant]") {
  QuantModel m("lenet5", 10, opts({8, 4, 2}), 8);
  MethodConfig c;
  c.teacher = TeacherRule::Collab;
  c.swap = false;
  JointTrainer jt(m, c, 1);
  Tensor x = images(32, 1, 28, 3), y = labels(32, 10, 4);
  jt.accumulate_gradients(x, y, 0);
  auto& st = jt.stats();
  REQUIRE(st.at(8).teacher_counts.empty());       // the highest bit-width has no teacher
  int64_t taught4 = 0;
  for (auto& kv : st.at(4).teacher_counts) {
    taught4 += kv.second;
    REQUIRE(kv.first == 8);
  }
  REQUIRE(taught4 == 32);                          // 4-bit: only 8 is higher
  int64_t taught2 = 0;
  for (auto& kv : st.at(2).teacher_counts) {
    taught2 += kv.second;
    REQUIRE((kv.first == 8 || kv.first == 4));
  }
  REQUIRE(taught2 == 32);
  for (auto r : {TeacherRule::Highest, TeacherRule::Next}) {
    QuantModel m2("lenet5", 10, opts({8, 4, 2}), 8);
    MethodConfig c2;
    c2.teacher = r;
    c2.swap = false;
    JointTrainer j2(m2, c2, 1);
    j2.accumulate_gradients(x, y, 0);
    REQUIRE(j2.stats().at(2).teacher_counts.at(r == TeacherRule::Highest ? 8 : 4) == 32);
  }
  REQUIRE_THROWS_WITH(parse_teacher_rule("best"), Catch::Contains("--teacher") && Catch::Contains("best"));
}

TEST_CASE("collab teacher rule: non-finite logits stop training with the bit-widths named", "[quant]") {
  QuantModel m("lenet5", 10, opts({8, 4, 2}), 8);
  MethodConfig c;
  c.teacher = TeacherRule::Collab;
  c.swap = false;
  for (auto& [name, p] : m.net().named_parameters())
    if (name == "fc3.bias") p.fill_(std::nan(""));  // every bit-width's logits are NaN
  JointTrainer jt(m, c, 1);
  Tensor x = images(4, 1, 28, 3), y = labels(4, 10, 4);
  REQUIRE_THROWS_WITH(jt.accumulate_gradients(x, y, 0),
                      Catch::Contains("non-finite logits at bit-width 8") && Catch::Contains("W4A4 student") &&
                          Catch::Contains("collab"));
}

TEST_CASE("count_correct: top-1 is the first maximal index (argmax), top-5 ranks ties by class index", "[quant]") {
  // Every class ties: argmax is class 0, so only label 0 is top-1 correct; the top 5 are classes 0-4.
  Tensor flat = Tensor::zeros({10, 10});
  std::vector<int64_t> all(10);
  for (int64_t i = 0; i < 10; ++i) all[i] = i;
  int64_t top1 = 0, top5 = 0;
  count_correct(flat, Tensor::from_vector(all, {10}), &top1, &top5);
  REQUIRE(top1 == 1);
  REQUIRE(top5 == 5);
  // A tie between the label and a lower index is wrong; with a higher index it is right.
  Tensor tie = Tensor::from_vector(std::vector<float>{1, 3, 3, 0, 3, 2, 3, 3}, {2, 4});
  top1 = top5 = 0;
  count_correct(tie, Tensor::from_vector(std::vector<int64_t>{2, 3}, {2}), &top1, nullptr);
  REQUIRE(top1 == 0);
  top1 = 0;
  count_correct(tie, Tensor::from_vector(std::vector<int64_t>{1, 0}, {2}), &top1, nullptr);
  REQUIRE(top1 == 2);
  // NaN ranks above every number, as in torch.argmax: a NaN row is right only for its first NaN.
  Tensor nan_row = Tensor::from_vector(std::vector<float>{0, NAN, 5, NAN}, {1, 4});
  top1 = 0;
  count_correct(nan_row, Tensor::from_vector(std::vector<int64_t>{2}, {1}), &top1, nullptr);
  REQUIRE(top1 == 0);
  count_correct(nan_row, Tensor::from_vector(std::vector<int64_t>{3}, {1}), &top1, nullptr);
  REQUIRE(top1 == 0);
  count_correct(nan_row, Tensor::from_vector(std::vector<int64_t>{1}, {1}), &top1, nullptr);
  REQUIRE(top1 == 1);
  // and it agrees with argmax on random logits
  Tensor r = randn({64, 10}, 9, DType::F32), lab = labels(64, 10, 10);
  top1 = 0;
  count_correct(r, lab, &top1, nullptr);
  auto am = argmax(r, 1).to_vector<int64_t>(), lv = lab.to_vector<int64_t>();
  int64_t expect = 0;
  for (size_t i = 0; i < am.size(); ++i) expect += am[i] == lv[i];
  REQUIRE(top1 == expect);
}

TEST_CASE("label smoothing applies to every cross-entropy term of joint training", "[quant]") {
  Tensor x = images(16, 1, 28, 5), y = labels(16, 10, 6);
  for (auto rule : {TeacherRule::None, TeacherRule::Highest}) {
    MethodConfig c;
    c.teacher = rule;
    c.swap = false;
    c.label_smoothing = 0.2;
    QuantModel m("lenet5", 10, opts({8, 2}), 7);
    JointTrainer jt(m, c, 1);
    jt.accumulate_gradients(x, y, 0);
    // the recorded losses, against smoothed CE (+ KD from 8 bits at 2 bits) on the same weights
    double expect8, expect2, plain8;
    {
      NoGradGuard ng;
      m.set_bits(8);
      Tensor out8 = m.forward(x);
      expect8 = cross_entropy(out8, y, 0.2).item<double>();
      plain8 = cross_entropy(out8, y).item<double>();
      m.set_bits(2);
      Tensor out2 = m.forward(x);
      expect2 = cross_entropy(out2, y, 0.2).item<double>();
      if (rule == TeacherRule::Highest) expect2 += soft_cross_entropy(out2, out8, 1.0).item<double>();
    }
    auto& st = jt.stats();
    REQUIRE(std::fabs(expect8 - plain8) > 1e-3);  // smoothing really changes the loss here
    REQUIRE(st.at(8).loss_sum / st.at(8).count == Approx(expect8).epsilon(1e-5));
    REQUIRE(st.at(2).loss_sum / st.at(2).count == Approx(expect2).epsilon(1e-5));
  }
}

TEST_CASE("swap schedule: linear decay from p0 to 0 at 75% of training", "[quant]") {
  MethodConfig c;
  REQUIRE(swap_probability(c, 0.0) == Approx(0.5));
  REQUIRE(swap_probability(c, 0.375) == Approx(0.25));
  REQUIRE(swap_probability(c, 0.75) == Approx(0.0));
  REQUIRE(swap_probability(c, 0.9) == 0.0);
  c.swap_const = 0.3;
  REQUIRE(swap_probability(c, 0.9) == Approx(0.3));
  c.swap = false;
  REQUIRE(swap_probability(c, 0.0) == 0.0);
}

TEST_CASE("block swapping runs swapped blocks at the teacher's bit-width without moving its BN statistics", "[quant]") {
  MethodConfig c;
  c.teacher = TeacherRule::Highest;
  c.swap_const = 1.0;  // every block swapped in every student pass
  QuantModel m("resnet20", 10, opts({8, 2}), 9);
  QuantModel ref8("resnet20", 10, opts({8, 2}), 9);
  Tensor x = images(4, 3, 8, 5), y = labels(4, 10, 6);
  JointTrainer jt(m, c, 1);
  jt.accumulate_gradients(x, y, 0);
  REQUIRE(jt.stats().at(2).swapped_blocks == 9);
  // The 8-bit BN sets moved exactly once: by the 8-bit pass, not by the swapped student pass.
  ref8.set_bits(8);
  ref8.forward(x);
  auto a = m.net().state_dict(), b = ref8.net().state_dict();
  int compared = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].first.find("layer2.0.bn1.bn.0.running") != std::string::npos) {
      require_close(a[i].second, b[i].second, 1e-6, 1e-7, a[i].first);
      ++compared;
    }
  REQUIRE(compared == 2);
  // Overrides are cleared after the step.
  for (auto& blk : m.blocks()) REQUIRE(blk->override_bits == 0);
}

TEST_CASE("MobileNetV2: the expand convs and the last 1x1 conv quantize their signed inputs signed", "[quant]") {
  // Their inputs are linear bottleneck outputs (no ReLU before them): unsigned PACT would zero
  // every negative value at every bit-width, the FP member included.
  nn::ModelOptions mo;
  mo.small_input = true;
  mo.width = 0.25;
  QuantModel m("mobilenetv2", 10, opts({32, 8, 4}), 1, mo);
  Tensor x = Tensor::from_vector<float>({-0.5f, -0.25f, 0.0f, 0.5f}, {4});
  int signed_layers = 0, unsigned_layers = 0;
  for (auto& [name, mod] : m.net().named_modules()) {
    auto* q = dynamic_cast<QuantizedLayer*>(mod.get());
    if (!q) continue;
    auto& pact = dynamic_cast<PactActs&>(q->act_quantizer());
    // features.k.conv.0.0 is block k's expand conv when the block has one (every block after the
    // first, whose expansion is 1); features.18.0 is the last 1x1 conv.
    bool expand = name.size() > 9 && name.compare(name.size() - 9, 9, ".conv.0.0") == 0 && name != "features.1.conv.0.0";
    bool expect_signed = expand || name == "features.18.0";
    INFO(name);
    REQUIRE(pact.is_signed() == expect_signed);
    (expect_signed ? signed_layers : unsigned_layers)++;
    for (int b : {32, 8, 4}) {
      auto y = pact.forward(x, b).to_vector<float>();
      if (expect_signed) {
        REQUIRE(y[0] == Approx(-0.5).margin(2.0 / 7));  // a clip of 2: 4-bit signed steps of 2/7
        REQUIRE(y[0] < 0);
      } else {
        REQUIRE(y[0] == 0.0f);
      }
    }
  }
  REQUIRE(signed_layers == 16 + 1);  // 16 blocks with an expand conv, and the last conv
  REQUIRE(unsigned_layers > 0);
}

TEST_CASE("the model lists its quantizer parameters by bit-width; deploy stats count what b needs", "[quant]") {
  QuantModel m("resnet20", 10, opts({8, 4}), 3);
  auto qp = m.quant_params();
  REQUIRE(qp.size() == 20 * 2);  // 20 quantized convs x one clip per bit-width
  std::map<int, int> per_bits;
  for (auto& [name, p] : qp) {
    per_bits[p.bits]++;
    REQUIRE(name.substr(name.size() - p.name.size()) == p.name);
    REQUIRE(name.find("clip_b" + std::to_string(p.bits)) != std::string::npos);
  }
  REQUIRE(per_bits == std::map<int, int>{{4, 20}, {8, 20}});
  // Weight size at 4 bits, counted here from the names: 4 bits per quantized conv weight, and in
  // FP32 the clip values of 4, the BN set of 4 (bn.1, without its step counter), the stem and the
  // classifier.
  double bits = 0;
  for (auto& [name, t] : m.net().state_dict()) {
    bool qweight = name != "conv1.weight" && name.find("conv") != std::string::npos && name.find(".weight") != std::string::npos;
    bool qshortcut = name.find("shortcut.0.weight") != std::string::npos;
    if (qweight || qshortcut) bits += 4.0 * t.numel();
    else if (name.find("clip_b4") != std::string::npos) bits += 32;
    else if (name.find("clip_b8") != std::string::npos || name.find("num_batches_tracked") != std::string::npos) continue;
    else if (name.find(".bn.0.") != std::string::npos) continue;
    else bits += 32.0 * t.numel();
  }
  auto st = m.deploy_stats(4, {3, 32, 32});
  REQUIRE(st.weight_bytes == Approx(bits / 8).epsilon(1e-12));
  // A clip driven below zero is raised back by the model's constrain pass.
  qp[3].second.tensor->fill_(-1.0);
  REQUIRE(m.constrain_quantizers() == 1);
}
