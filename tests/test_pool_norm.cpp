// test_pool_norm.cpp - pooling and batch norm: gradient checks (float64), the fast kernels against
// ref:: (float32, contiguous and non-contiguous), running statistics, and error messages.
#include <algorithm>
#include <cmath>

#include "quant/quantizers.h"
#include "tensor/kernels.h"
#include "tensor/ref.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

namespace {
// The same values as a contiguous tensor (layout 0) or a permuted view of an (N, H, W, C) copy.
Tensor layout_of(const Tensor& v, int layout) {
  if (layout == 0) return v.clone();
  if (v.dim() == 4) return v.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
  return v.t().contiguous().t();
}

// A fused BN's results against those of the separate ops: [0] separate, [1] fused. y and the
// running statistics to the last bit; grads[k][i], the gradient of input i (x, weight, bias, then
// the residual when there is one), within grad_tol (relative and absolute; 0: to the last bit),
// for the fused loops that add a gradient's terms in another order.
void require_fused_matches(const Tensor (&ys)[2], const Tensor (&stats)[2][2], const Tensor (&grads)[2][4],
                           int inputs, double grad_tol = 0) {
  const char* names[4] = {"dx", "dw", "db", "d residual"};
  require_close(ys[1], ys[0], 0, 0, "y");
  require_close(stats[1][0], stats[0][0], 0, 0, "running_mean");
  require_close(stats[1][1], stats[0][1], 0, 0, "running_var");
  for (int i = 0; i < inputs; ++i) require_close(grads[1][i], grads[0][i], grad_tol, grad_tol, names[i]);
}

// Some outputs of a ReLU are zero and some are not, so both sides of it are exercised.
void require_both_relu_sides(const Tensor& y) {
  Tensor y64 = y.detach().to(DType::F64).contiguous();
  const double* yv = y64.data<double>();
  const int64_t zeros = std::count(yv, yv + y64.numel(), 0.0);
  REQUIRE(zeros > 0);
  REQUIRE(zeros < y64.numel());
}
}  // namespace

TEST_CASE("pooling gradcheck", "[pool]") {
  Tensor x = randn({2, 3, 5, 6}, 1).requires_grad_();
  for (auto [k, s, p] : {std::tuple{2, 2, 0}, {3, 2, 1}, {3, 1, 1}}) {
    INFO("kernel " << k << " stride " << s << " pad " << p);
    auto fmax = [=](const std::vector<Tensor>& v) { return max_pool2d(v[0], k, s, p); };
    auto favg = [=](const std::vector<Tensor>& v) { return avg_pool2d(v[0], k, s, p); };
    REQUIRE(gradcheck(fmax, {x}) > x.numel() / 2);  // a few elements may sit on kinks
    REQUIRE(gradcheck(favg, {x}) == x.numel());
  }
  REQUIRE(gradcheck([](const std::vector<Tensor>& v) { return global_avg_pool2d(v[0]); }, {x}) == x.numel());
}

TEST_CASE("pooling matches ref, contiguous and non-contiguous, float32", "[pool][ref]") {
  Tensor v = randn({3, 4, 7, 6}, 2, DType::F32);
  for (int layout = 0; layout < 2; ++layout)
    for (auto [k, s, p] : {std::tuple{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}}) {
      INFO("layout " << layout << " kernel " << k << " stride " << s << " pad " << p);
      Tensor xm = layout_of(v, layout).requires_grad_();
      REQUIRE((layout == 0) == xm.is_contiguous());
      Tensor ym = max_pool2d(xm, k, s, p);
      require_close(ym, ref::max_pool2d(xm, k, s, p), 0, 0, "max_pool2d");
      Tensor dy = randn(ym.shape(), 3, DType::F32);
      ym.backward(dy);
      require_close(xm.grad(), ref::max_pool2d_backward(xm, dy, k, s, p), 1e-6, 1e-6, "max_pool2d dx");

      Tensor xa = layout_of(v, layout).requires_grad_();
      Tensor ya = avg_pool2d(xa, k, s, p);
      require_close(ya, ref::avg_pool2d(xa, k, s, p), 1e-5, 1e-6, "avg_pool2d");
      ya.backward(dy);
      require_close(xa.grad(), ref::avg_pool2d_backward(xa, dy, k, s, p), 1e-5, 1e-6, "avg_pool2d dx");
    }
  Tensor xg = layout_of(v, 1).requires_grad_();
  Tensor yg = global_avg_pool2d(xg);
  require_close(yg, ref::global_avg_pool2d(xg), 1e-5, 1e-6, "global_avg_pool2d");
  Tensor dg = randn(yg.shape(), 4, DType::F32);
  yg.backward(dg);
  require_close(xg.grad(), ref::global_avg_pool2d_backward(xg, dg), 1e-5, 1e-6, "global_avg_pool2d dx");
}

TEST_CASE("pooling errors name the op and the shapes", "[pool][errors]") {
  REQUIRE_THROWS_WITH(max_pool2d(randn({3, 4, 4}, 1), 2, 2),
                      Catch::Contains("max_pool2d") && Catch::Contains("[3, 4, 4]"));
  REQUIRE_THROWS_WITH(avg_pool2d(randn({1, 3, 2, 2}, 1), 5, 1),
                      Catch::Contains("avg_pool2d") && Catch::Contains("[1, 3, 2, 2]") && Catch::Contains("larger"));
  REQUIRE_THROWS_WITH(max_pool2d(randn({1, 3, 4, 4}, 1), 2, 0),
                      Catch::Contains("max_pool2d") && Catch::Contains("stride"));
}

TEST_CASE("batch_norm gradcheck: training and evaluation, with and without affine", "[norm]") {
  for (Shape s : {Shape{4, 3}, Shape{2, 3, 3, 2}})
    for (bool training : {true, false})
      for (bool affine : {true, false}) {
        INFO(shape_str(s) << (training ? " training" : " eval") << (affine ? " affine" : " no affine"));
        Tensor x = randn(s, 1).requires_grad_();
        Tensor w = affine ? add(randn({3}, 2), 1.5).detach().requires_grad_() : Tensor();
        Tensor b = affine ? randn({3}, 3).requires_grad_() : Tensor();
        Tensor rm = randn({3}, 4), rv = add(abs(randn({3}, 5)), 0.5);
        const std::vector<Tensor> in = affine ? std::vector<Tensor>{x, w, b} : std::vector<Tensor>{x};
        auto f = [&](const std::vector<Tensor>& v) {
          // running stats are passed in evaluation only, so repeated calls see the same ones
          return batch_norm(v[0], affine ? v[1] : Tensor(), affine ? v[2] : Tensor(),
                            training ? Tensor() : rm, training ? Tensor() : rv, training);
        };
        REQUIRE(gradcheck(f, in) == x.numel() + (affine ? 6 : 0));
      }
}

TEST_CASE("batch_norm matches ref, running statistics included, float32", "[norm][ref]") {
  for (Shape s : {Shape{8, 5}, Shape{4, 5, 3, 6}})
    for (int layout = 0; layout < 2; ++layout)
      for (bool training : {true, false})
        for (bool affine : {true, false}) {
          INFO(shape_str(s) << " layout " << layout << (training ? " training" : " eval")
                            << (affine ? " affine" : " no affine"));
          Tensor v = add(mul(randn(s, 1, DType::F32), 2.0), 0.7);
          Tensor x = layout_of(v, layout).requires_grad_();
          REQUIRE((layout == 0) == x.is_contiguous());
          Tensor w = affine ? randn({5}, 2, DType::F32).requires_grad_() : Tensor();
          Tensor b = affine ? randn({5}, 3, DType::F32).requires_grad_() : Tensor();
          Tensor rm = randn({5}, 4, DType::F32), rv = add(abs(randn({5}, 5, DType::F32)), 0.5);
          Tensor rm_ref = rm.clone(), rv_ref = rv.clone();
          Tensor y = batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5);
          Tensor y_ref = ref::batch_norm(x, w, b, rm_ref, rv_ref, training, 0.1, 1e-5);
          require_close(y, y_ref, 1e-4, 1e-5, "batch_norm y");
          require_close(rm, rm_ref, 1e-5, 1e-6, "running_mean");
          require_close(rv, rv_ref, 1e-5, 1e-6, "running_var");
          if (training) REQUIRE(rm.at({0}) != randn({5}, 4, DType::F32).at({0}));  // it was updated
          Tensor dy = randn(y.shape(), 6, DType::F32);
          y.backward(dy);
          Tensor dx, dw, db;
          // the statistics backward used: the running ones before this call (evaluation)
          ref::batch_norm_backward(x, w, b, rm, rv, training, 1e-5, dy, dx, dw, db);
          require_close(x.grad(), dx, 1e-3, 1e-4, "batch_norm dx");
          if (affine) {
            require_close(w.grad(), dw, 1e-3, 1e-4, "batch_norm dw");
            require_close(b.grad(), db, 1e-4, 1e-4, "batch_norm db");
          }
        }
}

TEST_CASE("batch_norm's statistics keep float32 precision far from zero", "[norm][ref]") {
  // Values 1000 + N(0, 1): E[x^2] - E[x]^2 in float32 would lose the variance to cancellation
  // (1e6 against 1, with 2^-24 relative rounding); the kernel's second pass, which sums the
  // squared deviations from the mean, does not.
  // Runs of 64 and of 1, and more images than one thread's share.
  for (Shape s : {Shape{32, 3, 8, 8}, Shape{256, 3}}) {
    INFO(shape_str(s));
    Tensor x = add(randn(s, 31, DType::F32), 1000.0);
    Tensor rm = Tensor::zeros({3}, DType::F32), rv = Tensor::ones({3}, DType::F32);
    Tensor rm_ref = rm.clone(), rv_ref = rv.clone();
    Tensor y = batch_norm(x, Tensor(), Tensor(), rm, rv, true, 1.0, 1e-5);
    Tensor y_ref = ref::batch_norm(x, Tensor(), Tensor(), rm_ref, rv_ref, true, 1.0, 1e-5);
    require_close(rv, rv_ref, 1e-5, 1e-6, "running_var (momentum 1: the batch's unbiased variance)");
    require_close(rm, rm_ref, 1e-7, 1e-6, "running_mean");
    require_close(y, y_ref, 1e-3, 1e-3, "batch_norm y");
  }
}

TEST_CASE("batch_norm with relu is relu(batch_norm), forward and backward, bit for bit", "[norm]") {
  // The fused BN + ReLU (batch_norm's `relu`) against the two ops it replaces, on the same inputs:
  // outputs, the running statistics and the gradients of x, weight and bias must be identical,
  // since both apply the relu op's formula to the same BN values. Then a gradient check of the
  // fused op itself (float64).
  for (DType dt : {DType::F32, DType::F64})
    for (Shape s : {Shape{8, 5}, Shape{4, 5, 3, 6}})
      for (bool training : {true, false}) {
        INFO(dtype_name(dt) << " " << shape_str(s) << (training ? " training" : " eval"));
        Tensor v = add(randn(s, 1, dt), 0.3);  // a shifted mean: some channels mostly positive
        Tensor grads[2][4], ys[2], stats[2][2];
        for (int fused = 0; fused < 2; ++fused) {
          Tensor x = v.clone().requires_grad_();
          Tensor w = randn({5}, 2, dt).requires_grad_(), b = randn({5}, 3, dt).requires_grad_();
          Tensor rm = randn({5}, 4, dt), rv = add(abs(randn({5}, 5, dt)), 0.5);
          ys[fused] = fused ? batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, /*relu=*/true)
                            : relu(batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5));
          ys[fused].backward(randn(s, 6, dt));
          grads[fused][0] = x.grad(), grads[fused][1] = w.grad(), grads[fused][2] = b.grad();
          stats[fused][0] = rm, stats[fused][1] = rv;
        }
        require_both_relu_sides(ys[1]);
        require_fused_matches(ys, stats, grads, 3);
      }
  Tensor x = add(randn({3, 2, 3, 3}, 7), 0.2).requires_grad_();
  Tensor w = add(randn({2}, 8), 1.5).detach().requires_grad_(), b = randn({2}, 9).requires_grad_();
  auto f = [](const std::vector<Tensor>& v) {
    return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5, /*relu=*/true);
  };
  REQUIRE(gradcheck(f, {x, w, b}) == x.numel() + 4);
}

namespace {
// The test below for float or double: x has C channels of N x S values, half of them spread around
// the channel's centre and half within 32 ulps of it, where y = x scale + shift changes sign and
// rounds differently with and without a fused multiply-add.
template <typename T>
void check_recomputed_relu_mask(DType dt) {
  const int64_t N = 4, C = 8, S = 64;
  const T centres[C] = {T(0.7), T(1.3), T(-2.1), T(0.05), T(3.7), T(-0.9), T(12.5), T(-0.3)};
  std::vector<T> xs(N * C * S);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < S; ++i) {
        T v = centres[c];
        if (i % 2) {  // spread: centre +- 0.1 .. 0.85, in pairs
          v += T((i / 2 % 2 ? -1 : 1) * (0.1 + 0.05 * (i / 4)));
        } else {  // near: centre + k ulp, k = -32 .. 31
          const int steps = (int)((n * S + i) / 2 % 64) - 32;
          for (int k = 0; k < std::abs(steps); ++k)
            v = std::nextafter(v, steps > 0 ? T(10) : T(-10));
        }
        xs[(n * C + c) * S + i] = v;
      }
  const Tensor v = Tensor::from_vector<T>(xs, {N, C, 8, 8});
  const Tensor w0 = Tensor::from_vector<T>({T(1.0), T(-0.6), T(2.3), T(0.8), T(1.7), T(-1.1), T(0.45), T(3.1)}, {C});
  const Tensor b0 = Tensor::zeros({C}, dt);

  // The data reach the boundary: x scale + shift, with the forward's own scale and shift, takes
  // another sign (or zero) when the product is rounded first.
  Tensor y = Tensor::empty(v.shape(), dt), mean = Tensor::empty({C}, dt), var = Tensor::empty({C}, dt);
  Tensor invstd = Tensor::empty({C}, dt), affine = Tensor::empty({2 * C}, dt);
  kernel::batch_norm_train_forward(v, w0, b0, 1e-5, true, y, mean, var, invstd, affine);
  const T* sc = affine.data<T>();
  int64_t boundary = 0;
  for (int64_t i = 0; i < v.numel(); ++i) {
    const int64_t c = i / S % C;
    const T x = xs[i];
    volatile T product = x * sc[c];  // rounded before the addition
    const T separate = product + sc[C + c], fused = std::fma(x, sc[c], sc[C + c]);
    boundary += (separate > 0) != (fused > 0);
  }
  INFO(dtype_name(dt) << ": " << boundary << " values whose sign depends on the rounding");
  REQUIRE(boundary > 0);

  Tensor grads[2][4], ys[2], stats[2][2];
  for (int fused = 0; fused < 2; ++fused) {
    Tensor x = v.clone().requires_grad_();
    Tensor w = w0.clone().requires_grad_(), b = b0.clone().requires_grad_();
    Tensor rm = Tensor::zeros({C}, dt), rv = Tensor::ones({C}, dt);
    ys[fused] = fused ? batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5, /*relu=*/true)
                      : relu(batch_norm(x, w, b, rm, rv, true, 0.1, 1e-5));
    ys[fused].backward(add(randn(v.shape(), 6, dt), 2.0));
    grads[fused][0] = x.grad(), grads[fused][1] = w.grad(), grads[fused][2] = b.grad();
    stats[fused][0] = rm, stats[fused][1] = rv;
  }
  require_both_relu_sides(ys[1]);
  require_fused_matches(ys, stats, grads, 3);
}
}  // namespace

TEST_CASE("batch_norm with relu: the backward recomputes the forward's ReLU mask to the last bit", "[norm]") {
  // Without a residual the fused BN + ReLU's backward does not read y: it recomputes y > 0 from x
  // and the forward's scale and shift (tensor/formulas.h: bn_value). On values at the very edge of
  // the ReLU its gradients must still be those of relu(batch_norm(x)), whose mask is y itself.
  check_recomputed_relu_mask<float>(DType::F32);
  check_recomputed_relu_mask<double>(DType::F64);
}

TEST_CASE("batch_norm with a residual is relu(batch_norm + residual), forward and backward, bit for bit", "[norm]") {
  // A ResNet block's output in one op (batch_norm's `residual`) against the three ops it
  // replaces, bn, add, relu (and bn, add without relu): outputs, running statistics and the
  // gradients of x, weight, bias and the residual must be identical. Then a gradient check.
  for (DType dt : {DType::F32, DType::F64})
    for (bool training : {true, false})
      for (bool relu_after : {true, false}) {
        INFO(dtype_name(dt) << (training ? " training" : " eval") << (relu_after ? " relu" : " no relu"));
        const Shape s{4, 5, 3, 6};
        Tensor v = add(randn(s, 1, dt), 0.3), r0 = randn(s, 11, dt);
        Tensor grads[2][4], ys[2], stats[2][2];
        for (int fused = 0; fused < 2; ++fused) {
          Tensor x = v.clone().requires_grad_(), r = r0.clone().requires_grad_();
          Tensor w = randn({5}, 2, dt).requires_grad_(), b = randn({5}, 3, dt).requires_grad_();
          Tensor rm = randn({5}, 4, dt), rv = add(abs(randn({5}, 5, dt)), 0.5);
          if (fused) {
            ys[1] = batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, relu_after, r);
          } else {
            Tensor sum = add(batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5), r);
            ys[0] = relu_after ? relu(sum) : sum;
          }
          ys[fused].backward(randn(s, 6, dt));
          grads[fused][0] = x.grad(), grads[fused][1] = w.grad(), grads[fused][2] = b.grad();
          grads[fused][3] = r.grad();
          stats[fused][0] = rm, stats[fused][1] = rv;
        }
        if (relu_after) require_both_relu_sides(ys[1]);
        require_fused_matches(ys, stats, grads, 4);
      }
  Tensor x = add(randn({3, 2, 3, 3}, 7), 0.2).requires_grad_(), r = randn({3, 2, 3, 3}, 10).requires_grad_();
  Tensor w = add(randn({2}, 8), 1.5).detach().requires_grad_(), b = randn({2}, 9).requires_grad_();
  auto f = [](const std::vector<Tensor>& v) {
    return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5, /*relu=*/true, v[3]);
  };
  REQUIRE(gradcheck(f, {x, w, b, r}) == 2 * x.numel() + 4);
  REQUIRE_THROWS_WITH(batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5, true, randn({3, 2, 3}, 1)),
                      Catch::Contains("residual") && Catch::Contains("[3, 2, 3, 3]"));
}

TEST_CASE("batch_norm with PACT after the ReLU is pact_quantize(relu(batch_norm)), forward and backward", "[norm]") {
  // batch_norm's `pact` against the three ops it replaces: the output and the running statistics
  // must be identical; the gradients of x, weight, bias and the clip, whose sums the fused loop
  // adds in another order than the BN + ReLU loop, equal within float rounding. Then a gradient
  // check (the clip alone, at 32 bits: rounding has no gradient) and the argument checks.
  for (DType dt : {DType::F32, DType::F64})
    for (Shape s : {Shape{8, 5}, Shape{4, 5, 3, 6}})
      for (bool training : {true, false})
        for (int bits : {4, 2, 32}) {
          INFO(dtype_name(dt) << " " << shape_str(s) << (training ? " training " : " eval ") << bits << " bits");
          Tensor v = add(randn(s, 1, dt), 0.3);
          Tensor grads[2][4], ys[2], stats[2][2], dclip[2];
          for (int fused = 0; fused < 2; ++fused) {
            Tensor x = v.clone().requires_grad_(), clip = Tensor::full({1}, 0.4, dt).requires_grad_();
            Tensor w = add(abs(randn({5}, 2, dt)), 0.5).detach().requires_grad_();
            Tensor b = mul(randn({5}, 3, dt), 0.3).detach().requires_grad_();
            Tensor rm = randn({5}, 4, dt), rv = add(abs(randn({5}, 5, dt)), 0.5);
            if (fused)
              ys[1] = batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, true, Tensor(), {clip, bits});
            else
              ys[0] = quant::pact_quantize(relu(batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5)), clip, bits);
            ys[fused].backward(randn(s, 6, dt));
            grads[fused][0] = x.grad(), grads[fused][1] = w.grad(), grads[fused][2] = b.grad();
            stats[fused][0] = rm, stats[fused][1] = rv;
            dclip[fused] = clip.grad();
          }
          // every side of PACT and the ReLU is exercised: 0, inside (0, clip), the clip itself
          Tensor y64 = ys[1].detach().to(DType::F64).contiguous();
          const double* yv = y64.data<double>();
          const int64_t n = y64.numel(), zeros = std::count(yv, yv + n, 0.0);
          const double top = quant::pact_quantize(Tensor::full({1}, 10.0, dt), Tensor::full({1}, 0.4, dt), bits)
                                 .to(DType::F64).item<double>();  // what PACT makes of values above the clip
          const int64_t at_clip = std::count(yv, yv + n, top);
          REQUIRE(zeros > 0);
          REQUIRE(at_clip > 0);
          REQUIRE(zeros + at_clip < n);
          const double tol = dt == DType::F32 ? 1e-5 : 1e-12;
          require_fused_matches(ys, stats, grads, 3, tol);
          require_close(dclip[1], dclip[0], tol, tol, "d clip");
        }
  Tensor x = add(randn({3, 2, 3, 3}, 7), 0.2).requires_grad_();
  Tensor w = add(randn({2}, 8), 1.5).detach().requires_grad_(), b = randn({2}, 9).requires_grad_();
  Tensor clip = Tensor::full({1}, 1.1, DType::F64).requires_grad_();
  auto f = [](const std::vector<Tensor>& v) {
    return batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5, true, Tensor(), {v[3], 32});
  };
  REQUIRE(gradcheck(f, {x, w, b, clip}) == x.numel() + 5);
  REQUIRE_THROWS_WITH(batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5, false, Tensor(), {clip, 4}),
                      Catch::Contains("PACT") && Catch::Contains("relu"));
  REQUIRE_THROWS_WITH(batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5, true, Tensor(), {clip, 0}),
                      Catch::Contains("bit-width 0"));
  REQUIRE_THROWS_WITH(batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5, true, Tensor(),
                                 {Tensor::full({1}, -1.0, DType::F64), 4}),
                      Catch::Contains("positive"));
}

TEST_CASE("batch_norm with a tapped output: y and PACT of y, one op, as the two branches apart", "[norm]") {
  // batch_norm's `tapped` (a block output whose next block reads it as it is, through its
  // shortcut, and through PACT, in its first conv) against the ops it replaces: y = relu(bn(x)
  // [+ r]) read by two branches, one of them through pact_quantize. y, the tap, the running
  // statistics and the residual's gradient (the two branches' gradients added with the one
  // addition the engine makes, then the ReLU's mask) are equal bit for bit; the gradients of x,
  // weight and bias and the clip, whose per-channel sums the fused loop (three sums instead of
  // two) vectorises in another order, within float rounding. Also where a gradient reaches only
  // one of the two outputs.
  for (DType dt : {DType::F32, DType::F64})
    for (bool residual : {true, false})
      for (bool training : {true, false})
        for (int bits : {4, 2, 32})
          for (int reach : {3, 1, 2}) {  // which outputs a gradient reaches: 1 y, 2 the tap, 3 both
            INFO(dtype_name(dt) << (residual ? " residual" : "") << (training ? " training " : " eval ") << bits
                                << " bits, reach " << reach);
            const Shape s{4, 5, 3, 6};
            Tensor v = add(randn(s, 1, dt), 0.3);
            Tensor grads[2][4], ys[2], qs[2], stats[2][2], dclip[2];
            for (int fused = 0; fused < 2; ++fused) {
              Tensor x = v.clone().requires_grad_(), clip = Tensor::full({1}, 0.4, dt).requires_grad_();
              Tensor r = residual ? mul(randn(s, 7, dt), 0.5).detach().requires_grad_() : Tensor();
              Tensor w = add(abs(randn({5}, 2, dt)), 0.5).detach().requires_grad_();
              Tensor b = mul(randn({5}, 3, dt), 0.3).detach().requires_grad_();
              Tensor rm = randn({5}, 4, dt), rv = add(abs(randn({5}, 5, dt)), 0.5);
              if (fused) {
                ys[1] = batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, true, r, {clip, bits}, &qs[1]);
              } else {
                ys[0] = batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, true, r);
                qs[0] = quant::pact_quantize(ys[0], clip, bits);
              }
              // the shortcut's branch reads y, the conv's the tap
              Tensor loss;
              if (reach & 1) loss = sum(mul(ys[fused], randn(s, 6, dt)));
              if (reach & 2) {
                Tensor lq = sum(mul(qs[fused], randn(s, 8, dt)));
                loss = loss.defined() ? add(loss, lq) : lq;
              }
              loss.backward();
              grads[fused][0] = x.grad(), grads[fused][1] = w.grad(), grads[fused][2] = b.grad();
              grads[fused][3] = residual ? r.grad() : Tensor();
              stats[fused][0] = rm, stats[fused][1] = rv;
              dclip[fused] = clip.grad();
            }
            // every side of PACT and the ReLU is exercised: 0, inside (0, clip), above the clip
            const std::vector<double> yv = ys[1].to_vector<double>();
            const int64_t zeros = std::count(yv.begin(), yv.end(), 0.0);
            const int64_t above = std::count_if(yv.begin(), yv.end(), [](double e) { return e >= 0.4; });
            REQUIRE(zeros > 0);
            REQUIRE(above > 0);
            REQUIRE(zeros + above < (int64_t)yv.size());
            const double tol = dt == DType::F32 ? 1e-5 : 1e-12;
            require_fused_matches(ys, stats, grads, 3, tol);
            require_close(qs[1], qs[0], 0, 0, "tap");
            if (residual) require_close(grads[1][3], grads[0][3], 0, 0, "d residual");
            REQUIRE(dclip[1].defined() == dclip[0].defined());
            if (reach & 2) {
              REQUIRE(std::abs(dclip[0].item<double>()) > 1e-3);
              require_close(dclip[1], dclip[0], tol, tol, "d clip");
            }
          }
  // a gradient check of both outputs (the clip alone, at 32 bits: rounding has no gradient)
  Tensor x = add(randn({3, 2, 3, 3}, 7), 0.2).requires_grad_(), r = randn({3, 2, 3, 3}, 10).requires_grad_();
  Tensor w = add(randn({2}, 8), 1.5).detach().requires_grad_(), b = randn({2}, 9).requires_grad_();
  Tensor clip = Tensor::full({1}, 0.9, DType::F64).requires_grad_();
  auto f = [](const std::vector<Tensor>& v) {
    Tensor q;
    Tensor y = batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1, 1e-5, true, v[3], {v[4], 32}, &q);
    return add(y, mul(q, 2.0));
  };
  REQUIRE(gradcheck(f, {x, w, b, r, clip}) == 2 * x.numel() + 5);
  Tensor q;
  REQUIRE_THROWS_WITH(batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5, true, r, {}, &q),
                      Catch::Contains("tapped") && Catch::Contains("pact"));
  REQUIRE_THROWS_WITH(batch_norm(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5, true, r, {clip, 4}),
                      Catch::Contains("PACT") && Catch::Contains("residual"));
}

TEST_CASE("batch_norm skips the running statistics when they are undefined", "[norm]") {
  Tensor x = randn({6, 2, 2, 2}, 1, DType::F32);
  Tensor y = batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true);
  // normalised per channel: mean 0, biased variance 1 (up to eps)
  Tensor m = mean(y, {0, 2, 3}), v = mean(mul(y, y), {0, 2, 3});
  require_close(m, Tensor::zeros({2}), 0, 1e-5, "mean");
  require_close(v, Tensor::ones({2}), 1e-3, 1e-3, "variance");
}

TEST_CASE("batch_norm errors name the op and the shapes", "[norm][errors]") {
  Tensor x = randn({4, 3, 2, 2}, 1);
  REQUIRE_THROWS_WITH(batch_norm(x, randn({4}, 2), Tensor(), Tensor(), Tensor(), true),
                      Catch::Contains("batch_norm") && Catch::Contains("[4]") && Catch::Contains("[4, 3, 2, 2]"));
  REQUIRE_THROWS_WITH(batch_norm(randn({4, 3, 2}, 1), Tensor(), Tensor(), Tensor(), Tensor(), true),
                      Catch::Contains("batch_norm") && Catch::Contains("[4, 3, 2]"));
  REQUIRE_THROWS_WITH(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false),
                      Catch::Contains("batch_norm") && Catch::Contains("running"));
  REQUIRE_THROWS_WITH(batch_norm(x, randn({3}, 2, DType::F32), Tensor(), Tensor(), Tensor(), true),
                      Catch::Contains("batch_norm") && Catch::Contains("float32") && Catch::Contains("float64"));
}
