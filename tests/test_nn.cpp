// test_nn.cpp - layers against the ops and the scalar references, PyTorch naming and parameter
// counts of the model zoo, MACs, blocks announced to the factory, and (when /usr/bin/python3 with
// torch exists) a checkpoint loaded into the same model in PyTorch giving the same logits.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <cstdlib>
#include <set>

#include "helpers.h"
#include "skips.h"
#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/models.h"
#include "tensor/ref.h"

using namespace anybit;
using namespace anybit::nn;

namespace {

std::vector<std::string> names_of(const NamedTensors& ts) {
  std::vector<std::string> out;
  for (auto& t : ts) out.push_back(t.first);
  return out;
}

// PyTorch's state_dict() names of the CIFAR ResNet-20 of scripts/check_checkpoint.py, in order.
std::vector<std::string> pytorch_resnet20_names() {
  std::vector<std::string> out;
  auto bn = [&](const std::string& p) {
    for (auto s : {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}) out.push_back(p + "." + s);
  };
  out.push_back("conv1.weight");
  bn("bn1");
  for (int s = 1; s <= 3; ++s)
    for (int b = 0; b < 3; ++b) {
      std::string p = "layer" + std::to_string(s) + "." + std::to_string(b) + ".";
      out.push_back(p + "conv1.weight");
      bn(p + "bn1");
      out.push_back(p + "conv2.weight");
      bn(p + "bn2");
      if (s > 1 && b == 0) {
        out.push_back(p + "shortcut.0.weight");
        bn(p + "shortcut.1");
      }
    }
  out.push_back("fc.weight");
  out.push_back("fc.bias");
  return out;
}

double stddev(const Tensor& t) {
  auto v = t.to_vector<double>();
  double m = 0, s = 0;
  for (double x : v) m += x;
  m /= v.size();
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / v.size());
}

// Records the factory calls a model makes.
struct RecordingLayers : FloatLayers {
  std::vector<std::string> blocks;
  int stems = 0, classifiers = 0, convs = 0, linears = 0, bns = 0;
  ModulePtr stem_conv(const ConvSpec& s) override {
    ++stems;
    return FloatLayers::stem_conv(s);
  }
  ModulePtr classifier(int64_t in, int64_t out) override {
    ++classifiers;
    return FloatLayers::classifier(in, out);
  }
  ModulePtr conv(const ConvSpec& s) override {
    ++convs;
    return FloatLayers::conv(s);
  }
  ModulePtr linear(int64_t in, int64_t out, bool bias) override {
    ++linears;
    return FloatLayers::linear(in, out, bias);
  }
  ModulePtr batch_norm(int64_t c) override {
    ++bns;
    return FloatLayers::batch_norm(c);
  }
  void begin_block(const std::string& name) override { blocks.push_back(name); }
};

}  // namespace

// ---- layers ---------------------------------------------------------------------------------------

TEST_CASE("Conv2d: names, PyTorch default init bounds, output = ref::conv2d, MACs", "[nn]") {
  Generator g(1);
  ConvSpec s{4, 6, 3};
  s.stride = 2;
  s.pad = 1;
  s.groups = 2;
  s.bias = true;
  Conv2d conv(s, g);
  REQUIRE(names_of(conv.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  REQUIRE(conv.weight_.shape() == Shape{6, 2, 3, 3});
  REQUIRE(conv.weight_.requires_grad());
  double bound = 1 / std::sqrt(2.0 * 9);  // fan_in = (in / groups) k k
  for (double w : conv.weight_.to_vector<double>()) REQUIRE(std::abs(w) <= bound);
  for (double b : conv.bias_.to_vector<double>()) REQUIRE(std::abs(b) <= bound);
  Tensor x = test::randn({2, 4, 7, 7}, 2, DType::F32);
  Tensor y = conv(x);
  REQUIRE(y.shape() == Shape{2, 6, 4, 4});
  test::require_close(y, ref::conv2d(x, conv.weight_, conv.bias_, Conv2dOptions::make(2, 1, 1, 2)), 1e-4, 1e-5);
  REQUIRE(conv.last_macs() == 6 * 4 * 4 * 2 * 9);
  REQUIRE(conv.repr() == "Conv2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2)");

  ConvSpec nb{3, 5, 1};
  Conv2d plain(nb, g);
  REQUIRE(names_of(plain.named_parameters()) == std::vector<std::string>{"weight"});
  REQUIRE_THROWS_WITH(Conv2d(ConvSpec{3, 4, 3, 1, 0, 1, 2}, g), Catch::Contains("divisible by groups"));
}

TEST_CASE("Linear: init bounds and output = ref::linear", "[nn]") {
  Generator g(2);
  Linear fc(20, 7, true, g);
  double bound = 1 / std::sqrt(20.0);
  for (double w : fc.weight_.to_vector<double>()) REQUIRE(std::abs(w) <= bound);
  for (double b : fc.bias_.to_vector<double>()) REQUIRE(std::abs(b) <= bound);
  REQUIRE(stddev(fc.weight_) > 0.5 * bound / std::sqrt(3.0));  // U(-b, b) has std b / sqrt(3)
  Tensor x = test::randn({5, 20}, 3, DType::F32);
  test::require_close(fc(x), ref::linear(x, fc.weight_, fc.bias_), 1e-5, 1e-5);
  REQUIRE(fc.last_macs() == 140);
}

TEST_CASE("BatchNorm2d: buffers named as PyTorch, train updates them, eval uses them, (N, C) too", "[nn]") {
  BatchNorm2d bn(3);
  REQUIRE(names_of(bn.state_dict()) ==
          std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"});
  REQUIRE(names_of(bn.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  REQUIRE(bn.num_batches_tracked_.dtype() == DType::I64);
  REQUIRE(bn.num_batches_tracked_.dim() == 0);
  Tensor x = test::randn({4, 3, 5, 5}, 4, DType::F32) * 2.0 + 1.0;
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  Tensor want = ref::batch_norm(x, bn.weight_, bn.bias_, rm, rv, true, 0.1, 1e-5);
  test::require_close(bn(x), want, 1e-4, 1e-5, "train output");
  test::require_close(bn.running_mean_, rm, 1e-5, 1e-6, "running_mean");
  test::require_close(bn.running_var_, rv, 1e-5, 1e-6, "running_var");
  REQUIRE(bn.num_batches_tracked_.item<int64_t>() == 1);
  bn.eval();
  Tensor y = bn(x);
  REQUIRE(bn.num_batches_tracked_.item<int64_t>() == 1);
  test::require_close(y, ref::batch_norm(x, bn.weight_, bn.bias_, rm, rv, false, 0.1, 1e-5), 1e-4, 1e-5, "eval");
  bn.train();
  Tensor x2 = test::randn({6, 3}, 5, DType::F32);
  REQUIRE(bn(x2).shape() == Shape{6, 3});
  REQUIRE_THROWS_WITH(bn(test::randn({2, 4, 3, 3}, 6, DType::F32)), Catch::Contains("BatchNorm2d(3)"));
}

TEST_CASE("Pooling, activations, Flatten, Dropout, Sequential", "[nn]") {
  Tensor x = test::randn({2, 3, 6, 6}, 7, DType::F32);
  test::require_close(MaxPool2d(2)(x), ref::max_pool2d(x, 2, 2, 0), 0, 0, "maxpool");
  test::require_close(MaxPool2d(3, 2, 1)(x), ref::max_pool2d(x, 3, 2, 1), 0, 0, "maxpool pad");
  test::require_close(AvgPool2d(3, 1, 1)(x), ref::avg_pool2d(x, 3, 1, 1), 1e-5, 1e-6, "avgpool");
  Tensor gap = AdaptiveAvgPool2d(1)(x);
  REQUIRE(gap.shape() == Shape{2, 3, 1, 1});  // as nn.AdaptiveAvgPool2d(1)
  test::require_close(gap.reshape({2, 3}), ref::global_avg_pool2d(x), 1e-5, 1e-6, "gap");
  test::require_close(ReLU()(x), relu(x), 0, 0);
  test::require_close(ReLU6()(x * 10.0), clamp(x * 10.0, 0, 6), 0, 0);
  REQUIRE(Flatten()(x).shape() == Shape{2, 108});

  Dropout d1(0.5, 42), d2(0.5, 42);
  Tensor ones = Tensor::ones({1000});
  Tensor a = d1(ones), b = d2(ones);
  REQUIRE(a.to_vector<float>() == b.to_vector<float>());  // own generator, same seed
  int zeros = 0;
  for (float v : a.to_vector<float>()) {
    REQUIRE((v == 0.0f || v == 2.0f));
    zeros += v == 0.0f;
  }
  REQUIRE(zeros > 400);
  REQUIRE(zeros < 600);
  d1.eval();
  REQUIRE(d1(ones).to_vector<float>() == ones.to_vector<float>());

  Generator g(8);
  auto seq = std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
      std::make_shared<Linear>(4, 3, true, g), std::make_shared<ReLU>(), std::make_shared<Linear>(3, 2, false, g)});
  REQUIRE(names_of(seq->state_dict()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight"});
  Tensor in = test::randn({5, 4}, 9, DType::F32);
  Tensor manual = (*seq)[2](relu((*seq)[0](in)));
  test::require_close((*seq)(in), manual, 0, 0);
  REQUIRE_THROWS_WITH(seq->at(3), Catch::Contains("out of range"));
  seq->eval();
  REQUIRE(!(*seq)[0].is_training());
}

// ---- the model zoo -------------------------------------------------------------------------------

TEST_CASE("resnet20: PyTorch names in PyTorch order, 272,474 parameters, 40.8M MACs", "[nn]") {
  ModulePtr m = make_model("resnet20", 10);
  REQUIRE(names_of(m->state_dict()) == pytorch_resnet20_names());
  REQUIRE(count_parameters(*m) == 272474);
  // conv1 442,368 + layer1 6 x 2,359,296 + layer2/3 (1,179,648 + 5 x 2,359,296 + 131,072 shortcut)
  // + fc 640
  REQUIRE(macs_per_sample(*m, {3, 32, 32}) == 40813184);
  REQUIRE(m->is_training());  // restored after the MAC count
  Tensor y = (*m)(test::randn({2, 3, 32, 32}, 10, DType::F32));
  REQUIRE(y.shape() == Shape{2, 10});
}

TEST_CASE("resnet20 initialisation follows torchvision", "[nn]") {
  ModulePtr m = make_model("resnet20", 10, {}, 5);
  for (auto& [name, p] : m->named_parameters()) {
    INFO(name);
    if (p.dim() == 4 && p.numel() >= 9216) {  // conv weights: N(0, 2 / fan_out)
      double want = std::sqrt(2.0 / double(fan_out(p)));
      REQUIRE(stddev(p) == Approx(want).epsilon(0.05));
    }
    if (name.find("bn") != std::string::npos && name.find("weight") != std::string::npos)
      REQUIRE(p.to_vector<float>() == std::vector<float>(p.numel(), 1.0f));
  }
  // Same seed, same weights; another seed, other weights.
  auto a = make_model("resnet20", 10, {}, 5)->state_dict(), b = m->state_dict(), c = make_model("resnet20", 10, {}, 6)->state_dict();
  REQUIRE(a[0].second.to_vector<float>() == b[0].second.to_vector<float>());
  REQUIRE(a[0].second.to_vector<float>() != c[0].second.to_vector<float>());
}

TEST_CASE("lenet5: 61,706 parameters, names, MACs, factory calls", "[nn]") {
  RecordingLayers f;
  ModulePtr m = make_model("lenet5", 10, f);
  REQUIRE(count_parameters(*m) == 61706);
  REQUIRE(names_of(m->state_dict()) ==
          std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                   "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"});
  REQUIRE(f.blocks == std::vector<std::string>{"conv2", "fc1", "fc2"});
  REQUIRE(f.stems == 1);
  REQUIRE(f.classifiers == 1);
  REQUIRE(f.convs == 1);
  REQUIRE(f.linears == 2);
  // 28*28*6*25 + 10*10*16*150 + 400*120 + 120*84 + 84*10
  REQUIRE(macs_per_sample(*m, {1, 28, 28}) == 117600 + 240000 + 48000 + 10080 + 840);
  REQUIRE((*m)(test::randn({3, 1, 28, 28}, 11, DType::F32)).shape() == Shape{3, 10});
}

TEST_CASE("resnet20 blocks are announced to the factory before their layers", "[nn]") {
  RecordingLayers f;
  make_model("resnet20", 10, f);
  std::vector<std::string> want;
  for (int s = 1; s <= 3; ++s)
    for (int b = 0; b < 3; ++b) want.push_back("layer" + std::to_string(s) + "." + std::to_string(b));
  REQUIRE(f.blocks == want);
  REQUIRE(f.stems == 1);
  REQUIRE(f.classifiers == 1);
  REQUIRE(f.convs == 18 + 2);
  REQUIRE(f.bns == 1 + 18 + 2);
}

TEST_CASE("resnet20 trains: every parameter gets a gradient", "[nn]") {
  ModulePtr m = make_model("resnet20", 10);
  Tensor x = test::randn({2, 3, 16, 16}, 12, DType::F32);
  sum((*m)(x)).backward();
  for (auto& [name, p] : m->named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
}

TEST_CASE("preact_resnet20 with width multiplier", "[nn]") {
  ModelOptions o;
  o.width = 5;
  RecordingLayers f;
  ModulePtr m = make_model("preact_resnet20", 10, f, o);
  // PyTorch's count for the same definition (scripts/check_checkpoint.py PreActResNet20(10, 5))
  REQUIRE(count_parameters(*m) == 6757850);
  REQUIRE(count_parameters(*make_model("preact_resnet20", 10)) == 272282);
  REQUIRE(f.blocks.size() == 9);
  auto names = names_of(m->state_dict());
  REQUIRE(names.front() == "conv1.weight");
  REQUIRE(std::count(names.begin(), names.end(), "layer2.0.shortcut.0.weight") == 1);
  REQUIRE(std::count(names.begin(), names.end(), "bn.running_var") == 1);
  REQUIRE((*make_model("preact_resnet20", 10))(test::randn({2, 3, 8, 8}, 13, DType::F32)).shape() == Shape{2, 10});
}

TEST_CASE("torchvision resnet18 / resnet50 / mobilenetv2: names and parameter counts", "[nn]") {
  // torchvision.models.resnet18() / resnet50() / mobilenet_v2() with 1000 classes
  ModulePtr r18 = make_model("resnet18", 1000);
  REQUIRE(count_parameters(*r18) == 11689512);
  auto n18 = names_of(r18->state_dict());
  REQUIRE(std::count(n18.begin(), n18.end(), "layer2.0.downsample.0.weight") == 1);
  REQUIRE(std::count(n18.begin(), n18.end(), "layer4.1.bn2.num_batches_tracked") == 1);
  REQUIRE(n18.size() == 122);  // len(torchvision.models.resnet18().state_dict())

  ModulePtr r50 = make_model("resnet50", 1000);
  REQUIRE(count_parameters(*r50) == 25557032);
  auto n50 = names_of(r50->state_dict());
  REQUIRE(std::count(n50.begin(), n50.end(), "layer1.0.downsample.1.running_mean") == 1);
  REQUIRE(std::count(n50.begin(), n50.end(), "layer3.5.conv3.weight") == 1);

  RecordingLayers f;
  ModulePtr mb = make_model("mobilenetv2", 1000, f);
  REQUIRE(count_parameters(*mb) == 3504872);
  auto nm = names_of(mb->state_dict());
  for (auto n : {"features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
                 "features.1.conv.1.weight", "features.2.conv.3.bias", "features.18.0.weight", "classifier.1.bias"})
    REQUIRE(std::count(nm.begin(), nm.end(), n) == 1);
  REQUIRE(f.blocks.size() == 18);  // 17 inverted residuals and the last 1x1 conv
  REQUIRE(f.stems == 1);
  REQUIRE(f.classifiers == 1);
}

TEST_CASE("small-input ResNet-18 and MobileNetV2 run on 32x32", "[nn]") {
  ModelOptions o;
  o.small_input = true;
  Tensor x = test::randn({2, 3, 32, 32}, 14, DType::F32);
  ModulePtr r18 = make_model("resnet18", 10, o);
  REQUIRE(r18->state_dict()[0].second.shape() == Shape{64, 3, 3, 3});
  REQUIRE((*r18)(x).shape() == Shape{2, 10});
  o.width = 0.5;
  ModulePtr mb = make_model("mobilenetv2", 10, o);
  REQUIRE((*mb)(x).shape() == Shape{2, 10});
  REQUIRE(default_input_shape("mobilenetv2", o) == Shape{3, 32, 32});
}

TEST_CASE("make_model errors list the valid names", "[nn]") {
  REQUIRE_THROWS_WITH(make_model("resnet21", 10), Catch::Contains("unknown model 'resnet21'") &&
                                                      Catch::Contains("lenet5, resnet20, preact_resnet20"));
  ModelOptions o;
  o.width = 2;
  REQUIRE_THROWS_WITH(make_model("resnet20", 10, o), Catch::Contains("no width multiplier"));
}

TEST_CASE("loading another model's checkpoint lists the differing names and shapes", "[nn][checkpoint]") {
  char tmpl[] = "/tmp/anybit_nn_XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  std::string path = std::string(tmpl) + "/r20.safetensors";
  ModulePtr r20 = make_model("resnet20", 10);
  save_model(path, *r20, {{"model", "resnet20"}});
  ModulePtr r20_100 = make_model("resnet20", 100);
  try {
    load_model(path, *r20_100);
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string m = e.what();
    INFO(m);
    REQUIRE(m.find("r20.safetensors") != std::string::npos);
    REQUIRE(m.find("2 differences") != std::string::npos);
    REQUIRE(m.find("fc.weight: expected [100, 64], got [10, 64]") != std::string::npos);
    REQUIRE(m.find("fc.bias: expected [100], got [10]") != std::string::npos);
  }
  ModulePtr pre = make_model("preact_resnet20", 10);
  REQUIRE_THROWS_WITH(load_model(path, *pre), Catch::Contains("bn.weight: missing from the checkpoint") &&
                                                  Catch::Contains("bn1.weight: not a parameter or buffer"));
  ModulePtr copy = make_model("resnet20", 10, {}, 77);
  load_model(path, *copy);
  Tensor x = test::randn({2, 3, 8, 8}, 15, DType::F32);
  r20->eval();
  copy->eval();
  test::require_close((*copy)(x), (*r20)(x), 0, 0, "reloaded model");
  std::remove(path.c_str());
  rmdir(tmpl);
}

// ---- the same checkpoint in PyTorch ------------------------------------------------------------

TEST_CASE("a checkpoint gives the same logits in PyTorch (scripts/check_checkpoint.py)", "[nn][checkpoint][torch]") {
  const char* py = "/usr/bin/python3";
  if (access(py, X_OK) != 0) {
    test::skip_check("/usr/bin/python3 is not available");
    return;
  }
  char tmpl[] = "/tmp/anybit_torch_XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  std::string dir = tmpl;
  struct Case {
    std::string model;
    Shape input;
    double width;
  };
  std::vector<std::string> files;
  std::ofstream manifest(dir + "/checks.txt");
  for (const Case& c : {Case{"lenet5", {1, 28, 28}, 1.0}, Case{"resnet20", {3, 32, 32}, 1.0},
                        Case{"preact_resnet20", {3, 32, 32}, 1.5}}) {
    ModelOptions o;
    o.width = c.width;
    ModulePtr m = make_model(c.model, 10, o, 3);
    // Non-trivial BN statistics and affine parameters: random gamma/beta/biases, then a few
    // training-mode batches to move the running statistics.
    Generator g(4);
    {
      NoGradGuard ng;
      for (auto& [name, p] : m->named_parameters())
        if (p.dim() == 1) p.copy_(Tensor::rand(p.shape(), g, 0.5, 1.5));
      Shape bs = {4};
      bs.insert(bs.end(), c.input.begin(), c.input.end());
      for (int i = 0; i < 3; ++i) (*m)(Tensor::randn(bs, g));
    }
    m->eval();
    Shape bs = {3};
    bs.insert(bs.end(), c.input.begin(), c.input.end());
    Tensor x = Tensor::randn(bs, g);
    Tensor logits;
    {
      NoGradGuard ng;
      logits = (*m)(x);
    }
    std::string ckpt = dir + "/" + c.model + ".safetensors", batch = dir + "/" + c.model + "_batch.safetensors";
    save_model(ckpt, *m, {{"model", c.model}});
    write_safetensors(batch, {{"input", x}, {"logits", logits}});
    manifest << c.model << " " << c.width << " " << ckpt << " " << batch << "\n";
    files.push_back(ckpt);
    files.push_back(batch);
    if (c.model == "resnet20") {
      // A control that must fail: one logit off by 0.01.
      std::string bad = dir + "/bad_batch.safetensors";
      Tensor wrong = logits.clone();
      wrong.data<float>()[7] += 0.01f;
      write_safetensors(bad, {{"input", x}, {"logits", wrong}});
      manifest << "resnet20 1 " << ckpt << " " << bad << "\n";
      files.push_back(bad);
    }
  }
  manifest.close();
  files.push_back(dir + "/checks.txt");
  files.push_back(dir + "/out.txt");
  std::string cmd = std::string(py) + " " + ANYBIT_SOURCE_DIR + "/scripts/check_checkpoint.py --manifest " + dir +
                    "/checks.txt > " + dir + "/out.txt 2>&1";
  int rc = std::system(cmd.c_str());
  std::ifstream f(dir + "/out.txt");
  std::string out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (auto& p : files) std::remove(p.c_str());
  rmdir(tmpl);
  INFO(cmd << "\n" << out);
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
    test::skip_check(out);
    return;
  }
  REQUIRE(WIFEXITED(rc));
  REQUIRE(WEXITSTATUS(rc) == 1);  // the control failed, and only it:
  for (auto m : {"OK lenet5", "OK resnet20", "OK preact_resnet20", "FAIL resnet20", "logits differ", "at (0, 7)"})
    REQUIRE(out.find(m) != std::string::npos);
  REQUIRE(out.find("FAIL") == out.rfind("FAIL"));
}
