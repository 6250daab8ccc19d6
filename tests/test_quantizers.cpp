// test_quantizers.cpp - DoReFa weights and PACT activations against their scalar references,
// the level counts the method promises, truncate-store grids, and the gradients METHOD.md fixes.
#include <algorithm>
#include <set>

#include "quant/bits.h"
#include "quant/quantizers.h"
#include "tensor/cpu/kernels.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::quant;
using namespace anybit::test;

static size_t distinct(const Tensor& t) {
  auto v = t.to_vector<double>();
  return std::set<double>(v.begin(), v.end()).size();
}

TEST_CASE("DoReFa weights match the scalar reference", "[quant]") {
  Tensor w = randn({8, 3, 3, 3}, 7);
  auto wv = w.to_vector<double>();
  for (auto store : {WeightStore::Round, WeightStore::Truncate})
    for (auto scale : {WeightScale::None, WeightScale::Sat, WeightScale::Mean})
      for (int b : {1, 2, 3, 4, 6, 8, 32}) {
        WeightQuantOptions opt{store, scale, 8};
        Tensor q = quantize_weight(w, b, opt);
        auto r = ref::quantize_weight(wv, 8, b, opt);
        INFO("bits " << b << " truncate " << (store == WeightStore::Truncate) << " sat "
                     << (scale == WeightScale::Sat) << " mean " << (scale == WeightScale::Mean));
        require_close(q, Tensor::from_vector(r, w.shape()), 1e-9, 1e-12, "dorefa");
      }
}

TEST_CASE("b-bit weights take at most 2^b values in [-1, 1]", "[quant]") {
  Tensor w = randn({16, 8, 3, 3}, 8, DType::F32);
  for (int b : {2, 3, 4, 6, 8}) {
    for (auto store : {WeightStore::Round, WeightStore::Truncate}) {
      Tensor q = quantize_weight(w, b, {store, WeightScale::None, 8});
      REQUIRE(distinct(q) <= (size_t(1) << b));
      REQUIRE(distinct(q) >= 2);
      if (store == WeightStore::Round) {
        auto v = q.to_vector<float>();
        REQUIRE(*std::max_element(v.begin(), v.end()) <= 1.0f);
        REQUIRE(*std::min_element(v.begin(), v.end()) >= -1.0f);
      }
    }
  }
  REQUIRE(distinct(quantize_weight(w, 1)) <= 2);
}

TEST_CASE("truncate store: every b-bit code is a B-bit code with low bits dropped", "[quant]") {
  Tensor w = randn({32, 16}, 9, DType::F32);
  WeightQuantOptions trunc{WeightStore::Truncate, WeightScale::None, 8};
  auto qB = weight_codes(w, 8, trunc).to_vector<int64_t>();
  for (int b : {2, 4, 6}) {
    auto qb = weight_codes(w, b, trunc).to_vector<int64_t>();
    int64_t step = int64_t(1) << (8 - b);
    std::set<int64_t> levels;
    for (size_t i = 0; i < qb.size(); ++i) {
      REQUIRE(qb[i] % step == 0);
      REQUIRE(qb[i] >= 0);
      REQUIRE(qb[i] <= 255);
      REQUIRE(qb[i] == qB[i] / step * step);
      levels.insert(qb[i]);
    }
    REQUIRE(levels.size() <= (size_t(1) << b));
  }
  // Rescaling keeps the mean of the 8-bit tensor.
  Tensor q8 = quantize_weight(w, 8, trunc), q4 = quantize_weight(w, 4, trunc);
  REQUIRE(mean(add(q4, 1.0)).item<float>() == Approx(mean(add(q8, 1.0)).item<float>()).epsilon(1e-5));
}

TEST_CASE("DoReFa gradient: straight through round, exact through tanh and max", "[quant][grad]") {
  // At b = 32 there is no rounding: the function is smooth except at the arg-max kink.
  REQUIRE(gradcheck([](const std::vector<Tensor>& x) { return quantize_weight(x[0], 32); },
                    {randn({4, 5}, 3).requires_grad_()}) > 0);
  // At b = 4, the gradient equals that of the same expression with round replaced by identity.
  Tensor w = randn({4, 5}, 4).requires_grad_();
  Tensor w2 = w.detach().clone().requires_grad_();
  Tensor g = randn({4, 5}, 5);
  sum(mul(quantize_weight(w, 4), g)).backward();
  Tensor t = tanh(w2);
  Tensor u = add(div(t, mul(max(abs(t)), 2.0)), 0.5);
  sum(mul(add(mul(u, 2.0), -1.0), g)).backward();
  require_close(w.grad(), w2.grad(), 1e-10, 1e-12, "ste");
}

TEST_CASE("the fused DoReFa round store: the composed formula's values bit for bit, its gradient, any threads",
          "[quant][grad]") {
  // Three chunks of 4096 and a partial one, so the arg-max search and the sum cross chunks; the
  // largest |w| appears twice (w and -w, in different chunks): the first one takes max's gradient
  // (its share, -sum(g t) / m^2, is large here: the gradient check fails if it lands elsewhere).
  const int64_t n = 3 * 4096 + 77;
  Tensor base = randn({n}, 21, DType::F32);
  float* p = base.data<float>();
  p[5000] = 6.0f;
  p[9000] = -6.0f;
  Tensor g = randn({n}, 22, DType::F32);
  const int saved = cpu::num_threads();
  for (int b : {1, 2, 4, 8}) {
    // the composition that quantize_weight ran before the fusion, as autograd ops
    Tensor w2 = base.detach().clone().requires_grad_();
    Tensor t = tanh(w2);
    Tensor u = add(div(t, mul(max(abs(t)), 2.0)), 0.5);
    const double levels = std::pow(2.0, b) - 1;
    Tensor composed = add(mul(mul(round_ste(mul(u, levels)), 1.0 / levels), 2.0), -1.0);
    sum(mul(composed, g)).backward();
    std::vector<float> first_grad;
    for (int threads : {1, 2, 3}) {
      cpu::set_num_threads(threads);
      Tensor w = base.detach().clone().requires_grad_();
      Tensor q = quantize_weight(w, b);
      sum(mul(q, g)).backward();
      INFO("bits " << b << ", threads " << threads);
      REQUIRE(q.to_vector<float>() == composed.to_vector<float>());
      require_close(w.grad(), w2.grad(), 1e-5, 1e-6, "fused dorefa gradient");
      if (first_grad.empty()) first_grad = w.grad().to_vector<float>();
      REQUIRE(w.grad().to_vector<float>() == first_grad);
    }
    cpu::set_num_threads(saved);
  }
}

TEST_CASE("PACT matches the reference and uses at most 2^b levels", "[quant]") {
  Tensor x = mul(abs(randn({1000}, 11)), 2.0);
  auto xv = x.to_vector<double>();
  for (int b : {1, 2, 4, 8, 32}) {
    Tensor a = Tensor::full({1}, 1.7, DType::F64);
    Tensor y = pact_quantize(x, a, b);
    require_close(y, Tensor::from_vector(ref::pact_quantize(xv, 1.7, b), {1000}), 1e-12, 1e-12, "pact");
    if (b < 32) REQUIRE(distinct(y) <= (size_t(1) << b));
  }
}

TEST_CASE("PACT gradients: the clip value's gradient matches finite differences", "[quant][grad]") {
  // b = 32 (clip without rounding) is differentiable almost everywhere: central differences apply.
  Tensor x = mul(abs(randn({3, 7}, 12)), 1.5).requires_grad_();
  Tensor a = Tensor::full({1}, 1.1, DType::F64).requires_grad_();
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return pact_quantize(v[0], v[1], 32); }, {x, a}) > 0);
  // b < 32: dx = g where 0 <= x <= a, da = sum of g where x >= a (METHOD.md), checked by hand.
  Tensor x2 = Tensor::from_vector<double>({-0.5, 0.0, 0.3, 1.0, 1.5, 2.0}, {6}).requires_grad_();
  Tensor a2 = Tensor::full({1}, 1.0, DType::F64).requires_grad_();
  Tensor g = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {6});
  sum(mul(pact_quantize(x2, a2, 4), g)).backward();
  REQUIRE(x2.grad().to_vector<double>() == std::vector<double>{0, 2, 3, 4, 0, 0});
  REQUIRE(a2.grad().item<double>() == 4 + 5 + 6);
}

TEST_CASE("PACT backward on a large float32 tensor: chunked clip gradient equals a double sum", "[quant][grad]") {
  // 70,000 elements: several 4,096-element chunks, summed in parallel; x spans [-1, 3] around a = 1.
  const int64_t n = 70000;
  Generator gen(5);
  Tensor x = Tensor::rand({n}, gen, -1, 3).requires_grad_();
  Tensor a = Tensor::full({1}, 1.0, DType::F32).requires_grad_();
  Tensor g = randn({n}, 6, DType::F32);
  sum(mul(pact_quantize(x, a, 4), g)).backward();
  auto xv = x.to_vector<double>(), gv = g.to_vector<double>(), gx = x.grad().to_vector<double>();
  double expect = 0;
  int64_t wrong = 0;  // elements whose dx is not g inside [0, a] and 0 outside
  for (int64_t i = 0; i < n; ++i) {
    if (xv[i] >= 1.0) expect += gv[i];
    wrong += gx[i] != ((xv[i] >= 0 && xv[i] <= 1.0) ? gv[i] : 0.0);
  }
  REQUIRE(wrong == 0);
  REQUIRE(a.grad().item<double>() == Approx(expect).epsilon(1e-5));
}

TEST_CASE("PACT rejects a bad clip value", "[quant][errors]") {
  Tensor x = randn({4}, 1);
  REQUIRE_THROWS_WITH(pact_quantize(x, Tensor::full({2}, 1.0, DType::F64), 4), Catch::Contains("one element"));
  REQUIRE_THROWS_WITH(pact_quantize(x, Tensor::full({1}, -1.0, DType::F64), 4), Catch::Contains("positive"));
}

TEST_CASE("bit sets parse and reject bad values with the option's name", "[quant][errors]") {
  REQUIRE(parse_bit_set("8,6,4,2") == std::vector<int>{8, 6, 4, 2});
  REQUIRE(parse_bit_set("32,4,2") == std::vector<int>{32, 4, 2});
  REQUIRE_THROWS_WITH(parse_bit_set("8,x"), Catch::Contains("--bits") && Catch::Contains("'x'"));
  REQUIRE_THROWS_WITH(parse_bit_set("8,12"), Catch::Contains("12"));
  REQUIRE_THROWS_WITH(parse_bit_set("4,4"), Catch::Contains("twice"));
}

TEST_CASE("signed PACT matches the reference, keeps 0 exact and uses at most 2^b - 1 levels", "[quant]") {
  Tensor x = mul(randn({1000}, 21), 1.5);  // both signs
  auto xv = x.to_vector<double>();
  for (int b : {2, 3, 4, 8, 32}) {
    Tensor a = Tensor::full({1}, 1.3, DType::F64);
    Tensor y = pact_quantize(x, a, b, /*is_signed=*/true);
    require_close(y, Tensor::from_vector(ref::pact_quantize(xv, 1.3, b, true), {1000}), 1e-12, 1e-12, "signed pact");
    auto yv = y.to_vector<double>();
    REQUIRE(*std::min_element(yv.begin(), yv.end()) == Approx(-1.3));  // negatives survive, clipped at -a
    if (b < 32) REQUIRE(distinct(y) <= (size_t(1) << b) - 1);
  }
  Tensor zero = Tensor::zeros({3}, DType::F64);
  REQUIRE(pact_quantize(zero, Tensor::full({1}, 1.3, DType::F64), 4, true).to_vector<double>() ==
          std::vector<double>{0, 0, 0});
  REQUIRE_THROWS_WITH(pact_quantize(x, Tensor::full({1}, 1.0, DType::F64), 1, true), Catch::Contains("sign bit"));
}

TEST_CASE("signed PACT gradients: dx inside [-a, a], da = sum above a minus sum below -a", "[quant][grad]") {
  Tensor x = mul(randn({3, 7}, 22), 1.5).requires_grad_();
  Tensor a = Tensor::full({1}, 1.1, DType::F64).requires_grad_();
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return pact_quantize(v[0], v[1], 32, true); }, {x, a}) > 0);
  Tensor x2 = Tensor::from_vector<double>({-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5}, {7}).requires_grad_();
  Tensor a2 = Tensor::full({1}, 1.0, DType::F64).requires_grad_();
  Tensor g = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6, 7}, {7});
  sum(mul(pact_quantize(x2, a2, 4, true), g)).backward();
  REQUIRE(x2.grad().to_vector<double>() == std::vector<double>{0, 2, 3, 4, 5, 6, 0});
  REQUIRE(a2.grad().item<double>() == (6 + 7) - (1 + 2));
}

TEST_CASE("the quantizer registry builds quantizers by name and names the choices on error", "[quant][errors]") {
  QuantizerSpec spec;
  spec.bit_set = {8, 4, 32};
  spec.act_init = 3.0;
  auto w = make_weight_quantizer("dorefa", spec);
  auto a = make_act_quantizer("pact", spec);
  REQUIRE(w->name() == "dorefa");
  REQUIRE(w->params().empty());
  // PACT owns one clip value per bit-width, named and tagged with it.
  REQUIRE(a->params().size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    REQUIRE(a->params()[i].name == "clip_b" + std::to_string(spec.bit_set[i]));
    REQUIRE(a->params()[i].bits == spec.bit_set[i]);
    REQUIRE(a->params()[i].tensor->item<double>() == 3.0);
  }
  // The object computes what the function does.
  Tensor x = mul(abs(randn({50}, 23, DType::F32)), 4.0);  // parameters are float32, as the model's
  require_close(a->forward(x, 4), pact_quantize(x, Tensor::full({1}, 3.0), 4), 0, 0, "pact object");
  Tensor wt = randn({4, 3}, 24, DType::F32);
  require_close(w->forward(wt, 4), quantize_weight(wt, 4), 0, 0, "dorefa object");
  // constrain() raises a clip driven below its floor.
  a->params()[1].tensor->fill_(-0.5);
  REQUIRE(a->constrain() == 1);
  REQUIRE(a->params()[1].tensor->item<float>() == 1e-3f);
  REQUIRE_THROWS_WITH(make_weight_quantizer("pact", spec), Catch::Contains("--weight-quant") && Catch::Contains("'pact'") &&
                                                               Catch::Contains("dorefa"));
  REQUIRE_THROWS_WITH(make_act_quantizer("nope", spec), Catch::Contains("--act-quant") && Catch::Contains("pact"));
}

TEST_CASE("PACT's clip gradient is the same bit for bit whatever the number of threads", "[quant][grad]") {
  // The chunks' sums are added in chunk order, not in the order threads finish.
  const int64_t n = 200000;
  Generator gen(8);
  Tensor x = Tensor::rand({n}, gen, -1, 3);
  Tensor g = randn({n}, 9, DType::F32);
  std::vector<float> grads;
  const int saved = cpu::num_threads();
  for (int threads : {1, 2, 3}) {
    cpu::set_num_threads(threads);
    Tensor xt = x.detach().clone().requires_grad_();
    Tensor a = Tensor::full({1}, 1.0, DType::F32).requires_grad_();
    sum(mul(pact_quantize(xt, a, 4), g)).backward();
    grads.push_back(a.grad().item<float>());
  }
  cpu::set_num_threads(saved);
  REQUIRE(grads[0] == grads[1]);
  REQUIRE(grads[0] == grads[2]);
}
