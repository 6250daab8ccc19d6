// test_formulas.cpp - the CUDA kernels' per-element work (tensor/formulas.h), run on the host.
//
// Each CUDA kernel of tensor/cuda/nn.cu gives a thread one element (or one row) and calls one
// function of tensor/formulas.h for it. These tests call the same functions in plain loops, in the
// same arrangement as the kernels (im2col, batched GEMMs per group, col2im as a gather, chunks of
// images; the depthwise conv's direct loops), and compare with the scalar references of
// tensor/ref.h. So the index arithmetic of the GPU path is checked on every machine, GPU or not;
// what only a GPU can check (launches, cuBLAS, the block reductions) is in
// tests/test_cuda_ops.cpp, tagged [cuda].
#include <limits>
#include <sstream>
#include <string>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/nn.h"
#include "tensor/formulas.h"
#include "tensor/kernels.h"
#include "tensor/ref.h"
#include "tensor/ref_loss.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;
using namespace anybit::formula;

namespace {

// C (M, N) = op(A) op(B) + beta C in plain loops (row-major, leading dimensions as cuda::gemm).
void host_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
               int64_t ldb, double beta, double* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (ta ? A[k * lda + m] : A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
      C[m * ldc + n] = acc + (beta == 0 ? 0.0 : beta * C[m * ldc + n]);
    }
}

// The CUDA conv2d_forward / conv2d_backward of tensor/cuda/nn.cu, step by step, `chunk` images at a time.
void emulate_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, const ConvShape& s,
                  int64_t chunk, Tensor& y, Tensor& dx, Tensor& dw, Tensor& db) {
  const int64_t P = s.P(), Kg = s.Kg(), Og = s.Og(), rows = s.C * s.KH * s.KW;
  const double *px = x.data<double>(), *pw = w.data<double>(), *pdy = dy.data<double>();
  double *py = y.data<double>(), *pdx = dx.data<double>(), *pdw = dw.data<double>();
  std::vector<double> col(rows * chunk * P), t(s.O * chunk * P);
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0), cols = nb * P;
    const double* xb = px + n0 * s.C * s.H * s.W;
    const ConvIndex ix(s, nb);
    std::fill(col.begin(), col.end(), std::numeric_limits<double>::quiet_NaN());  // every entry must be written
    for (int64_t t = 0; t < s.C * cols; ++t) im2col_entries(xb, s, ix, t, col.data());
    // forward: y_n,g = W_g col_n,g for each image (the batched GEMM; col_n = x_n when direct), + b
    for (int64_t n = 0; n < nb; ++n)
      for (int64_t g = 0; g < s.G; ++g) {
        const double* col_ng = s.direct() ? xb + n * s.C * P + g * Kg * P : col.data() + g * Kg * cols + n * P;
        host_gemm(false, false, Og, P, Kg, pw + g * Og * Kg, Kg, col_ng, s.direct() ? P : cols, 0,
                  py + (n0 + n) * s.O * P + g * Og * P, P);
      }
    for (int64_t i = 0; i < nb * s.O * P; ++i) py[n0 * s.O * P + i] += b.data<double>()[i / P % s.O];  // add_bias_k
    // backward: dYt, dW += dYt col^T, dcol = W^T dYt, dx = col2im(dcol) (direct: dx_n,g = W_g^T dYt_n,g)
    const NopIndex nix(s.O, P, nb);
    for (int64_t i = 0; i < nb * s.O * P; ++i) {  // nop_to_op_k
      int64_t o;
      t[nix.op_offset(i, o)] = pdy[n0 * s.O * P + i];
    }
    for (int64_t g = 0; g < s.G; ++g)
      host_gemm(false, true, Og, Kg, cols, t.data() + g * Og * cols, cols, col.data() + g * Kg * cols, cols,
                n0 == 0 ? 0.0 : 1.0, pdw + g * Og * Kg, Kg);
    if (s.direct()) {
      for (int64_t n = 0; n < nb; ++n)
        for (int64_t g = 0; g < s.G; ++g)
          host_gemm(true, false, Kg, P, Og, pw + g * Og * Kg, Kg, t.data() + g * Og * cols + n * P, cols, 0,
                    pdx + (n0 + n) * s.C * P + g * Kg * P, P);
      continue;
    }
    for (int64_t g = 0; g < s.G; ++g)
      host_gemm(true, false, Kg, cols, Og, pw + g * Og * Kg, Kg, t.data() + g * Og * cols, cols, 0,
                col.data() + g * Kg * cols, cols);
    for (int64_t i = 0; i < nb * s.C * s.H * s.W; ++i) pdx[n0 * s.C * s.H * s.W + i] = col2im_value(col.data(), s, ix, i);
  }
  for (int64_t o = 0; o < s.O; ++o) {
    double acc = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t p = 0; p < P; ++p) acc += pdy[(n * s.O + o) * P + p];
    db.data<double>()[o] = acc;
  }
}

// A convolution of the tables below: input and weight shapes and the options.
struct ConvCase {
  Shape x, w;
  Conv2dOptions opt;
  std::string describe() const {
    std::ostringstream os;
    os << "x " << shape_str(x) << " w " << shape_str(w) << " stride " << opt.stride_h << "," << opt.stride_w
       << " pad " << opt.pad_h << " dil " << opt.dil_h << " groups " << opt.groups;
    return os.str();
  }
};

}  // namespace

TEST_CASE("formulas: the CUDA conv2d's im2col, GEMMs and col2im, run on the host, match ref::conv2d", "[formulas][conv]") {
  const ConvCase cases[] = {
      {{3, 4, 7, 6}, {5, 4, 3, 3}, Conv2dOptions::make(1, 1)},        // "same" 3x3
      {{2, 4, 9, 8}, {6, 4, 3, 3}, Conv2dOptions::make(2, 1)},        // stride 2
      {{2, 3, 8, 9}, {4, 3, 1, 1}, Conv2dOptions::make(1, 0)},        // 1x1 (direct: no im2col, no col2im)
      {{2, 4, 5, 6}, {6, 2, 1, 1}, Conv2dOptions::make(1, 0, 1, 2)},  // 1x1 in 2 groups (direct)
      {{2, 3, 8, 9}, {4, 3, 1, 1}, Conv2dOptions::make(2, 0)},        // 1x1 stride 2 (ResNet shortcut)
      {{2, 4, 9, 9}, {6, 2, 3, 3}, Conv2dOptions::make(2, 2, 2, 2)},  // groups 2, dilation 2
      {{1, 2, 5, 7}, {3, 2, 2, 3}, {1, 2, 0, 1, 1, 1, 1}},            // non-square kernel, stride (1, 2)
  };
  for (const ConvCase& c : cases) {
    INFO(c.describe());
    Tensor x = randn(c.x, 1), w = randn(c.w, 2), b = randn({c.w[0]}, 3);
    const ConvShape s = cpu::conv_shape(x.shape(), w.shape(), c.opt);
    Tensor dy = randn({s.N, s.O, s.OH, s.OW}, 4);
    Tensor want = ref::conv2d(x, w, b, c.opt), dx_want, dw_want, db_want;
    ref::conv2d_backward(x, w, b, dy, c.opt, dx_want, dw_want, db_want);
    for (int64_t chunk : {s.N, int64_t(1)}) {  // every image in one chunk, and one image per chunk
      INFO("images per chunk: " << chunk);
      Tensor y = Tensor::empty(want.shape(), DType::F64), dx = Tensor::empty(x.shape(), DType::F64);
      Tensor dw = Tensor::empty(w.shape(), DType::F64), db = Tensor::empty(b.shape(), DType::F64);
      emulate_conv(x, w, b, dy, s, chunk, y, dx, dw, db);
      require_close(y, want, 1e-12, 1e-12, "y");
      require_close(dx, dx_want, 1e-12, 1e-12, "dx");
      require_close(dw, dw_want, 1e-12, 1e-12, "dw");
      require_close(db, db_want, 1e-12, 1e-12, "db");
    }
  }
}

TEST_CASE("formulas: the CUDA depthwise conv's direct loops, run on the host, match ref::conv2d", "[formulas][conv]") {
  const ConvCase cases[] = {
      {{2, 6, 7, 7}, {6, 1, 3, 3}, Conv2dOptions::make(1, 1, 1, 6)},      // MobileNetV2's stride 1
      {{2, 5, 8, 9}, {5, 1, 3, 3}, Conv2dOptions::make(2, 1, 1, 5)},      // and stride 2
      {{1, 3, 9, 9}, {3, 1, 3, 3}, Conv2dOptions::make(1, 2, 2, 3)},      // dilation 2
      {{2, 3, 6, 5}, {6, 1, 3, 3}, Conv2dOptions::make(1, 1, 1, 3)},      // channel multiplier 2
      {{2, 4, 6, 9}, {4, 1, 2, 3}, {1, 2, 0, 1, 1, 1, 4}},                // non-square kernel, stride (1, 2)
  };
  for (const ConvCase& c : cases) {
    INFO(c.describe());
    Tensor x = randn(c.x, 1), w = randn(c.w, 2), b = randn({c.w[0]}, 3);
    const ConvShape s = cpu::conv_shape(x.shape(), w.shape(), c.opt);
    REQUIRE(s.depthwise());
    Tensor dy = randn({s.N, s.O, s.OH, s.OW}, 4);
    Tensor want = ref::conv2d(x, w, b, c.opt), dx_want, dw_want, db_want;
    ref::conv2d_backward(x, w, b, dy, c.opt, dx_want, dw_want, db_want);
    const DepthwiseIndex ix(s);
    const double *px = x.data<double>(), *pw = w.data<double>(), *pdy = dy.data<double>();
    Tensor y = Tensor::empty(want.shape(), DType::F64), dx = Tensor::empty(x.shape(), DType::F64);
    Tensor dw = Tensor::empty(w.shape(), DType::F64);
    for (int64_t i = 0; i < y.numel(); ++i)  // depthwise_k, then add_bias_k
      y.data<double>()[i] = depthwise_value(px, pw, s, ix, i) + b.data<double>()[i / s.P() % s.O];
    for (int64_t i = 0; i < dx.numel(); ++i)  // depthwise_dx_k
      dx.data<double>()[i] = depthwise_dx_value(pdy, pw, s, ix, i);
    for (int64_t e = 0; e < dw.numel(); ++e) {  // depthwise_dw_k: a block per weight
      const int64_t taps = s.KH * s.KW, o = e / taps, kh = e % taps / s.KW, kw = e % s.KW;
      double acc = 0;
      for (int64_t j = 0; j < s.N * s.P(); ++j) acc += depthwise_dw_term(px, pdy, s, ix, o, kh, kw, j);
      dw.data<double>()[e] = acc;
    }
    require_close(y, want, 1e-12, 1e-12, "y");
    require_close(dx, dx_want, 1e-12, 1e-12, "dx");
    require_close(dw, dw_want, 1e-12, 1e-12, "dw");
  }
}

TEST_CASE("formulas: the CUDA pooling's per-element forward and gather backward match ref::", "[formulas][pool]") {
  struct Case {
    int64_t k, s, p;
  };
  const Case cases[] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {3, 3, 0}, {2, 1, 1}};
  Tensor x = randn({2, 3, 7, 8}, 5);
  for (const Case& c : cases) {
    INFO("kernel " << c.k << " stride " << c.s << " pad " << c.p);
    const int64_t NC = 6, H = 7, W = 8, OH = (H + 2 * c.p - c.k) / c.s + 1, OW = (W + 2 * c.p - c.k) / c.s + 1;
    const PoolShape q{H, W, OH, OW, c.k, c.s, c.p};
    Tensor dy = randn({2, 3, OH, OW}, 6);
    Tensor ymax = Tensor::empty({2, 3, OH, OW}, DType::F64), yavg = Tensor::empty({2, 3, OH, OW}, DType::F64);
    Tensor dxmax = Tensor::empty(x.shape(), DType::F64), dxavg = Tensor::empty(x.shape(), DType::F64);
    std::vector<int32_t> arg(NC * OH * OW);
    const double *px = x.data<double>(), *pdy = dy.data<double>();
    const double neg_inf = -std::numeric_limits<double>::infinity(), scale = 1.0 / double(c.k * c.k);
    for (int64_t i = 0; i < NC * OH * OW; ++i) {  // max_pool_k, avg_pool_k
      const int64_t ow = i % OW, oh = (i / OW) % OH, plane = i / (OW * OH);
      ymax.data<double>()[i] = max_pool_value(px + plane * H * W, q, oh, ow, neg_inf, arg[i]);
      yavg.data<double>()[i] = avg_pool_value(px + plane * H * W, q, oh, ow, scale);
    }
    for (int64_t i = 0; i < NC * H * W; ++i) {  // max_pool_grad_k, avg_pool_grad_k
      const int64_t w = i % W, h = (i / W) % H, plane = i / (W * H);
      dxmax.data<double>()[i] = max_pool_grad(pdy + plane * OH * OW, arg.data() + plane * OH * OW, q, h, w);
      dxavg.data<double>()[i] = avg_pool_grad(pdy + plane * OH * OW, q, h, w, scale);
    }
    require_close(ymax, ref::max_pool2d(x, c.k, c.s, c.p), 0, 0, "max y");
    require_close(yavg, ref::avg_pool2d(x, c.k, c.s, c.p), 1e-12, 1e-12, "avg y");
    require_close(dxmax, ref::max_pool2d_backward(x, dy, c.k, c.s, c.p), 1e-12, 1e-12, "max dx");
    require_close(dxavg, ref::avg_pool2d_backward(x, dy, c.k, c.s, c.p), 1e-12, 1e-12, "avg dx");
  }
}

TEST_CASE("formulas: the CUDA softmax and cross-entropy rows match ref:: and the CPU kernels", "[formulas][loss]") {
  // x (outer 3, K 5, inner 4): rows spaced `inner` apart, as softmax over dim 1 of (3, 5, 4).
  Tensor x = mul(randn({3, 5, 4}, 7), 3.0), dy = randn({3, 5, 4}, 8);
  for (bool log : {false, true}) {
    INFO((log ? "log_softmax" : "softmax"));
    Tensor y = Tensor::empty(x.shape(), DType::F64), dx = Tensor::empty(x.shape(), DType::F64);
    for (int64_t r = 0; r < 3 * 4; ++r) {  // softmax_k, softmax_grad_k
      const int64_t base = (r / 4) * 5 * 4 + r % 4;
      softmax_row(x.data<double>() + base, y.data<double>() + base, 5, 4, log);
    }
    for (int64_t r = 0; r < 3 * 4; ++r) {
      const int64_t base = (r / 4) * 5 * 4 + r % 4;
      softmax_row_backward(y.data<double>() + base, dy.data<double>() + base, dx.data<double>() + base, 5, 4, log);
    }
    require_close(y, log ? ref::log_softmax(x, 1) : ref::softmax(x, 1), 1e-12, 1e-12, "y");
    Tensor dx_cpu = Tensor::empty(x.shape(), DType::F64);
    cpu::softmax_backward(y, dy, 3, 5, 4, log, dx_cpu);
    require_close(dx, dx_cpu, 1e-12, 1e-12, "dx");
  }
  Tensor logits = mul(randn({6, 7}, 9), 2.0), labels = Tensor::from_vector(std::vector<int64_t>{0, 6, 3, 3, 1, 5}, {6});
  Tensor logp = Tensor::empty(logits.shape(), DType::F64);
  cpu::softmax(logits, 6, 7, 1, true, logp);
  for (double eps : {0.0, 0.1}) {
    INFO("label smoothing " << eps);
    double total = 0;
    Tensor d = Tensor::empty(logits.shape(), DType::F64), d_cpu = Tensor::empty(logits.shape(), DType::F64);
    for (int64_t n = 0; n < 6; ++n) {  // ce_rows_k, ce_grad_k
      total += cross_entropy_row(logp.data<double>() + n * 7, 7, labels.data<int64_t>()[n], eps);
      cross_entropy_row_backward(logp.data<double>() + n * 7, d.data<double>() + n * 7, 7, labels.data<int64_t>()[n],
                                 eps, 0.5);
    }
    REQUIRE(total / 6 == Approx(ref::cross_entropy(logits, labels, eps)).epsilon(1e-12));
    cpu::cross_entropy_backward(logp, labels, eps, Tensor::scalar(3.0, DType::F64), d_cpu);  // dloss / N = 0.5
    require_close(d, d_cpu, 1e-12, 1e-12, "dlogits");
  }
}

TEST_CASE("formulas: FastDiv and DivMod divide as / and % do, in 32 bits and in 64", "[formulas][fastdiv]") {
  // Divisors: every one up to 300, the powers of two and their neighbours, 2^31 - 1, and a spread
  // of others; numerators: the small ones, each divisor's multiples and their neighbours, the top of
  // the range, and a spread of others.
  std::vector<int64_t> divisors;
  for (int64_t d = 1; d <= 300; ++d) divisors.push_back(d);
  for (int k = 9; k <= 30; ++k)
    for (int64_t e : {-1, 0, 1}) divisors.push_back((int64_t(1) << k) + e);
  divisors.push_back((int64_t(1) << 31) - 1);
  uint64_t state = 12345;
  auto next = [&state](int64_t below) {  // a fixed pseudo-random sequence (64-bit LCG)
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return int64_t((state >> 33) % uint64_t(below));
  };
  for (int i = 0; i < 100; ++i) divisors.push_back(1 + next((int64_t(1) << 31) - 1));
  const int64_t top = (int64_t(1) << 31) - 1;
  int64_t checked = 0, wrong = 0;
  std::string first_wrong;
  for (int64_t d : divisors) {
    const FastDiv f(d);
    std::vector<int64_t> ns;
    for (int64_t n = 0; n < 600; ++n) ns.push_back(n);
    for (int64_t k : {int64_t(1), int64_t(2), int64_t(3), top / d - 1, top / d})
      for (int64_t e : {-1, 0, 1})
        if (k * d + e >= 0 && k * d + e <= top) ns.push_back(k * d + e);
    for (int64_t n = top - 600; n <= top; ++n) ns.push_back(n);
    for (int i = 0; i < 2000; ++i) ns.push_back(next(top + 1));
    for (int64_t n : ns) {
      ++checked;
      if (f.div(uint32_t(n)) != uint32_t(n / d) || f.mod(uint32_t(n)) != uint32_t(n % d)) {
        if (!wrong++) first_wrong = std::to_string(n) + " / " + std::to_string(d);
      }
    }
  }
  INFO("first wrong: " << first_wrong);
  CHECK(checked > 1000000);
  REQUIRE(wrong == 0);

  // DivMod: FastDiv below 2^31, 64-bit division at and above it; ChannelIndex likewise.
  const int64_t big = int64_t(3) << 31;
  const DivMod small(1000, 1 << 20), large(1000, big), huge_divisor(int64_t(5) << 31, big + 7);
  CHECK(small.fits);
  CHECK_FALSE(large.fits);
  CHECK_FALSE(huge_divisor.fits);
  for (int64_t n : {int64_t(0), int64_t(999), int64_t(1000), int64_t(1) << 19, big - 1}) {
    if (n < (1 << 20)) {
      CHECK(small.div(n) == n / 1000);
      CHECK(small.mod(n) == n % 1000);
    }
    CHECK(large.div(n) == n / 1000);
    CHECK(large.mod(n) == n % 1000);
    CHECK(huge_divisor.div(n) == 0);
  }
  for (int64_t n : {int64_t(1) << 20, big}) {  // an (N, 3, 7) tensor of n elements
    const ChannelIndex chan(7, 3, n);
    CHECK(chan.at.inner.fits == (n < (int64_t(1) << 31)));
    for (int64_t i : {int64_t(0), int64_t(6), int64_t(7), int64_t(20), int64_t(21), int64_t(22), n - 1})
      CHECK(chan(i) == (i / 7) % 3);
  }
  REQUIRE_THROWS_WITH(FastDiv(0), Catch::Contains("divisor must be in [1, 2^31)"));
  REQUIRE_THROWS_WITH(FastDiv(int64_t(1) << 31), Catch::Contains("got 2147483648"));
}
