// test_golden_train.cpp - three SGD steps of ResNet-20 against PyTorch (STYLE.md rule 10, the
// "few optimizer steps" part): the loss, every named gradient, every updated parameter and the BN
// running statistics after each step, compared by name with the fixture that
// scripts/make_golden.py (case_resnet20_sgd) wrote.
//
// The fixture tests/fixtures/golden_resnet20_sgd.safetensors holds
//   init.<name>          the starting state dict (float32; num_batches_tracked int64)
//   input, labels        the batch: (8, 3, 16, 16) float32 and (8) int64
//   probe_index.<name>   up to 16 fixed flat positions in each floating-point tensor
//   step{k}.loss         PyTorch's loss at step k = 0, 1, 2 (float64)
//   step{k}.grad.<name>, step{k}.param.<name>, step{k}.buffer.<name>
//                        a summary of the gradient (before the step), the parameter (after it) and
//                        the BN statistics (after the step's forward): the float64 vector
//                        [sum T, sum |T|, sum T^2, max |T|, T at the probe positions...];
//                        num_batches_tracked is stored as itself.
// (Full copies would be 1.1 MB each in float32; the summaries keep the file at 1.3 MB, and any
// error in a tensor moves its sums, and, at the probed positions, its values.)
//
// PyTorch computed in float64 from the float32 starting values. anybit runs twice, in float64
// (Module::to(DType::F64): the same computation up to summation order, so a tight tolerance
// catches any difference of semantics, e.g. the weight decay) and in float32 (the kernels
// training really uses, within 1e-4). The relative error of a summary is the worst of
//   |d sum| / sum |ref|,  |d sum |T|| / sum |ref|,  |d sum T^2| / sum ref^2,
//   |d max |T|| / max |ref|,  max over the probes |d T_i| / max |ref|
// i.e. errors are measured against the tensor's scale, as in tests/test_golden.cpp.
// Every entry of the fixture must be used as an input or compared, or the test fails.
#include <cmath>
#include <map>
#include <set>

#include "nn/models.h"
#include "nn/optim.h"
#include "tests/helpers.h"
#include "tests/safetensors_read.h"

using namespace anybit;
using namespace anybit::test;

namespace {

class GoldenTrain {
 public:
  GoldenTrain(DType dt, double tol) : dt_(dt), tol_(tol) {
    t_ = safetensors_read(std::string(ANYBIT_SOURCE_DIR) + "/tests/fixtures/golden_resnet20_sgd.safetensors");
  }

  // A stored input, marked as used.
  const Tensor& input(const std::string& key) {
    auto it = t_.find(key);
    INFO("golden resnet20_sgd: tensor " << key);
    REQUIRE(it != t_.end());
    used_.insert(key);
    return it->second;
  }

  // The starting state dict: every "init.<name>" as (name, tensor).
  nn::NamedTensors init_state() {
    nn::NamedTensors s;
    for (const auto& [k, t] : t_)
      if (k.rfind("init.", 0) == 0) s.emplace_back(k.substr(5), input(k));
    return s;
  }

  // Compares a scalar (the loss) in full.
  void check_scalar(const std::string& key, const Tensor& actual) {
    double a = actual.to_vector<double>()[0], b = input(key).to_vector<double>()[0];
    double rel = std::abs(a - b) / std::max(std::abs(b), 1e-300);
    INFO("golden resnet20_sgd (" << dtype_name(dt_) << "): " << key << ": anybit " << a << ", PyTorch " << b
                                 << ", rel " << rel);
    REQUIRE(rel < tol_);
    note(key, rel);
  }

  // Compares an integer tensor exactly (num_batches_tracked).
  void check_exact(const std::string& key, const Tensor& actual) {
    INFO("golden resnet20_sgd: " << key);
    REQUIRE(actual.to_vector<int64_t>() == input(key).to_vector<int64_t>());
    note(key, 0);
  }

  // Compares `actual` (any shape) with the stored summary of tensor `name`.
  void check_summary(const std::string& key, const std::string& name, const Tensor& actual) {
    INFO("golden resnet20_sgd (" << dtype_name(dt_) << "): " << key);
    REQUIRE(actual.defined());
    std::vector<double> ref = input(key).to_vector<double>();
    std::vector<int64_t> index = input("probe_index." + name).to_vector<int64_t>();
    REQUIRE(ref.size() == 4 + index.size());
    std::vector<double> a = actual.to_vector<double>();
    double sum = 0, sum_abs = 0, sum_sq = 0, max_abs = 0;
    for (double v : a) sum += v, sum_abs += std::abs(v), sum_sq += v * v, max_abs = std::max(max_abs, std::abs(v));
    auto rel = [](double x, double y, double scale) { return std::abs(x - y) / (scale > 0 ? scale : 1.0); };
    double worst = std::max({rel(sum, ref[0], ref[1]), rel(sum_abs, ref[1], ref[1]), rel(sum_sq, ref[2], ref[2]),
                             rel(max_abs, ref[3], ref[3])});
    for (size_t i = 0; i < index.size(); ++i) {
      REQUIRE(index[i] < (int64_t)a.size());
      worst = std::max(worst, rel(a[index[i]], ref[4 + i], ref[3]));
    }
    INFO("sum " << sum << " vs " << ref[0] << ", sum|T| " << sum_abs << " vs " << ref[1] << ", sum T^2 " << sum_sq
                << " vs " << ref[2] << ", max|T| " << max_abs << " vs " << ref[3] << "; worst rel " << worst);
    REQUIRE(worst < tol_);
    note(key, worst);
  }

  // Every entry of the fixture was used as an input or compared.
  void require_all_used() const {
    for (const auto& kv : t_) {
      INFO("golden resnet20_sgd: stored entry " << kv.first << " was never used or compared");
      REQUIRE(used_.count(kv.first) == 1);
    }
  }

  // The worst relative error among the compared keys that contain `part` (".grad.").
  double worst(const std::string& part) const {
    double w = 0;
    for (const auto& [k, e] : err_)
      if (k.find(part) != std::string::npos) w = std::max(w, e);
    return w;
  }

 private:
  void note(const std::string& key, double rel) { err_[key] = rel; }

  DType dt_;
  double tol_;
  std::map<std::string, Tensor> t_;
  std::set<std::string> used_;
  std::map<std::string, double> err_;
};

}  // namespace

TEST_CASE("golden: three SGD steps of ResNet-20 (loss, every gradient, updated weights, BN statistics)",
          "[golden]") {
  // make_golden.py case_resnet20_sgd: resnet20, 10 classes, training mode; cross_entropy (mean);
  // SGD lr 0.1, momentum 0.9, nesterov, weight_decay 5e-4, one group with every parameter.
  // float64: the same computation as PyTorch's up to rounding, so 1e-9; float32: 1e-4. Measured
  // worst relative errors (./build/anybit_tests "golden: three SGD steps*" -s): float64 1.7e-14
  // (gradients), float32 4.7e-6 (gradients), 2.6e-7 (loss, parameters).
  for (auto [dt, tol] : {std::pair<DType, double>{DType::F64, 1e-9}, {DType::F32, 1e-4}}) {
    GoldenTrain g(dt, tol);
    nn::ModulePtr model = nn::make_model("resnet20", 10, {}, 1);  // its own weights are overwritten
    model->load_state_dict(g.init_state());                        // strict: every name, every shape
    model->to(dt);
    model->train();
    nn::SGD opt(model->named_parameters(), /*lr=*/0.1, /*momentum=*/0.9, /*weight_decay=*/5e-4, /*nesterov=*/true);
    Tensor x = g.input("input").to(dt), labels = g.input("labels");
    for (int k = 0; k < 3; ++k) {
      const std::string step = "step" + std::to_string(k) + ".";
      opt.zero_grad();
      Tensor loss = cross_entropy(model->forward(x), labels);
      loss.backward();
      g.check_scalar(step + "loss", loss);
      for (const auto& [n, p] : model->named_parameters()) g.check_summary(step + "grad." + n, n, p.grad());
      opt.step();
      for (const auto& [n, p] : model->named_parameters()) g.check_summary(step + "param." + n, n, p);
      for (const auto& [n, b] : model->named_buffers()) {
        if (b.dtype() == DType::I64)
          g.check_exact(step + "buffer." + n, b);
        else
          g.check_summary(step + "buffer." + n, n, b);
      }
    }
    g.require_all_used();
    // The worst errors over the three steps (shown with -s; the figures quoted above).
    SUCCEED(dtype_name(dt) << ": worst relative error: loss " << g.worst(".loss") << ", gradients "
                           << g.worst(".grad.") << ", parameters " << g.worst(".param.") << ", BN statistics "
                           << g.worst(".buffer."));
  }
}
