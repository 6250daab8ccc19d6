// formulas.h - the scalar formulas that the CPU loops and the CUDA kernels share, each written once.
//
// Every function here is AB_HD: compiled for the host by g++ (tensor/cpu/*.cpp, quant/, nn/) and,
// inside a .cu file, for the device too (tensor/cuda/*.cu). A CPU loop and a CUDA kernel that
// apply the same formula therefore cannot drift apart; what differs between them is only how the
// elements are shared out (OpenMP threads and SIMD lanes, or CUDA threads) and the order of sums.
//
// The math functions go through the m_* wrappers: std:: on the host (the CPU's results are
// unchanged by this header), CUDA's own overloads on the device.
// Read next: tensor/cpu/elementwise.cpp and tensor/cuda/elementwise.cu, which apply them.
#pragma once
#include <cmath>
#include <cstdint>

#include "tensor/conv_shape.h"
#include "tensor/elementwise.h"
#include "tensor/fast_div.h"

#ifdef __CUDACC__
#define AB_HD __host__ __device__
#else
#define AB_HD
#endif

namespace anybit::formula {

// ---- math: std:: on the host, CUDA's functions on the device --------------------------------------
#ifdef __CUDA_ARCH__
#define AB_MATH1(name, f32, f64)                         \
  __device__ inline float name(float x) { return f32(x); } \
  __device__ inline double name(double x) { return f64(x); }
AB_MATH1(m_exp, expf, ::exp)
AB_MATH1(m_log, logf, ::log)
AB_MATH1(m_sqrt, sqrtf, ::sqrt)
AB_MATH1(m_tanh, tanhf, ::tanh)
AB_MATH1(m_abs, fabsf, ::fabs)
AB_MATH1(m_floor, floorf, ::floor)
AB_MATH1(m_round, rintf, ::rint)  // ties to even, as std::nearbyint in the default rounding mode
#undef AB_MATH1
__device__ inline float m_pow(float x, float y) { return powf(x, y); }
__device__ inline double m_pow(double x, double y) { return ::pow(x, y); }
#else
template <typename T> inline T m_exp(T x) { return std::exp(x); }
template <typename T> inline T m_log(T x) { return std::log(x); }
template <typename T> inline T m_sqrt(T x) { return std::sqrt(x); }
template <typename T> inline T m_tanh(T x) { return std::tanh(x); }
template <typename T> inline T m_abs(T x) { return std::abs(x); }
template <typename T> inline T m_floor(T x) { return std::floor(x); }
template <typename T> inline T m_round(T x) { return std::nearbyint(x); }
template <typename T> inline T m_pow(T x, T y) { return std::pow(x, y); }
#endif

// ---- argmax's order (top-1 accuracy) ---------------------------------------------------------------
// a ranks above b: a greater number, or a NaN above any number (torch.argmax returns a NaN). The
// first index that nothing ranks above is the row's prediction. (x != x: x is NaN.)
template <typename T>
AB_HD inline bool ranks_above(T a, T b) {
  return a > b || (a != a && b == b);
}

// The collaborative teacher of sample i (kernel::collab_teachers): of J teachers' probabilities
// probs[j] (N, K), the one that gives the label the highest probability, read in double. The scan
// runs from the last teacher (the lowest bit-width) to the first and moves only on a strictly
// higher probability, so a tie keeps the lower bit-width; NaN compares above nothing. -1 when
// every probability is NaN, or when the label is out of range (which the trainer's cross_entropy
// on the same labels reports first: on a GPU, at the wait that reads the votes).
template <typename T>
AB_HD inline int collab_choice(const T* const* probs, int J, int64_t i, int64_t K, int64_t label) {
  if (label < 0 || label >= K) return -1;
  int best = -1;
  double best_p = -1;
  for (int j = J - 1; j >= 0; --j) {
    const double p = (double)probs[j][i * K + label];
    if (p > best_p) best_p = p, best = j;
  }
  return best;
}

// ---- elementwise ops (tensor/elementwise.h) -------------------------------------------------------
template <typename T>
AB_HD inline T apply_unary(UnaryOp op, T x, T p0, T p1) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return m_exp(x);
    case UnaryOp::Log: return m_log(x);
    case UnaryOp::Sqrt: return m_sqrt(x);
    case UnaryOp::Pow: return m_pow(x, p0);
    case UnaryOp::Tanh: return m_tanh(x);
    case UnaryOp::Abs: return m_abs(x);
    case UnaryOp::Relu: return x > T(0) ? x : T(0);
    case UnaryOp::Relu6: return x < T(0) ? T(0) : (x > T(6) ? T(6) : x);
    case UnaryOp::Clamp: return x < p0 ? p0 : (x > p1 ? p1 : x);
    case UnaryOp::Round: return m_round(x);
    case UnaryOp::Floor: return m_floor(x);
    case UnaryOp::AddScalar: return x + p0;
    case UnaryOp::MulScalar: return x * p0;
    case UnaryOp::Sign: return T((x > T(0)) - (x < T(0)));
  }
  return x;
}

template <typename T>
AB_HD inline T apply_binary(BinaryOp op, T a, T b, T p0, T p1) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::ReluGrad: return b > T(0) ? a : T(0);
    case BinaryOp::Relu6Grad: return (b > T(0) && b < T(6)) ? a : T(0);
    case BinaryOp::ClampGrad: return (b >= p0 && b <= p1) ? a : T(0);
    case BinaryOp::TanhGrad: return a * (T(1) - b * b);
    case BinaryOp::PowGrad: return a * p0 * m_pow(b, p0 - T(1));
    case BinaryOp::GreaterEq: return a >= b ? T(1) : T(0);
    case BinaryOp::Less: return a < b ? T(1) : T(0);
  }
  return a;
}

// ---- batch norm (autograd/norm.cpp) ----------------------------------------------------------------
// y = x scale + shift, with the per-channel scale = w invstd and shift = b - mean scale. Both the
// forward's value and the backward's ReLU mask (y > 0, recomputed from x where the output itself is
// not kept) come from this one expression, so the two round, and contract to a fused multiply-add,
// alike.
template <typename T>
AB_HD inline T bn_value(T x, T scale, T shift) { return x * scale + shift; }

// The running statistics after a training batch whose mean and (biased) variance are mean and
// var, M values per channel: running = (1 - momentum) running + momentum batch, the variance made
// unbiased (var M / (M - 1)).
template <typename T>
AB_HD inline void bn_running_update(T& running_mean, T& running_var, T mean, T var, double momentum, double M) {
  running_mean = T((1 - momentum) * running_mean + momentum * mean);
  running_var = T((1 - momentum) * running_var + momentum * var * M / (M - 1));
}

// Evaluation mode's per-channel coefficients, from the running variance and mean (var, mean) and
// the affine parameters (w, b; 1 and 0 without them): invstd = 1 / sqrt(var + eps) in double, then
// y = x scale + shift with scale = w invstd and shift = b - mean scale, in T.
template <typename T>
AB_HD inline void bn_eval_coefficients(T var, double eps, T w, T b, T mean, T& invstd, T& scale, T& shift) {
  invstd = T(1.0 / m_sqrt((double)var + eps));
  scale = w * invstd;
  shift = b - mean * scale;
}

// ---- PACT (quant/quantizers.h) ----------------------------------------------------------------------
// y = round(clip(x, lo, a) * levels / a) * a / levels; levels = 0 means no rounding (32 bits).
// scale = levels / a and inv = a / levels are computed once by the caller.
// The rounding steps per a at b bits: 2^b - 1 unsigned, 2^(b-1) - 1 signed, 0 at 32 (no rounding).
AB_HD inline double pact_levels(int bits, bool is_signed) {
  if (bits == 32) return 0.0;
  return is_signed ? double((int64_t(1) << (bits - 1)) - 1) : double((int64_t(1) << bits) - 1);
}
template <typename T>
AB_HD inline T pact_value(T x, T lo, T a, T levels, T scale, T inv) {
  T v = x < lo ? lo : (x > a ? a : x);
  return levels == T(0) ? v : m_round(v * scale) * inv;
}
// dx = g inside [lo, a]; the clip's share: g where x >= a, and (signed, lo = -a) -g where x <= lo.
template <typename T>
AB_HD inline T pact_grad_x(T x, T g, T lo, T a) { return (x >= lo && x <= a) ? g : T(0); }
template <typename T>
AB_HD inline T pact_grad_a(T x, T g, T lo, T a, bool is_signed) {
  return x >= a ? g : ((is_signed && x <= lo) ? -g : T(0));
}

// ---- DoReFa weights, round store (quant/quantizers.h) --------------------------------------------
// t = tanh(w), m2 = 2 max|t|, n = 2^b - 1, inv_n = 1 / n:  w_q = 2 round(n (t / m2 + 1/2)) / n - 1,
// one rounding per step in the order of the composed ops (t / m2, + 1/2, * n, round, * inv_n, * 2,
// - 1), so the fused op's values are bit for bit those of the composition.
template <typename T>
AB_HD inline T dorefa_value(T t, T m2, T n, T inv_n) {
  T u = t / m2 + T(0.5);
  return m_round(u * n) * inv_n * T(2) + T(-1);
}
// Straight through round, the gradient reaching t is dt = g / m (m = max|t|), plus at the arg-max
// of |t| its share of dm = -sum_i g_i t_i / m^2 times sign(t); dw = dt (1 - t^2) through tanh.
template <typename T>
AB_HD inline T dorefa_grad_w(T t, T dt) { return dt * (T(1) - t * t); }
template <typename T>
AB_HD inline T dorefa_grad_t_argmax(T t, T g, T m, T dm) { return g / m + (t > T(0) ? dm : -dm); }

// ---- LSQ (quant/lsq.h) ------------------------------------------------------------------------------
// y = round(clip(v / s, -Qn, Qp)) s
template <typename T>
AB_HD inline T lsq_value(T v, T s, T qn, T qp) {
  T q = v / s;
  q = q < -qn ? -qn : (q > qp ? qp : q);
  return m_round(q) * s;
}
// dv = g strictly inside (-Qn, Qp); the step's (unscaled) share: g times -Qn, Qp or round(q) - q.
template <typename T>
AB_HD inline T lsq_grad_v(T v, T g, T s, T qn, T qp) {
  T q = v / s;
  return (q <= -qn || q >= qp) ? T(0) : g;
}
template <typename T>
AB_HD inline T lsq_grad_s(T v, T g, T s, T qn, T qp) {
  T q = v / s;
  return g * (q <= -qn ? -qn : (q >= qp ? qp : m_round(q) - q));
}

// ---- optimizer updates (nn/optim.h) ------------------------------------------------------------------
// SGD, element i: d = g + wd p; with momentum buf = d (first step) or momentum buf + d, and the
// step uses buf, or d + momentum buf (Nesterov). Without momentum (buf == nullptr) the step is d.
template <typename T>
AB_HD inline void sgd_update(T& p, T g, T* buf, T lr, T wd, T momentum, bool nesterov, bool first) {
  T d = g + wd * p;
  if (!buf) {
    p -= lr * d;
    return;
  }
  T b = first ? d : momentum * *buf + d;
  *buf = b;
  p -= lr * (nesterov ? d + momentum * b : b);
}

// Adam: decay = 1, wd_grad = wd. AdamW: decay = 1 - lr wd, wd_grad = 0.
template <typename T>
AB_HD inline void adam_update(T& p, T g, T& m, T& v, T decay, T wd_grad, T b1, T b2, T eps, T step_size,
                              T bc2_sqrt) {
  T gi = g + wd_grad * p;
  T mi = b1 * m + (T(1) - b1) * gi;
  T vi = b2 * v + (T(1) - b2) * gi * gi;
  m = mi;
  v = vi;
  p = p * decay - step_size * mi / (m_sqrt(vi) / bc2_sqrt + eps);
}

// ---- temporal shift (autograd/temporal.cpp) -------------------------------------------------------
// The frame that frame t of a clip reads channel c from: t + dir for c < fold, t - dir for the
// next fold, t otherwise (dir = +1 forward, -1 backward); outside [0, frames) means zero.
AB_HD inline int64_t shift_source(int64_t t, int64_t c, int64_t fold, int dir) {
  return c < fold ? t + dir : (c < 2 * fold ? t - dir : t);
}

// ---- the CUDA kernels' index arithmetic -----------------------------------------------------------
// One output element (or one row, or im2col's KH KW entries of one pixel) per CUDA thread. The CPU
// has its own, faster loops for these ops, so these functions are checked on the host against the
// scalar references (tests/test_formulas.cpp), which runs with or without a GPU.

// A convolution's divisors for the launches over a chunk of nb images (tensor/fast_div.h): made
// once per launch by the host, they split a thread's index into its parts without dividing.
struct ConvIndex {
  DivMod cols, P, OW;  // im2col: thread t = c cols + j, column j = n P + oh OW + ow (cols = nb P)
  DivMod W, H, C;      // col2im: thread i = ((n C + c) H + h) W + w
  DivMod stride_h, stride_w;
  ConvIndex(const ConvShape& s, int64_t nb) {
    auto d = [](int64_t v, int64_t limit) { return DivMod(std::max<int64_t>(v, 1), limit); };  // v = 0: no threads
    const int64_t P_ = s.OH * s.OW, im2col_threads = s.C * nb * P_, col2im_threads = nb * s.C * s.H * s.W;
    cols = d(nb * P_, im2col_threads), P = d(P_, im2col_threads), OW = d(s.OW, im2col_threads);
    W = d(s.W, col2im_threads), H = d(s.H, col2im_threads), C = d(s.C, col2im_threads);
    const int64_t reach = s.H + s.W + s.opt.pad_h + s.opt.pad_w;  // above what col2im divides by the strides
    stride_h = d(s.opt.stride_h, reach), stride_w = d(s.opt.stride_w, reach);
  }
};

// The layouts around a convolution's GEMM: element i = (n O + o) P + p of y (nb, O, P) is element
// (o nb + n) P + p of t (O, nb P).
struct NopIndex {
  Split3 at;  // i -> (n, o, p)
  int64_t nb = 1, P = 1;
  NopIndex(int64_t O, int64_t P_, int64_t nb_) : at(O, P_, nb_ * O * P_), nb(nb_), P(P_) {}
  AB_HD int64_t op_offset(int64_t i, int64_t& o) const {  // and o, the channel
    int64_t n, p;
    at(i, n, o, p);
    return (o * nb + n) * P + p;
  }
};

// im2col of nb images (x pointing at the first): col (C KH KW, cols = nb P), row (c KH + kh) KW +
// kw, column j = n P + oh OW + ow; zero where the tap is padding. Thread t = c cols + j writes the
// KH KW entries of input channel c in column j: its index is split once for all of them, threads
// side by side write side by side (coalesced) and read neighbouring pixels of x.
template <typename T>
AB_HD inline void im2col_entries(const T* x, const ConvShape& s, const ConvIndex& ix, int64_t t, T* col) {
  const int64_t c = ix.cols.div(t), j = t - c * ix.cols.d;
  const int64_t n = ix.P.div(j), p = j - n * ix.P.d;
  const int64_t oh = ix.OW.div(p), ow = p - oh * ix.OW.d;
  const T* xc = x + (n * s.C + c) * s.H * s.W;
  T* out = col + c * s.KH * s.KW * ix.cols.d + j;
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const int64_t h = oh * s.opt.stride_h - s.opt.pad_h + kh * s.opt.dil_h;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const int64_t w = ow * s.opt.stride_w - s.opt.pad_w + kw * s.opt.dil_w;
      out[(kh * s.KW + kw) * ix.cols.d] = (h < 0 || h >= s.H || w < 0 || w >= s.W) ? T(0) : xc[h * s.W + w];
    }
  }
}

// The gather that col2im and the depthwise input gradient share: f(kh, kw, oh, ow) for each tap
// (kh, kw), in tap order, and the output pixel (oh, ow) whose window puts that tap on input pixel
// (h, w), where there is one. stride_h, stride_w divide by the strides (ConvIndex's, DepthwiseIndex's).
template <typename F>
AB_HD inline void for_each_tap_on(const ConvShape& s, const DivMod& stride_h, const DivMod& stride_w, int64_t h,
                                  int64_t w, F f) {
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const int64_t th = h + s.opt.pad_h - kh * s.opt.dil_h;  // = oh stride_h for the output row that reads h
    if (th < 0) continue;
    const int64_t oh = stride_h.div(th);
    if (oh * s.opt.stride_h != th || oh >= s.OH) continue;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const int64_t tw = w + s.opt.pad_w - kw * s.opt.dil_w;
      if (tw < 0) continue;
      const int64_t ow = stride_w.div(tw);
      if (ow * s.opt.stride_w != tw || ow >= s.OW) continue;
      f(kh, kw, oh, ow);
    }
  }
}

// col2im as a gather: element i = ((n C + c) H + h) W + w of dx takes the sum of every entry of
// dcol (C KH KW, cols) that im2col read from it. Each thread writes one dx element: no atomics,
// and the sum's order is fixed (deterministic).
template <typename T>
AB_HD inline T col2im_value(const T* dcol, const ConvShape& s, const ConvIndex& ix, int64_t i) {
  const int64_t q1 = ix.W.div(i), w = i - q1 * ix.W.d;
  const int64_t q2 = ix.H.div(q1), h = q1 - q2 * ix.H.d;
  const int64_t n = ix.C.div(q2), c = q2 - n * ix.C.d;
  const int64_t P = s.OH * s.OW, cols = ix.cols.d;
  T acc = T(0);
  for_each_tap_on(s, ix.stride_h, ix.stride_w, h, w, [&](int64_t kh, int64_t kw, int64_t oh, int64_t ow) {
    acc += dcol[((c * s.KH + kh) * s.KW + kw) * cols + n * P + oh * s.OW + ow];
  });
  return acc;
}

// ---- depthwise convolution: one input channel per group (ConvShape::depthwise) ----------------------
// A grouped convolution's GEMMs are one per group, so a depthwise one (MobileNetV2's: a group per
// channel, up to 960) would be hundreds of tiny GEMMs. On CUDA it runs as three direct loops
// instead: a thread per element of y, a thread per element of dx, and a block per weight. Output
// channel o reads input channel o / M, M = O / C (the channel multiplier: 1 in MobileNetV2).
struct DepthwiseIndex {
  Split3 y;          // element of y (N, O, P) -> (n, o, p)
  Split3 x;          // element of x (N, C, H W) -> (n, c, h W + w)
  DivMod OW, W, M;   // p -> (oh, ow); h W + w -> (h, w); o -> c
  DivMod P;          // the weight gradient's j = n P + p -> (n, p)
  DivMod stride_h, stride_w;
  explicit DepthwiseIndex(const ConvShape& s) {
    auto d = [](int64_t v, int64_t limit) { return DivMod(std::max<int64_t>(v, 1), limit); };  // v = 0: no threads
    const int64_t P_ = s.OH * s.OW, ny = s.N * s.O * P_, nx = s.N * s.C * s.H * s.W;
    y = Split3(s.O, P_, ny), x = Split3(s.C, s.H * s.W, nx);
    OW = d(s.OW, P_), W = d(s.W, s.H * s.W), M = d(s.O / std::max<int64_t>(s.C, 1), s.O);
    P = d(P_, s.N * P_);
    const int64_t reach = s.H + s.W + s.opt.pad_h + s.opt.pad_w;  // as ConvIndex's
    stride_h = d(s.opt.stride_h, reach), stride_w = d(s.opt.stride_w, reach);
  }
};

// Element i = (n O + o) P + oh OW + ow of y, without the bias: the sum over the taps of o's
// weights times the input pixels they cover (none where the tap is padding), in tap order.
template <typename T>
AB_HD inline T depthwise_value(const T* x, const T* w, const ConvShape& s, const DepthwiseIndex& ix, int64_t i) {
  int64_t n, o, p;
  ix.y(i, n, o, p);
  const int64_t oh = ix.OW.div(p), ow = p - oh * ix.OW.d;
  const T* xc = x + (n * s.C + ix.M.div(o)) * s.H * s.W;
  const T* wo = w + o * s.KH * s.KW;
  T acc = T(0);
  for (int64_t kh = 0; kh < s.KH; ++kh) {
    const int64_t h = oh * s.opt.stride_h - s.opt.pad_h + kh * s.opt.dil_h;
    if (h < 0 || h >= s.H) continue;
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const int64_t v = ow * s.opt.stride_w - s.opt.pad_w + kw * s.opt.dil_w;
      if (v >= 0 && v < s.W) acc += wo[kh * s.KW + kw] * xc[h * s.W + v];
    }
  }
  return acc;
}

// Element i = (n C + c) H W + h W + w of dx: for each output channel o of c and each tap, the
// output pixel whose tap lands on (h, w), if there is one (for_each_tap_on, as col2im_value).
template <typename T>
AB_HD inline T depthwise_dx_value(const T* dy, const T* w, const ConvShape& s, const DepthwiseIndex& ix, int64_t i) {
  int64_t n, c, hw;
  ix.x(i, n, c, hw);
  const int64_t h = ix.W.div(hw), v = hw - h * ix.W.d;
  const int64_t M = ix.M.d, P = s.OH * s.OW;
  T acc = T(0);
  for (int64_t o = c * M; o < (c + 1) * M; ++o) {
    const T* dyo = dy + (n * s.O + o) * P;
    const T* wo = w + o * s.KH * s.KW;
    for_each_tap_on(s, ix.stride_h, ix.stride_w, h, v, [&](int64_t kh, int64_t kw, int64_t oh, int64_t ow) {
      acc += wo[kh * s.KW + kw] * dyo[oh * s.OW + ow];
    });
  }
  return acc;
}

// Term j = n P + oh OW + ow of weight (o, kh, kw)'s gradient, the sum over j < N P of
// dy[n, o, oh, ow] times the input pixel that tap read (0 where it read padding).
template <typename T>
AB_HD inline T depthwise_dw_term(const T* x, const T* dy, const ConvShape& s, const DepthwiseIndex& ix, int64_t o,
                                 int64_t kh, int64_t kw, int64_t j) {
  const int64_t n = ix.P.div(j), p = j - n * ix.P.d;
  const int64_t oh = ix.OW.div(p), ow = p - oh * ix.OW.d;
  const int64_t h = oh * s.opt.stride_h - s.opt.pad_h + kh * s.opt.dil_h;
  const int64_t v = ow * s.opt.stride_w - s.opt.pad_w + kw * s.opt.dil_w;
  if (h < 0 || h >= s.H || v < 0 || v >= s.W) return T(0);
  return dy[(n * s.O + o) * ix.P.d + p] * x[((n * s.C + ix.M.div(o)) * s.H + h) * s.W + v];
}

// Pooling over one (H, W) plane; the window of output (oh, ow) is rows oh s - p .. oh s - p + k - 1
// (columns likewise), clipped to the image.
struct PoolShape {
  int64_t H, W, OH, OW, k, s, p;
};
// The outputs whose window holds input row h: oh in [lo, hi] (hi < lo: none).
AB_HD inline void pool_windows_of(int64_t h, int64_t k, int64_t s, int64_t p, int64_t OH, int64_t& lo, int64_t& hi) {
  const int64_t first = h + p - k + 1;  // oh s - p + k - 1 >= h
  lo = first <= 0 ? 0 : (first + s - 1) / s;
  hi = (h + p) / s;  // oh s - p <= h
  if (hi > OH - 1) hi = OH - 1;
}

// max: the first maximum in (row, column) order; padding is neg_inf, and an all-padding window
// gives neg_inf with arg -1 (as tensor/cpu/pool.cpp).
template <typename T>
AB_HD inline T max_pool_value(const T* plane, const PoolShape& q, int64_t oh, int64_t ow, T neg_inf, int32_t& arg) {
  T best = neg_inf;
  arg = -1;
  const int64_t h0 = oh * q.s - q.p, w0 = ow * q.s - q.p;
  for (int64_t ih = h0 < 0 ? 0 : h0; ih < h0 + q.k && ih < q.H; ++ih)
    for (int64_t iw = w0 < 0 ? 0 : w0; iw < w0 + q.k && iw < q.W; ++iw)
      if (plane[ih * q.W + iw] > best) best = plane[ih * q.W + iw], arg = (int32_t)(ih * q.W + iw);
  return best;
}
// dx[h, w] = sum of dy over the windows whose arg-max is (h, w), in output order.
template <typename T>
AB_HD inline T max_pool_grad(const T* dy_plane, const int32_t* arg_plane, const PoolShape& q, int64_t h, int64_t w) {
  int64_t oh0, oh1, ow0, ow1;
  pool_windows_of(h, q.k, q.s, q.p, q.OH, oh0, oh1);
  pool_windows_of(w, q.k, q.s, q.p, q.OW, ow0, ow1);
  T acc = T(0);
  for (int64_t oh = oh0; oh <= oh1; ++oh)
    for (int64_t ow = ow0; ow <= ow1; ++ow)
      if (arg_plane[oh * q.OW + ow] == h * q.W + w) acc += dy_plane[oh * q.OW + ow];
  return acc;
}
// avg: the window's sum times scale = 1 / k^2 (padding counts as zeros).
template <typename T>
AB_HD inline T avg_pool_value(const T* plane, const PoolShape& q, int64_t oh, int64_t ow, T scale) {
  T acc = T(0);
  const int64_t h0 = oh * q.s - q.p, w0 = ow * q.s - q.p;
  for (int64_t ih = h0 < 0 ? 0 : h0; ih < h0 + q.k && ih < q.H; ++ih)
    for (int64_t iw = w0 < 0 ? 0 : w0; iw < w0 + q.k && iw < q.W; ++iw) acc += plane[ih * q.W + iw];
  return acc * scale;
}
template <typename T>
AB_HD inline T avg_pool_grad(const T* dy_plane, const PoolShape& q, int64_t h, int64_t w, T scale) {
  int64_t oh0, oh1, ow0, ow1;
  pool_windows_of(h, q.k, q.s, q.p, q.OH, oh0, oh1);
  pool_windows_of(w, q.k, q.s, q.p, q.OW, ow0, ow1);
  T acc = T(0);
  for (int64_t oh = oh0; oh <= oh1; ++oh)
    for (int64_t ow = ow0; ow <= ow1; ++ow) acc += dy_plane[oh * q.OW + ow] * scale;
  return acc;
}

// Softmax over one row of K values spaced `inner` apart (x viewed as (outer, K, inner)):
//   y = exp(x - max) / sum exp(x - max), or log_softmax: y = x - max - log(sum exp(x - max)).
template <typename T>
AB_HD inline void softmax_row(const T* x, T* y, int64_t K, int64_t inner, bool log) {
  T mx = x[0];
  for (int64_t k = 1; k < K; ++k) mx = x[k * inner] > mx ? x[k * inner] : mx;
  double sum = 0;
  for (int64_t k = 0; k < K; ++k) sum += (double)m_exp(x[k * inner] - mx);
  if (log) {
    const T lse = T(m_log(sum));
    for (int64_t k = 0; k < K; ++k) y[k * inner] = x[k * inner] - mx - lse;
  } else {
    const T inv = T(1.0 / sum);
    for (int64_t k = 0; k < K; ++k) y[k * inner] = m_exp(x[k * inner] - mx) * inv;
  }
}
//   softmax:      dx = y (dy - sum_k dy y);   log_softmax:  dx = dy - exp(y) sum_k dy
template <typename T>
AB_HD inline void softmax_row_backward(const T* y, const T* dy, T* dx, int64_t K, int64_t inner, bool log) {
  double dot = 0;
  for (int64_t k = 0; k < K; ++k) dot += log ? (double)dy[k * inner] : (double)dy[k * inner] * (double)y[k * inner];
  const T d = T(dot);
  for (int64_t k = 0; k < K; ++k)
    dx[k * inner] = log ? dy[k * inner] - m_exp(y[k * inner]) * d : y[k * inner] * (dy[k * inner] - d);
}

// Cross-entropy of one row of log-probabilities logp (K) with label c and smoothing eps:
//   -(1 - eps) logp[c] - (eps / K) sum_k logp[k]
// NaN for a label outside [0, K), which is never read (the GPU's kernels report it: KernelError).
template <typename T>
AB_HD inline double cross_entropy_row(const T* logp, int64_t K, int64_t c, double eps) {
  if (c < 0 || c >= K) return NAN;
  double all = 0;
  for (int64_t k = 0; k < K; ++k) all += (double)logp[k];
  return -(1 - eps) * (double)logp[c] - eps / (double)K * all;
}
// dlogits = scale (exp(logp) - target), target = (1 - eps) one_hot(c) + eps / K
template <typename T>
AB_HD inline void cross_entropy_row_backward(const T* logp, T* d, int64_t K, int64_t c, double eps, double scale) {
  for (int64_t k = 0; k < K; ++k) {
    const double target = (k == c ? 1 - eps : 0.0) + eps / (double)K;
    d[k] = T(scale * ((double)m_exp(logp[k]) - target));
  }
}

}  // namespace anybit::formula
