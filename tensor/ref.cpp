// ref.cpp - the scalar reference implementations declared in ref.h (the spec).
//
// Every function reads its inputs into row-major double vectors, loops, and converts the result
// back to the dtype of its first input. Index helpers spell out the row-major layout.
#include "tensor/ref.h"

#include <cmath>
#include <limits>
#include <vector>

namespace anybit::ref {

namespace {

using Vec = std::vector<double>;

Vec vec(const Tensor& t) { return t.defined() ? t.to_vector<double>() : Vec(); }
Tensor out(const Vec& v, const Shape& s, DType dt) { return Tensor::from_vector<double>(v, s).to(dt); }

// Row-major index of (a, b, c, d) in a (A, B, C, D) tensor.
inline int64_t at4(int64_t a, int64_t b, int64_t c, int64_t d, int64_t B, int64_t C, int64_t D) {
  return ((a * B + b) * C + c) * D + d;
}

}  // namespace

// ---- matmul and linear ------------------------------------------------------------------------

Tensor matmul(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Vec A = vec(a), B = vec(b), Y(M * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += A[i * K + k] * B[k * N + j];
      Y[i * N + j] = acc;
    }
  return out(Y, {M, N}, a.dtype());
}

void matmul_backward(const Tensor& a, const Tensor& b, const Tensor& dy, Tensor& da, Tensor& db) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Vec A = vec(a), B = vec(b), G = vec(dy), dA(M * K, 0.0), dB(K * N, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < K; ++k) {
        dA[i * K + k] += G[i * N + j] * B[k * N + j];  // dA = dY B^T
        dB[k * N + j] += A[i * K + k] * G[i * N + j];  // dB = A^T dY
      }
  da = out(dA, {M, K}, a.dtype());
  db = out(dB, {K, N}, a.dtype());
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t N = x.size(0), I = x.size(1), O = w.size(0);
  Vec X = vec(x), W = vec(w), Bv = vec(b), Y(N * O, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double acc = b.defined() ? Bv[o] : 0.0;
      for (int64_t i = 0; i < I; ++i) acc += X[n * I + i] * W[o * I + i];
      Y[n * O + o] = acc;
    }
  return out(Y, {N, O}, x.dtype());
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, Tensor& dx,
                     Tensor& dw, Tensor& db) {
  const int64_t N = x.size(0), I = x.size(1), O = w.size(0);
  Vec X = vec(x), W = vec(w), G = vec(dy), dX(N * I, 0.0), dW(O * I, 0.0), dB(O, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double g = G[n * O + o];
      dB[o] += g;
      for (int64_t i = 0; i < I; ++i) {
        dX[n * I + i] += g * W[o * I + i];
        dW[o * I + i] += g * X[n * I + i];
      }
    }
  dx = out(dX, {N, I}, x.dtype());
  dw = out(dW, {O, I}, x.dtype());
  db = b.defined() ? out(dB, {O}, x.dtype()) : Tensor();
}

// ---- conv2d -----------------------------------------------------------------------------------

namespace {
struct ConvDims {
  int64_t N, C, H, W, O, Cg, Og, KH, KW, OH, OW;
};
ConvDims conv_dims(const Tensor& x, const Tensor& w, const Conv2dOptions& o) {
  ConvDims d;
  d.N = x.size(0), d.C = x.size(1), d.H = x.size(2), d.W = x.size(3);
  d.O = w.size(0), d.Cg = w.size(1), d.KH = w.size(2), d.KW = w.size(3);
  d.Og = d.O / o.groups;
  d.OH = (d.H + 2 * o.pad_h - o.dil_h * (d.KH - 1) - 1) / o.stride_h + 1;
  d.OW = (d.W + 2 * o.pad_w - o.dil_w * (d.KW - 1) - 1) / o.stride_w + 1;
  return d;
}
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& opt) {
  ConvDims d = conv_dims(x, w, opt);
  Vec X = vec(x), Wt = vec(w), Bv = vec(b), Y(d.N * d.O * d.OH * d.OW, 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t o = 0; o < d.O; ++o) {
      const int64_t g = o / d.Og;
      for (int64_t oh = 0; oh < d.OH; ++oh)
        for (int64_t ow = 0; ow < d.OW; ++ow) {
          double acc = b.defined() ? Bv[o] : 0.0;
          for (int64_t cg = 0; cg < d.Cg; ++cg)
            for (int64_t kh = 0; kh < d.KH; ++kh)
              for (int64_t kw = 0; kw < d.KW; ++kw) {
                int64_t ih = oh * opt.stride_h - opt.pad_h + kh * opt.dil_h;
                int64_t iw = ow * opt.stride_w - opt.pad_w + kw * opt.dil_w;
                if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
                acc += X[at4(n, g * d.Cg + cg, ih, iw, d.C, d.H, d.W)] *
                       Wt[at4(o, cg, kh, kw, d.Cg, d.KH, d.KW)];
              }
          Y[at4(n, o, oh, ow, d.O, d.OH, d.OW)] = acc;
        }
    }
  return out(Y, {d.N, d.O, d.OH, d.OW}, x.dtype());
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy,
                     const Conv2dOptions& opt, Tensor& dx, Tensor& dw, Tensor& db) {
  ConvDims d = conv_dims(x, w, opt);
  Vec X = vec(x), Wt = vec(w), G = vec(dy);
  Vec dX(X.size(), 0.0), dW(Wt.size(), 0.0), dB(d.O, 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t o = 0; o < d.O; ++o) {
      const int64_t g = o / d.Og;
      for (int64_t oh = 0; oh < d.OH; ++oh)
        for (int64_t ow = 0; ow < d.OW; ++ow) {
          const double gy = G[at4(n, o, oh, ow, d.O, d.OH, d.OW)];
          dB[o] += gy;
          for (int64_t cg = 0; cg < d.Cg; ++cg)
            for (int64_t kh = 0; kh < d.KH; ++kh)
              for (int64_t kw = 0; kw < d.KW; ++kw) {
                int64_t ih = oh * opt.stride_h - opt.pad_h + kh * opt.dil_h;
                int64_t iw = ow * opt.stride_w - opt.pad_w + kw * opt.dil_w;
                if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) continue;
                int64_t xi = at4(n, g * d.Cg + cg, ih, iw, d.C, d.H, d.W);
                int64_t wi = at4(o, cg, kh, kw, d.Cg, d.KH, d.KW);
                dX[xi] += gy * Wt[wi];  // dx = sum over the outputs it fed of dy * w
                dW[wi] += gy * X[xi];   // dw = sum over the outputs it fed of dy * x
              }
        }
    }
  dx = out(dX, x.shape(), x.dtype());
  dw = out(dW, w.shape(), x.dtype());
  db = b.defined() ? out(dB, {d.O}, x.dtype()) : Tensor();
}

// ---- pooling ----------------------------------------------------------------------------------

namespace {
int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p) { return (in + 2 * p - k) / s + 1; }

// Calls f(input index or -1 for padding, output index) for every window element.
template <typename F>
void for_each_window(const Shape& xs, int64_t k, int64_t s, int64_t p, F f) {
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  const int64_t OH = pool_out(H, k, s, p), OW = pool_out(W, k, s, p);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t kh = 0; kh < k; ++kh)
            for (int64_t kw = 0; kw < k; ++kw) {
              int64_t ih = oh * s - p + kh, iw = ow * s - p + kw;
              bool in = ih >= 0 && ih < H && iw >= 0 && iw < W;
              f(in ? at4(n, c, ih, iw, C, H, W) : -1, at4(n, c, oh, ow, C, OH, OW));
            }
}
}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t k, int64_t s, int64_t p) {
  const Shape& xs = x.shape();
  Shape ys{xs[0], xs[1], pool_out(xs[2], k, s, p), pool_out(xs[3], k, s, p)};
  Vec X = vec(x), Y(shape_numel(ys), -std::numeric_limits<double>::infinity());
  for_each_window(xs, k, s, p, [&](int64_t xi, int64_t yi) {
    double v = xi < 0 ? -std::numeric_limits<double>::infinity() : X[xi];
    if (v > Y[yi]) Y[yi] = v;
  });
  return out(Y, ys, x.dtype());
}

Tensor max_pool2d_backward(const Tensor& x, const Tensor& dy, int64_t k, int64_t s, int64_t p) {
  const Shape& xs = x.shape();
  Vec X = vec(x), G = vec(dy), dX(X.size(), 0.0);
  Vec best(G.size(), -std::numeric_limits<double>::infinity());
  std::vector<int64_t> arg(G.size(), -1);
  for_each_window(xs, k, s, p, [&](int64_t xi, int64_t yi) {
    if (xi >= 0 && X[xi] > best[yi]) best[yi] = X[xi], arg[yi] = xi;  // first maximum wins
  });
  for (size_t yi = 0; yi < G.size(); ++yi)
    if (arg[yi] >= 0) dX[arg[yi]] += G[yi];
  return out(dX, xs, x.dtype());
}

Tensor avg_pool2d(const Tensor& x, int64_t k, int64_t s, int64_t p) {
  const Shape& xs = x.shape();
  Shape ys{xs[0], xs[1], pool_out(xs[2], k, s, p), pool_out(xs[3], k, s, p)};
  Vec X = vec(x), Y(shape_numel(ys), 0.0);
  for_each_window(xs, k, s, p, [&](int64_t xi, int64_t yi) {
    if (xi >= 0) Y[yi] += X[xi] / double(k * k);
  });
  return out(Y, ys, x.dtype());
}

Tensor avg_pool2d_backward(const Tensor& x, const Tensor& dy, int64_t k, int64_t s, int64_t p) {
  Vec G = vec(dy), dX(x.numel(), 0.0);
  for_each_window(x.shape(), k, s, p, [&](int64_t xi, int64_t yi) {
    if (xi >= 0) dX[xi] += G[yi] / double(k * k);
  });
  return out(dX, x.shape(), x.dtype());
}

Tensor global_avg_pool2d(const Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  Vec X = vec(x), Y(N * C, 0.0);
  for (int64_t i = 0; i < N * C; ++i) {
    for (int64_t j = 0; j < S; ++j) Y[i] += X[i * S + j];
    Y[i] /= double(S);
  }
  return out(Y, {N, C}, x.dtype());
}

Tensor global_avg_pool2d_backward(const Tensor& x, const Tensor& dy) {
  const int64_t NC = x.size(0) * x.size(1), S = x.size(2) * x.size(3);
  Vec G = vec(dy), dX(NC * S);
  for (int64_t i = 0; i < NC; ++i)
    for (int64_t j = 0; j < S; ++j) dX[i * S + j] = G[i] / double(S);
  return out(dX, x.shape(), x.dtype());
}

// ---- batch norm -------------------------------------------------------------------------------

namespace {
// x viewed as (N, C, S) with S = H * W (1 for 2-D input); element (n, c, s) at (n * C + c) * S + s.
struct BnDims {
  int64_t N, C, S;
};
BnDims bn_dims(const Tensor& x) {
  return {x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1};
}
// Per-channel mean and biased variance.
void bn_stats(const Vec& X, BnDims d, Vec& mean, Vec& var) {
  const double M = double(d.N * d.S);
  mean.assign(d.C, 0.0);
  var.assign(d.C, 0.0);
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t s = 0; s < d.S; ++s) mean[c] += X[(n * d.C + c) * d.S + s] / M;
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t s = 0; s < d.S; ++s) {
        double e = X[(n * d.C + c) * d.S + s] - mean[c];
        var[c] += e * e / M;
      }
}
}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& w, const Tensor& b, Tensor running_mean,
                  Tensor running_var, bool training, double momentum, double eps) {
  BnDims d = bn_dims(x);
  Vec X = vec(x), Wv = vec(w), Bv = vec(b), mean, var, Y(X.size());
  if (training) {
    bn_stats(X, d, mean, var);
    if (running_mean.defined()) {
      Vec rm = vec(running_mean), rv = vec(running_var);
      const double M = double(d.N * d.S);
      for (int64_t c = 0; c < d.C; ++c) {
        rm[c] = (1 - momentum) * rm[c] + momentum * mean[c];
        rv[c] = (1 - momentum) * rv[c] + momentum * var[c] * M / (M - 1);
      }
      running_mean.copy_(out(rm, {d.C}, running_mean.dtype()));
      running_var.copy_(out(rv, {d.C}, running_var.dtype()));
    }
  } else {
    mean = vec(running_mean);
    var = vec(running_var);
  }
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t s = 0; s < d.S; ++s) {
        int64_t i = (n * d.C + c) * d.S + s;
        double xhat = (X[i] - mean[c]) / std::sqrt(var[c] + eps);
        Y[i] = xhat * (w.defined() ? Wv[c] : 1.0) + (b.defined() ? Bv[c] : 0.0);
      }
  return out(Y, x.shape(), x.dtype());
}

void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& running_mean,
                         const Tensor& running_var, bool training, double eps, const Tensor& dy,
                         Tensor& dx, Tensor& dw, Tensor& db) {
  BnDims d = bn_dims(x);
  const double M = double(d.N * d.S);
  Vec X = vec(x), Wv = vec(w), G = vec(dy), mean, var;
  if (training) {
    bn_stats(X, d, mean, var);
  } else {
    mean = vec(running_mean);
    var = vec(running_var);
  }
  Vec sum_g(d.C, 0.0), sum_gx(d.C, 0.0), dX(X.size());
  auto xhat = [&](int64_t i, int64_t c) { return (X[i] - mean[c]) / std::sqrt(var[c] + eps); };
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t s = 0; s < d.S; ++s) {
        int64_t i = (n * d.C + c) * d.S + s;
        sum_g[c] += G[i];
        sum_gx[c] += G[i] * xhat(i, c);
      }
  for (int64_t n = 0; n < d.N; ++n)
    for (int64_t c = 0; c < d.C; ++c)
      for (int64_t s = 0; s < d.S; ++s) {
        int64_t i = (n * d.C + c) * d.S + s;
        double scale = (w.defined() ? Wv[c] : 1.0) / std::sqrt(var[c] + eps);
        dX[i] = training ? scale / M * (M * G[i] - sum_g[c] - xhat(i, c) * sum_gx[c]) : scale * G[i];
      }
  dx = out(dX, x.shape(), x.dtype());
  dw = w.defined() ? out(sum_gx, {d.C}, x.dtype()) : Tensor();
  db = b.defined() ? out(sum_g, {d.C}, x.dtype()) : Tensor();
}

}  // namespace anybit::ref
