// norm.cpp - fused batch-norm kernels on the CPU, one channel per OpenMP iteration.
//
// x is viewed as (N, C, S), S = H*W (1 for 2-D input); channel c's elements are the N runs
// x[n, c, 0:S]. M = N*S values per channel (over every process in synchronised BN). Each run of S values is summed in T with `omp simd`
// (which lets the compiler use vector lanes, i.e. reorder the additions) and the runs' sums are
// added up in double.
//   forward (training): mean = sum x / M, var = sum (x - mean)^2 / M (biased), invstd = 1/sqrt(var+eps)
//   y = (x - mean) * invstd * w + b, or max(0, that) with `relu` (BN + ReLU in one pass), with
//   `residual` added before the ReLU (a ResNet block's BN, shortcut and ReLU in one pass)
//   backward (training), xhat = (x - mean) * invstd:
//     dx = (1/M) * w * invstd * (M*dy - sum dy - xhat * sum(dy*xhat))
//   backward (evaluation, fixed statistics): dx = dy * w * invstd
//   dw = sum dy*xhat, db = sum dy
//   with a ReLU after the BN, dy is first replaced by dy where y > 0 and 0 elsewhere (the
//   ReLU's backward), inside the same two passes
// The scalar spec is ref::batch_norm / ref::batch_norm_backward (tensor/ref.cpp).
#include <cmath>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/nn.h"
#include "tensor/formulas.h"

namespace anybit::cpu {

namespace {

struct BnView {
  int64_t N, C, S;
};
BnView bn_view(const Tensor& x) { return {x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1}; }

// The ReLU of a fused BN + ReLU: the relu op's formula (tensor/formulas.h), so the two agree bit for bit.
template <typename T>
T relu_of(T v) {
  return formula::apply_unary(UnaryOp::Relu, v, T(0), T(0));
}

// One run of S values of a channel: y = x * scale + shift, plus the residual r (the add op's
// formula: the BN's value, then + r, as when the two are separate ops), then the ReLU.
template <typename T>
void write_run(const T* x, const T* r, T* y, int64_t S, T scale, T shift, bool relu) {
  auto add = [](T a, T b) { return formula::apply_binary(BinaryOp::Add, a, b, T(0), T(0)); };
  if (r && relu)
    for (int64_t s = 0; s < S; ++s) y[s] = relu_of(add(x[s] * scale + shift, r[s]));
  else if (r)
    for (int64_t s = 0; s < S; ++s) y[s] = add(x[s] * scale + shift, r[s]);
  else if (relu)
    for (int64_t s = 0; s < S; ++s) y[s] = relu_of(x[s] * scale + shift);
  else
    for (int64_t s = 0; s < S; ++s) y[s] = x[s] * scale + shift;
}

// Three passes over the channels, each one OpenMP loop: the sums for the mean, the sums for the
// variance, then y. With `across` (synchronised BN) the per-channel sums of every process are added
// up between the passes, and M counts every process's values; the arithmetic is otherwise the same,
// so a batch split across processes gives the statistics of the whole batch but for the order of
// the double additions.
template <typename T>
void train_fwd(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y, Tensor& mean,
               Tensor& var, Tensor& invstd, const ChannelSum* across, const Tensor& residual) {
  const BnView v = bn_view(x);
  double M = double(v.N * v.S);
  if (across) (*across)(&M, 1);
  const T *X = x.data<T>(), *Wt = w.defined() ? w.data<T>() : nullptr, *B = b.defined() ? b.data<T>() : nullptr;
  const T* Res = residual.defined() ? residual.data<T>() : nullptr;
  T *Y = y.data<T>(), *Mean = mean.data<T>(), *Var = var.data<T>(), *Inv = invstd.data<T>();
  std::vector<double> sum(v.C), sq(v.C);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t c = 0; c < v.C; ++c) {
    double acc = 0;
    for (int64_t n = 0; n < v.N; ++n) {
      const T* xc = X + (n * v.C + c) * v.S;
      T run = 0;
#pragma omp simd reduction(+ : run)
      for (int64_t s = 0; s < v.S; ++s) run += xc[s];
      acc += run;
    }
    sum[c] = acc;
  }
  if (across) (*across)(sum.data(), v.C);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t c = 0; c < v.C; ++c) {
    const T mu_t = T(sum[c] / M);
    double acc = 0;
    for (int64_t n = 0; n < v.N; ++n) {
      const T* xc = X + (n * v.C + c) * v.S;
      T run = 0;
#pragma omp simd reduction(+ : run)
      for (int64_t s = 0; s < v.S; ++s) run += (xc[s] - mu_t) * (xc[s] - mu_t);
      acc += run;
    }
    sq[c] = acc;
  }
  if (across) (*across)(sq.data(), v.C);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t c = 0; c < v.C; ++c) {
    const double mu = sum[c] / M, var_c = sq[c] / M, inv = 1.0 / std::sqrt(var_c + eps);
    Mean[c] = T(mu), Var[c] = T(var_c), Inv[c] = T(inv);
    // y = x * scale + shift, scale = w * invstd, shift = b - mean * scale
    const T scale = T((Wt ? Wt[c] : 1.0) * inv), shift = T((B ? B[c] : 0.0) - mu * (Wt ? Wt[c] : 1.0) * inv);
    for (int64_t n = 0; n < v.N; ++n) {
      const int64_t at = (n * v.C + c) * v.S;
      write_run(X + at, Res ? Res + at : nullptr, Y + at, v.S, scale, shift, relu);
    }
  }
}

template <typename T>
void apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& invstd, bool relu,
           Tensor& y, const Tensor& residual) {
  const BnView v = bn_view(x);
  const T *X = x.data<T>(), *Wt = w.defined() ? w.data<T>() : nullptr, *B = b.defined() ? b.data<T>() : nullptr;
  const T *Mean = mean.data<T>(), *Inv = invstd.data<T>();
  const T* Res = residual.defined() ? residual.data<T>() : nullptr;
  T* Y = y.data<T>();
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t nc = 0; nc < v.N * v.C; ++nc) {
    const int64_t c = nc % v.C;
    const T scale = (Wt ? Wt[c] : T(1)) * Inv[c], shift = (B ? B[c] : T(0)) - Mean[c] * scale;
    write_run(X + nc * v.S, Res ? Res + nc * v.S : nullptr, Y + nc * v.S, v.S, scale, shift, relu);
  }
}

// Two passes: the sums (dw and db are this process's), then dx; with `across` the sums of every
// process are added up between them (see train_fwd). R (relu_out given): dy counts only where the
// forward's output is positive; with dy_relu that masked dy is written in the first pass and
// read back in the second.
template <typename T, bool R>
void bwd(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd, bool training,
         const Tensor& relu_out, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db, const ChannelSum* across,
         Tensor* dy_relu) {
  const BnView v = bn_view(x);
  double M = double(v.N * v.S);
  if (across) (*across)(&M, 1);
  const T *X = x.data<T>(), *Wt = w.defined() ? w.data<T>() : nullptr, *G = dy.data<T>();
  const T* Out = R ? relu_out.data<T>() : nullptr;
  const T *Mean = mean.data<T>(), *Inv = invstd.data<T>();
  T *dX = dx.data<T>(), *dW = dw ? dw->data<T>() : nullptr, *dB = db ? db->data<T>() : nullptr;
  T* GR = R && dy_relu ? dy_relu->data<T>() : nullptr;
  // dy at i, through the ReLU when there is one
  auto grad = [&](const T* gc, const T* oc, int64_t s) { return R ? (oc[s] > T(0) ? gc[s] : T(0)) : gc[s]; };
  std::vector<double> sums(2 * v.C);  // sum dy for every channel, then sum dy * xhat
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t c = 0; c < v.C; ++c) {
    const double inv = Inv[c];
    const T mu_t = Mean[c];
    double sum_g = 0, sum_gx = 0;  // sum dy, sum dy * (x - mean)
    for (int64_t n = 0; n < v.N; ++n) {
      const int64_t at = (n * v.C + c) * v.S;
      const T *xc = X + at, *gc = G + at, *oc = R ? Out + at : nullptr;
      T run_g = 0, run_gx = 0;
      if (GR) {
        T* gr = GR + at;
#pragma omp simd reduction(+ : run_g, run_gx)
        for (int64_t s = 0; s < v.S; ++s) {
          const T g = grad(gc, oc, s);
          gr[s] = g;
          run_g += g;
          run_gx += g * (xc[s] - mu_t);
        }
      } else {
#pragma omp simd reduction(+ : run_g, run_gx)
        for (int64_t s = 0; s < v.S; ++s) {
          const T g = grad(gc, oc, s);
          run_g += g;
          run_gx += g * (xc[s] - mu_t);
        }
      }
      sum_g += run_g;
      sum_gx += run_gx;
    }
    sums[c] = sum_g;
    sums[v.C + c] = sum_gx * inv;  // sum dy * xhat
    if (dW) dW[c] = T(sums[v.C + c]);
    if (dB) dB[c] = T(sum_g);
  }
  if (across && training) (*across)(sums.data(), 2 * v.C);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t c = 0; c < v.C; ++c) {
    const double inv = Inv[c], wc = Wt ? Wt[c] : 1.0, sum_g = sums[c], sum_gxhat = sums[v.C + c];
    const T mu_t = Mean[c];
    // The training formula expanded: dx = a dy + k (x - mean) + d with a = w invstd,
    // k = -a invstd sum(dy xhat) / M (xhat = (x - mean) invstd) and d = -a sum(dy) / M.
    const T a = T(wc * inv);
    const T k = training ? T(-wc * inv * inv * sum_gxhat / M) : T(0);
    const T d = training ? T(-wc * inv * sum_g / M) : T(0);
    for (int64_t n = 0; n < v.N; ++n) {
      const int64_t at = (n * v.C + c) * v.S;
      const T *xc = X + at, *gc = G + at, *oc = R ? Out + at : nullptr;
      T* dc = dX + at;
      if (GR) {
        const T* gr = GR + at;
        for (int64_t s = 0; s < v.S; ++s) dc[s] = a * gr[s] + k * (xc[s] - mu_t) + d;
      } else {
        for (int64_t s = 0; s < v.S; ++s) dc[s] = a * grad(gc, oc, s) + k * (xc[s] - mu_t) + d;
      }
    }
  }
}

}  // namespace

void batch_norm_train_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y,
                              Tensor& mean, Tensor& var, Tensor& invstd, const ChannelSum* across,
                              const Tensor& residual) {
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm",
                    [&] { train_fwd<scalar_t>(x, w, b, eps, relu, y, mean, var, invstd, across, residual); });
}
void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean,
                      const Tensor& invstd, bool relu, Tensor& y, const Tensor& residual) {
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] { apply<scalar_t>(x, w, b, mean, invstd, relu, y, residual); });
}
void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd,
                         bool training, const Tensor& relu_out, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db,
                         const ChannelSum* across, Tensor* dy_relu) {
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm backward", [&] {
    if (relu_out.defined())
      bwd<scalar_t, true>(x, w, mean, invstd, training, relu_out, dy, dx, dw, db, across, dy_relu);
    else
      bwd<scalar_t, false>(x, w, mean, invstd, training, relu_out, dy, dx, dw, db, across, nullptr);
  });
}

void batch_norm_update_running(Tensor& running_mean, Tensor& running_var, const Tensor& mean, const Tensor& var,
                               double momentum, double M) {
  AB_DISPATCH_FLOAT(running_mean.dtype(), "batch_norm", [&] {
    scalar_t *rm = running_mean.data<scalar_t>(), *rv = running_var.data<scalar_t>();
    const scalar_t *bm = mean.data<scalar_t>(), *bv = var.data<scalar_t>();
    for (int64_t c = 0; c < running_mean.numel(); ++c) {
      rm[c] = scalar_t((1 - momentum) * rm[c] + momentum * bm[c]);
      rv[c] = scalar_t((1 - momentum) * rv[c] + momentum * bv[c] * M / (M - 1));
    }
  });
}

void batch_norm_invstd(const Tensor& running_var, double eps, Tensor& invstd) {
  AB_DISPATCH_FLOAT(running_var.dtype(), "batch_norm", [&] {
    const scalar_t* rv = running_var.data<scalar_t>();
    scalar_t* inv = invstd.data<scalar_t>();
    for (int64_t c = 0; c < running_var.numel(); ++c) inv[c] = scalar_t(1.0 / std::sqrt(double(rv[c]) + eps));
  });
}

}  // namespace anybit::cpu
