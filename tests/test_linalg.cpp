// test_linalg.cpp - matmul and linear: gradient checks, GEMM against ref:: on contiguous,
// transposed and sliced operands, and error messages.
#include "tensor/cuda/cuda.h"
#include "tensor/ref.h"
#include "tests/cuda_skip.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

TEST_CASE("matmul and linear gradcheck", "[linalg]") {
  Tensor a = randn({3, 4}, 1).requires_grad_(), b = randn({4, 5}, 2).requires_grad_();
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); }, {a, b}) == 32);
  Tensor x = randn({3, 4}, 3).requires_grad_(), w = randn({2, 4}, 4).requires_grad_();
  Tensor bias = randn({2}, 5).requires_grad_();
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); }, {x, w, bias}) == 22);
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return linear(v[0], v[1], Tensor()); }, {x, w}) == 20);
  // transposed operands go to GEMM without a copy: their gradients must still be right
  Tensor at = randn({4, 3}, 6).requires_grad_();
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return matmul(v[0].t(), v[1]); }, {at, b}) == 32);
}

TEST_CASE("matmul and linear match ref on contiguous, transposed and sliced operands", "[linalg][ref]") {
  Tensor a = randn({7, 9}, 1, DType::F32), b = randn({9, 5}, 2, DType::F32);
  Tensor wide = randn({7, 12}, 3, DType::F32);
  std::vector<std::pair<const char*, Tensor>> as = {
      {"contiguous", a}, {"transposed", randn({9, 7}, 4, DType::F32).t()}, {"row slice", wide.slice(1, 2, 11)},
      {"column step", randn({7, 18}, 5, DType::F32).slice(1, 0, 18, 2)}};
  for (auto& [name, av] : as) {
    INFO(name);
    Tensor al = av.detach().requires_grad_();  // a view leaf: its grad has its own (contiguous) layout
    Tensor bl = b.detach().requires_grad_();
    Tensor y = matmul(al, bl);
    require_close(y, ref::matmul(av, b), 1e-5, 1e-5, "matmul");
    Tensor dy = randn(y.shape(), 6, DType::F32);
    y.backward(dy);
    Tensor da, db;
    ref::matmul_backward(av, b, dy, da, db);
    require_close(al.grad(), da, 1e-5, 1e-5, "matmul da");
    require_close(bl.grad(), db, 1e-5, 1e-5, "matmul db");
  }
  Tensor x = randn({6, 9}, 7, DType::F32).requires_grad_();
  Tensor w = randn({4, 9}, 8, DType::F32).requires_grad_(), bias = randn({4}, 9, DType::F32).requires_grad_();
  Tensor y = linear(x, w, bias);
  require_close(y, ref::linear(x, w, bias), 1e-5, 1e-5, "linear");
  Tensor dy = randn(y.shape(), 10, DType::F32);
  y.backward(dy);
  Tensor dx, dw, db;
  ref::linear_backward(x, w, bias, dy, dx, dw, db);
  require_close(x.grad(), dx, 1e-5, 1e-5, "linear dx");
  require_close(w.grad(), dw, 1e-5, 1e-5, "linear dw");
  require_close(bias.grad(), db, 1e-5, 1e-5, "linear db");
  // non-contiguous x (a transposed view)
  Tensor xt = randn({9, 6}, 11, DType::F32).t();
  require_close(linear(xt, w, Tensor()), ref::linear(xt, w, Tensor()), 1e-5, 1e-5, "linear, x transposed");
}

TEST_CASE("matmul and linear errors name the op and the shapes", "[linalg][errors]") {
  REQUIRE_THROWS_WITH(matmul(randn({2, 3}, 1), randn({4, 5}, 2)),
                      Catch::Contains("matmul") && Catch::Contains("[2, 3]") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(matmul(randn({2, 3}, 1, DType::F32), randn({3, 5}, 2)),
                      Catch::Contains("matmul") && Catch::Contains("float32") && Catch::Contains("float64"));
  REQUIRE_THROWS_WITH(linear(randn({2, 3}, 1), randn({4, 5}, 2), Tensor()),
                      Catch::Contains("linear") && Catch::Contains("[2, 3]") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(linear(randn({2, 5}, 1), randn({4, 5}, 2), randn({3}, 3)),
                      Catch::Contains("linear") && Catch::Contains("bias") && Catch::Contains("[3]"));
  REQUIRE_THROWS_WITH(linear(randn({2, 3, 5}, 1), randn({4, 5}, 2), Tensor()),
                      Catch::Contains("linear") && Catch::Contains("[2, 3, 5]") && Catch::Contains("flatten"));
}

TEST_CASE("matmul and linear on CUDA match the CPU (float32 and float64, cuBLAS)", "[linalg][cuda]") {
  SKIP_WITHOUT_GPU();
  Device gpu(Device::CUDA);
  Tensor x = randn({6, 9}, 1, DType::F32), w = randn({4, 9}, 2, DType::F32), b = randn({4}, 3, DType::F32);
  Tensor xg = x.to(gpu).requires_grad_(), wg = w.to(gpu).requires_grad_(), bg = b.to(gpu).requires_grad_();
  Tensor y = linear(xg, wg, bg);
  REQUIRE(y.device().is_cuda());
  require_close(y, ref::linear(x, w, b), 1e-4, 1e-5, "linear on CUDA");
  Tensor dy = randn(y.shape(), 4, DType::F32);
  y.backward(dy.to(gpu));
  Tensor dx, dw, db;
  ref::linear_backward(x, w, b, dy, dx, dw, db);
  require_close(xg.grad(), dx, 1e-4, 1e-5, "linear dx on CUDA");
  require_close(wg.grad(), dw, 1e-4, 1e-5, "linear dw on CUDA");
  require_close(bg.grad(), db, 1e-4, 1e-5, "linear db on CUDA");
  Tensor a = randn({9, 5}, 5, DType::F32);
  require_close(matmul(x.to(gpu), a.to(gpu)), ref::matmul(x, a), 1e-4, 1e-5, "matmul on CUDA");
  // float64 goes through cublasDgemm
  Tensor x64 = x.to(DType::F64), a64 = a.to(DType::F64);
  require_close(matmul(x64.to(gpu), a64.to(gpu)), ref::matmul(x64, a64), 1e-12, 1e-12, "float64 matmul on CUDA");
}
