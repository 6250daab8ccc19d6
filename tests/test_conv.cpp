// test_conv.cpp - conv2d: gradient checks (float64) for every option, the fast kernels against
// ref::conv2d (float32, contiguous and non-contiguous inputs), and error messages.
#include "tensor/cpu/nn.h"
#include "tensor/ref.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

namespace {

// A 4-D float input laid out three ways, all with the same values: 0 contiguous, 1 a permuted
// view of an (N, H, W, C) tensor, 2 a slice of a wider (N, C, H, W + 3) tensor. `leaf` is the
// tensor that owns the storage (and receives the gradient); grad_view() maps its gradient back.
struct Input {
  Tensor leaf, x;
  int layout;
  Tensor grad_view() const {
    Tensor g = leaf.grad();
    if (layout == 1) return g.permute({0, 3, 1, 2});
    if (layout == 2) return g.slice(3, 1, 1 + x.size(3));
    return g;
  }
};

Input make_input(const Shape& s, uint64_t seed, int layout, DType dt = DType::F32) {
  Tensor v = randn(s, seed, dt);
  Input in;
  in.layout = layout;
  if (layout == 0) {
    in.leaf = v.clone();
  } else if (layout == 1) {
    in.leaf = v.permute({0, 2, 3, 1}).contiguous();
  } else {
    Tensor wide = Tensor::zeros({s[0], s[1], s[2], s[3] + 3}, dt);
    wide.slice(3, 1, 1 + s[3]).copy_(v);
    in.leaf = wide;
  }
  in.leaf.requires_grad_();
  if (layout == 0) in.x = in.leaf;
  if (layout == 1) in.x = in.leaf.permute({0, 3, 1, 2});
  if (layout == 2) in.x = in.leaf.slice(3, 1, 1 + s[3]);
  REQUIRE((layout == 0) == in.x.is_contiguous());
  return in;
}

struct ConvCase {
  const char* name;
  Shape x, w;
  Conv2dOptions opt;
  bool bias;
};

const std::vector<ConvCase> kCases = {
    {"3x3 pad 1", {2, 3, 6, 5}, {4, 3, 3, 3}, Conv2dOptions::make(1, 1), true},
    {"3x3 stride 2 pad 1", {2, 4, 7, 6}, {5, 4, 3, 3}, Conv2dOptions::make(2, 1), true},
    {"3x3 dilation 2 pad 2", {2, 2, 7, 7}, {3, 2, 3, 3}, Conv2dOptions::make(1, 2, 2), false},
    {"groups 2", {2, 4, 5, 5}, {6, 2, 3, 3}, Conv2dOptions::make(1, 1, 1, 2), true},
    {"depthwise", {2, 4, 5, 6}, {4, 1, 3, 3}, Conv2dOptions::make(1, 1, 1, 4), true},
    {"depthwise x2 stride 2", {2, 3, 6, 6}, {6, 1, 3, 3}, Conv2dOptions::make(2, 1, 1, 3), false},
    {"1x1 stride 1 (direct)", {3, 4, 4, 5}, {6, 4, 1, 1}, Conv2dOptions::make(1, 0), true},
    {"1x1 stride 2", {2, 4, 5, 5}, {3, 4, 1, 1}, Conv2dOptions::make(2, 0), false},
    {"rectangular kernel, asymmetric options", {2, 3, 6, 7}, {2, 3, 2, 3}, {2, 1, 1, 0, 1, 2, 1}, true},
    {"batch 1", {1, 3, 5, 5}, {4, 3, 3, 3}, Conv2dOptions::make(1, 1), true},
    // same width, not same height: the contiguous im2col path with rows dropped at both ends
    {"3x3 padding (0, 1)", {2, 2, 6, 5}, {3, 2, 3, 3}, {1, 1, 0, 1, 1, 1, 1}, true},
    {"5x5 pad 2", {2, 2, 6, 7}, {3, 2, 5, 5}, Conv2dOptions::make(1, 2), false},
    {"3x3 pad 1 on one-pixel-wide images", {2, 2, 4, 1}, {3, 2, 3, 3}, Conv2dOptions::make(1, 1), true},
};

}  // namespace

TEST_CASE("conv2d gradcheck for every option", "[conv]") {
  for (const ConvCase& c : kCases) {
    SECTION(c.name) {
      Tensor x = randn(c.x, 1).requires_grad_(), w = randn(c.w, 2).requires_grad_();
      Tensor b = c.bias ? randn({c.w[0]}, 3).requires_grad_() : Tensor();
      std::vector<Tensor> in{x, w};
      if (c.bias) in.push_back(b);
      auto f = [&](const std::vector<Tensor>& v) {
        return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), c.opt);
      };
      int64_t n = gradcheck(f, in);
      REQUIRE(n == x.numel() + w.numel() + (c.bias ? b.numel() : 0));
    }
  }
}

TEST_CASE("conv2d matches ref::conv2d, contiguous and non-contiguous, float32", "[conv][ref]") {
  for (const ConvCase& c : kCases)
    for (int layout = 0; layout < 3; ++layout) {
      INFO(c.name << ", layout " << layout);
      Input in = make_input(c.x, 10, layout);
      Tensor w = randn(c.w, 11, DType::F32).requires_grad_();
      Tensor b = c.bias ? randn({c.w[0]}, 12, DType::F32).requires_grad_() : Tensor();
      Tensor y = conv2d(in.x, w, b, c.opt);
      Tensor y_ref = ref::conv2d(in.x, w, b, c.opt);
      require_close(y, y_ref, 1e-4, 1e-5, "conv2d forward");
      Tensor dy = randn(y.shape(), 13, DType::F32);
      y.backward(dy);
      Tensor dx, dw, db;
      ref::conv2d_backward(in.x, w, b, dy, c.opt, dx, dw, db);
      require_close(in.grad_view(), dx, 1e-4, 1e-5, "conv2d dx");
      require_close(w.grad(), dw, 1e-4, 1e-5, "conv2d dw");
      if (c.bias) require_close(b.grad(), db, 1e-4, 1e-5, "conv2d db");
    }
}

TEST_CASE("conv2d on a batch larger than the thread count matches ref (per-thread buffers)", "[conv][ref]") {
  // Several images per thread exercise buffer reuse and the per-thread dW / db sums.
  Tensor x = randn({9, 3, 6, 6}, 20, DType::F32).requires_grad_();
  Tensor w = randn({4, 3, 3, 3}, 21, DType::F32).requires_grad_();
  Tensor b = randn({4}, 22, DType::F32).requires_grad_();
  Conv2dOptions o = Conv2dOptions::make(1, 1);
  Tensor y = conv2d(x, w, b, o);
  require_close(y, ref::conv2d(x, w, b, o), 1e-4, 1e-5, "forward");
  Tensor dy = randn(y.shape(), 23, DType::F32);
  y.backward(dy);
  Tensor dx, dw, db;
  ref::conv2d_backward(x, w, b, dy, o, dx, dw, db);
  require_close(x.grad(), dx, 1e-4, 1e-5, "dx");
  require_close(w.grad(), dw, 1e-4, 1e-4, "dw");
  require_close(b.grad(), db, 1e-4, 1e-4, "db");
}

TEST_CASE("the direct convolution matches ref::conv2d and the im2col path on ResNet shapes", "[conv][ref]") {
  // conv_direct.cpp: full blocks, ragged pixel and channel tails, the stem's 3 input channels, the
  // three widths of ResNet-20 (32, 16 and 8 pixels; the rows of whole vectors read a zero-padded
  // copy, AVX-512's 8-pixel rows the image in place), and one image alone (batch 1: the threads share its
  // pixel blocks); 5x5 taps, dilation and groups on a padded width (24) with an output-channel
  // count that leaves tails of 2 and 1; stride 2, on the padded layout or the parity planes.
  // The im2col path it is compared with is itself checked against ref::conv2d above.
  struct Case {
    Shape x, w;
    bool bias;
    Conv2dOptions o = Conv2dOptions::make(1, 1);
  };
  const std::vector<Case> cases = {{{2, 16, 32, 32}, {16, 16, 3, 3}, false},
                                   {{3, 32, 16, 16}, {32, 32, 3, 3}, false},
                                   {{2, 64, 8, 8}, {64, 64, 3, 3}, false},
                                   {{2, 3, 32, 32}, {16, 3, 3, 3}, false},
                                   {{2, 5, 9, 11}, {9, 5, 3, 3}, true},
                                   {{2, 4, 10, 13}, {6, 4, 5, 5}, true, Conv2dOptions::make(1, 2)},
                                   {{1, 16, 16, 16}, {16, 16, 3, 3}, true},
                                   {{2, 4, 16, 24}, {7, 4, 5, 5}, true, Conv2dOptions::make(1, 2)},
                                   {{2, 6, 16, 16}, {14, 3, 3, 3}, false, Conv2dOptions::make(1, 2, 2, 2)},
                                   // stride 2 (AVX2: the padded layout's two phases): ResNet-20's
                                   // 3x3 and 1x1 downsampling convs, 5x5, and an odd input width
                                   {{2, 16, 32, 32}, {32, 16, 3, 3}, false, Conv2dOptions::make(2, 1)},
                                   {{2, 32, 16, 16}, {64, 32, 1, 1}, false, Conv2dOptions::make(2, 0)},
                                   {{2, 5, 16, 32}, {7, 5, 5, 5}, true, Conv2dOptions::make(2, 2)},
                                   {{1, 4, 9, 31}, {6, 4, 3, 3}, true, Conv2dOptions::make(2, 1)},
                                   // stride 2 whose output rows are shorter than a vector (the
                                   // parity planes): ResNet-20's second downsampling conv (8
                                   // pixels a row), 5 pixels a row (ragged chunks), 5x5 taps
                                   {{2, 32, 16, 16}, {64, 32, 3, 3}, false, Conv2dOptions::make(2, 1)},
                                   {{2, 6, 10, 10}, {16, 6, 3, 3}, true, Conv2dOptions::make(2, 1)},
                                   {{1, 3, 12, 12}, {5, 3, 5, 5}, false, Conv2dOptions::make(2, 2)},
                                   // the weight gradient with output channels in the lanes: 48
                                   // of them (AVX-512: a pair of vectors, then one alone) and 10
                                   // input channels (tails after the blocks of 4 and 8), stride 1
                                   // and 2 (AVX-512: the forward stays im2col, the gradient not)
                                   {{2, 10, 16, 16}, {48, 10, 3, 3}, false},
                                   {{2, 10, 16, 16}, {48, 10, 3, 3}, false, Conv2dOptions::make(2, 1)},
                                   // 9 taps in one row: not the 3x3 weight gradient's kernel
                                   {{2, 8, 4, 16}, {16, 8, 1, 9}, false, Conv2dOptions{1, 1, 0, 4, 1, 1, 1}}};
  for (const Case& c : cases) {
    const Conv2dOptions& o = c.o;
    INFO("x " << shape_str(c.x) << ", w " << shape_str(c.w));
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    REQUIRE(cpu::direct_conv_supported(cpu::conv_shape(c.x, c.w, o), DType::F32));  // every case, both ISAs
#endif
    Tensor x = randn(c.x, 30, DType::F32), w = randn(c.w, 31, DType::F32);
    Tensor b = c.bias ? randn({c.w[0]}, 32, DType::F32) : Tensor();
    const cpu::ConvShape sh = cpu::conv_shape(c.x, c.w, o);
    Tensor dy = randn({sh.N, sh.O, sh.OH, sh.OW}, 33, DType::F32);
    Tensor grads[2][3];  // [direct off, on][dx, dw, db]
    Tensor ys[2];
    for (int direct = 0; direct < 2; ++direct) {
      cpu::set_conv_direct(direct == 1);
      Tensor xl = x.clone().requires_grad_(), wl = w.clone().requires_grad_();
      Tensor bl = c.bias ? b.clone().requires_grad_() : Tensor();
      ys[direct] = conv2d(xl, wl, bl, o);
      ys[direct].backward(dy);
      grads[direct][0] = xl.grad(), grads[direct][1] = wl.grad();
      if (c.bias) grads[direct][2] = bl.grad();
    }
    cpu::set_conv_direct(true);
    require_close(ys[1], ys[0], 1e-4, 1e-4, "direct forward vs im2col");
    require_close(grads[1][0], grads[0][0], 1e-4, 1e-4, "direct dx vs im2col");
    require_close(grads[1][1], grads[0][1], 1e-4, 1e-3, "direct dw vs im2col");
    if (x.numel() <= 4000) {  // the scalar reference is slow: the small shapes only
      Tensor dx, dw, db;
      ref::conv2d_backward(x, w, b, dy, o, dx, dw, db);
      require_close(ys[1], ref::conv2d(x, w, b, o), 1e-4, 1e-4, "direct forward vs ref");
      require_close(grads[1][0], dx, 1e-4, 1e-4, "direct dx vs ref");
      require_close(grads[1][1], dw, 1e-4, 1e-3, "dw vs ref");
      if (c.bias) require_close(grads[1][2], db, 1e-4, 1e-3, "db vs ref");
    }
  }
}

TEST_CASE("conv2d gradient reaches only the inputs that require it", "[conv]") {
  Tensor x = randn({2, 3, 5, 5}, 30);
  Tensor w = randn({4, 3, 3, 3}, 31).requires_grad_();
  sum(conv2d(x, w, Tensor(), Conv2dOptions::make(1, 1))).backward();
  REQUIRE(w.grad().defined());
  REQUIRE(!x.grad().defined());
}

TEST_CASE("conv2d errors name the op, the shapes and a hint", "[conv][errors]") {
  Tensor x = randn({2, 3, 8, 8}, 1, DType::F32);
  Tensor w = randn({4, 5, 3, 3}, 2, DType::F32);
  REQUIRE_THROWS_WITH(conv2d(x, w, Tensor(), Conv2dOptions::make(1, 1)),
                      Catch::Contains("conv2d") && Catch::Contains("[2, 3, 8, 8]") &&
                          Catch::Contains("[4, 5, 3, 3]") && Catch::Contains("channels"));
  Tensor w64 = randn({4, 3, 3, 3}, 2, DType::F64);
  REQUIRE_THROWS_WITH(conv2d(x, w64, Tensor(), Conv2dOptions::make(1, 1)),
                      Catch::Contains("conv2d") && Catch::Contains("float32") && Catch::Contains("float64"));
  REQUIRE_THROWS_WITH(conv2d(randn({3, 8, 8}, 1, DType::F32), randn({4, 3, 3, 3}, 2, DType::F32), Tensor(),
                             Conv2dOptions::make(1, 1)),
                      Catch::Contains("conv2d") && Catch::Contains("[3, 8, 8]") && Catch::Contains("unsqueeze"));
  REQUIRE_THROWS_WITH(conv2d(x, randn({4, 3, 3, 3}, 2, DType::F32), randn({5}, 3, DType::F32),
                             Conv2dOptions::make(1, 1)),
                      Catch::Contains("conv2d") && Catch::Contains("bias") && Catch::Contains("[5]"));
  REQUIRE_THROWS_WITH(conv2d(x, randn({4, 1, 3, 3}, 2, DType::F32), Tensor(), Conv2dOptions::make(1, 1, 1, 2)),
                      Catch::Contains("conv2d") && Catch::Contains("groups"));
  REQUIRE_THROWS_WITH(conv2d(randn({1, 3, 2, 2}, 1, DType::F32), randn({4, 3, 5, 5}, 2, DType::F32), Tensor(),
                             Conv2dOptions::make(1, 0)),
                      Catch::Contains("conv2d") && Catch::Contains("larger"));
}
