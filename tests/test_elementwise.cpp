// test_elementwise.cpp - elementwise and reduction ops: values against plain loops, gradient
// checks, broadcasting, non-contiguous inputs, and error messages.
#include <algorithm>
#include <cmath>

#include "tensor/storage.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

TEST_CASE("elementwise ops match std:: functions", "[elementwise]") {
  Tensor x = randn({3, 5}, 1);
  Tensor ax = add(abs(x), 0.5);
  auto v = x.to_vector<double>(), va = ax.to_vector<double>();
  auto check = [&](const Tensor& y, auto f, const Tensor& in) {
    auto vy = y.to_vector<double>(), vin = in.to_vector<double>();
    for (size_t i = 0; i < vy.size(); ++i) REQUIRE(vy[i] == Approx(f(vin[i])).margin(1e-12));
  };
  check(exp(x), [](double a) { return std::exp(a); }, x);
  check(log(ax), [](double a) { return std::log(a); }, ax);
  check(sqrt(ax), [](double a) { return std::sqrt(a); }, ax);
  check(pow(ax, 1.5), [](double a) { return std::pow(a, 1.5); }, ax);
  check(tanh(x), [](double a) { return std::tanh(a); }, x);
  check(relu(x), [](double a) { return a > 0 ? a : 0; }, x);
  check(relu6(mul(x, 5.0)), [](double a) { return std::min(std::max(a, 0.0), 6.0); }, mul(x, 5.0));
  check(clamp(x, -0.3, 0.4), [](double a) { return std::min(std::max(a, -0.3), 0.4); }, x);
  check(round_ste(mul(x, 3.0)), [](double a) { return std::nearbyint(a); }, mul(x, 3.0));
}

TEST_CASE("round_ste rounds ties to even like torch.round", "[elementwise]") {
  Tensor x = Tensor::from_vector<float>({0.5f, 1.5f, 2.5f, -0.5f, -1.5f}, {5});
  auto r = round_ste(x).to_vector<float>();
  REQUIRE(r == std::vector<float>{0.f, 2.f, 2.f, -0.f, -2.f});
}

TEST_CASE("broadcasting binary ops", "[elementwise]") {
  Tensor a = randn({2, 3, 4}, 2), b = randn({3, 1}, 3);
  Tensor y = add(a, b);
  REQUIRE(y.shape() == Shape{2, 3, 4});
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k) REQUIRE(y.at({i, j, k}) == Approx(a.at({i, j, k}) + b.at({j, 0})));
  REQUIRE_THROWS_WITH(add(randn({2, 3}, 1), randn({4}, 1)),
                      Catch::Contains("add") && Catch::Contains("[2, 3]") && Catch::Contains("[4]"));
}

TEST_CASE("ops reject mixed dtypes with a message naming op and shapes", "[errors]") {
  Tensor a = randn({2, 3}, 1, DType::F32), b = randn({2, 3}, 1, DType::F64);
  REQUIRE_THROWS_WITH(mul(a, b), Catch::Contains("mul") && Catch::Contains("float32") &&
                                     Catch::Contains("float64") && Catch::Contains("[2, 3]"));
}

TEST_CASE("non-contiguous inputs give the same results as contiguous ones", "[elementwise]") {
  Tensor a = randn({4, 6}, 4), b = randn({6, 4}, 5);
  Tensor bt = b.t();  // non-contiguous view
  REQUIRE(!bt.is_contiguous());
  require_close(mul(a, bt), mul(a, bt.contiguous()), 0, 0, "mul");
  require_close(exp(bt), exp(bt.contiguous()), 0, 0, "exp");
  require_close(sum(bt, {0}), sum(bt.contiguous(), {0}), 1e-12, 1e-12, "sum");
}

TEST_CASE("reductions", "[reduce]") {
  Tensor x = randn({2, 3, 4}, 6);
  Tensor s = sum(x, {0, 2});
  REQUIRE(s.shape() == Shape{3});
  for (int64_t j = 0; j < 3; ++j) {
    double acc = 0;
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t k = 0; k < 4; ++k) acc += x.at({i, j, k});
    REQUIRE(s.at({j}) == Approx(acc));
  }
  REQUIRE(sum(x, {1}, true).shape() == Shape{2, 1, 4});
  REQUIRE(mean(x).item<double>() == Approx(sum(x).item<double>() / 24));
  Tensor m = max(x, 1);
  Tensor am = argmax(x, 1);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t k = 0; k < 4; ++k) {
      double best = -1e300;
      int64_t bi = 0;
      for (int64_t j = 0; j < 3; ++j)
        if (x.at({i, j, k}) > best) best = x.at({i, j, k}), bi = j;
      REQUIRE(m.at({i, k}) == best);
      REQUIRE(am.at({i, k}) == bi);
    }
}

// ---- gradient checks ------------------------------------------------------------------------------

static Tensor leaf(const Shape& s, uint64_t seed) { return randn(s, seed).requires_grad_(); }
using Ts = std::vector<Tensor>;

TEST_CASE("gradcheck: arithmetic with broadcasting", "[grad]") {
  REQUIRE(gradcheck([](const Ts& x) { return add(x[0], x[1]); }, {leaf({2, 3}, 1), leaf({3}, 2)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return sub(x[0], x[1]); }, {leaf({2, 3}, 1), leaf({2, 1}, 2)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return mul(x[0], x[1]); }, {leaf({2, 3}, 1), leaf({1, 3}, 2)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return div(x[0], add(abs(x[1]), 1.0)); },
                    {leaf({2, 3}, 1), leaf({2, 3}, 2)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return add(mul(x[0], 3.0), 2.0); }, {leaf({4}, 1)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return neg(x[0]); }, {leaf({4}, 1)}) > 0);
}

TEST_CASE("gradcheck: unary functions", "[grad]") {
  auto pos = [](const Tensor& x) { return add(abs(x), 0.5); };
  REQUIRE(gradcheck([](const Ts& x) { return exp(x[0]); }, {leaf({3, 4}, 1)}) > 0);
  REQUIRE(gradcheck([&](const Ts& x) { return log(pos(x[0])); }, {leaf({3, 4}, 2)}) > 0);
  REQUIRE(gradcheck([&](const Ts& x) { return sqrt(pos(x[0])); }, {leaf({3, 4}, 3)}) > 0);
  REQUIRE(gradcheck([&](const Ts& x) { return pow(pos(x[0]), 2.5); }, {leaf({3, 4}, 4)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return tanh(x[0]); }, {leaf({3, 4}, 5)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return abs(x[0]); }, {leaf({3, 4}, 6)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return relu(x[0]); }, {leaf({3, 4}, 7)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return relu6(mul(x[0], 4.0)); }, {leaf({3, 4}, 8)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return clamp(x[0], -0.5, 0.5); }, {leaf({3, 4}, 9)}) > 0);
}

TEST_CASE("gradcheck: clamp_bounds sends gradient to its bounds", "[grad]") {
  REQUIRE(gradcheck([](const Ts& x) { return clamp_bounds(x[0], x[1], x[2]); },
                    {leaf({3, 4}, 1), Tensor::full({1}, -0.5, DType::F64).requires_grad_(),
                     Tensor::full({1}, 0.7, DType::F64).requires_grad_()}) > 0);
}

TEST_CASE("round_ste passes the gradient straight through", "[grad]") {
  Tensor x = leaf({5}, 3);
  sum(mul(round_ste(x), 2.0)).backward();
  require_close(x.grad(), Tensor::full({5}, 2.0, DType::F64), 0, 0, "ste");
}

TEST_CASE("gradcheck: reductions", "[grad]") {
  REQUIRE(gradcheck([](const Ts& x) { return sum(x[0], {0, 2}); }, {leaf({2, 3, 4}, 1)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return sum(x[0], {1}, true); }, {leaf({2, 3, 4}, 2)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return mean(x[0], {0}); }, {leaf({5, 3}, 3)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return mean(x[0]); }, {leaf({5, 3}, 4)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return max(x[0], 1); }, {leaf({4, 5}, 5)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return max(x[0]); }, {leaf({4, 5}, 6)}) > 0);
}

TEST_CASE("gradcheck: views", "[grad]") {
  REQUIRE(gradcheck([](const Ts& x) { return mul(x[0].t(), 2.0); }, {leaf({3, 4}, 1)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].permute({2, 0, 1}).contiguous(); }, {leaf({2, 3, 4}, 2)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].slice(1, 1, 4, 2); }, {leaf({2, 5}, 3)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].reshape({4, 3}); }, {leaf({2, 6}, 4)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].expand({3, 2, 4}); }, {leaf({2, 1}, 5)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].select(0, 1); }, {leaf({3, 4}, 6)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].t().clone(); }, {leaf({3, 4}, 7)}) > 0);
  REQUIRE(gradcheck([](const Ts& x) { return x[0].to(DType::F32).to(DType::F64); }, {leaf({3}, 8)},
                    {1e-3, 1e-3, 1e-5}) > 0);
}

TEST_CASE("in the tests every CPU allocation starts as NaN, fresh or from the allocator's cache", "[tensor]") {
  REQUIRE(fill_new_allocations_with_nan());  // tests/main.cpp turns it on
  { Tensor zeros = Tensor::zeros({1000}); }  // freed: its zeroed block goes to the cache ...
  Tensor reused = Tensor::empty({1000});     // ... and is handed out again
  for (float v : reused.to_vector<float>()) REQUIRE(std::isnan(v));
  Tensor fresh = Tensor::empty({3 << 20}, DType::F64);  // fresh huge pages come zeroed from the OS
  auto f = fresh.to_vector<double>();
  REQUIRE(std::all_of(f.begin(), f.end(), [](double v) { return std::isnan(v); }));
  REQUIRE(Tensor::empty({4}, DType::I64).to_vector<int64_t>() == std::vector<int64_t>(4, -1));
}
