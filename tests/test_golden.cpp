// test_golden.cpp - anybit against PyTorch (STYLE.md rule 10): outputs, losses, updated buffers and
// every named gradient, compared by name with the fixtures that scripts/make_golden.py wrote.
//
// Each fixture tests/fixtures/golden_<case>.safetensors holds the inputs and parameters, the
// upstream gradient "grad.out", and PyTorch's results (float64). Each case below repeats the
// computation of the same-named case in the script (the options are written in both places) and
// runs it twice: in float64, and in float32 (inputs rounded to float32) to exercise the float32
// kernels. The error measure is relative to the largest reference element,
//   rel = max_i |a_i - b_i| / max_i |b_i|,
// and must stay below 1e-4. A Golden object remembers what was compared, and a case fails if a
// result stored in the fixture (out, loss, running_*, grad.*) was not compared.
#include <map>
#include <set>

#include "tests/helpers.h"
#include "tests/safetensors_read.h"

using namespace anybit;
using namespace anybit::test;

namespace {

class Golden {
 public:
  Golden(const std::string& name, DType dt) : name_(name), dt_(dt) {
    t_ = safetensors_read(std::string(ANYBIT_SOURCE_DIR) + "/tests/fixtures/golden_" + name + ".safetensors");
  }

  // A fresh copy of a stored tensor converted to the case's dtype (int64 tensors stay int64).
  Tensor get(const std::string& key) const {
    auto it = t_.find(key);
    INFO("golden " << name_ << ": tensor " << key);
    REQUIRE(it != t_.end());
    const Tensor& t = it->second;
    return is_floating(t.dtype()) ? t.to(dt_).clone() : t.clone();
  }
  // The same, as a leaf that requires grad (an input or a parameter).
  Tensor param(const std::string& key) const { return get(key).requires_grad_(); }

  void check(const std::string& key, const Tensor& actual) {
    INFO("golden " << name_ << " (" << dtype_name(dt_) << "): " << key);
    REQUIRE(actual.defined());
    Tensor expect = t_.at(key);
    REQUIRE(actual.shape() == expect.shape());
    auto a = actual.to_vector<double>(), b = expect.to_vector<double>();
    double worst = 0, scale = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::abs(a[i] - b[i]));
      scale = std::max(scale, std::abs(b[i]));
    }
    double rel = scale > 0 ? worst / scale : worst;
    INFO("max abs error " << worst << ", max |reference| " << scale << ", rel " << rel);
    REQUIRE(rel < 1e-4);
    checked_.insert(key);
  }

  // Every stored result must have been compared.
  void require_all_checked() const {
    for (const auto& kv : t_) {
      const std::string& k = kv.first;
      bool result = k == "out" || k == "loss" || (k.rfind("grad.", 0) == 0 && k != "grad.out") ||
                    (k.find("running_") != std::string::npos && k.find(".before") == std::string::npos);
      INFO("golden " << name_ << ": stored result " << k << " was never compared");
      if (result) REQUIRE(checked_.count(k) == 1);
    }
  }

 private:
  std::string name_;
  DType dt_;
  std::map<std::string, Tensor> t_;
  std::set<std::string> checked_;
};

const DType kDTypes[] = {DType::F64, DType::F32};

}  // namespace

TEST_CASE("golden: cross_entropy with and without label smoothing", "[golden]") {
  // make_golden.py ce_case: logits (6, 5), labels (6); label_smoothing 0 and 0.1
  for (auto [name, eps] : {std::pair<const char*, double>{"cross_entropy", 0.0}, {"cross_entropy_smooth", 0.1}})
    for (DType dt : kDTypes) {
      Golden g(name, dt);
      Tensor z = g.param("logits");
      Tensor loss = cross_entropy(z, g.get("labels"), eps);
      loss.backward();
      g.check("loss", loss);
      g.check("grad.logits", z.grad());
      g.require_all_checked();
    }
}

TEST_CASE("golden: linear", "[golden]") {
  // make_golden.py case_linear: x (4, 5), weight (3, 5), bias (3)
  for (DType dt : kDTypes) {
    Golden g("linear", dt);
    Tensor x = g.param("input"), w = g.param("weight"), b = g.param("bias");
    Tensor out = linear(x, w, b);
    out.backward(g.get("grad.out"));
    g.check("out", out);
    g.check("grad.input", x.grad());
    g.check("grad.weight", w.grad());
    g.check("grad.bias", b.grad());
    g.require_all_checked();
  }
}

TEST_CASE("golden: conv2d plain, stride 2 with padding 1, and groups 2", "[golden]") {
  // make_golden.py case_conv2d_*: (stride, padding, groups) as written there
  struct Case {
    const char* name;
    Conv2dOptions opt;
  };
  for (const Case& c : {Case{"conv2d_plain", Conv2dOptions::make(1, 0)},
                        Case{"conv2d_stride2_pad1", Conv2dOptions::make(2, 1)},
                        Case{"conv2d_groups2", Conv2dOptions::make(1, 1, 1, 2)}})
    for (DType dt : kDTypes) {
      Golden g(c.name, dt);
      Tensor x = g.param("input"), w = g.param("weight"), b = g.param("bias");
      Tensor out = conv2d(x, w, b, c.opt);
      out.backward(g.get("grad.out"));
      g.check("out", out);
      g.check("grad.input", x.grad());
      g.check("grad.weight", w.grad());
      g.check("grad.bias", b.grad());
      g.require_all_checked();
    }
}

TEST_CASE("golden: batch_norm in training mode, with the running statistics update", "[golden]") {
  // make_golden.py bn_case: x (4, 3, 5, 5) and (8, 3); momentum 0.1, eps 1e-5
  for (const char* name : {"batch_norm_train", "batch_norm_train_2d"})
    for (DType dt : kDTypes) {
      Golden g(name, dt);
      Tensor x = g.param("input"), w = g.param("weight"), b = g.param("bias");
      Tensor rm = g.get("running_mean.before"), rv = g.get("running_var.before");
      Tensor out = batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5);
      out.backward(g.get("grad.out"));
      g.check("out", out);
      g.check("running_mean", rm);
      g.check("running_var", rv);
      g.check("grad.input", x.grad());
      g.check("grad.weight", w.grad());
      g.check("grad.bias", b.grad());
      g.require_all_checked();
    }
}

TEST_CASE("golden: ResNet basic block with a strided 1x1 projection shortcut", "[golden]") {
  // make_golden.py case_resnet_block: x (2, 4, 8, 8) -> (2, 8, 4, 4), training mode;
  // out = relu(bn2(conv2(relu(bn1(conv1(x))))) + bn_s(conv_s(x))), conv1 3x3 stride 2 pad 1,
  // conv2 3x3 stride 1 pad 1, conv_s 1x1 stride 2; no conv biases.
  for (DType dt : kDTypes) {
    Golden g("resnet_block", dt);
    std::map<std::string, Tensor> p;
    for (const char* n : {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
                          "shortcut.0.weight", "shortcut.1.weight", "shortcut.1.bias"})
      p[n] = g.param(n);
    std::map<std::string, Tensor> buf;
    for (const char* n : {"bn1", "bn2", "shortcut.1"})
      for (const char* s : {".running_mean", ".running_var"})
        buf[std::string(n) + s] = g.get(std::string(n) + s + ".before");
    auto bn = [&](const Tensor& y, const std::string& n) {
      return batch_norm(y, p[n + ".weight"], p[n + ".bias"], buf[n + ".running_mean"], buf[n + ".running_var"],
                        true, 0.1, 1e-5);
    };
    Tensor x = g.param("input");
    Tensor y = relu(bn(conv2d(x, p["conv1.weight"], Tensor(), Conv2dOptions::make(2, 1)), "bn1"));
    y = bn(conv2d(y, p["conv2.weight"], Tensor(), Conv2dOptions::make(1, 1)), "bn2");
    Tensor s = bn(conv2d(x, p["shortcut.0.weight"], Tensor(), Conv2dOptions::make(2, 0)), "shortcut.1");
    Tensor out = relu(add(y, s));
    out.backward(g.get("grad.out"));
    g.check("out", out);
    g.check("grad.input", x.grad());
    for (auto& [n, t] : p) g.check("grad." + n, t.grad());
    for (auto& [n, t] : buf) g.check(n, t);
    g.require_all_checked();
  }
}
