// test_cuda_ops.cpp - every differentiable op of the public API on CUDA against the CPU, forward and
// backward, from one table (ggml's test-backend-ops; STYLE.md rule 8).
//
// The ops are those of tensor/ops.h (elementwise, reductions, matmul, linear, conv2d, pooling,
// temporal_shift, batch_norm, softmax and the losses, dropout, cat, split), quant/quantizers.h
// (quantize_weight and its integer codes, pact_quantize), quant/lsq.h (lsq_quantize); a second
// table runs some of them again on inputs that span many blocks, and a third the optimizers of
// nn/optim.h. tests/test_cuda.cpp tests the kernels and the
// runtime underneath, one by one.
//
// For each row of the table, in float32 and float64, and with its inputs in three layouts:
//   contiguous;
//   transposed: a view with the first and last dimensions swapped over a contiguous buffer;
//   every other element: a view with stride 2 in the last dimension, starting at offset 1, of a
//     buffer whose other elements are NaN (a kernel that ignores strides or offset reads NaN);
// the inputs are drawn on the CPU from a fixed seed and copied, as leaves that require grad, to
// the CPU and to the GPU in the same layout. Then
//   - forward on both: the outputs must agree (float32: rtol 1e-3 and atol 1e-4 times the largest
//     |value| of the CPU output, at least 1; float64: 1e-9 and 1e-11; integer outputs exactly).
//     Side outputs are compared the same way: argmax, the running statistics a training-mode
//     batch_norm updates in place, the int64 codes of weight_codes;
//   - backward of L = sum(y * r), r a fixed random tensor, on both: every input's gradient must
//     agree, and be undefined on both where the op gives that input none (the teacher logits).
// Outputs need no pre-filling with junk here: the ops allocate their outputs themselves, and
// tests/main.cpp makes every new allocation, CPU and CUDA, start as NaN
// (set_fill_new_allocations_with_nan), so an output element a kernel never writes stays NaN and
// fails the comparison.
//
// Rounding quantizers: round() at a decision boundary can give different codes on the CPU and on
// the GPU in float32 (a different order of operations, --use_fast_math), which moves the output
// by a whole quantization step. Their inputs are therefore placed away from every boundary: on a
// grid (k + j) * step with |j| in [0.1, 0.3], so v / step is at least 0.2 from any k + 1/2 and at
// least 0.1 from any k (PACT's and LSQ's clipping comparisons); DoReFa's weights are made from
// chosen codes (see dorefa_weights below). They run in float64 as well.
//
// Every case starts with SKIP_WITHOUT_GPU() (tests/cuda_skip.h): without a usable GPU a plain run
// leaves them out and says so, and nothing here touches a CUDA function. The file compiles in a
// CPU-only build (the cuda:: functions exist there as stubs that throw).
// A failure names the row, the dtype and the layout (the section's name and the INFO line).
// Run: ./build/anybit_tests "cuda ops: *"; one row, dtype and layout: add -c "<the section name
// printed with its failure>", e.g. -c "conv2d groups 2, bias / float32 / contiguous".
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "nn/optim.h"
#include "quant/lsq.h"
#include "quant/quantizers.h"
#include "tensor/cuda/cuda.h"
#include "tensor/random.h"
#include "tests/cuda_skip.h"
#include "tests/helpers.h"

using namespace anybit;
using namespace anybit::test;

namespace {

const Device kCpu;
const Device kCuda(Device::CUDA);
const double kNaN = std::numeric_limits<double>::quiet_NaN();
const DType kFloatTypes[] = {DType::F32, DType::F64};

// ---- input values ------------------------------------------------------------------------------

// The values of one input: a contiguous float64 CPU tensor of the given shape, from a seed.
using Values = std::function<Tensor(const Shape&, uint64_t seed)>;

Values normal(double scale = 1) {
  return [scale](const Shape& s, uint64_t seed) { return mul(randn(s, seed), scale); };
}

// |N(0, 1)| + 0.5: for log, sqrt, pow with a fractional exponent, and divisors.
Values positive() {
  return [](const Shape& s, uint64_t seed) { return add(abs(randn(s, seed)), 0.5); };
}

Values constant(double v) {
  return [v](const Shape& s, uint64_t) { return Tensor::full(s, v, DType::F64); };
}

// (k + j) * step, k uniform in [kmin, kmax], |j| uniform in [0.1, 0.3] with a random sign: far
// from every rounding boundary (k + 1/2) and from every integer (the clipping thresholds of PACT
// and LSQ are integers times step), so both devices round and clip every element alike.
Values grid(double step, int64_t kmin, int64_t kmax) {
  return [=](const Shape& s, uint64_t seed) {
    Generator g(seed);
    std::vector<double> v(shape_numel(s));
    for (double& e : v) {
      double k = double(kmin + (int64_t)g.below(uint64_t(kmax - kmin + 1)));
      double j = 0.1 + 0.2 * g.uniform();
      e = (k + (g.uniform() < 0.5 ? -j : j)) * step;
    }
    return Tensor::from_vector(v, s);
  };
}

// Weights for DoReFa (quantize_weight), whose codes are round((2^b - 1) u) with
// u = tanh(w) / (2 max|tanh(w)|) + 1/2. Every element is made from a chosen u = (k + j) / 255:
// element 0 has k = 255, j = 0 (the one element where |tanh(w)| is largest, M = 0.9, so max has
// no tie), the others k in 1..254 and |j| <= 0.1. Since 2^b - 1 divides 255 for b = 1, 2, 4, 8,
// (2^b - 1) u = (k + j) (2^b - 1) / 255 is then at least 0.004 from any rounding boundary
// (b = 2, 1) and much further for b = 4, 8, where float32 moves u by about 1e-7; the truncate
// store's 8-bit codes are exactly k.
Values dorefa_weights() {
  return [](const Shape& s, uint64_t seed) {
    Generator g(seed);
    const double M = 0.9;
    std::vector<double> v(shape_numel(s));
    for (size_t i = 0; i < v.size(); ++i) {
      double k = i == 0 ? 255 : double(1 + g.below(254));
      double j = i == 0 ? 0 : 0.2 * g.uniform() - 0.1;
      double u = (k + j) / 255;
      v[i] = std::atanh((2 * u - 1) * M);
    }
    return Tensor::from_vector(v, s);
  };
}

// FNV-1a of a row's name: its inputs' seeds, so rows draw different values.
uint64_t seed_of(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h % 1000003;
}

// ---- layouts -----------------------------------------------------------------------------------

enum class Layout { Contiguous, Transposed, EveryOther };

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "contiguous";
    case Layout::Transposed: return "transposed (first and last dims swapped)";
    case Layout::EveryOther: return "every other element (stride 2 in the last dim, offset 1)";
  }
  return "?";
}

// A leaf on `dev` holding v's values (v: contiguous, on the CPU) in layout l. A 1-D tensor has no
// transposed layout and gets the every-other one; a 0-D tensor is always contiguous.
Tensor place(const Tensor& v, Layout l, Device dev) {
  const int64_t nd = v.dim();
  if (nd == 0 || l == Layout::Contiguous) return v.clone().to(dev).detach();
  if (l == Layout::Transposed && nd >= 2) {
    Tensor base = v.transpose(0, nd - 1).contiguous().to(dev);
    return base.transpose(0, nd - 1).detach();
  }
  Shape bs = v.shape();
  const int64_t n = bs.back();
  bs.back() = 2 * n;
  Tensor base = Tensor::full(bs, kNaN, v.dtype());
  base.slice(nd - 1, 1, 2 * n, 2).copy_(v);
  return base.to(dev).slice(nd - 1, 1, 2 * n, 2).detach();
}

std::string layout_str(const Tensor& t) {
  std::ostringstream os;
  os << shape_str(t.shape()) << " strides " << shape_str(t.strides()) << " offset " << t.offset()
     << (t.is_contiguous() ? " (contiguous)" : "");
  return os.str();
}

// ---- comparison --------------------------------------------------------------------------------

// got (from the GPU) against want (from the CPU): same shape and dtype; integers exactly; floats
// within rtol |want| + atol scale, scale = max(1, max |want|). Every value must be finite.
void require_same(const Tensor& got, const Tensor& want, double rtol, double atol, const std::string& what) {
  INFO(what << ": got " << (got.defined() ? got.str() : "undefined") << ", want "
            << (want.defined() ? want.str() : "undefined"));
  REQUIRE(got.defined() == want.defined());
  if (!want.defined()) return;
  REQUIRE(got.shape() == want.shape());
  REQUIRE(got.dtype() == want.dtype());
  auto g = got.to_vector<double>(), w = want.to_vector<double>();
  if (!is_floating(want.dtype())) {
    REQUIRE(g == w);
    return;
  }
  double scale = 1;
  for (double x : w) scale = std::max(scale, std::abs(x));
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    double e = std::isfinite(g[i]) && std::isfinite(w[i])
                   ? std::abs(g[i] - w[i]) / (atol * scale + rtol * std::abs(w[i]))
                   : std::numeric_limits<double>::infinity();
    if (e > worst) {
      worst = e;
      wi = i;
    }
  }
  INFO(what << ": worst element " << wi << " (row-major): " << (g.empty() ? 0 : g[wi]) << " vs "
            << (w.empty() ? 0 : w[wi]) << ", error " << worst << " x the tolerance");
  REQUIRE(worst <= 1.0);
}

double rtol_for(DType dt) { return dt == DType::F32 ? 1e-3 : 1e-9; }
double atol_for(DType dt) { return dt == DType::F32 ? 1e-4 : 1e-11; }

// ---- the op table ------------------------------------------------------------------------------

using Xs = std::vector<Tensor>;
// y = f(x, side): x the inputs, as placed on one device; f may push side outputs (compared, not
// differentiated) to `side`.
using OpFn = std::function<Tensor(const Xs& x, Xs& side)>;

struct OpCase {
  std::string name;
  std::vector<Shape> shapes;   // one per input; every input is float and requires grad
  OpFn f;
  std::vector<Values> values;  // one per input; empty: N(0, 1) for all
  OpCase(std::string n, std::vector<Shape> s, OpFn fn, std::vector<Values> v = {})
      : name(std::move(n)), shapes(std::move(s)), f(std::move(fn)), values(std::move(v)) {}
};

// Per-channel constants (C) of x's dtype and device: first, first + step, ...
Tensor channel_values(int64_t C, double first, double step, const Tensor& like) {
  std::vector<double> v(C);
  for (int64_t c = 0; c < C; ++c) v[c] = first + step * c;
  return Tensor::from_vector(v, {C}).to(like.dtype()).to(like.device());
}

// cross_entropy's labels on the logits' device. When the logits are a strided view, so are the
// labels: every other element of a buffer whose other elements are other valid classes, so that a
// kernel that ignores the stride computes a wrong loss instead of reading out of range.
Tensor labels_for(const Tensor& logits, const std::vector<int64_t>& labels) {
  const int64_t N = (int64_t)labels.size(), K = logits.size(1);
  if (logits.is_contiguous()) return Tensor::from_vector(labels, {N}).to(logits.device());
  std::vector<int64_t> buf(2 * N);
  for (int64_t n = 0; n < N; ++n) {
    buf[2 * n] = (labels[n] + 1) % K;
    buf[2 * n + 1] = labels[n];
  }
  return Tensor::from_vector(buf, {2 * N}).to(logits.device()).slice(0, 1, 2 * N, 2);
}

OpFn dorefa(int bits, quant::WeightQuantOptions opt) {
  return [bits, opt](const Xs& x, Xs& side) {
    if (bits >= 2 && bits <= 16) side.push_back(quant::weight_codes(x[0], bits, opt));
    return quant::quantize_weight(x[0], bits, opt);
  };
}

// pact_quantize(x, a = 2, bits): x on the grid of the rounding step a / levels (any grid at 32 bits),
// from 3 steps below the clip range to 3 steps above it.
OpCase pact_case(int bits, bool is_signed, Shape shape = {3, 4, 5}) {
  const double a = 2;
  const int64_t levels = bits == 32 ? 8 : is_signed ? (int64_t(1) << (bits - 1)) - 1 : (int64_t(1) << bits) - 1;
  const double step = a / levels;
  std::string name = std::string("pact_quantize ") + (is_signed ? "signed" : "unsigned") + " b" + std::to_string(bits);
  return {name, {shape, {1}},
          [bits, is_signed](const Xs& x, Xs&) { return quant::pact_quantize(x[0], x[1], bits, is_signed); },
          {grid(step, is_signed ? -levels - 3 : -3, levels + 3), constant(a)}};
}

// lsq_quantize(v, s = 0.25, Qn, Qp, N): v on the grid of s, from 3 steps below -Qn to 3 above Qp.
OpCase lsq_case(int bits, bool is_signed, Shape shape = {4, 5, 3}) {
  const double s = 0.25;
  quant::LsqRange r = quant::lsq_range(bits, is_signed);
  std::string name = std::string("lsq_quantize ") + (is_signed ? "signed" : "unsigned") + " b" + std::to_string(bits);
  const int64_t qn = r.qn, qp = r.qp;
  return {name, {shape, {1}},
          [qn, qp](const Xs& x, Xs&) { return quant::lsq_quantize(x[0], x[1], qn, qp, 60); },
          {grid(s, -qn - 3, qp + 3), constant(s)}};
}

std::vector<OpCase> op_table() {
  using quant::WeightQuantOptions;
  using quant::WeightScale;
  using quant::WeightStore;
  const WeightQuantOptions round_none{WeightStore::Round, WeightScale::None, 8};
  const WeightQuantOptions truncate8{WeightStore::Truncate, WeightScale::None, 8};
  const WeightQuantOptions mean_scale{WeightStore::Round, WeightScale::Mean, 8};
  const WeightQuantOptions sat_scale{WeightStore::Round, WeightScale::Sat, 8};
  const Shape wshape{6, 3, 2, 2};  // DoReFa weights (O, C, KH, KW): SAT's fan_in is 12

  std::vector<OpCase> t = {
      // ---- elementwise, with broadcasting --------------------------------------------------------
      {"add, broadcast (4, 1, 5) + (3, 1)", {{4, 1, 5}, {3, 1}}, [](const Xs& x, Xs&) { return add(x[0], x[1]); }},
      {"sub, broadcast (3, 4) - (4)", {{3, 4}, {4}}, [](const Xs& x, Xs&) { return sub(x[0], x[1]); }},
      {"mul, broadcast (2, 3, 4) * (2, 1, 4)", {{2, 3, 4}, {2, 1, 4}}, [](const Xs& x, Xs&) { return mul(x[0], x[1]); }},
      {"div, broadcast (3, 4) / (3, 1)", {{3, 4}, {3, 1}}, [](const Xs& x, Xs&) { return div(x[0], x[1]); },
       {normal(), positive()}},
      {"add scalar 0.75", {{3, 5}}, [](const Xs& x, Xs&) { return add(x[0], 0.75); }},
      {"mul scalar -3", {{3, 5}}, [](const Xs& x, Xs&) { return mul(x[0], -3.0); }},
      {"neg", {{4, 3}}, [](const Xs& x, Xs&) { return neg(x[0]); }},
      {"exp", {{4, 3}}, [](const Xs& x, Xs&) { return exp(x[0]); }},
      {"log", {{4, 3}}, [](const Xs& x, Xs&) { return log(x[0]); }, {positive()}},
      {"sqrt", {{4, 3}}, [](const Xs& x, Xs&) { return sqrt(x[0]); }, {positive()}},
      {"pow 1.5", {{4, 3}}, [](const Xs& x, Xs&) { return pow(x[0], 1.5); }, {positive()}},
      {"pow 2 of signed values", {{4, 3}}, [](const Xs& x, Xs&) { return pow(x[0], 2.0); }},
      {"tanh", {{4, 3}}, [](const Xs& x, Xs&) { return tanh(x[0]); }, {normal(2)}},
      {"abs", {{4, 3}}, [](const Xs& x, Xs&) { return abs(x[0]); }},
      {"relu", {{4, 3}}, [](const Xs& x, Xs&) { return relu(x[0]); }},
      {"relu6", {{4, 5}}, [](const Xs& x, Xs&) { return relu6(x[0]); }, {normal(4)}},
      {"clamp -0.5 0.5", {{4, 5}}, [](const Xs& x, Xs&) { return clamp(x[0], -0.5, 0.5); }},
      {"clamp_bounds, tensor bounds (1) broadcast", {{4, 5}, {1}, {1}},
       [](const Xs& x, Xs&) { return clamp_bounds(x[0], x[1], x[2]); }, {normal(), constant(-0.5), constant(0.7)}},
      {"round_ste", {{4, 5}}, [](const Xs& x, Xs&) { return round_ste(x[0]); }, {grid(1, -4, 4)}},
      {"sum_to (4, 3, 5) -> (3, 1)", {{4, 3, 5}}, [](const Xs& x, Xs&) { return sum_to(x[0], {3, 1}); }},

      // ---- reductions ------------------------------------------------------------------------------
      {"sum all", {{4, 5, 6}}, [](const Xs& x, Xs&) { return sum(x[0]); }},
      {"sum dim 1", {{4, 5, 6}}, [](const Xs& x, Xs&) { return sum(x[0], {1}); }},
      {"sum dims 0, 2 (not adjacent), keepdim", {{4, 5, 6}}, [](const Xs& x, Xs&) { return sum(x[0], {0, 2}, true); }},
      {"mean all", {{4, 5, 6}}, [](const Xs& x, Xs&) { return mean(x[0]); }},
      {"mean dims 1, 2, keepdim", {{4, 5, 6}}, [](const Xs& x, Xs&) { return mean(x[0], {1, 2}, true); }},
      {"max all", {{4, 5, 6}}, [](const Xs& x, Xs&) { return max(x[0]); }},
      {"max dim 1, and argmax", {{4, 5, 6}},
       [](const Xs& x, Xs& side) {
         side.push_back(argmax(x[0], 1));
         return max(x[0], 1);
       }},
      {"max dim 0 keepdim, and argmax", {{4, 5, 6}},
       [](const Xs& x, Xs& side) {
         side.push_back(argmax(x[0], 0, true));
         return max(x[0], 0, true);
       }},
      {"max dim 2 (last), and argmax", {{4, 5, 6}},
       [](const Xs& x, Xs& side) {
         side.push_back(argmax(x[0], 2));
         return max(x[0], 2);
       }},

      // ---- linear algebra ------------------------------------------------------------------------
      {"matmul (5, 7) x (7, 4)", {{5, 7}, {7, 4}}, [](const Xs& x, Xs&) { return matmul(x[0], x[1]); }},
      {"linear with bias", {{6, 9}, {4, 9}, {4}}, [](const Xs& x, Xs&) { return linear(x[0], x[1], x[2]); }},
      {"linear without bias", {{6, 9}, {4, 9}}, [](const Xs& x, Xs&) { return linear(x[0], x[1], Tensor()); }},

      // ---- convolution -----------------------------------------------------------------------------
      {"conv2d 3x3 stride 1 pad 1, bias", {{2, 3, 7, 6}, {4, 3, 3, 3}, {4}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 1)); }},
      {"conv2d 3x3 stride 2 pad 1, no bias", {{2, 3, 8, 7}, {5, 3, 3, 3}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], Tensor(), Conv2dOptions::make(2, 1)); }},
      {"conv2d 3x3 dilation 2 pad 2, bias", {{2, 2, 9, 9}, {3, 2, 3, 3}, {3}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 2, 2)); }},
      {"conv2d groups 2, bias", {{2, 4, 6, 6}, {6, 2, 3, 3}, {6}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 1, 1, 2)); }},
      {"conv2d depthwise, channel multiplier 2, dilation 2, bias", {{2, 3, 8, 8}, {6, 1, 3, 3}, {6}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 2, 2, 3)); }},
      {"conv2d depthwise 3x3 stride 2 pad 1", {{2, 4, 7, 7}, {4, 1, 3, 3}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], Tensor(), Conv2dOptions::make(2, 1, 1, 4)); }},
      {"conv2d 1x1, bias", {{2, 8, 5, 5}, {6, 8, 1, 1}, {6}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 0)); }},
      {"conv2d 1x1 groups 2, bias (pointwise: no im2col)", {{3, 4, 5, 6}, {6, 2, 1, 1}, {6}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 0, 1, 2)); }},
      {"conv2d 1x1 stride 2", {{2, 8, 5, 5}, {6, 8, 1, 1}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], Tensor(), Conv2dOptions::make(2, 0)); }},
      {"conv2d 3x2 kernel, stride (1, 2), pad (0, 1), dilation (1, 2)", {{2, 2, 6, 9}, {3, 2, 3, 2}, {3}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions{1, 2, 0, 1, 1, 2, 1}); }},
      {"conv2d batch 1, 3x3 pad 1", {{1, 3, 6, 6}, {4, 3, 3, 3}, {4}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 1)); }},

      // ---- pooling ---------------------------------------------------------------------------------
      {"max_pool2d 3 stride 2 pad 1", {{2, 3, 9, 8}}, [](const Xs& x, Xs&) { return max_pool2d(x[0], 3, 2, 1); }},
      {"max_pool2d 2 stride 2", {{2, 3, 8, 8}}, [](const Xs& x, Xs&) { return max_pool2d(x[0], 2, 2); }},
      {"avg_pool2d 3 stride 1 pad 1", {{2, 3, 7, 6}}, [](const Xs& x, Xs&) { return avg_pool2d(x[0], 3, 1, 1); }},
      {"avg_pool2d 2 stride 2", {{1, 4, 8, 8}}, [](const Xs& x, Xs&) { return avg_pool2d(x[0], 2, 2); }},
      {"global_avg_pool2d", {{2, 5, 4, 3}}, [](const Xs& x, Xs&) { return global_avg_pool2d(x[0]); }},

      // ---- video -----------------------------------------------------------------------------------
      {"temporal_shift 2 clips of 3 frames, fold_div 4", {{6, 8, 2, 3}},
       [](const Xs& x, Xs&) { return temporal_shift(x[0], 3, 4); }},
      {"temporal_shift 2 clips of 2 frames, fold_div 8", {{4, 16, 2, 2}},
       [](const Xs& x, Xs&) { return temporal_shift(x[0], 2); }},

      // ---- batch norm ------------------------------------------------------------------------------
      {"batch_norm training (N, C, H, W), affine, running statistics", {{3, 4, 5, 5}, {4}, {4}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(4, -0.2, 0.1, x[0]), rv = channel_values(4, 0.5, 0.25, x[0]);
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5);
         side.push_back(rm);  // updated in place: must move the same way on both devices
         side.push_back(rv);
         return y;
       }},
      {"batch_norm training (N, C), affine, running statistics, momentum 0.3", {{8, 5}, {5}, {5}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(5, 0.3, -0.1, x[0]), rv = channel_values(5, 2.0, -0.3, x[0]);
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.3, 1e-5);
         side.push_back(rm);
         side.push_back(rv);
         return y;
       }},
      {"batch_norm + relu training (fused), affine, running statistics", {{3, 4, 5, 5}, {4}, {4}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(4, -0.2, 0.1, x[0]), rv = channel_values(4, 0.5, 0.25, x[0]);
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5, /*relu=*/true);
         side.push_back(rm);
         side.push_back(rv);
         return y;
       }},
      {"batch_norm + relu evaluation (fused), affine", {{2, 3, 4, 4}, {3}, {3}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(3, -0.5, 0.4, x[0]), rv = channel_values(3, 0.3, 0.6, x[0]);
         return batch_norm(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5, /*relu=*/true);
       }},
      {"batch_norm + residual + relu training (fused), affine, running statistics", {{3, 4, 5, 5}, {4}, {4}, {3, 4, 5, 5}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(4, -0.2, 0.1, x[0]), rv = channel_values(4, 0.5, 0.25, x[0]);
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5, /*relu=*/true, x[3]);
         side.push_back(rm);
         side.push_back(rv);
         return y;
       }},
      {"batch_norm + residual + relu evaluation (fused), affine", {{2, 3, 4, 4}, {3}, {3}, {2, 3, 4, 4}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(3, -0.5, 0.4, x[0]), rv = channel_values(3, 0.3, 0.6, x[0]);
         return batch_norm(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5, /*relu=*/true, x[3]);
       }},
      // PACT after the ReLU at 32 bits (the clip alone): the two devices' BN values differ in their
      // last bits, which PACT's rounding could turn into a whole step
      {"batch_norm + relu + pact training (fused), clip 0.8, 32 bits", {{3, 4, 5, 5}, {4}, {4}, {1}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(4, -0.2, 0.1, x[0]), rv = channel_values(4, 0.5, 0.25, x[0]);
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5, true, Tensor(), {x[3], 32});
         side.push_back(rm);
         side.push_back(rv);
         return y;
       },
       {normal(), normal(), normal(), constant(0.8)}},
      {"batch_norm + relu + pact evaluation (fused), clip 0.8, 32 bits", {{2, 3, 4, 4}, {3}, {3}, {1}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(3, -0.5, 0.4, x[0]), rv = channel_values(3, 0.3, 0.6, x[0]);
         return batch_norm(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5, true, Tensor(), {x[3], 32});
       },
       {normal(), normal(), normal(), constant(0.8)}},
      // A tapped output (y and PACT of y, two outputs of one op): both reach the result, so the
      // backward gets a gradient for each
      {"batch_norm + residual + relu, tapped by pact, training, clip 0.8, 32 bits",
       {{3, 4, 5, 5}, {4}, {4}, {3, 4, 5, 5}, {1}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(4, -0.2, 0.1, x[0]), rv = channel_values(4, 0.5, 0.25, x[0]);
         Tensor q;
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5, true, x[3], {x[4], 32}, &q);
         side.push_back(rm);
         side.push_back(rv);
         return add(y, mul(q, 2.0));
       },
       {normal(), normal(), normal(), normal(), constant(0.8)}},
      {"batch_norm + relu, tapped by pact, evaluation, clip 0.8, 32 bits", {{2, 3, 4, 4}, {3}, {3}, {1}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(3, -0.5, 0.4, x[0]), rv = channel_values(3, 0.3, 0.6, x[0]);
         Tensor q;
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5, true, Tensor(), {x[3], 32}, &q);
         return add(y, mul(q, 2.0));
       },
       {normal(), normal(), normal(), constant(0.8)}},
      {"batch_norm training, no affine, no running statistics", {{4, 3, 3, 2}},
       [](const Xs& x, Xs&) { return batch_norm(x[0], Tensor(), Tensor(), Tensor(), Tensor(), true); }},
      {"batch_norm evaluation (N, C, H, W), affine", {{2, 3, 4, 4}, {3}, {3}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(3, -0.5, 0.4, x[0]), rv = channel_values(3, 0.3, 0.6, x[0]);
         return batch_norm(x[0], x[1], x[2], rm, rv, false);
       }},
      {"batch_norm evaluation (N, C), no affine", {{5, 4}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(4, 0.2, -0.1, x[0]), rv = channel_values(4, 1.5, 0.5, x[0]);
         return batch_norm(x[0], Tensor(), Tensor(), rm, rv, false);
       }},

      // ---- softmax and losses ------------------------------------------------------------------
      {"softmax dim 1 of (5, 7)", {{5, 7}}, [](const Xs& x, Xs&) { return softmax(x[0], 1); }},
      {"softmax dim 0 of (5, 7)", {{5, 7}}, [](const Xs& x, Xs&) { return softmax(x[0], 0); }},
      {"softmax dim 1 of (3, 4, 5)", {{3, 4, 5}}, [](const Xs& x, Xs&) { return softmax(x[0], 1); }},
      {"softmax of large logits (x 30)", {{4, 6}}, [](const Xs& x, Xs&) { return softmax(x[0], 1); }, {normal(30)}},
      {"log_softmax dim 1 of (5, 7)", {{5, 7}}, [](const Xs& x, Xs&) { return log_softmax(x[0], 1); }},
      {"log_softmax dim -1 of (3, 4, 5)", {{3, 4, 5}}, [](const Xs& x, Xs&) { return log_softmax(x[0], -1); }},
      {"log_softmax dim 1 of (3, 4, 5)", {{3, 4, 5}}, [](const Xs& x, Xs&) { return log_softmax(x[0], 1); }},
      {"cross_entropy (6, 5)", {{6, 5}},
       [](const Xs& x, Xs&) { return cross_entropy(x[0], labels_for(x[0], {0, 4, 2, 2, 1, 3})); }, {normal(2)}},
      {"cross_entropy (6, 5), label_smoothing 0.1", {{6, 5}},
       [](const Xs& x, Xs&) { return cross_entropy(x[0], labels_for(x[0], {0, 4, 2, 2, 1, 3}), 0.1); },
       {normal(2)}},
      {"cross_entropy (4, 37), label_smoothing 0.1", {{4, 37}},
       [](const Xs& x, Xs&) { return cross_entropy(x[0], labels_for(x[0], {36, 0, 17, 5}), 0.1); }, {normal(3)}},
      // The teacher (input 1) requires grad too: it must get none, on either device.
      {"soft_cross_entropy temperature 1", {{6, 5}, {6, 5}},
       [](const Xs& x, Xs&) { return soft_cross_entropy(x[0], x[1], 1.0); }, {normal(2), normal(2)}},
      {"soft_cross_entropy temperature 4", {{6, 5}, {6, 5}},
       [](const Xs& x, Xs&) { return soft_cross_entropy(x[0], x[1], 4.0); }, {normal(2), normal(2)}},
      // dropout draws its mask from the Generator (ops.h: on the CPU, so a run is reproducible
      // on any device): the same seed must zero the same elements on both devices.
      {"dropout p 0.3 training", {{5, 8}},
       [](const Xs& x, Xs&) {
         Generator gen(77);
         return dropout(x[0], 0.3, true, gen);
       }},
      {"dropout evaluation (identity)", {{5, 8}},
       [](const Xs& x, Xs&) {
         Generator gen(77);
         return dropout(x[0], 0.3, false, gen);
       }},

      // ---- joining and splitting ---------------------------------------------------------------------
      {"cat dim 1 of three", {{2, 3, 4}, {2, 1, 4}, {2, 2, 4}},
       [](const Xs& x, Xs&) { return cat({x[0], x[1], x[2]}, 1); }},
      {"cat dim 0", {{1, 3}, {2, 3}}, [](const Xs& x, Xs&) { return cat({x[0], x[1]}, 0); }},
      {"cat dim -1", {{3, 2}, {3, 5}}, [](const Xs& x, Xs&) { return cat({x[0], x[1]}, -1); }},
      {"split dim 1 into 2, 3, 1, joined in reverse", {{3, 6, 2}},
       [](const Xs& x, Xs&) {
         auto p = split(x[0], {2, 3, 1}, 1);
         return cat({p[2], p[1], p[0]}, 1);
       }},
      {"split dim 0 into 1, 2, the second piece scaled", {{3, 4}},
       [](const Xs& x, Xs&) {
         auto p = split(x[0], {1, 2}, 0);
         return cat({mul(p[1], 2.0), p[0]}, 0);
       }},

      // ---- quantizers ------------------------------------------------------------------------------
      {"quantize_weight b32", {wshape}, dorefa(32, round_none), {dorefa_weights()}},
      {"quantize_weight b8 round store", {wshape}, dorefa(8, round_none), {dorefa_weights()}},
      {"quantize_weight b4 round store", {wshape}, dorefa(4, round_none), {dorefa_weights()}},
      {"quantize_weight b2 round store", {wshape}, dorefa(2, round_none), {dorefa_weights()}},
      {"quantize_weight b1", {wshape}, dorefa(1, round_none), {dorefa_weights()}},
      {"quantize_weight b8 truncate store B 8 (= round)", {wshape}, dorefa(8, truncate8), {dorefa_weights()}},
      {"quantize_weight b4 truncate store B 8", {wshape}, dorefa(4, truncate8), {dorefa_weights()}},
      {"quantize_weight b2 truncate store B 8", {wshape}, dorefa(2, truncate8), {dorefa_weights()}},
      {"quantize_weight b1 truncate store B 8", {wshape}, dorefa(1, truncate8), {dorefa_weights()}},
      {"quantize_weight b32 scale mean", {wshape}, dorefa(32, mean_scale), {dorefa_weights()}},
      {"quantize_weight b4 scale mean", {wshape}, dorefa(4, mean_scale), {dorefa_weights()}},
      {"quantize_weight b1 scale mean", {wshape}, dorefa(1, mean_scale), {dorefa_weights()}},
      {"quantize_weight b32 scale sat", {wshape}, dorefa(32, sat_scale), {dorefa_weights()}},
      {"quantize_weight b4 scale sat", {wshape}, dorefa(4, sat_scale), {dorefa_weights()}},
      {"quantize_weight b2 scale sat", {wshape}, dorefa(2, sat_scale), {dorefa_weights()}},
      {"quantize_weight b1 scale sat", {wshape}, dorefa(1, sat_scale), {dorefa_weights()}},
  };
  for (int b : {32, 4, 2, 1}) t.push_back(pact_case(b, false));
  for (int b : {32, 4, 2}) t.push_back(pact_case(b, true));
  t.push_back(lsq_case(4, true));
  t.push_back(lsq_case(2, true));
  t.push_back(lsq_case(8, true));
  t.push_back(lsq_case(2, false));
  t.push_back(lsq_case(4, false));
  return t;
}

// The table above keeps its inputs small, so most of its kernels run as one block. These rows give
// the kernels that share work between blocks (an output per thread over a grid of blocks, per-block
// partial sums of BN's statistics and of PACT's and LSQ's clip and step gradients, col2im's
// gather) inputs that span tens of blocks of 256 threads, so that the race check
// (anybit_tests_race_emu, tensor/cuda/emu/emulator.cpp) sees blocks work beside each other.
std::vector<OpCase> many_blocks_table() {
  const quant::WeightQuantOptions sat_scale{quant::WeightStore::Round, quant::WeightScale::Sat, 8};
  std::vector<OpCase> t = {
      {"conv2d 3x3 pad 1, bias, (4, 16, 12, 12) -> 9216 outputs", {{4, 16, 12, 12}, {16, 16, 3, 3}, {16}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], x[2], Conv2dOptions::make(1, 1)); }},
      {"conv2d depthwise 3x3 stride 2 pad 1, (4, 32, 12, 12)", {{4, 32, 12, 12}, {32, 1, 3, 3}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], Tensor(), Conv2dOptions::make(2, 1, 1, 32)); }},
      // a weight's gradient sums 4 x 256 terms: each of a block's threads adds up four
      {"conv2d depthwise 3x3 pad 1, (4, 8, 16, 16)", {{4, 8, 16, 16}, {8, 1, 3, 3}},
       [](const Xs& x, Xs&) { return conv2d(x[0], x[1], Tensor(), Conv2dOptions::make(1, 1, 1, 8)); }},
      // 16384 values per channel: BN's channel sums are cut into 4 chunks, each a block
      {"batch_norm + residual + relu training (fused), (16, 3, 32, 32)", {{16, 3, 32, 32}, {3}, {3}, {16, 3, 32, 32}},
       [](const Xs& x, Xs& side) {
         Tensor rm = channel_values(3, -0.2, 0.1, x[0]), rv = channel_values(3, 0.5, 0.25, x[0]);
         Tensor y = batch_norm(x[0], x[1], x[2], rm, rv, true, 0.1, 1e-5, /*relu=*/true, x[3]);
         side.push_back(rm);
         side.push_back(rv);
         return y;
       }},
      // evaluation: 16320 values per channel, 16 blocks of 256 threads each, sharing the channel's coefficients
      {"batch_norm + residual + relu evaluation (fused), (16, 3, 30, 34)", {{16, 3, 30, 34}, {3}, {3}, {16, 3, 30, 34}},
       [](const Xs& x, Xs&) {
         Tensor rm = channel_values(3, -0.2, 0.1, x[0]), rv = channel_values(3, 0.5, 0.25, x[0]);
         return batch_norm(x[0], x[1], x[2], rm, rv, false, 0.1, 1e-5, /*relu=*/true, x[3]);
       }},
      {"max_pool2d 3 stride 2 pad 1, (4, 16, 16, 16)", {{4, 16, 16, 16}},
       [](const Xs& x, Xs&) { return max_pool2d(x[0], 3, 2, 1); }},
      {"global_avg_pool2d, (8, 32, 8, 8)", {{8, 32, 8, 8}}, [](const Xs& x, Xs&) { return global_avg_pool2d(x[0]); }},
      {"cross_entropy (700, 10), label_smoothing 0.1", {{700, 10}},
       [](const Xs& x, Xs&) {
         std::vector<int64_t> labels(700);
         for (int64_t n = 0; n < 700; ++n) labels[n] = (n * 7) % 10;
         return cross_entropy(x[0], labels_for(x[0], labels), 0.1);
       },
       {normal(2)}},
      {"quantize_weight b4 scale sat, (64, 32, 3, 3)", {{64, 32, 3, 3}},
       dorefa(4, sat_scale), {dorefa_weights()}},
  };
  t.push_back(pact_case(4, false, {4, 16, 16, 16}));
  t.push_back(lsq_case(4, true, {4, 16, 16, 16}));
  return t;
}

// One row, one dtype, one layout: forward, side outputs and gradients, CUDA against the CPU.
void run_op(const OpCase& c, DType dt, Layout layout) {
  const uint64_t seed = seed_of(c.name);
  Xs xc, xd;
  std::string inputs;
  bool any_large = false, any_strided = false;
  for (size_t k = 0; k < c.shapes.size(); ++k) {
    const Values& values = c.values.empty() ? normal() : c.values.at(k);
    Tensor v = values(c.shapes[k], seed + k).to(dt);
    xc.push_back(place(v, layout, kCpu).requires_grad_());
    xd.push_back(place(v, layout, kCuda).requires_grad_());
    inputs += (k ? "; " : "") + std::string("x") + std::to_string(k) + " " + layout_str(xd.back());
    any_large = any_large || v.numel() > 1;
    any_strided = any_strided || !xd.back().is_contiguous();
  }
  INFO(c.name << ", " << dtype_name(dt) << ", " << layout_name(layout) << "; inputs: " << inputs);
  // The layout did what it says (a row whose inputs all have one element cannot be strided).
  if (layout != Layout::Contiguous && any_large) REQUIRE(any_strided);
  const double rt = rtol_for(dt), at = atol_for(dt);

  Xs side_c, side_d;
  Tensor yc = c.f(xc, side_c);
  Tensor yd = c.f(xd, side_d);
  REQUIRE(yd.device().is_cuda());
  require_same(yd, yc, rt, at, "forward");
  REQUIRE(side_d.size() == side_c.size());
  for (size_t i = 0; i < side_c.size(); ++i) {
    REQUIRE(side_d[i].device().is_cuda());
    require_same(side_d[i], side_c[i], rt, at, "side output " + std::to_string(i));
  }

  REQUIRE(yc.requires_grad());
  REQUIRE(yd.requires_grad());
  Tensor r = randn(yc.shape(), seed + 1000, dt);  // L = sum(y * r)
  sum(mul(yc, r)).backward();
  sum(mul(yd, r.to(kCuda))).backward();
  for (size_t k = 0; k < xc.size(); ++k) {
    std::string what = "dL/dx" + std::to_string(k);
    Tensor gd = xd[k].grad();
    if (gd.defined()) {
      REQUIRE(gd.device().is_cuda());
      REQUIRE(gd.shape() == xd[k].shape());
    }
    require_same(gd, xc[k].grad(), rt, at, what);
  }
}

// ---- the optimizer table --------------------------------------------------------------------------

using MakeOptimizer = std::function<std::unique_ptr<nn::Optimizer>(std::vector<nn::ParamGroup>)>;

struct OptCase {
  std::string name;
  MakeOptimizer make;
  double weight_decay;  // of the "weights" group; the "clip" group has none
};

std::vector<OptCase> optimizer_table() {
  using Groups = std::vector<nn::ParamGroup>;
  using Ptr = std::unique_ptr<nn::Optimizer>;
  return {
      {"SGD without momentum", [](Groups g) -> Ptr { return std::make_unique<nn::SGD>(g, nn::SGDOptions{0.0, false}); },
       0.0},
      {"SGD momentum 0.9, weight decay 1e-2",
       [](Groups g) -> Ptr { return std::make_unique<nn::SGD>(g, nn::SGDOptions{0.9, false}); }, 1e-2},
      {"SGD Nesterov momentum 0.9, weight decay 5e-4",
       [](Groups g) -> Ptr { return std::make_unique<nn::SGD>(g, nn::SGDOptions{0.9, true}); }, 5e-4},
      {"Adam", [](Groups g) -> Ptr { return std::make_unique<nn::Adam>(g, nn::AdamOptions{}); }, 0.0},
      {"Adam weight decay 1e-2 (added to the gradient)",
       [](Groups g) -> Ptr { return std::make_unique<nn::Adam>(g, nn::AdamOptions{}); }, 1e-2},
      {"AdamW weight decay 1e-2 (decoupled)",
       [](Groups g) -> Ptr { return std::make_unique<nn::AdamW>(g, nn::AdamOptions{}); }, 1e-2},
      {"AdamW betas (0.8, 0.99), eps 1e-6, weight decay 5e-2",
       [](Groups g) -> Ptr { return std::make_unique<nn::AdamW>(g, nn::AdamOptions{0.8, 0.99, 1e-6, false}); }, 5e-2},
  };
}

// The same parameters on one device, and the optimizer over them: groups "weights" (w, b, and
// frozen, which never gets a gradient: skipped, no state) and "clip" (one value, its own lr).
struct OptRun {
  Tensor w, b, frozen, clip;
  std::unique_ptr<nn::Optimizer> opt;
  OptRun(const OptCase& c, DType dt, Device dev) {
    auto param = [&](const Shape& s, uint64_t seed) { return randn(s, seed, dt).to(dev).requires_grad_(); };
    w = param({5, 7}, 201);
    b = param({7}, 202);
    frozen = param({3}, 203);
    clip = Tensor::full({1}, 2.0, dt).to(dev).requires_grad_();
    std::vector<nn::ParamGroup> groups = {
        nn::ParamGroup{{{"w", w}, {"b", b}, {"frozen", frozen}}, 0.1, c.weight_decay, -1, "weights"},
        nn::ParamGroup{{{"clip", clip}}, 0.01, 0.0, -1, "clip"}};
    opt = c.make(groups);
  }
};

void run_optimizer(const OptCase& c, DType dt, Layout layout) {
  INFO(c.name << ", " << dtype_name(dt) << ", gradients " << layout_name(layout));
  OptRun on_cpu(c, dt, kCpu), on_gpu(c, dt, kCuda);
  for (int step = 0; step < 3; ++step) {
    // The same gradients on both devices, drawn anew each step; on the GPU in the given layout.
    auto set = [&](Tensor& pc, Tensor& pd, uint64_t seed) {
      Tensor g = randn(pc.shape(), seed, dt);
      pc.set_grad(g.clone());
      pd.set_grad(place(g, layout, kCuda));
    };
    set(on_cpu.w, on_gpu.w, 300 + 10 * step);
    set(on_cpu.b, on_gpu.b, 301 + 10 * step);
    set(on_cpu.clip, on_gpu.clip, 302 + 10 * step);
    on_cpu.opt->step();
    on_gpu.opt->step();
  }
  const double rt = dt == DType::F32 ? 1e-5 : 1e-12, at = dt == DType::F32 ? 1e-6 : 1e-13;
  for (auto [name, pc, pd] : {std::tuple{"w", on_cpu.w, on_gpu.w}, std::tuple{"b", on_cpu.b, on_gpu.b},
                              std::tuple{"frozen", on_cpu.frozen, on_gpu.frozen},
                              std::tuple{"clip", on_cpu.clip, on_gpu.clip}}) {
    REQUIRE(pd.device().is_cuda());  // updated in place, where it lives
    require_same(pd.detach(), pc.detach(), rt, at, std::string("parameter ") + name + " after 3 steps");
  }
  // The state: momentum buffers or moments, and step counts, by name; none for "frozen".
  nn::NamedTensors sc = on_cpu.opt->state_dict(), sd = on_gpu.opt->state_dict();
  REQUIRE(sd.size() == sc.size());
  for (size_t i = 0; i < sc.size(); ++i) {
    REQUIRE(sd[i].first == sc[i].first);
    REQUIRE(sd[i].first.rfind("frozen.", 0) != 0);
    require_same(sd[i].second, sc[i].second, rt, at, "state " + sc[i].first);
  }
}

}  // namespace

TEST_CASE("cuda ops: every op of the public API matches the CPU, forward and backward, contiguous and strided",
          "[cuda]") {
  SKIP_WITHOUT_GPU();
  // Each (row, dtype, layout) is its own section, so one failing row does not hide the others.
  for (const OpCase& c : op_table())
    for (DType dt : kFloatTypes)
      for (Layout layout : {Layout::Contiguous, Layout::Transposed, Layout::EveryOther})
        DYNAMIC_SECTION(c.name << " / " << dtype_name(dt) << " / " << layout_name(layout)) {
          run_op(c, dt, layout);
        }
}

TEST_CASE("cuda ops: the kernels that share work between blocks match the CPU on inputs that span many blocks",
          "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (const OpCase& c : many_blocks_table())
    for (DType dt : kFloatTypes)
      for (Layout layout : {Layout::Contiguous, Layout::EveryOther})
        DYNAMIC_SECTION(c.name << " / " << dtype_name(dt) << " / " << layout_name(layout)) {
          run_op(c, dt, layout);
        }
}

TEST_CASE("cuda ops: SGD, Adam and AdamW take the CPU's 3 steps, with contiguous and strided gradients",
          "[cuda]") {
  SKIP_WITHOUT_GPU();
  for (const OptCase& c : optimizer_table())
    for (DType dt : kFloatTypes)
      for (Layout layout : {Layout::Contiguous, Layout::Transposed, Layout::EveryOther})
        DYNAMIC_SECTION(c.name << " / " << dtype_name(dt) << " / gradients " << layout_name(layout)) {
          run_optimizer(c, dt, layout);
        }
}

// The optimizers update many tensors per launch (tensor/cuda/fused.cu: up to 32, found by binary
// search over their element ranges). 75 parameters of both dtypes, in two groups with their own
// learning rate and weight decay: sizes from 1 element to 70,000 (so one tensor spans 274 blocks
// of a launch), one empty, 7 never given a gradient; the 67 updated go in tables of 32 + 12
// (float32) and 23 (float64). Every parameter and every state tensor must equal the CPU's after 3 steps.
TEST_CASE("cuda ops: an optimizer step over 75 parameters of both dtypes, a few launches, equals the CPU's", "[cuda]") {
  SKIP_WITHOUT_GPU();
  struct Params {
    std::vector<Tensor> all;
    std::unique_ptr<nn::Optimizer> opt;
  };
  auto make = [](const OptCase& c, Device dev) {
    Params ps;
    std::vector<nn::ParamGroup> groups = {nn::ParamGroup{{}, 0.1, c.weight_decay, -1, "a"},
                                          nn::ParamGroup{{}, 0.02, 2 * c.weight_decay, -1, "b"}};
    for (int i = 0; i < 75; ++i) {
      const int64_t n = i == 40 ? 70000 : i == 41 ? 0 : 1 + (i * 37) % 300;
      const DType dt = i % 3 == 0 ? DType::F64 : DType::F32;
      Tensor p = randn({n}, 400 + i, dt).to(dev).requires_grad_();
      ps.all.push_back(p);
      groups[i % 2].params.emplace_back("p" + std::to_string(i), p);
    }
    ps.opt = c.make(groups);
    return ps;
  };
  for (const OptCase& c : optimizer_table())
    DYNAMIC_SECTION(c.name) {
      Params on_cpu = make(c, kCpu), on_gpu = make(c, kCuda);
      for (int step = 0; step < 3; ++step) {
        for (size_t i = 0; i < on_cpu.all.size(); ++i) {
          if (i % 10 == 7) continue;  // never a gradient: skipped, no state
          Tensor g = randn(on_cpu.all[i].shape(), 900 + 100 * step + i, on_cpu.all[i].dtype());
          on_cpu.all[i].set_grad(g.clone());
          on_gpu.all[i].set_grad(g.to(kCuda));
        }
        on_cpu.opt->step();
        on_gpu.opt->step();
      }
      for (size_t i = 0; i < on_cpu.all.size(); ++i) {
        const bool f32 = on_cpu.all[i].dtype() == DType::F32;
        require_same(on_gpu.all[i].detach(), on_cpu.all[i].detach(), f32 ? 1e-5 : 1e-12, f32 ? 1e-6 : 1e-13,
                     "parameter p" + std::to_string(i));
      }
      nn::NamedTensors sc = on_cpu.opt->state_dict(), sd = on_gpu.opt->state_dict();
      REQUIRE(sd.size() == sc.size());
      for (size_t i = 0; i < sc.size(); ++i) {
        REQUIRE(sd[i].first == sc[i].first);
        const bool f32 = sc[i].second.dtype() == DType::F32;
        require_same(sd[i].second, sc[i].second, f32 ? 1e-5 : 1e-12, f32 ? 1e-6 : 1e-13, "state " + sc[i].first);
      }
    }
}

// Labels on the GPU are checked by the loss kernel, not copied back to the host: a label out of
// range is reported at the host's next wait for the GPU (tensor/cuda/launch.h, KernelError), in
// an eager step and in a CUDA graph's replay alike, the first one found standing until then.
TEST_CASE("cuda ops: cross_entropy reports a GPU label out of range at the next wait, replays included", "[cuda]") {
  SKIP_WITHOUT_GPU();
  Generator g(3);
  Tensor logits = Tensor::randn({4, 5}, g).to(kCuda);
  auto labels = [](std::vector<int64_t> v) { return Tensor::from_vector(v, {(int64_t)v.size()}).to(kCuda); };
  Tensor good = cross_entropy(logits, labels({0, 1, 2, 3}));
  const double want = good.item<double>();
  REQUIRE(cross_entropy(logits.to(kCpu), labels({0, 1, 2, 3}).to(kCpu)).item<double>() == Approx(want));

  // Eager: queued without a wait; the first finding (label 7 at index 2) is what the wait reports.
  Tensor bad = cross_entropy(logits, labels({0, 1, 7, -1}));
  Tensor worse = cross_entropy(logits, labels({-3, 1, 2, 3}));
  REQUIRE_THROWS_WITH(bad.item<double>(), Catch::Contains("cross_entropy: label 7 (at index 2) is out of range "
                                                          "[0, K = 5)") &&
                                              Catch::Contains("found on the GPU"));
  REQUIRE(std::isnan(bad.item<double>()));  // reported once; the loss itself is NaN
  REQUIRE(std::isnan(worse.item<double>()));
  REQUIRE(cross_entropy(logits, labels({0, 1, 2, 3})).item<double>() == want);  // nothing left to report
  cross_entropy(logits, labels({0, 5, 2, 3}));
  REQUIRE_THROWS_WITH(cuda::synchronize(), Catch::Contains("label 5 (at index 1)"));

  // A CUDA graph: captured with good labels, replayed with bad ones copied into its input.
  Tensor y = labels({0, 1, 2, 3}), loss;
  cuda::Graph graph;
  graph.capture([&] { loss = cross_entropy(logits, y); });
  graph.replay();
  REQUIRE(loss.item<double>() == want);
  y.copy_(labels({0, 1, 2, 9}));
  graph.replay();
  REQUIRE_THROWS_WITH(loss.item<double>(), Catch::Contains("label 9 (at index 3)"));
  y.copy_(labels({0, 1, 2, 3}));
  graph.replay();
  REQUIRE(loss.item<double>() == want);
}

// The collaborative teacher choice on the GPU (kernel::collab_teachers: one block chooses and
// counts, a second kernel gathers the rows): the CPU's choices, counts and rows exactly, for 1 to
// 16 teachers, on 700 samples (more than the block has threads) with ties and NaN.
TEST_CASE("cuda ops: collab_teachers gives the CPU's choices, votes and rows", "[cuda]") {
  SKIP_WITHOUT_GPU();
  Generator g(11);
  const int64_t N = 700, K = 5;
  for (DType dt : kFloatTypes)
    for (int J : {1, 3, 16}) {
      INFO(dtype_name(dt) << ", " << J << " teachers");
      std::vector<Tensor> probs, logits, probs_gpu, logits_gpu;
      for (int j = 0; j < J; ++j) {
        std::vector<double> p(N * K);
        for (double& v : p) v = g.below(4) / 4.0;  // few values: many ties
        if (j == 0) p[3 * K + 1] = std::nan("");
        probs.push_back(Tensor::from_vector(p, {N, K}).to(dt));
        logits.push_back(Tensor::randn({N, K}, g).to(dt));
        probs_gpu.push_back(probs.back().to(kCuda));
        logits_gpu.push_back(logits.back().to(kCuda));
      }
      std::vector<int64_t> lab(N);
      for (int64_t& l : lab) l = (int64_t)g.below(K);
      lab[3] = 1;  // the NaN: teacher 0 is never chosen for sample 3
      Tensor labels = Tensor::from_vector(lab, {N});
      Tensor out = Tensor::full({N, K}, std::nan(""), dt), counts = Tensor::empty({J + 1}, DType::I64);
      Tensor out_gpu = Tensor::full({N, K}, std::nan(""), dt).to(kCuda);
      Tensor counts_gpu = Tensor::full({J + 1}, 9.0, DType::I64).to(kCuda);
      kernel::collab_teachers(probs, logits, labels, out, counts);
      kernel::collab_teachers(probs_gpu, logits_gpu, labels.to(kCuda), out_gpu, counts_gpu);
      const std::vector<int64_t> c = counts.to_vector<int64_t>();
      REQUIRE(counts_gpu.to_vector<int64_t>() == c);
      REQUIRE(c.back() == (J == 1 ? 4 : 0));  // with one teacher, sample 3 has no choice
      REQUIRE(std::accumulate(c.begin(), c.end() - 1, int64_t(0)) == N - (J == 1));
      // Every row as the CPU's; a row without a choice is left as it was (NaN) by both.
      const std::vector<double> want = out.to_vector<double>(), got = out_gpu.to(Device()).to_vector<double>();
      for (int64_t e = 0; e < N * K; ++e) {
        INFO("element " << e);
        REQUIRE(std::isnan(got[e]) == (J == 1 && e / K == 3));
        if (!std::isnan(want[e])) REQUIRE(got[e] == want[e]);
      }
    }
}

// The trainers' statistics on the GPU (kernel::add_step_stats: one block, rows shared out by
// thread): the CPU's sums exactly, on rows with ties and NaN and on 300 random rows (more rows
// than the block has threads).
TEST_CASE("cuda ops: add_step_stats gives the CPU's loss sum and top-1 hits", "[cuda]") {
  SKIP_WITHOUT_GPU();
  const float nan = std::nanf("");
  std::vector<float> v{0, 1, 5, 2, 0, 4, 4, 1, 0, 3, 3, 1, 0, 1, 2, nan, nan, 9, 1, 1, nan, nan, nan, nan};
  std::vector<int64_t> lab{2, 2, 1, 3, 1, 0};
  Generator g(5);
  for (int i = 0; i < 300; ++i) {
    for (int k = 0; k < 4; ++k) v.push_back((float)g.below(3));  // many ties
    lab.push_back((int64_t)g.below(4));
  }
  const int64_t N = (int64_t)lab.size();
  for (DType dt : kFloatTypes) {
    INFO(dtype_name(dt));
    Tensor logits = Tensor::from_vector(v, {N, 4}).to(dt), labels = Tensor::from_vector(lab, {N});
    Tensor loss = Tensor::full({}, 0.75, dt);
    Tensor on_cpu = Tensor::from_vector(std::vector<double>{3, 7}, {2}), on_gpu = on_cpu.to(kCuda);
    kernel::add_step_stats(logits, labels, loss, on_cpu);
    kernel::add_step_stats(logits.to(kCuda), labels.to(kCuda), loss.to(kCuda), on_gpu);
    kernel::add_step_stats(logits.to(kCuda), labels.to(kCuda), loss.to(kCuda), on_gpu);  // adds again
    kernel::add_step_stats(logits, labels, loss, on_cpu);
    REQUIRE(on_gpu.to_vector<double>() == on_cpu.to_vector<double>());
    REQUIRE(on_cpu.to_vector<double>()[0] == 3 + 2 * 0.75 * N);
  }
}
