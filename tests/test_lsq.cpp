// test_lsq.cpp - LSQ (quant/lsq.h): the fused op against its scalar reference, forward and both
// gradients; level counts; the first-use step initialisation; and LSQ in a whole quantized model,
// chosen by name, trained jointly and reloaded.
#include <cmath>
#include <set>

#include "quant/joint_trainer.h"
#include "quant/lsq.h"
#include "quant/qmodel.h"
#include "nn/optim.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::quant;
using namespace anybit::test;

TEST_CASE("LSQ matches its scalar reference: v_q, dv and the scaled step gradient", "[quant][lsq][grad]") {
  for (bool is_signed : {true, false})
    for (int b : {2, 3, 4, 8}) {
      LsqRange r = lsq_range(b, is_signed);
      INFO("bits " << b << " signed " << is_signed);
      // Values spread over the whole range and beyond, both signs, some exactly on the clip edges.
      Tensor v = mul(randn({6, 50}, 31 + b), 0.8);
      const double step = 0.9 * 2 / std::sqrt((double)r.qp);
      auto vv = v.to_vector<double>();
      vv[0] = r.qp * step;
      vv[1] = -r.qn * step;
      v = Tensor::from_vector(vv, {6, 50}).requires_grad_();
      Tensor s = Tensor::full({1}, step, DType::F64).requires_grad_();
      Tensor g = randn({6, 50}, 40 + b);
      Tensor y = lsq_quantize(v, s, r.qn, r.qp, 50);
      sum(mul(y, g)).backward();
      auto want = ref::lsq_quantize(vv, g.to_vector<double>(), step, r.qn, r.qp, 50);
      require_close(y, Tensor::from_vector(want.vq, {6, 50}), 1e-12, 1e-12, "v_q");
      require_close(v.grad(), Tensor::from_vector(want.dv, {6, 50}), 0, 0, "dv");
      REQUIRE(s.grad().item<double>() == Approx(want.ds).epsilon(1e-10));
      // At most 2^b levels, each an integer multiple of s in [-Qn, Qp].
      std::set<double> codes;
      for (double x : y.to_vector<double>()) {
        double c = x / step;
        REQUIRE(std::abs(c - std::nearbyint(c)) < 1e-9);
        REQUIRE(c >= -r.qn - 1e-9);
        REQUIRE(c <= r.qp + 1e-9);
        codes.insert(std::nearbyint(c));
      }
      REQUIRE(codes.size() <= (size_t(1) << b));
    }
}

TEST_CASE("LSQ's step gradient by hand: clipped elements give -Qn or Qp, the others round(v/s) - v/s", "[quant][lsq][grad]") {
  // Unsigned 2 bits: Qn = 0, Qp = 3; s = 0.5; N = 4 features, so gscale = 1 / sqrt(4 * 3).
  Tensor v = Tensor::from_vector<double>({-1.0, 0.3, 0.8, 2.5}, {1, 4}).requires_grad_();
  Tensor s = Tensor::full({1}, 0.5, DType::F64).requires_grad_();
  Tensor y = lsq_quantize(v, s, 0, 3, 4);
  REQUIRE(y.to_vector<double>() == std::vector<double>{0.0, 0.5, 1.0, 1.5});
  sum(y).backward();
  REQUIRE(v.grad().to_vector<double>() == std::vector<double>{0, 1, 1, 0});
  // -1.0: below (ds term -Qn = 0); 0.3/0.5 = 0.6 -> 1 - 0.6; 0.8/0.5 = 1.6 -> 2 - 1.6; 2.5: above (Qp = 3)
  double expect = (0.0 + 0.4 + 0.4 + 3.0) / std::sqrt(12.0);
  REQUIRE(s.grad().item<double>() == Approx(expect).epsilon(1e-12));
}

TEST_CASE("LSQ initialises each step from the first tensor it sees, and only then", "[quant][lsq]") {
  QuantizerSpec spec;
  spec.bit_set = {32, 8, 4};
  LsqWeights w(spec);
  REQUIRE(w.params().size() == 2);  // no step for the FP member
  REQUIRE(w.params()[0].name == "weight_step_b8");
  REQUIRE(w.params()[1].name == "weight_step_b4");
  REQUIRE(w.step(4).item<float>() == 0.0f);  // not initialised yet
  Tensor wt = randn({16, 9}, 50, DType::F32);
  double mean_abs = mean(abs(wt)).item<double>();
  w.forward(wt, 4);
  REQUIRE(w.step(4).item<float>() == Approx(2 * mean_abs / std::sqrt(7.0)).epsilon(1e-5));  // Qp = 7 at 4 bits
  REQUIRE(w.step(8).item<float>() == 0.0f);                                                // 8 bits not used yet
  w.forward(mul(wt, 10.0), 4);                                                             // no re-initialisation
  REQUIRE(w.step(4).item<float>() == Approx(2 * mean_abs / std::sqrt(7.0)).epsilon(1e-5));
  REQUIRE(w.forward(wt, 32).same(wt));  // the FP member is the identity
  // constrain() floors a learned step driven to or below zero; an uninitialised 0 stays 0.
  w.step(4).fill_(-0.1);
  REQUIRE(w.constrain() == 1);
  REQUIRE(w.step(4).item<float>() == 1e-6f);
  REQUIRE(w.step(8).item<float>() == 0.0f);
  // Activations: unsigned after a ReLU (Qp = 2^b - 1), signed where the input may be negative.
  LsqActs a(spec);
  REQUIRE(a.params()[0].name == "act_step_b8");
  Tensor x = abs(randn({4, 3, 5, 5}, 51, DType::F32));
  a.forward(x, 8);
  REQUIRE(a.step(8).item<float>() == Approx(2 * mean(x).item<double>() / std::sqrt(255.0)).epsilon(1e-5));
  spec.bit_set = {8, 1};
  REQUIRE_THROWS_WITH(LsqWeights(spec), Catch::Contains("1") && Catch::Contains("dorefa"));
}

TEST_CASE("a model with LSQ weights and activations trains jointly, clips nothing by name, and reloads", "[quant][lsq]") {
  QuantOptions o;
  o.bit_set = {8, 4, 2};
  o.weight_quant = "lsq";
  o.act_quant = "lsq";
  QuantModel m("lenet5", 10, o, 3);
  // Every quantized layer has one weight step and one activation step per bit-width.
  int weight_steps = 0, act_steps = 0;
  for (auto& [name, p] : m.quant_params()) {
    weight_steps += name.find("weight_step_b") != std::string::npos;
    act_steps += name.find("act_step_b") != std::string::npos;
  }
  REQUIRE(weight_steps == 3 * 3);  // conv2, fc1, fc2 (the stem conv1 and classifier fc3 stay FP)
  REQUIRE(act_steps == 3 * 3);
  // A learnable task: class c is a bright bar at row 2c + 3.
  Generator gen(9);
  const int64_t n = 64;
  std::vector<float> img(n * 28 * 28);
  std::vector<int64_t> lab(n);
  for (int64_t i = 0; i < n; ++i) {
    lab[i] = (int64_t)gen.below(10);
    for (int64_t k = 0; k < 28 * 28; ++k) img[i * 784 + k] = 0.2f * (float)gen.uniform();
    for (int64_t r = 2 * lab[i] + 3; r < 2 * lab[i] + 6; ++r)
      for (int64_t c = 4; c < 24; ++c) img[i * 784 + r * 28 + c] = 1.0f;
  }
  Tensor x = Tensor::from_vector(img, {n, 1, 28, 28}), y = Tensor::from_vector(lab, {n});
  MethodConfig mc;  // ours: collab teacher, block swapping
  JointTrainer jt(m, mc, 1);
  nn::SGD opt(m.net().named_parameters(), 0.05, 0.9);
  // The value each step was initialised to: with block swapping, a layer may first run at a
  // student's bit-width some steps in.
  std::vector<double> initial(m.quant_params().size(), 0.0);
  for (int it = 0; it < 40; ++it) {
    jt.accumulate_gradients(x, y, it / 40.0);
    auto qp = m.quant_params();
    for (size_t i = 0; i < qp.size(); ++i)
      if (initial[i] == 0) initial[i] = qp[i].second.tensor->item<double>();
    opt.step();
    m.constrain_quantizers();
  }
  // Every step was initialised (non-zero) and has learned (moved).
  auto qp = m.quant_params();
  for (size_t i = 0; i < qp.size(); ++i) {
    INFO(qp[i].first);
    REQUIRE(initial[i] > 0);
    REQUIRE(qp[i].second.tensor->item<double>() != initial[i]);
  }
  m.net().eval();
  nn::NamedTensors state = m.net().state_dict();
  QuantModel reloaded("lenet5", 10, o, 99);
  reloaded.net().load_state_dict(state, true);
  reloaded.net().eval();
  NoGradGuard ng;
  for (int b : {8, 4, 2}) {
    m.set_bits(b);
    reloaded.set_bits(b);
    int64_t correct = 0;
    count_correct(m.forward(x), y, &correct, nullptr);
    INFO("bits " << b);
    REQUIRE(correct >= n * 8 / 10);  // learnt at every bit-width (chance: 10%)
    // The reloaded model uses the learned steps: it is not re-initialised from its first input.
    require_close(reloaded.forward(x), m.forward(x), 0, 0, "reloaded");
  }
}
