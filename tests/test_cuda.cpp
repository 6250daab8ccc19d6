// test_cuda.cpp - the CUDA twins (tensor/cuda/*.cu) against the CPU ones, op by op.
//
// Every case that needs a GPU is tagged [cuda] and starts with SKIP_WITHOUT_GPU() (tests/cuda_skip.h):
// without a usable GPU (CPU-only build, no driver, no device) a plain run of the suite leaves them
// out and says how many (tests/main.cpp), and one selected by name or tag says "skipping: <reason>"
// and returns. The one case that checks that behaviour, the queries and the allocation error
// without a GPU, is tagged [cuda-runtime] instead, so it runs everywhere.
// Every op of the public API, forward and backward, is compared with the CPU in
// tests/test_cuda_ops.cpp; this file tests the kernels and the runtime underneath.
// Kernel outputs are pre-filled with junk (NaN, or 123 for integer types) so that a kernel that
// writes nothing fails (STYLE.md rule 8). float32 runs with tolerances that allow for
// --use_fast_math; float64 must agree with the CPU to rounding.
// Run: ./build/anybit_tests "[cuda]"   (and "[cuda-runtime]" for the case above)
#include <array>
#include <cmath>
#include <limits>

#include "tensor/cpu/kernels.h"
#include "tensor/cuda/cuda.h"
#include "tensor/elementwise.h"
#include "tests/cuda_skip.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

namespace {

const Device kCpu;
const Device kCuda(Device::CUDA);
const DType kAllTypes[] = {DType::F32, DType::F64, DType::I32, DType::I64, DType::U8, DType::I8};
const DType kFloatTypes[] = {DType::F32, DType::F64};

// A CUDA tensor of junk: NaN for float types, 123 (outside every test's values) for integers.
Tensor junk(const Shape& s, DType dt) {
  return Tensor::full(s, is_floating(dt) ? std::numeric_limits<double>::quiet_NaN() : 123.0, dt, kCuda);
}

double rtol_for(DType dt) { return dt == DType::F32 ? 1e-3 : 1e-10; }
double atol_for(DType dt) { return dt == DType::F32 ? 1e-5 : 1e-12; }

// Exact comparison of any-dtype tensors (on any device) as doubles.
void require_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what << ": " << got.str() << " vs " << want.str());
  REQUIRE(got.shape() == want.shape());
  REQUIRE(got.to_vector<double>() == want.to_vector<double>());
}

}  // namespace

TEST_CASE("cuda: without a usable GPU the queries say why and allocation fails clearly", "[cuda-runtime]") {
  if (cuda::available()) {
    REQUIRE(cuda::built());
    REQUIRE(cuda::unavailable_reason().empty());
    return;
  }
  INFO("unavailable_reason: " << cuda::unavailable_reason());
  REQUIRE(!cuda::unavailable_reason().empty());
  if (cuda::built())
    REQUIRE_THROWS_WITH(Tensor::empty({2}, DType::F32, kCuda), Catch::Contains("cannot allocate a CUDA tensor"));
  else
    REQUIRE_THROWS_WITH(Tensor::empty({2}, DType::F32, kCuda), Catch::Contains("without CUDA"));
}

TEST_CASE("cuda: copies between host and device, views and dtype conversions", "[cuda]") {
  SKIP_WITHOUT_GPU();
  // Distinct small integers (0..59), exact in every dtype, so a wrong index shows as a wrong value.
  Tensor base = Tensor::arange(60, DType::F64).reshape({3, 4, 5});
  for (DType st : kAllTypes) {
    Tensor hs = base.to(st);
    Tensor ds = hs.to(kCuda);
    REQUIRE(ds.device().is_cuda());
    require_equal(ds.to(kCpu), hs, "round trip");
    require_equal(hs.transpose(0, 2).to(kCuda), hs.transpose(0, 2).contiguous(), "non-contiguous host -> device");
    require_equal(ds.transpose(0, 2).to(kCpu), hs.transpose(0, 2).contiguous(), "non-contiguous device -> host");
    for (DType dt : kAllTypes) {
      std::string what = std::string(dtype_name(st)) + " -> " + dtype_name(dt);
      Tensor out = junk(ds.shape(), dt);
      cuda::strided_copy(ds, out);
      require_equal(out, hs.to(dt), what + " contiguous");

      Tensor perm = ds.permute({2, 0, 1});
      out = junk(perm.shape(), dt);
      cuda::strided_copy(perm, out);
      require_equal(out, hs.permute({2, 0, 1}).to(dt).contiguous(), what + " permuted");

      Tensor sl = ds.slice(2, 1, 5, 2);
      out = junk(sl.shape(), dt);
      cuda::strided_copy(sl, out);
      require_equal(out, hs.slice(2, 1, 5, 2).to(dt).contiguous(), what + " sliced with step");

      Tensor br = ds.select(1, 2).unsqueeze(1).expand({3, 4, 5});  // stride 0 in dim 1
      out = junk(br.shape(), dt);
      cuda::strided_copy(br, out);
      require_equal(out, hs.select(1, 2).unsqueeze(1).expand({3, 4, 5}).to(dt).contiguous(), what + " broadcast");
    }
    // to(dtype) and contiguous() on device go through the same kernel.
    require_equal(ds.permute({1, 2, 0}).contiguous(), hs.permute({1, 2, 0}).contiguous(), "contiguous()");
  }
}

TEST_CASE("cuda: fill and full in every dtype", "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (DType dt : kAllTypes) {
    for (double v : {0.0, 42.0, 7.0}) {
      Tensor d = junk({5, 7}, dt);
      cuda::fill(d, v);
      require_equal(d, Tensor::full({5, 7}, v, dt), std::string("fill ") + dtype_name(dt));
    }
    require_equal(Tensor::ones({3}, dt, kCuda), Tensor::ones({3}, dt), "ones");
  }
  Tensor d = junk({1000}, DType::F32);
  d.fill_(-2.5);
  require_equal(d, Tensor::full({1000}, -2.5), "fill_ -2.5");
}

TEST_CASE("cuda: every unary op matches the CPU, contiguous and strided", "[cuda]") {
  SKIP_WITHOUT_GPU();
  struct Case {
    UnaryOp op;
    const char* name;
    double p0, p1;
    bool positive;  // the op needs x > 0
  };
  const Case cases[] = {
      {UnaryOp::Neg, "neg", 0, 0, false},        {UnaryOp::Exp, "exp", 0, 0, false},
      {UnaryOp::Log, "log", 0, 0, true},         {UnaryOp::Sqrt, "sqrt", 0, 0, true},
      {UnaryOp::Pow, "pow", 1.5, 0, true},       {UnaryOp::Tanh, "tanh", 0, 0, false},
      {UnaryOp::Abs, "abs", 0, 0, false},        {UnaryOp::Relu, "relu", 0, 0, false},
      {UnaryOp::Relu6, "relu6", 0, 0, false},    {UnaryOp::Clamp, "clamp", -1.0, 2.0, false},
      {UnaryOp::Round, "round", 0, 0, false},    {UnaryOp::AddScalar, "add_scalar", 0.75, 0, false},
      {UnaryOp::MulScalar, "mul_scalar", -3, 0, false}, {UnaryOp::Sign, "sign", 0, 0, false},
  };
  for (DType dt : kFloatTypes) {
    Tensor x = mul(randn({3, 4, 5}, 11, dt), 4.0);  // spans relu6's 6 and clamp's bounds
    Tensor xpos = add(abs(x), 0.1);
    for (const Case& c : cases) {
      std::string what = std::string(c.name) + " " + dtype_name(dt);
      Tensor hx = c.positive ? xpos : x;
      Tensor want = Tensor::empty(hx.shape(), dt);
      cpu::unary(c.op, hx, want, c.p0, c.p1);

      Tensor dx = hx.to(kCuda);
      Tensor got = junk(hx.shape(), dt);
      cuda::unary(c.op, dx, got, c.p0, c.p1);
      require_close(got, want, rtol_for(dt), atol_for(dt), what);

      Tensor perm = dx.permute({2, 0, 1});  // strided input
      got = junk(perm.shape(), dt);
      cuda::unary(c.op, perm, got, c.p0, c.p1);
      Tensor want_perm = Tensor::empty(perm.shape(), dt);
      cpu::unary(c.op, hx.permute({2, 0, 1}).contiguous(), want_perm, c.p0, c.p1);
      require_close(got, want_perm, rtol_for(dt), atol_for(dt), what + " strided");
    }
  }
}

TEST_CASE("cuda: every binary op matches the CPU, with broadcast and transposed operands", "[cuda]") {
  SKIP_WITHOUT_GPU();
  struct Case {
    BinaryOp op;
    const char* name;
    double p0, p1;
    bool positive_b;
  };
  const Case cases[] = {
      {BinaryOp::Add, "add", 0, 0, false},          {BinaryOp::Sub, "sub", 0, 0, false},
      {BinaryOp::Mul, "mul", 0, 0, false},          {BinaryOp::Div, "div", 0, 0, true},
      {BinaryOp::ReluGrad, "relu_grad", 0, 0, false}, {BinaryOp::Relu6Grad, "relu6_grad", 0, 0, false},
      {BinaryOp::ClampGrad, "clamp_grad", -0.5, 0.5, false}, {BinaryOp::TanhGrad, "tanh_grad", 0, 0, false},
      {BinaryOp::PowGrad, "pow_grad", 1.5, 0, true}, {BinaryOp::GreaterEq, "greater_eq", 0, 0, false},
      {BinaryOp::Less, "less", 0, 0, false},
  };
  const Shape s{2, 3, 4};
  for (DType dt : kFloatTypes) {
    // Device operands of shape s: contiguous, transposed, and broadcast (stride 0) views. The CPU
    // reference gets contiguous copies of the same views: the values are what matters there.
    Tensor a = mul(randn(s, 21, dt), 3.0).to(kCuda);
    Tensor at = mul(randn({4, 3, 2}, 22, dt), 3.0).to(kCuda).permute({2, 1, 0});
    Tensor b = mul(randn({3, 1}, 23, dt), 3.0).to(kCuda).expand(s);
    Tensor bpos = add(abs(randn({3, 1}, 24, dt)), 0.5).to(kCuda).expand(s);
    REQUIRE(!at.is_contiguous());
    REQUIRE(!b.is_contiguous());
    for (const Case& c : cases) {
      Tensor hb = c.positive_b ? bpos : b;
      std::vector<std::pair<Tensor, Tensor>> pairs = {{a, hb}, {at, hb}};
      if (!c.positive_b) pairs.push_back({b, at});
      int k = 0;
      for (auto& [da, db] : pairs) {
        std::string what = std::string(c.name) + " " + dtype_name(dt) + " pair " + std::to_string(k++);
        Tensor want = Tensor::empty(s, dt);
        cpu::binary(c.op, da.to(kCpu), db.to(kCpu), want, c.p0, c.p1);
        Tensor got = junk(s, dt);
        cuda::binary(c.op, da, db, got, c.p0, c.p1);
        require_close(got, want, rtol_for(dt), atol_for(dt), what);
      }
    }
  }
}

TEST_CASE("cuda: differentiable elementwise ops through ops.h, with broadcasting", "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (DType dt : kFloatTypes) {
    Tensor a = randn({4, 1, 5}, 31, dt), b = randn({3, 1}, 32, dt);
    Tensor da = a.to(kCuda), db = b.to(kCuda);
    double rt = rtol_for(dt), at = atol_for(dt);
    require_close(add(da, db), add(a, b), rt, at, "add");
    require_close(sub(da, db), sub(a, b), rt, at, "sub");
    require_close(mul(da, db), mul(a, b), rt, at, "mul");
    require_close(div(da, add(abs(db), 0.5)), div(a, add(abs(b), 0.5)), rt, at, "div");
    require_close(relu(da), relu(a), rt, at, "relu");
    require_close(tanh(da), tanh(a), rt, at, "tanh");
    require_close(clamp(da, -0.5, 0.5), clamp(a, -0.5, 0.5), rt, at, "clamp");
    require_close(exp(da.transpose(0, 2)), exp(a.transpose(0, 2)), rt, at, "exp of a transposed view");
    REQUIRE(add(da, db).device().is_cuda());
  }
  REQUIRE_THROWS_WITH(add(randn({2}, 1), randn({2}, 1).to(kCuda)),
                      Catch::Contains("add") && Catch::Contains("different devices"));
}

TEST_CASE("cuda: sum, mean, max and argmax over several dimensions", "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (DType dt : kFloatTypes) {
    double rt = dt == DType::F32 ? 1e-4 : 1e-10, at = dt == DType::F32 ? 1e-4 : 1e-10;
    Tensor x = randn({4, 5, 6}, 41, dt);
    Tensor dx = x.to(kCuda);
    for (std::vector<int64_t> dims : std::vector<std::vector<int64_t>>{{0}, {1}, {2}, {0, 1}, {1, 2}, {0, 2}, {0, 1, 2}}) {
      std::string what = "dims " + shape_str(dims) + " " + dtype_name(dt);
      require_close(sum(dx, dims), sum(x, dims), rt, at, "sum " + what);
      require_close(mean(dx, dims, true), mean(x, dims, true), rt, at, "mean keepdim " + what);
    }
    require_close(sum(dx), sum(x), rt, at, "sum all");
    require_close(max(dx), max(x), 0, 0, "max all");
    for (int64_t d = 0; d < 3; ++d) {
      require_close(max(dx, d), max(x, d), 0, 0, "max dim " + std::to_string(d));
      require_equal(argmax(dx, d), argmax(x, d), "argmax dim " + std::to_string(d));
      require_equal(argmax(dx.transpose(0, 2), d), argmax(x.transpose(0, 2), d), "argmax of a view");
    }
    // Shapes that take the one-block-per-output path (few outputs, long rows) and the
    // one-thread-per-output path (many outputs); rounded values make ties for argmax.
    for (Shape s : std::vector<Shape>{{3, 5000}, {5000, 3}, {2000, 70}, {2, 100, 3}}) {
      Tensor h = round_ste(mul(randn(s, 42, dt), 2.0));
      Tensor d = h.to(kCuda);
      for (int64_t dim = 0; dim < (int64_t)s.size(); ++dim) {
        std::string what = shape_str(s) + " dim " + std::to_string(dim) + " " + dtype_name(dt);
        require_close(sum(d, {dim}), sum(h, {dim}), rt, at, "sum " + what);
        require_close(max(d, dim), max(h, dim), 0, 0, "max " + what);
        require_equal(argmax(d, dim), argmax(h, dim), "argmax (ties) " + what);
      }
    }
  }
}

TEST_CASE("cuda: reduction kernels write every output and follow the CPU's NaN rule", "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (DType dt : kFloatTypes) {
    // (outer, R, inner) layouts covering the three kernel shapes (thread, block, split row).
    for (auto [outer, R, inner] : std::vector<std::array<int64_t, 3>>{{3, 7, 5}, {2, 3000, 1}, {1, 500, 4}, {1500, 9, 1}, {1, 300000, 1}, {3, 140000, 2}}) {
      std::string what = std::to_string(outer) + "x" + std::to_string(R) + "x" + std::to_string(inner) + " " +
                         dtype_name(dt);
      Tensor h = randn({outer, R, inner}, 51, dt);
      // Plant NaNs in some slices (at two positions in slice 0, so the first one must win).
      Tensor hf = h.to(DType::F64);
      double* p = hf.data<double>();
      const double nan = std::numeric_limits<double>::quiet_NaN();
      p[(R / 2) * inner] = nan;        // output 0 (o = 0, i = 0): NaNs at r = R/2 and R - 1
      p[(R - 1) * inner] = nan;
      if (outer * inner > 1) p[((outer - 1) * R) * inner + inner - 1] = nan;  // last output: r = 0
      h = hf.to(dt);
      Tensor d = h.to(kCuda);

      Tensor want_s = Tensor::empty({outer, inner}, dt);
      cpu::reduce_sum(h, outer, R, inner, want_s);
      Tensor got_s = junk({outer, inner}, dt);
      cuda::reduce_sum(d, outer, R, inner, got_s);
      auto gs = got_s.to_vector<double>(), ws = want_s.to_vector<double>();
      for (size_t i = 0; i < ws.size(); ++i) {
        INFO("sum " << what << " output " << i << ": " << gs[i] << " vs " << ws[i]);
        if (std::isnan(ws[i]))
          REQUIRE(std::isnan(gs[i]));
        else
          REQUIRE(std::abs(gs[i] - ws[i]) <= 1e-4 * (1 + std::abs(ws[i])));
      }

      Tensor want_v = Tensor::empty({outer, inner}, dt), want_i = Tensor::empty({outer, inner}, DType::I64);
      cpu::reduce_max(h, outer, R, inner, want_v, want_i);
      Tensor got_v = junk({outer, inner}, dt), got_i = junk({outer, inner}, DType::I64);
      cuda::reduce_max(d, outer, R, inner, got_v, got_i);
      require_equal(got_i, want_i, "argmax " + what);
      auto gv = got_v.to_vector<double>(), wv = want_v.to_vector<double>();
      for (size_t i = 0; i < wv.size(); ++i) {
        INFO("max " << what << " output " << i << ": " << gv[i] << " vs " << wv[i]);
        REQUIRE((std::isnan(wv[i]) ? std::isnan(gv[i]) : gv[i] == wv[i]));
      }
      REQUIRE(std::isnan(wv[0]));  // the planted NaN reached the CPU result, so the rule was tested
    }
  }
}

TEST_CASE("cuda: gemm matches a CPU loop for every transpose and padded leading dimensions", "[cuda]") {
  SKIP_WITHOUT_GPU();
  const int64_t M = 37, N = 29, K = 23;
  const float alpha = 1.5f, beta = 0.5f;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // Stored row-major: A is (M, K), or (K, M) when ta; B is (K, N), or (N, K) when tb.
      int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
      int64_t arows = ta ? K : M, brows = tb ? N : K;
      Tensor A = randn({arows * lda}, 61, DType::F32), B = randn({brows * ldb}, 62, DType::F32);
      Tensor C = randn({M * ldc}, 63, DType::F32);
      auto va = A.to_vector<float>(), vb = B.to_vector<float>(), vc = C.to_vector<float>();
      std::vector<double> want(M * ldc);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
          if (j >= N) {
            want[i * ldc + j] = vc[i * ldc + j];  // padding must be left alone
            continue;
          }
          double acc = 0;
          for (int64_t k = 0; k < K; ++k) {
            double aik = ta ? va[k * lda + i] : va[i * lda + k];
            double bkj = tb ? vb[j * ldb + k] : vb[k * ldb + j];
            acc += aik * bkj;
          }
          want[i * ldc + j] = alpha * acc + beta * vc[i * ldc + j];
        }
      Tensor dA = A.to(kCuda), dB = B.to(kCuda), dC = C.to(kCuda);
      cuda::gemm(ta, tb, M, N, K, alpha, dA.data<float>(), lda, dB.data<float>(), ldb, beta, dC.data<float>(), ldc);
      std::string what = std::string("gemm ") + (ta ? "A^T " : "A ") + (tb ? "B^T" : "B");
      require_close(dC, Tensor::from_vector(want, {M * ldc}), 1e-4, 1e-4, what);
    }
  REQUIRE_THROWS_WITH(cuda::gemm(false, false, 4, 4, 4, 1.f, nullptr, 2, nullptr, 4, 0.f, nullptr, 4),
                      Catch::Contains("lda=2"));
}

// The convolution's batched forms (tensor/cuda/nn.cu): one A for every product (stride 0), the
// B_i side by side in one wider matrix (stride N, as image i's columns of im2col), and the C_i
// apart with a gap that must be left alone.
TEST_CASE("cuda: gemm_batched matches a CPU loop per product: shared A, interleaved B, strided C", "[cuda]") {
  SKIP_WITHOUT_GPU();
  const int64_t M = 7, N = 5, K = 6, batch = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t lda = ta ? M : K;
      // B_i: (K, N) rows of a (K, batch N) matrix, or (N, K) when tb, then stacked whole
      const int64_t ldb = tb ? K : batch * N, stride_b = tb ? N * K : N, brows = tb ? batch * N : K;
      const int64_t ldc = N + 2, stride_c = M * ldc + 4;
      Tensor A = randn({(ta ? K : M) * lda}, 64, DType::F64), B = randn({brows * ldb}, 65, DType::F64);
      Tensor C = randn({batch * stride_c}, 66, DType::F64);
      auto va = A.to_vector<double>(), vb = B.to_vector<double>(), want = C.to_vector<double>();
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < K; ++k)
              acc += (ta ? va[k * lda + i] : va[i * lda + k]) *
                     vb[b * stride_b + (tb ? j * ldb + k : k * ldb + j)];
            double& c = want[b * stride_c + i * ldc + j];
            c = 2.0 * acc - 0.5 * c;
          }
      Tensor dA = A.to(kCuda), dB = B.to(kCuda), dC = C.to(kCuda);
      cuda::gemm_batched(ta, tb, M, N, K, 2.0, dA.data<double>(), lda, 0, dB.data<double>(), ldb, stride_b, -0.5,
                         dC.data<double>(), ldc, stride_c, batch);
      std::string what = std::string("gemm_batched ") + (ta ? "A^T " : "A ") + (tb ? "B^T" : "B");
      require_close(dC, Tensor::from_vector(want, {batch * stride_c}), 1e-12, 1e-12, what);
    }
  REQUIRE_THROWS_WITH(cuda::gemm_batched(false, false, 4, 4, 4, 1.0, nullptr, 4, 0, nullptr, 4, 16, 0.0, nullptr, 4,
                                         0, 2),
                      Catch::Contains("c=0"));
}

// TF32 (cuda.h): a float32 GEMM's inputs keep 10 of their 23 mantissa bits, so each product is off
// by up to 2^-9 of itself (2^-10 per input if the GPU truncates, 2^-11 if it rounds) and the sums
// stay float32. Against the exact product, its error is then hundreds of times float32's, and
// within that bound. Measured on all of C as max |C - exact| / sum_k |a_ik b_kj|.
TEST_CASE("cuda: gemm in TF32 mode keeps 10 mantissa bits of each input; float64 and the default do not", "[cuda]") {
  SKIP_WITHOUT_GPU();
  struct Restore {
    ~Restore() { cuda::set_tf32(false); }
  } restore;
  REQUIRE_FALSE(cuda::tf32());  // off unless asked for
  const int64_t M = 256, N = 256, K = 256;
  Tensor A = randn({M, K}, 91, DType::F32), B = randn({K, N}, 92, DType::F32);
  auto va = A.to_vector<double>(), vb = B.to_vector<double>();
  std::vector<double> exact(M * N, 0.0), magnitude(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) {
        exact[i * N + j] += va[i * K + k] * vb[k * N + j];
        magnitude[i * N + j] += std::abs(va[i * K + k] * vb[k * N + j]);
      }
  auto relative_error = [&](DType dt) {
    Tensor dA = A.to(dt).to(kCuda), dB = B.to(dt).to(kCuda), C = junk({M, N}, dt);
    AB_DISPATCH_FLOAT(dt, "tf32 test", [&] {
      cuda::gemm(false, false, M, N, K, scalar_t(1), dA.data<scalar_t>(), K, dB.data<scalar_t>(), N, scalar_t(0),
                 C.data<scalar_t>(), N);
    });
    auto vc = C.to_vector<double>();
    double worst = 0;
    for (int64_t i = 0; i < M * N; ++i) worst = std::max(worst, std::abs(vc[i] - exact[i]) / magnitude[i]);
    return worst;
  };
  const double f32 = relative_error(DType::F32);
  cuda::set_tf32(true);
  REQUIRE(cuda::tf32());
  const double tf32 = relative_error(DType::F32), f64 = relative_error(DType::F64);
  cuda::set_tf32(false);
  const double f32_again = relative_error(DType::F32);
  INFO("max relative error: float32 " << f32 << ", TF32 " << tf32 << ", float64 with TF32 on " << f64
                                      << ", float32 after TF32 " << f32_again);
  const double float32_bound = K * std::ldexp(1.0, -24);
  CHECK(f32 <= float32_bound);
  CHECK(tf32 <= std::ldexp(1.0, -9) + float32_bound);
  CHECK(tf32 > 20 * f32);     // the mode took effect
  CHECK(f64 <= 1e-13);        // float64 GEMMs never use it
  CHECK(f32_again <= float32_bound);

  // Convolutions are GEMMs: in TF32 they agree with the CPU to TF32's precision.
  Tensor x = randn({2, 8, 9, 9}, 93, DType::F32), w = randn({6, 8, 3, 3}, 94, DType::F32);
  const Conv2dOptions opt = Conv2dOptions::make(1, 1);
  cuda::set_tf32(true);
  Tensor y = conv2d(x.to(kCuda), w.to(kCuda), Tensor(), opt);
  require_close(y, conv2d(x, w, Tensor(), opt), 1e-2, 1e-2, "conv2d in TF32");
}

TEST_CASE("cuda: matmul and linear through ops.h, forward and backward, match the CPU", "[cuda]") {
  SKIP_WITHOUT_GPU();
  const double rt = 1e-4, at = 1e-4;
  Tensor a = randn({7, 5}, 81, DType::F32), b = randn({5, 6}, 82, DType::F32);
  Tensor da = a.to(kCuda), db = b.to(kCuda);
  require_close(matmul(da, db), matmul(a, b), rt, at, "matmul");
  // Views that GEMM reads in place: a transpose, and a row slice with a longer row stride.
  Tensor c = randn({5, 7}, 83, DType::F32), w = randn({5, 9}, 84, DType::F32);
  Tensor dc = c.to(kCuda), dw = w.to(kCuda);
  require_close(matmul(dc.t(), db), matmul(c.t(), b), rt, at, "matmul of a transposed view");
  require_close(matmul(da, dw.slice(1, 2, 8)), matmul(a, w.slice(1, 2, 8)), rt, at, "matmul of a column slice");
  // float64 goes through cublasDgemm and agrees with the CPU to rounding.
  require_close(matmul(da.to(DType::F64), db.to(DType::F64)), matmul(a.to(DType::F64), b.to(DType::F64)), 1e-12, 1e-12,
                "matmul in float64");

  // y = x W^T + bias; L = sum(y * y): gradients for x, W and bias on both devices.
  Tensor x = randn({4, 5}, 85, DType::F32).requires_grad_();
  Tensor W = randn({3, 5}, 86, DType::F32).requires_grad_();
  Tensor bias = randn({3}, 87, DType::F32).requires_grad_();
  Tensor y = linear(x, W, bias);
  sum(mul(y, y)).backward();
  Tensor gx = x.detach().to(kCuda).requires_grad_(), gW = W.detach().to(kCuda).requires_grad_(),
         gb = bias.detach().to(kCuda).requires_grad_();
  Tensor gy = linear(gx, gW, gb);
  sum(mul(gy, gy)).backward();
  require_close(gy, y.detach(), rt, at, "linear forward");
  require_close(gx.grad(), x.grad(), rt, at, "linear dL/dx");
  require_close(gW.grad(), W.grad(), rt, at, "linear dL/dW");
  require_close(gb.grad(), bias.grad(), rt, at, "linear dL/dbias");
}

TEST_CASE("cuda: backward through add, mul, exp and sum gives the CPU's gradients", "[cuda]") {
  SKIP_WITHOUT_GPU();
  // L = sum(exp(0.5 (x + w)) * x), x: (3, 4), w: (4,) broadcast over rows
  auto f = [](const Tensor& x, const Tensor& w) { return sum(mul(exp(mul(add(x, w), 0.5)), x)); };
  for (DType dt : kFloatTypes) {
    Tensor x = randn({3, 4}, 71, dt).requires_grad_(), w = randn({4}, 72, dt).requires_grad_();
    Tensor loss = f(x, w);
    loss.backward();

    Tensor dx = x.detach().to(kCuda).requires_grad_(), dw = w.detach().to(kCuda).requires_grad_();
    Tensor dloss = f(dx, dw);
    REQUIRE(dloss.device().is_cuda());
    dloss.backward();
    REQUIRE(dx.grad().defined());
    REQUIRE(dx.grad().device().is_cuda());
    REQUIRE(dw.grad().device().is_cuda());
    double rt = dt == DType::F32 ? 1e-4 : 1e-10, at = dt == DType::F32 ? 1e-5 : 1e-12;
    require_close(dloss, loss.detach(), rt, at, "loss");
    require_close(dx.grad(), x.grad(), rt, at, "dL/dx");
    require_close(dw.grad(), w.grad(), rt, at, "dL/dw (summed over the broadcast rows)");

    // Across devices: a CPU leaf used on the GPU gets its gradient back on the CPU.
    Tensor h = randn({5}, 73, dt).requires_grad_();
    sum(exp(h.to(kCuda))).backward();
    REQUIRE(h.grad().device().is_cpu());
    require_close(h.grad(), exp(h.detach()), rt, at, "d sum(exp(h.to(cuda))) / dh");
  }
}

TEST_CASE("cuda: the caching allocator hands a freed block out again", "[cuda]") {
  SKIP_WITHOUT_GPU();
  Allocator* a = cuda_allocator();
  void* p = a->allocate(1000);
  a->deallocate(p, 1000);
  void* q = a->allocate(900);  // the same rounded size
  REQUIRE(q == p);
  a->deallocate(q, 900);

  void* first = nullptr;
  {
    Tensor t = Tensor::empty({3000}, DType::F32, kCuda);
    first = t.raw_data();
  }
  Tensor u = Tensor::empty({3000}, DType::F32, kCuda);
  REQUIRE(u.raw_data() == first);
  cuda::synchronize();
}

// The GPU time profile (cuda::profile_begin, bench_train --gpu-profile): one entry per kernel, GEMM,
// copy and graph replay queued meanwhile, named by the line of anybit that queued it, with a GEMM's
// operations and shape and a copy's bytes. (On the emulator the times are the host's: it does the
// device's work when it is queued.)
TEST_CASE("cuda: the GPU time profile names each kernel, GEMM, copy and replay by the line that queued it", "[cuda]") {
  SKIP_WITHOUT_GPU();
  Generator g(3);
  Tensor a = Tensor::randn({8, 16}, g).to(kCuda), b = Tensor::randn({16, 4}, g).to(kCuda);
  REQUIRE_THROWS_WITH(cuda::profile_end(), Catch::Contains("no profile is running"));
  cuda::profile_begin(1);
  REQUIRE_THROWS_WITH(cuda::profile_begin(1), Catch::Contains("already running"));
  Tensor c = relu(matmul(a, b));
  const std::vector<float> host = c.to_vector<float>();
  const cuda::Profile p = cuda::profile_end();
  REQUIRE_FALSE(p.truncated);
  CHECK(p.hold_ms >= 0);
  CHECK(p.queue_ms >= 0);
  int gemms = 0, kernels = 0, copies_back = 0;
  for (const cuda::ProfileEntry& e : p.entries) {
    INFO(e.site << " " << e.detail);
    CHECK(e.gpu_ms >= 0);
    if (e.site.rfind("tensor/cuda/gemm.cu:", 0) == 0) {
      ++gemms;
      CHECK(e.flops == 2.0 * 8 * 4 * 16);
      CHECK(e.detail == "8x4x16 A B");
    } else if (e.site.rfind("tensor/cuda/elementwise.cu:", 0) == 0) {
      ++kernels;
      CHECK(e.flops == 0);
    } else if (e.site.rfind("tensor/cuda/runtime.cu:", 0) == 0 && e.bytes == 8 * 4 * sizeof(float)) {
      ++copies_back;
    }
  }
  CHECK(gemms == 1);
  CHECK(kernels == 1);  // the ReLU
  CHECK(copies_back == 1);
  REQUIRE(!cuda::profiling());

  // Nothing is listed outside a profile, and a replayed graph is one entry.
  Tensor d;
  cuda::Graph graph;
  graph.capture([&] { d = relu(matmul(a, b)); });
  cuda::profile_begin(1);
  graph.replay();
  const cuda::Profile q = cuda::profile_end();
  REQUIRE(q.entries.size() == 1);
  CHECK(q.entries[0].site.rfind("tensor/cuda/runtime.cu:", 0) == 0);
  REQUIRE(d.to_vector<float>() == host);
}
