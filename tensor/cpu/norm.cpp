// norm.cpp - fused batch-norm kernels on the CPU: per-channel sums over runs read in memory order.
//
// x is viewed as (N, C, S), S = H*W (1 for 2-D input); channel c's elements are the N runs
// x[n, c, 0:S]. M = N*S values per channel (over every process in synchronised BN). Each run of S
// values is summed in T with `omp simd` (which lets the compiler use vector lanes, i.e. reorder
// the additions) and the runs' sums are added up in double (sum_runs below).
//   forward (training): mean = sum x / M, var = sum (x - mean)^2 / M (biased), invstd = 1/sqrt(var+eps)
//   y = (x - mean) * invstd * w + b, or max(0, that) with `relu` (BN + ReLU in one pass), with
//   `residual` added before the ReLU (a ResNet block's BN, shortcut and ReLU in one pass)
//   forward (evaluation): the same y from the running mean and variance, its per-channel scale and
//   shift from formula::bn_eval_coefficients
//   backward (training), xhat = (x - mean) * invstd:
//     dx = (1/M) * w * invstd * (M*dy - sum dy - xhat * sum(dy*xhat))
//   backward (evaluation, fixed statistics): dx = dy * w * invstd
//   dw = sum dy*xhat, db = sum dy
//   with a ReLU after the BN, dy is first replaced by dy where y > 0 and 0 elsewhere (the
//   ReLU's backward), inside the same two passes. Without a residual, y > 0 is recomputed from x
//   and the forward's per-channel scale and shift (formula::bn_value, tensor/formulas.h), so
//   neither pass reads y.
//   with PACT after the ReLU (BnPact), y is PACT's value of the ReLU's output, and backward dy
//   counts where 0 < relu output <= a, the clip's gradient summing dy where it is >= a (PACT's
//   formulas), in the same two passes.
//   with a tap (BnPact::q), y stays the ReLU's output and PACT's value of it goes to q as well
//   (a block output read by the next block's shortcut and, quantized, by its first conv); backward
//   the tap's gradient dq goes through PACT's backward and is added to dy before the ReLU's mask
//   (the addition the autograd engine makes when the two are separate ops), and the clip's
//   gradient sums dq where y >= a, all in the same two passes.
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

// PACT after the ReLU: formula::pact_value's arguments, as the pact kernel (cpu/fused.cpp) forms them.
template <typename T>
struct PactStep {
  T a, levels, scale, inv;
};
template <typename T>
PactStep<T> pact_step(const BnPact& p) {
  const T a = *p.a.data<T>(), levels = T(p.levels);
  return {a, levels, levels / a, a / levels};
}

// a + b by the add op's formula (tensor/formulas.h)
template <typename T>
T add(T a, T b) {
  return formula::apply_binary(BinaryOp::Add, a, b, T(0), T(0));
}

// One run of S values of a channel: y = x * scale + shift, plus the residual r (the add op's
// formula: the BN's value, then + r, as when the two are separate ops), then the ReLU, then
// (q given) PACT: into y, or with `tap` into tap and y keeping the ReLU's output.
template <typename T>
void write_run(const T* x, const T* r, T* y, T* tap, int64_t S, T scale, T shift, bool relu, const PactStep<T>* q) {
  if (q && tap && r)
    for (int64_t s = 0; s < S; ++s) {
      const T v = relu_of(add(formula::bn_value(x[s], scale, shift), r[s]));
      y[s] = v;
      tap[s] = formula::pact_value(v, T(0), q->a, q->levels, q->scale, q->inv);
    }
  else if (q && tap)
    for (int64_t s = 0; s < S; ++s) {
      const T v = relu_of(formula::bn_value(x[s], scale, shift));
      y[s] = v;
      tap[s] = formula::pact_value(v, T(0), q->a, q->levels, q->scale, q->inv);
    }
  else if (q)
    for (int64_t s = 0; s < S; ++s)
      y[s] = formula::pact_value(relu_of(formula::bn_value(x[s], scale, shift)), T(0), q->a, q->levels, q->scale,
                                 q->inv);
  else if (r && relu)
    for (int64_t s = 0; s < S; ++s) y[s] = relu_of(add(formula::bn_value(x[s], scale, shift), r[s]));
  else if (r)
    for (int64_t s = 0; s < S; ++s) y[s] = add(formula::bn_value(x[s], scale, shift), r[s]);
  else if (relu)
    for (int64_t s = 0; s < S; ++s) y[s] = relu_of(formula::bn_value(x[s], scale, shift));
  else
    for (int64_t s = 0; s < S; ++s) y[s] = formula::bn_value(x[s], scale, shift);
}

// Every pass reads the runs in memory order: the threads take contiguous shares of the N*C runs
// (n, c). (A loop over one channel's runs jumps C*S values from run to run, 64 KiB in ResNet-20's
// first stage, and ran well below the memory's speed: with this order BN's share of a training
// step fell from about 16% to 13%, perf of bench_train on the Zen 5.)
// The sums of a pass are K per run, in T (`omp simd`: vector lanes), written to runs[nc * K + k];
// then each channel adds its runs up in double in the order n = 0, 1, ..., so the result does not
// depend on the number of threads. out[k * C + c]: sum k of channel c.
template <typename T, int K, typename F>
void sum_runs(const BnView& v, F run_sums, double* out) {
  std::vector<T> runs(v.N * v.C * K);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t nc = 0; nc < v.N * v.C; ++nc) run_sums(nc, &runs[nc * K]);
  for (int64_t c = 0; c < v.C; ++c)
    for (int k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < v.N; ++n) acc += runs[(n * v.C + c) * K + k];
      out[k * v.C + c] = acc;
    }
}

// Three passes: the sums for the mean, the sums for the variance, then y. With `across`
// (synchronised BN) the per-channel sums of every process are added up between the passes, and M
// counts every process's values; the arithmetic is otherwise the same, so a batch split across
// processes gives the statistics of the whole batch but for the order of the double additions.
template <typename T>
void train_fwd(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y, Tensor& mean,
               Tensor& var, Tensor& invstd, Tensor& affine, const ChannelSum* across, const Tensor& residual,
               const BnPact* pact, const BnRunning* running) {
  const BnView v = bn_view(x);
  double M = double(v.N * v.S);
  if (across) (*across)(&M, 1);
  const T *X = x.data<T>(), *Wt = w.defined() ? w.data<T>() : nullptr, *B = b.defined() ? b.data<T>() : nullptr;
  const T* Res = residual.defined() ? residual.data<T>() : nullptr;
  T *Y = y.data<T>(), *Mean = mean.data<T>(), *Var = var.data<T>(), *Inv = invstd.data<T>();
  T *Scale = affine.data<T>(), *Shift = Scale + v.C;
  const PactStep<T> q = pact ? pact_step<T>(*pact) : PactStep<T>{};
  T* Tap = pact && pact->q.defined() ? pact->q.data<T>() : nullptr;
  std::vector<double> sum(v.C), sq(v.C);
  std::vector<T> mu_t(v.C);
  sum_runs<T, 1>(v, [&](int64_t nc, T* out) {
    const T* xc = X + nc * v.S;
    T run = 0;
#pragma omp simd reduction(+ : run)
    for (int64_t s = 0; s < v.S; ++s) run += xc[s];
    out[0] = run;
  }, sum.data());
  if (across) (*across)(sum.data(), v.C);
  for (int64_t c = 0; c < v.C; ++c) mu_t[c] = T(sum[c] / M);
  sum_runs<T, 1>(v, [&](int64_t nc, T* out) {
    const T *xc = X + nc * v.S, mu = mu_t[nc % v.C];
    T run = 0;
#pragma omp simd reduction(+ : run)
    for (int64_t s = 0; s < v.S; ++s) run += (xc[s] - mu) * (xc[s] - mu);
    out[0] = run;
  }, sq.data());
  if (across) (*across)(sq.data(), v.C);
  for (int64_t c = 0; c < v.C; ++c) {
    const double mu = sum[c] / M, var_c = sq[c] / M, inv = 1.0 / std::sqrt(var_c + eps);
    Mean[c] = T(mu), Var[c] = T(var_c), Inv[c] = T(inv);
    // y = x * scale + shift, scale = w * invstd, shift = b - mean * scale
    Scale[c] = T((Wt ? Wt[c] : 1.0) * inv), Shift[c] = T((B ? B[c] : 0.0) - mu * (Wt ? Wt[c] : 1.0) * inv);
  }
  if (running) {
    T *RunMean = running->mean.data<T>(), *RunVar = running->var.data<T>();
    for (int64_t c = 0; c < v.C; ++c)
      formula::bn_running_update(RunMean[c], RunVar[c], Mean[c], Var[c], running->momentum, M);
  }
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t nc = 0; nc < v.N * v.C; ++nc) {
    const int64_t c = nc % v.C;
    write_run(X + nc * v.S, Res ? Res + nc * v.S : nullptr, Y + nc * v.S, Tap ? Tap + nc * v.S : nullptr, v.S,
              Scale[c], Shift[c], relu, pact ? &q : nullptr);
  }
}

template <typename T>
void eval_fwd(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& var, double eps,
              bool relu, Tensor& y, Tensor& invstd, Tensor& affine, const Tensor& residual, const BnPact* pact) {
  const BnView v = bn_view(x);
  const T *X = x.data<T>(), *Wt = w.defined() ? w.data<T>() : nullptr, *B = b.defined() ? b.data<T>() : nullptr;
  const T *Mean = mean.data<T>(), *Var = var.data<T>();
  const T* Res = residual.defined() ? residual.data<T>() : nullptr;
  T *Y = y.data<T>(), *Inv = invstd.data<T>(), *Scale = affine.data<T>(), *Shift = Scale + v.C;
  const PactStep<T> q = pact ? pact_step<T>(*pact) : PactStep<T>{};
  T* Tap = pact && pact->q.defined() ? pact->q.data<T>() : nullptr;
  for (int64_t c = 0; c < v.C; ++c)
    formula::bn_eval_coefficients(Var[c], eps, Wt ? Wt[c] : T(1), B ? B[c] : T(0), Mean[c], Inv[c], Scale[c],
                                  Shift[c]);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t nc = 0; nc < v.N * v.C; ++nc) {
    const int64_t c = nc % v.C;
    write_run(X + nc * v.S, Res ? Res + nc * v.S : nullptr, Y + nc * v.S, Tap ? Tap + nc * v.S : nullptr, v.S,
              Scale[c], Shift[c], relu, pact ? &q : nullptr);
  }
}

// Where the ReLU's mask comes from: no ReLU, the forward's output (y > 0), or x recomputed
// through the forward's scale and shift (formula::bn_value(x, scale, shift) > 0, the same
// rounding); Pact: recomputed so, with PACT's clip after the ReLU.
enum class Mask { None, Out, Affine, Pact };

// The ReLU's output at s: the forward's (Out: oc) or recomputed from x (xc) with its channel's
// scale and shift.
template <typename T, Mask R>
T relu_output(const T* oc, const T* xc, T sc, T sh, int64_t s) {
  if constexpr (R == Mask::Out) return oc[s];
  return relu_of(formula::bn_value(xc[s], sc, sh));
}

// Two passes: the sums (dw and db are this process's), then dx; with `across` the sums of every
// process are added up between them (see train_fwd). With a ReLU (R != None), dy counts only
// where the forward's output is positive; with dy_relu (R == Out) that masked dy is written in the
// first pass and read back in the second. With Tap (R == Out or Affine), dy is first dy plus
// PACT's backward of the tap's gradient relu.dq.
template <typename T, Mask R, bool Tap>
void bwd(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd, bool training,
         const BnRelu& relu, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db, const ChannelSum* across,
         Tensor* dy_relu, Tensor* dclip) {
  const BnView v = bn_view(x);
  double M = double(v.N * v.S);
  if (across) (*across)(&M, 1);
  const T *X = x.data<T>(), *Wt = w.defined() ? w.data<T>() : nullptr, *G = dy.data<T>();
  const T* Out = R == Mask::Out ? relu.out.data<T>() : nullptr;
  const T* Scale = R == Mask::Affine || R == Mask::Pact ? relu.affine.data<T>() : nullptr;
  const T clip = R == Mask::Pact || Tap ? *relu.clip.data<T>() : T(0);
  const T* DQ = Tap ? relu.dq.data<T>() : nullptr;
  const T *Mean = mean.data<T>(), *Inv = invstd.data<T>();
  T *dX = dx.data<T>(), *dW = dw ? dw->data<T>() : nullptr, *dB = db ? db->data<T>() : nullptr;
  T* GR = R == Mask::Out && dy_relu ? dy_relu->data<T>() : nullptr;
  // dy at s of a run (gc: its dy, qc: the tap's dy, oc: its output, xc: its x; sc, sh: its
  // channel's scale and shift; a: PACT's clip), through the ReLU when there is one. (The lambdas
  // capture nothing and load dy before any test: otherwise the loops below do not vectorize.)
  auto grad = [](const T* gc, const T* qc, const T* oc, const T* xc, T sc, T sh, T a, int64_t s) {
    const T g = gc[s];
    if constexpr (Tap) {  // the output's dy plus the tap's through PACT, then the ReLU's mask
      const T dq = qc[s], r = relu_output<T, R>(oc, xc, sc, sh, s);
      const T sum = add(g, formula::pact_grad_x(r, dq, T(0), a));
      return r > T(0) ? sum : T(0);
    }
    if constexpr (R == Mask::Out) return oc[s] > T(0) ? g : T(0);
    if constexpr (R == Mask::Affine) return formula::bn_value(xc[s], sc, sh) > T(0) ? g : T(0);
    if constexpr (R == Mask::Pact) {  // PACT's backward, then the ReLU's
      const T r = relu_of(formula::bn_value(xc[s], sc, sh));
      return r > T(0) ? formula::pact_grad_x(r, g, T(0), a) : T(0);
    }
    return g;
  };
  // the clip's share at s (Pact: of dy; Tap: of the tap's dy): where the ReLU's output is >= the clip
  auto grad_clip = [](const T* gc, const T* qc, const T* oc, const T* xc, T sc, T sh, T a, int64_t s) {
    const T g = Tap ? qc[s] : gc[s];
    return formula::pact_grad_a(relu_output<T, R>(oc, xc, sc, sh, s), g, T(0), a, false);
  };
  constexpr int K = R == Mask::Pact || Tap ? 3 : 2;  // sums per run: dy, dy (x - mean), and the clip's
  auto scale_of = [&](int64_t c) { return Scale ? Scale[c] : T(0); };
  auto shift_of = [&](int64_t c) { return Scale ? Scale[v.C + c] : T(0); };
  std::vector<double> sums(K * v.C);  // sum dy for every channel, then sum dy * (x - mean), then the clip's
  sum_runs<T, K>(v, [&](int64_t nc, T* out) {
    const int64_t c = nc % v.C, at = nc * v.S;
    const T *xc = X + at, *gc = G + at, *qc = DQ ? DQ + at : nullptr, *oc = Out ? Out + at : nullptr;
    const T mu_t = Mean[c], sc = scale_of(c), sh = shift_of(c), cl = clip;
    T run_g = 0, run_gx = 0, run_clip = 0;
    // (the loops are written out: a test inside one changes how it vectorises)
    T* gr = GR ? GR + at : nullptr;
    if constexpr (K == 3) {
      if (gr) {  // a tap after a residual: the masked sum is the residual's gradient too
#pragma omp simd reduction(+ : run_g, run_gx, run_clip)
        for (int64_t s = 0; s < v.S; ++s) {
          const T g = grad(gc, qc, oc, xc, sc, sh, cl, s);
          gr[s] = g;
          run_g += g;
          run_gx += g * (xc[s] - mu_t);
          run_clip += grad_clip(gc, qc, oc, xc, sc, sh, cl, s);
        }
      } else {
#pragma omp simd reduction(+ : run_g, run_gx, run_clip)
        for (int64_t s = 0; s < v.S; ++s) {
          const T g = grad(gc, qc, oc, xc, sc, sh, cl, s);
          run_g += g;
          run_gx += g * (xc[s] - mu_t);
          run_clip += grad_clip(gc, qc, oc, xc, sc, sh, cl, s);
        }
      }
    } else if (gr) {
#pragma omp simd reduction(+ : run_g, run_gx)
      for (int64_t s = 0; s < v.S; ++s) {
        const T g = grad(gc, qc, oc, xc, sc, sh, cl, s);
        gr[s] = g;
        run_g += g;
        run_gx += g * (xc[s] - mu_t);
      }
    } else {
#pragma omp simd reduction(+ : run_g, run_gx)
      for (int64_t s = 0; s < v.S; ++s) {
        const T g = grad(gc, qc, oc, xc, sc, sh, cl, s);
        run_g += g;
        run_gx += g * (xc[s] - mu_t);
      }
    }
    out[0] = run_g, out[1] = run_gx;
    if constexpr (K == 3) out[2] = run_clip;
  }, sums.data());
  if constexpr (K == 3) {
    double total = 0;
    for (int64_t c = 0; c < v.C; ++c) total += sums[2 * v.C + c];
    *dclip->data<T>() = T(total);
  }
  for (int64_t c = 0; c < v.C; ++c) {
    sums[v.C + c] *= Inv[c];  // sum dy * xhat
    if (dW) dW[c] = T(sums[v.C + c]);
    if (dB) dB[c] = T(sums[c]);
  }
  if (across && training) (*across)(sums.data(), 2 * v.C);
  // The training formula expanded: dx = a dy + k (x - mean) + d with a = w invstd,
  // k = -a invstd sum(dy xhat) / M (xhat = (x - mean) invstd) and d = -a sum(dy) / M.
  std::vector<T> a(v.C), k(v.C), d(v.C);
  for (int64_t c = 0; c < v.C; ++c) {
    const double inv = Inv[c], wc = Wt ? Wt[c] : 1.0;
    a[c] = T(wc * inv);
    k[c] = training ? T(-wc * inv * inv * sums[v.C + c] / M) : T(0);
    d[c] = training ? T(-wc * inv * sums[c] / M) : T(0);
  }
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t nc = 0; nc < v.N * v.C; ++nc) {
    const int64_t c = nc % v.C, at = nc * v.S;
    const T *xc = X + at, *gc = G + at, *qc = DQ ? DQ + at : nullptr, *oc = Out ? Out + at : nullptr;
    const T mu_t = Mean[c], ac = a[c], kc = k[c], dc0 = d[c], sc = scale_of(c), sh = shift_of(c), cl = clip;
    T* dc = dX + at;
    if (GR) {
      const T* gr = GR + at;
#pragma omp simd
      for (int64_t s = 0; s < v.S; ++s) dc[s] = ac * gr[s] + kc * (xc[s] - mu_t) + dc0;
    } else {
#pragma omp simd
      for (int64_t s = 0; s < v.S; ++s) dc[s] = ac * grad(gc, qc, oc, xc, sc, sh, cl, s) + kc * (xc[s] - mu_t) + dc0;
    }
  }
}

// The kernels' preconditions on a PACT after the BN (autograd/norm.cpp checks the user's arguments).
void check_pact(const char* where, bool relu, const Tensor& residual, const BnPact& pact) {
  AB_CHECK(relu && (pact.q.defined() || !residual.defined()), where,
           ": PACT after the BN needs its ReLU, and a tap (q) to follow a residual");
  AB_CHECK(pact.a.numel() == 1 && pact.a.device().is_cpu(), where, ": PACT's clip must be one element on the CPU");
}

}  // namespace

void batch_norm_train_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y,
                              Tensor& mean, Tensor& var, Tensor& invstd, Tensor& affine, const ChannelSum* across,
                              const Tensor& residual, const BnPact* pact, const BnRunning* running) {
  if (pact) check_pact("batch_norm", relu, residual, *pact);
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] {
    train_fwd<scalar_t>(x, w, b, eps, relu, y, mean, var, invstd, affine, across, residual, pact, running);
  });
}
void batch_norm_eval_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& var,
                             double eps, bool relu, Tensor& y, Tensor& invstd, Tensor& affine, const Tensor& residual,
                             const BnPact* pact) {
  if (pact) check_pact("batch_norm", relu, residual, *pact);
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm",
                    [&] { eval_fwd<scalar_t>(x, w, b, mean, var, eps, relu, y, invstd, affine, residual, pact); });
}
void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd,
                         bool training, const BnRelu& relu, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db,
                         const ChannelSum* across, Tensor* dy_relu, Tensor* dclip) {
  AB_CHECK(!dy_relu || relu.out.defined(), "batch_norm backward: dy_relu needs relu.out (a ReLU after a residual)");
  AB_CHECK(!relu.clip.defined() || ((relu.affine.defined() || relu.dq.defined()) && dclip),
           "batch_norm backward: PACT's clip needs relu.affine (or a tap's dq) and dclip");
  AB_CHECK(!relu.dq.defined() || (relu.clip.defined() && (relu.out.defined() || relu.affine.defined()) &&
                                  relu.dq.shape() == dy.shape() && relu.dq.is_contiguous()),
           "batch_norm backward: the tap's dq needs the clip, relu.out or relu.affine, and dy's shape, contiguous");
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm backward", [&] {
    const bool tap = relu.dq.defined();
    if (relu.out.defined() && tap)
      bwd<scalar_t, Mask::Out, true>(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, dy_relu, dclip);
    else if (relu.out.defined())
      bwd<scalar_t, Mask::Out, false>(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, dy_relu, nullptr);
    else if (tap)
      bwd<scalar_t, Mask::Affine, true>(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, nullptr, dclip);
    else if (relu.clip.defined())
      bwd<scalar_t, Mask::Pact, false>(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, nullptr, dclip);
    else if (relu.affine.defined())
      bwd<scalar_t, Mask::Affine, false>(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, nullptr,
                                         nullptr);
    else
      bwd<scalar_t, Mask::None, false>(x, w, mean, invstd, training, relu, dy, dx, dw, db, across, nullptr, nullptr);
  });
}

}  // namespace anybit::cpu
