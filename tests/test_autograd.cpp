// test_autograd.cpp - the engine: accumulation, reuse of a tensor, no-grad, detach, misuse errors,
// ops with two outputs.
#include "autograd/autograd.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

TEST_CASE("a tensor used twice receives the sum of both gradients", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2, 3}, {3}).requires_grad_();
  Tensor y = sum(add(mul(x, x), x));  // dy/dx = 2x + 1
  y.backward();
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{3, 5, 7});
}

TEST_CASE("gradients accumulate across backward calls until zeroed", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  sum(mul(x, 3.0)).backward();
  sum(mul(x, 3.0)).backward();
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{6, 6});
  x.zero_grad();
  REQUIRE(!x.grad().defined());
}

TEST_CASE("no-grad guard and detach record nothing", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  {
    NoGradGuard ng;
    Tensor y = mul(x, 2.0);
    REQUIRE(!y.requires_grad());
  }
  REQUIRE(grad_enabled());
  Tensor z = mul(x.detach(), 2.0);
  REQUIRE(!z.requires_grad());
  REQUIRE_THROWS_WITH(sum(z).backward(), Catch::Contains("does not require grad"));
}

TEST_CASE("backward twice through freed buffers throws; retain_graph allows it", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  Tensor y = sum(exp(x));
  y.backward();
  REQUIRE_THROWS_WITH(y.backward(), Catch::Contains("second time") && Catch::Contains("retain_graph"));
  Tensor y2 = sum(exp(x));
  x.zero_grad();
  y2.backward(Tensor(), true);
  y2.backward();
  require_close(x.grad(), mul(exp(x.detach()), 2.0), 1e-12, 0, "retain_graph");
}

TEST_CASE("non-scalar backward without a gradient throws", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  REQUIRE_THROWS_WITH(mul(x, 2.0).backward(), Catch::Contains("[2]") && Catch::Contains("one-element"));
  Tensor y = mul(x, 2.0);
  y.backward(Tensor::ones({2}, DType::F64));
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{2, 2});
}

TEST_CASE("a deep chain does not overflow the stack", "[autograd]") {
  Tensor x = Tensor::from_vector<double>({1}, {1}).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = add(y, 0.0);
  sum(y).backward();
  REQUIRE(x.grad().item<double>() == 1.0);
}

namespace {
// A two-output op for the engine's test: (2 x, 3 x), one Node. Its backward records which
// gradients reached it (undefined: none reached that output) and returns 2 g0 + 3 g1.
std::pair<Tensor, Tensor> twice_and_thrice(const Tensor& x, std::vector<bool>* seen) {
  Tensor a, b;
  {
    NoGradGuard ng;
    a = mul(x, 2.0), b = mul(x, 3.0);
  }
  if (needs_grad({x}))
    record_outputs("twice_and_thrice", {&a, &b}, {x}, [seen](const std::vector<Tensor>& g) {
      REQUIRE(g.size() == 2);
      *seen = {g[0].defined(), g[1].defined()};
      Tensor dx = g[0].defined() ? mul(g[0], 2.0) : Tensor();
      if (g[1].defined()) dx = dx.defined() ? add(dx, mul(g[1], 3.0)) : mul(g[1], 3.0);
      return std::vector<Tensor>{dx};
    });
  return {a, b};
}
}  // namespace

TEST_CASE("an op with two outputs gets both gradients in one backward call", "[autograd]") {
  // Each output's gradient is summed over its readers first (b is read twice here); the Node runs
  // once; an output no gradient reached comes as undefined; either output can be the root.
  Tensor x = Tensor::from_vector<double>({1, 2}, {2}).requires_grad_();
  std::vector<bool> seen;
  auto [a, b] = twice_and_thrice(x, &seen);
  REQUIRE(a.impl().grad_fn == b.impl().grad_fn);  // one Node
  REQUIRE(b.impl().output_nr == 1);
  sum(add(add(mul(a, 5.0), b), mul(b, b))).backward();  // d/da = 5, d/db = 1 + 2 b = 1 + 6 x
  REQUIRE(seen == std::vector<bool>{true, true});
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{2 * 5 + 3 * 7, 2 * 5 + 3 * 13});
  for (int only : {0, 1}) {
    x.zero_grad();
    auto [a2, b2] = twice_and_thrice(x, &seen);
    sum(only == 0 ? a2 : b2).backward();  // the other output is not read at all
    REQUIRE(seen == std::vector<bool>{only == 0, only == 1});
    REQUIRE(x.grad().to_vector<double>() == std::vector<double>(2, only == 0 ? 2.0 : 3.0));
  }
}

// The engine's checks name the op and the shapes (autograd/engine.cpp: reduce_to). The leaf x
// receives the backward's own tensor when nothing else holds it, and a copy when something does.
TEST_CASE("backward names an op whose gradient has the wrong shape; a leaf's gradient is its own tensor",
          "[autograd]") {
  Tensor x = Tensor::ones({2, 3}).requires_grad_();
  Tensor bad = x.detach().clone();
  record("bad_op", bad, {x}, [](const Tensor&) { return std::vector<Tensor>{Tensor::ones({1, 3})}; });
  REQUIRE_THROWS_WITH(sum(bad).backward(), Catch::Contains("backward of bad_op produced a gradient of shape") &&
                                               Catch::Contains("[1, 3]") && Catch::Contains("[2, 3]"));

  // A backward that hands out a tensor it keeps: x's gradient must not share its storage.
  Tensor kept = Tensor::full({2, 3}, 5.0);
  Tensor y = x.detach().clone();
  record("keeps_its_gradient", y, {x}, [kept](const Tensor&) { return std::vector<Tensor>{kept}; });
  sum(y).backward(Tensor(), true);
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>(6, 5.0));
  kept.fill_(7.0);
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>(6, 5.0));
}
