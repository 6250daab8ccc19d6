// test_autograd.cpp - the engine: accumulation, reuse of a tensor, no-grad, detach, misuse errors.
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
