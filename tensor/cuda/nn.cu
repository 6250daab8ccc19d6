// nn.cu - CUDA twins of the neural-network kernels: conv2d, pooling, batch norm, softmax and
// cross-entropy, the temporal shift, and the scatter of max's backward (tensor/kernels.h lists
// them with their CPU twins).
//
// Each kernel gives one CUDA thread one output element (or one row), and the thread's work is a
// function of tensor/formulas.h that the tests also run on the host against the scalar
// references. Sums that cross threads (batch-norm statistics, bias gradients) are block
// reductions in double over a fixed split of the data, so results are the same run to run.
// Every tensor here is contiguous, float32 or float64, on the GPU; the autograd layer
// (autograd/*.cpp) checks shapes and makes inputs contiguous before calling.
// Read next: fused.cu (the quantizers' and optimizers' fused updates).
#include <limits>
#include <vector>

#include "tensor/cpu/nn.h"
#include "tensor/cuda/check.h"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/launch.h"
#include "tensor/formulas.h"

namespace anybit::cuda {

namespace {

using namespace anybit::formula;

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? const_cast<T*>(t.data<T>()) : nullptr;
}

// ---- conv2d: im2col + cuBLAS GEMMs over a chunk of images at a time ------------------------------
// For images n0 .. n0 + nb - 1 with col = im2col (C KH KW, nb P), group g's rows are the block
// [g Kg, (g + 1) Kg) of col and its weights the rows [g Og, (g + 1) Og) of w viewed as (O, Kg).
// col_n, image n's columns of col, is a (C KH KW, P) matrix with leading dimension nb P.
//   forward:  y_n,g (Og, P) = W_g (Og, Kg) col_n,g (Kg, P), one strided-batched GEMM per group over
//             the chunk's images, written straight into y (NCHW); then y[n, o, p] += b[o]. A
//             pointwise conv (ConvShape::direct: 1x1, stride 1, no padding) has col_n = x_n
//             (C, P), so it needs no im2col.
//   backward: dYt = dy as (O, nb P);  dW_g += dYt_g col_g^T (one GEMM sums over the chunk's images);
//             dcol_g = W_g^T dYt_g, dx = col2im(dcol) (pointwise: dx_n,g = W_g^T dYt_n,g, batched,
//             straight into dx);  db[o] = sum over n, p of dy[n, o, p]
// A depthwise conv (ConvShape::depthwise: a group per input channel) has no GEMMs: direct kernels.

// n = C cols threads, each writing KH KW entries of col (formulas.h: im2col_entries).
template <typename T>
__global__ void im2col_k(const T* x, ConvShape s, ConvIndex ix, T* col, int64_t n) {
  GRID_STRIDE_LOOP(t, n) im2col_entries(x, s, ix, t, col);
}

template <typename T>
__global__ void col2im_k(const T* dcol, ConvShape s, ConvIndex ix, T* dx, int64_t n) {
  GRID_STRIDE_LOOP(i, n) dx[i] = col2im_value(dcol, s, ix, i);
}

// Depthwise convolutions (ConvShape::depthwise), direct (formulas.h: depthwise_value and the rest).
template <typename T>
__global__ void depthwise_k(const T* x, const T* w, ConvShape s, DepthwiseIndex ix, T* y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = depthwise_value(x, w, s, ix, i);
}

template <typename T>
__global__ void depthwise_dx_k(const T* dy, const T* w, ConvShape s, DepthwiseIndex ix, T* dx, int64_t n) {
  GRID_STRIDE_LOOP(i, n) dx[i] = depthwise_dx_value(dy, w, s, ix, i);
}

// A block per weight e = (o KH + kh) KW + kw: its threads add up strided shares of the N P terms in
// double, and the block's tree adds the shares (a fixed order: deterministic).
template <typename T>
__global__ void depthwise_dw_k(const T* x, const T* dy, ConvShape s, DepthwiseIndex ix, T* dw, int64_t weights) {
  __shared__ double part[kThreads];
  const int64_t terms = s.N * s.OH * s.OW, taps = s.KH * s.KW;
  for (int64_t e = blockIdx.x; e < weights; e += gridDim.x) {  // the same e for the whole block
    const int64_t o = e / taps, kh = (e - o * taps) / s.KW, kw = e - o * taps - kh * s.KW;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < terms; j += blockDim.x)
      acc += (double)depthwise_dw_term(x, dy, s, ix, o, kh, kw, j);
    part[threadIdx.x] = acc;
    block_tree([&](int t, int u) { part[t] += part[u]; });
    if (threadIdx.x == 0) dw[e] = (T)part[0];
    __syncthreads();  // part[] is reused for the next e
  }
}

// y[n, o, p] += b[o]
template <typename T>
__global__ void add_bias_k(T* y, const T* b, ChannelIndex channel, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] += b[channel(i)];
}

// (nb, O, P) -> (O, nb P)
template <typename T>
__global__ void nop_to_op_k(const T* y, T* t, NopIndex ix, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t o;
    t[ix.op_offset(i, o)] = y[i];
  }
}

// Images per chunk: the col buffer holds at most ~64 Mi elements (256 MiB in float32).
int64_t images_per_chunk(const ConvShape& s) {
  const int64_t per_image = s.C * s.KH * s.KW * s.P();
  return std::max<int64_t>(1, std::min<int64_t>(s.N, (int64_t(64) << 20) / std::max<int64_t>(per_image, 1)));
}

void check_conv_args(const char* op, const Tensor& x, const Tensor& w) {
  check_cuda(op, "x", x);
  check_cuda(op, "weight", w);
  AB_CHECK(x.is_contiguous() && w.is_contiguous() && x.dtype() == w.dtype(), op,
           ": x and weight must be contiguous and of one dtype, got ", x.str(), " and ", w.str());
}

// ---- per-channel sums in double (batch norm, conv bias) ------------------------------------------
// x (N, C, S) is cut per channel into `chunks` pieces of its N S values; block (c, k) sums piece k of
// channel c into partial[c chunks + k]. The kernel that first reads a channel's sum adds its pieces
// up, in order (chan_total), and keeps the total in sums[c] for the kernels after it: no launch of
// its own for that. What is summed depends on the mode: Sum: x; SqDev: (x - mean[c])^2; GradPair: g
// and g (x - mean[c]) (two sums per channel, rows c and C + c: the g sums, then the g (x - mean)).
enum class ChanSum { Sum, SqDev, GradPair };

// The sums as a kernel takes them: partial (rows, chunks) still to be added up by the kernel, which
// writes each total to sums; or partial null, and sums holds the totals.
struct ChanSums {
  const double* partial = nullptr;
  int64_t chunks = 0;
  double* sums = nullptr;
  template <typename F>
  void for_each_pointer(F&& f) {  // for the CUDA emulator (tensor/cuda/emu/include/cuda_runtime.h)
    f(partial), f(sums);
  }
  ChanSums totals() const { return {nullptr, 0, sums}; }  // for the kernels after the first reader
};

// Row r's pieces added up in order: on the GPU (chan_total) or on the host (sum_across), the same
// number either way.
__host__ __device__ inline double add_pieces(const double* partial, int64_t chunks, int64_t r) {
  double acc = 0;
  for (int64_t k = 0; k < chunks; ++k) acc += partial[r * chunks + k];
  return acc;
}

// Row r's total: its pieces added up (and kept in sums[r]), or the total already there. Each row is
// read by one thread of the first reader.
__device__ inline double chan_total(const ChanSums& s, int64_t r) {
  if (!s.partial) return s.sums[r];
  return s.sums[r] = add_pieces(s.partial, s.chunks, r);
}

// A SqDev pass whose mean is not computed yet (M > 0): each block works it out from the Sum pass
// (its pieces, or their totals), mean = T(total / M), as bn_stats_k will; block 0 of the channel
// keeps the total in sum.sums for bn_stats_k (the first reader's job). One launch fewer per BN.
struct MeanOf {
  ChanSums sum;
  double M = 0;  // 0: the mean is given
  template <typename F>
  void for_each_pointer(F&& f) {  // for the CUDA emulator
    sum.for_each_pointer(f);
  }
};

template <typename T>
__global__ void chan_partial_k(ChanSum mode, const T* x, const T* g, const T* mean, MeanOf mean_of, int64_t N,
                               int64_t C, int64_t S, DivMod by_s, int64_t chunks, double* partial) {
  __shared__ double part0[kThreads];
  __shared__ double part1[kThreads];
  const int64_t c = blockIdx.x / chunks, k = blockIdx.x % chunks, M = N * S;
  const int64_t per = (M + chunks - 1) / chunks, m0 = k * per, m1 = m0 + per < M ? m0 + per : M;
  T mu = mean ? mean[c] : T(0);
  if (mean_of.M > 0) {
    if (threadIdx.x == 0) {
      const double total = mean_of.sum.partial ? add_pieces(mean_of.sum.partial, mean_of.sum.chunks, c)
                                               : mean_of.sum.sums[c];
      part0[0] = total;
      if (k == 0 && mean_of.sum.partial) mean_of.sum.sums[c] = total;
    }
    __syncthreads();
    mu = T(part0[0] / mean_of.M);
    __syncthreads();  // from here on part0 holds the block's partial sums
  }
  double a0 = 0, a1 = 0;
  for (int64_t m = m0 + threadIdx.x; m < m1; m += blockDim.x) {
    const int64_t n = by_s.div(m), idx = (n * C + c) * S + (m - n * S);
    if (mode == ChanSum::Sum) {
      a0 += (double)x[idx];
    } else if (mode == ChanSum::SqDev) {
      const T d = x[idx] - mu;
      a0 += (double)(d * d);
    } else {
      a0 += (double)g[idx];
      a1 += (double)(g[idx] * (x[idx] - mu));
    }
  }
  part0[threadIdx.x] = a0;
  part1[threadIdx.x] = a1;
  block_tree([&](int t, int u) { part0[t] += part0[u], part1[t] += part1[u]; });
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = part0[0];
    if (mode == ChanSum::GradPair) partial[C * chunks + blockIdx.x] = part1[0];
  }
}

// out[r] = row r's total, in T (a conv's bias gradient).
template <typename T>
__global__ void chan_total_k(ChanSums s, int64_t rows, T* out) {
  GRID_STRIDE_LOOP(r, rows) out[r] = T(chan_total(s, r));
}

// The pieces of a channel_sums() call, kept alive (the caller holds this) until the kernels that
// read them have been queued.
struct ChanPieces {
  Tensor partial;  // (rows, chunks)
  ChanSums sums;
};

// Queues the partial sums; `sums` (rows = C, or 2 C for GradPair, doubles on the GPU) receives the
// totals from the first kernel that reads them.
template <typename T>
ChanPieces channel_sums(ChanSum mode, const T* x, const T* g, const T* mean, int64_t N, int64_t C, int64_t S,
                        double* sums, const MeanOf& mean_of = MeanOf()) {
  const int64_t M = N * S;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(64, M / 4096));
  const int64_t rows = mode == ChanSum::GradPair ? 2 * C : C;
  ChanPieces p;
  p.partial = Tensor::empty({rows * chunks}, DType::F64, Device(Device::CUDA));
  p.sums = {p.partial.data<double>(), chunks, sums};
  const DivMod by_s(std::max<int64_t>(S, 1), M);  // m = n S + s (tensor/fast_div.h)
  chan_partial_k<T><<<(int)(C * chunks), kThreads>>>(mode, x, g, mean, mean_of, N, C, S, by_s, chunks,
                                                      p.partial.data<double>());
  AB_CUDA_CHECK_LAUNCH();
  return p;
}

// Synchronised BN: the per-channel totals go to the host, are added up across processes, and come
// back into `sums`. From pieces not yet added up, the host adds them first (add_pieces).
ChanSums sum_across(const ChanSums& s, int64_t rows, const cpu::ChannelSum* across) {
  if (!across) return s;
  std::vector<double> host(rows);
  if (s.partial) {
    std::vector<double> pieces(rows * s.chunks);
    memcpy_d2h(pieces.data(), s.partial, pieces.size() * sizeof(double));
    for (int64_t r = 0; r < rows; ++r) host[r] = add_pieces(pieces.data(), s.chunks, r);
  } else {
    memcpy_d2h(host.data(), s.sums, rows * sizeof(double));
  }
  (*across)(host.data(), rows);
  memcpy_h2d(s.sums, host.data(), rows * sizeof(double));
  return s.totals();
}

// ---- batch norm ------------------------------------------------------------------------------------
// mean, var, invstd (T) and the affine form of y = x scale + shift, as tensor/cpu/norm.cpp computes them,
// from the totals of x (sum) and the squared deviations' sums (sq, the first reader of its pieces);
// with rm and rv (not null) the running statistics are updated too.
template <typename T>
__global__ void bn_stats_k(const double* sum, ChanSums sq, double M, double eps, const T* w, const T* b, T* mean,
                           T* var, T* invstd, T* scale, T* shift, T* rm, T* rv, double momentum, int64_t C) {
  GRID_STRIDE_LOOP(c, C) {
    const double mu = sum[c] / M, var_c = chan_total(sq, c) / M, inv = 1.0 / ::sqrt(var_c + eps);
    mean[c] = T(mu), var[c] = T(var_c), invstd[c] = T(inv);
    const double wc = w ? (double)w[c] : 1.0;
    scale[c] = T(wc * inv);
    shift[c] = T((b ? (double)b[c] : 0.0) - mu * wc * inv);
    if (rm) bn_running_update(rm[c], rv[c], mean[c], var[c], momentum, M);
  }
}

// Evaluation, in one launch: block (bx, by) works on channel c = by (and on by + gridDim.y, ...
// when C > 65535, the grid's limit). Its first thread turns the running statistics into the
// channel's scale and shift (formula::bn_eval_coefficients), which the block's threads share; the
// blocks with bx == 0 also keep them, and invstd, for a backward. The elements of channel c are
// m = n S + s, n < N, s < S (M = N S of them), at ((n C + c) S + s) of x; by_s splits m. Then y
// as in bn_affine_k (below).
template <typename T>
__global__ void bn_eval_k(const T* x, const T* w, const T* b, const T* mean, const T* var, double eps,
                          const T* residual, bool relu, T* y, T* invstd, T* scale, T* shift, int64_t C, int64_t S,
                          DivMod by_s, int64_t M) {
  __shared__ T coef[2];
  for (int64_t c = blockIdx.y; c < C; c += gridDim.y) {
    if (threadIdx.x == 0) {
      T inv, sc, sh;
      bn_eval_coefficients(var[c], eps, w ? w[c] : T(1), b ? b[c] : T(0), mean[c], inv, sc, sh);
      coef[0] = sc, coef[1] = sh;
      if (blockIdx.x == 0) invstd[c] = inv, scale[c] = sc, shift[c] = sh;
    }
    __syncthreads();
    const T sc = coef[0], sh = coef[1];
    for (int64_t m = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; m < M; m += (int64_t)gridDim.x * blockDim.x) {
      const int64_t n = by_s.div(m), i = (n * C + c) * S + (m - n * S);
      T v = bn_value(x[i], sc, sh);
      if (residual) v = apply_binary(BinaryOp::Add, v, residual[i], T(0), T(0));  // the add op's formula
      y[i] = relu ? apply_unary(UnaryOp::Relu, v, T(0), T(0)) : v;              // the relu op's formula
    }
    __syncthreads();  // coef is rewritten for the next channel
  }
}

template <typename T>
__global__ void bn_affine_k(const T* x, const T* scale, const T* shift, const T* residual, bool relu, T* y,
                            ChannelIndex chan, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const int64_t c = chan(i);
    T v = bn_value(x[i], scale[c], shift[c]);
    if (residual) v = apply_binary(BinaryOp::Add, v, residual[i], T(0), T(0));  // the add op's formula
    y[i] = relu ? apply_unary(UnaryOp::Relu, v, T(0), T(0)) : v;              // the relu op's formula
  }
}

// dy through the ReLU of a fused BN + ReLU: g = dy where the forward's output is positive.
template <typename T>
__global__ void bn_relu_grad_k(const T* dy, const T* out, T* g, int64_t n) {
  GRID_STRIDE_LOOP(i, n) g[i] = apply_binary(BinaryOp::ReluGrad, dy[i], out[i], T(0), T(0));
}

// The same with the output's sign recomputed from x and the forward's scale and shift (BnRelu::affine).
template <typename T>
__global__ void bn_relu_grad_affine_k(const T* dy, const T* x, const T* scale, const T* shift, T* g,
                                      ChannelIndex chan, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const int64_t c = chan(i);
    g[i] = bn_value(x[i], scale[c], shift[c]) > T(0) ? dy[i] : T(0);
  }
}

// From the GradPair sums, two jobs, in one launch unless the sums must be added up across
// processes in between:
// first (the sums' first reader): their totals, sum dy and sum dy (x - mean) turned into
//   sum dy xhat and kept in s.sums; dw and db (this process's share) from them;
// coef (not null): the backward's coefficients, dx = a dy + k (x - mean) + d (tensor/cpu/norm.cpp,
//   bwd()), from the totals (of every process, in synchronised BN).
template <typename T>
__global__ void bn_grad_k(ChanSums s, bool first, const T* w, const T* invstd, double M, bool training, T* dw, T* db,
                          T* coef, int64_t C) {
  GRID_STRIDE_LOOP(c, C) {
    const double inv = invstd[c], wc = w ? (double)w[c] : 1.0;
    double sum_g = chan_total(s, c), sum_gxhat = chan_total(s, C + c);
    if (first) {
      sum_gxhat *= inv;  // sum dy (x - mean) -> sum dy xhat
      s.sums[C + c] = sum_gxhat;
      if (dw) dw[c] = T(sum_gxhat);
      if (db) db[c] = T(sum_g);
    }
    if (coef) {
      coef[c] = T(wc * inv);
      coef[C + c] = training ? T(-wc * inv * inv * sum_gxhat / M) : T(0);
      coef[2 * C + c] = training ? T(-wc * inv * sum_g / M) : T(0);
    }
  }
}

template <typename T>
__global__ void bn_dx_k(const T* x, const T* g, const T* mean, const T* coef, T* dx, ChannelIndex chan, int64_t C,
                        int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const int64_t c = chan(i);
    dx[i] = coef[c] * g[i] + coef[C + c] * (x[i] - mean[c]) + coef[2 * C + c];
  }
}

struct BnDims {
  int64_t N, C, S;
  ChannelIndex chan() const { return ChannelIndex(S, C, N * C * S); }  // element i's channel
};
BnDims bn_dims(const Tensor& x) { return {x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1}; }

// ---- pooling ---------------------------------------------------------------------------------------
template <typename T>
__global__ void max_pool_k(const T* x, PoolShape q, Split3 at, T neg_inf, T* y, int32_t* arg, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t plane, oh, ow;
    at(i, plane, oh, ow);
    int32_t a;
    y[i] = max_pool_value(x + plane * q.H * q.W, q, oh, ow, neg_inf, a);
    arg[i] = a;
  }
}

template <typename T>
__global__ void max_pool_grad_k(const T* dy, const int32_t* arg, PoolShape q, Split3 at, T* dx, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t plane, h, w;
    at(i, plane, h, w);
    dx[i] = max_pool_grad(dy + plane * q.OH * q.OW, arg + plane * q.OH * q.OW, q, h, w);
  }
}

template <typename T>
__global__ void avg_pool_k(const T* x, PoolShape q, Split3 at, T scale, T* y, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t plane, oh, ow;
    at(i, plane, oh, ow);
    y[i] = avg_pool_value(x + plane * q.H * q.W, q, oh, ow, scale);
  }
}

template <typename T>
__global__ void avg_pool_grad_k(const T* dy, PoolShape q, Split3 at, T scale, T* dx, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t plane, h, w;
    at(i, plane, h, w);
    dx[i] = avg_pool_grad(dy + plane * q.OH * q.OW, q, h, w, scale);
  }
}

PoolShape pool_shape(const Tensor& x, const Tensor& y, int64_t k, int64_t s, int64_t p) {
  return {x.size(2), x.size(3), y.size(2), y.size(3), k, s, p};
}

// ---- softmax and cross-entropy: one thread per row ------------------------------------------------
template <typename T>
__global__ void softmax_k(const T* x, T* y, int64_t outer, int64_t K, int64_t inner, bool log) {
  GRID_STRIDE_LOOP(r, outer * inner) {
    const int64_t base = (r / inner) * K * inner + r % inner;
    softmax_row(x + base, y + base, K, inner, log);
  }
}

template <typename T>
__global__ void softmax_grad_k(const T* y, const T* dy, T* dx, int64_t outer, int64_t K, int64_t inner, bool log) {
  GRID_STRIDE_LOOP(r, outer * inner) {
    const int64_t base = (r / inner) * K * inner + r % inner;
    softmax_row_backward(y + base, dy + base, dx + base, K, inner, log);
  }
}

template <typename T>
__global__ void ce_rows_k(const T* logp, const int64_t* labels, int64_t N, int64_t K, double eps, double* rows) {
  GRID_STRIDE_LOOP(n, N) rows[n] = cross_entropy_row(logp + n * K, K, labels[n], eps);
}

// loss[0] = the mean of the N row losses, added in order by one thread, which also checks the
// labels: the first one outside [0, K) goes to the error record (launch.h), unless one is there.
template <typename T>
__global__ void ce_mean_k(const double* rows, const int64_t* labels, int64_t N, int64_t K, T* loss, KernelError* err) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double total = 0;
  for (int64_t n = 0; n < N; ++n) total += rows[n];
  loss[0] = T(N ? total / N : 0.0);
  // The record lives in host memory (each access crosses the bus): touched only for a bad label.
  for (int64_t n = 0; n < N; ++n)
    if (labels[n] < 0 || labels[n] >= K) {
      if (err->code == 0) *err = KernelError{KernelError::kLabel, labels[n], n, K};
      return;
    }
}

template <typename T>
__global__ void ce_grad_k(const T* logp, const int64_t* labels, int64_t N, int64_t K, double eps, const T* dloss, T* d) {
  const double scale = (double)dloss[0] / (double)N;
  GRID_STRIDE_LOOP(n, N) cross_entropy_row_backward(logp + n * K, d + n * K, K, labels[n], eps, scale);
}

// add_step_stats, in one block: each thread finds the predictions of rows i, i + blockDim.x, ...
// and counts the hits; a tree sum adds the counts up (exact: whole numbers in double).
template <typename T>
__global__ void step_stats_k(const T* logits, const int64_t* labels, const T* loss, int64_t N, int64_t K, double* acc) {
  __shared__ double part[kThreads];
  double hits = 0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const T* row = logits + i * K;
    int64_t best = 0;
    for (int64_t k = 1; k < K; ++k)
      if (ranks_above(row[k], row[best])) best = k;
    hits += K > 0 && best == labels[i];
  }
  part[threadIdx.x] = hits;
  block_tree([&](int t, int u) { part[t] += part[u]; });
  if (threadIdx.x == 0) {
    acc[0] += double(*loss) * double(N);
    acc[1] += part[0];
  }
}

// ---- the collaborative teacher choice (quant/joint_trainer.cpp) ----------------------------------
// The teachers' tensors, handed to the kernels in a table passed by value, as the optimizers' are
// (tensor/cuda/fused.cu). 16 teachers at most: check_collab_teachers (tensor/kernels.h).
constexpr int kTeachers = 16;

template <typename T>
struct TeacherTable {
  int count = 0;
  const T* probs[kTeachers];
  const T* logits[kTeachers];
  template <typename F>
  void for_each_pointer(F&& f) {  // for the CUDA emulator (tensor/cuda/emu/include/cuda_runtime.h)
    for (int j = 0; j < count; ++j) f(probs[j]), f(logits[j]);
  }
};

// One block: each sample's choice (formula::collab_choice) into choice[i], then thread j < J counts
// the samples that chose teacher j, and thread J finds the first sample without a choice. The
// counts are exact integers, the same in any order; the host reads them in one copy.
template <typename T>
__global__ void collab_choose_k(TeacherTable<T> t, const int64_t* labels, int64_t N, int64_t K, int32_t* choice,
                                int64_t* counts) {
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) choice[i] = collab_choice(t.probs, t.count, i, K, labels[i]);
  __syncthreads();
  const int j = threadIdx.x;
  if (j < t.count) {
    int64_t n = 0;
    for (int64_t i = 0; i < N; ++i) n += choice[i] == j;
    counts[j] = n;
  } else if (j == t.count) {
    int64_t first = 0;
    for (int64_t i = 0; i < N && first == 0; ++i)
      if (choice[i] < 0) first = i + 1;
    counts[j] = first;
  }
}

// out (N, K): row i of the chosen teacher's logits (left as it was without a choice).
template <typename T>
__global__ void collab_gather_k(TeacherTable<T> t, const int32_t* choice, int64_t K, T* out, int64_t n) {
  GRID_STRIDE_LOOP(e, n) {
    const int j = choice[e / K];
    if (j >= 0) out[e] = t.logits[j][e];
  }
}

__global__ void increment_k(int64_t* counter) {
  if (blockIdx.x == 0 && threadIdx.x == 0) counter[0] += 1;
}

// ---- temporal shift and max's backward -------------------------------------------------------------
template <typename T>
__global__ void shift_k(const T* x, T* y, Split3 at, DivMod frames, int64_t C, int64_t HW, int64_t fold, int dir,
                        int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    int64_t row, c, hw;
    at(i, row, c, hw);
    const int64_t t = frames.mod(row);
    const int64_t from = shift_source(t, c, fold, dir);
    y[i] = (from < 0 || from >= frames.d) ? T(0) : x[i + (from - t) * C * HW];
  }
}

// gx (outer, R, inner) = 0 except gx[o, idx[o, i], i] = g[o, i]: one thread per gx element.
template <typename T>
__global__ void max_grad_k(const T* g, const int64_t* idx, T* gx, Split3 at, int64_t inner, int64_t n) {
  GRID_STRIDE_LOOP(j, n) {
    int64_t o, r, i;
    at(j, o, r, i);
    gx[j] = idx[o * inner + i] == r ? g[o * inner + i] : T(0);
  }
}

}  // namespace

// ---- entry points (declared in tensor/cuda/cuda.h) --------------------------------------------------

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const ConvShape& s, Tensor& y) {
  check_conv_args("conv2d", x, w);
  AB_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] {
    const int64_t P = s.P(), Kg = s.Kg(), Og = s.Og();
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* pw = w.data<scalar_t>();
    scalar_t* py = y.data<scalar_t>();
    if (s.depthwise()) {  // a thread per output, not a GEMM per channel
      const int64_t n = y.numel();
      if (n > 0) {
        depthwise_k<scalar_t><<<blocks_for(n), kThreads>>>(px, pw, s, DepthwiseIndex(s), py, n);
        AB_CUDA_CHECK_LAUNCH();
      }
    } else if (s.direct()) {  // col_n = x_n: every image in one batch, W_g shared (stride 0)
      for (int64_t g = 0; g < s.G; ++g)
        gemm_batched(false, false, Og, P, Kg, scalar_t(1), pw + g * Og * Kg, Kg, 0, px + g * Kg * P, P, s.C * P,
                     scalar_t(0), py + g * Og * P, P, s.O * P, s.N);
    } else {
      const int64_t chunk = images_per_chunk(s);
      Tensor col = Tensor::empty({s.C * s.KH * s.KW * chunk * P}, x.dtype(), x.device());
      for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
        const int64_t nb = std::min(chunk, s.N - n0), cols = nb * P, threads = s.C * cols;
        im2col_k<scalar_t><<<blocks_for(threads), kThreads>>>(px + n0 * s.C * s.H * s.W, s, ConvIndex(s, nb),
                                                              col.data<scalar_t>(), threads);
        AB_CUDA_CHECK_LAUNCH();
        for (int64_t g = 0; g < s.G; ++g)  // y_n,g (Og, P) = W_g (Og, Kg) col_n,g (Kg, P), n < nb
          gemm_batched(false, false, Og, P, Kg, scalar_t(1), pw + g * Og * Kg, Kg, 0,
                       col.data<scalar_t>() + g * Kg * cols, cols, P, scalar_t(0), py + n0 * s.O * P + g * Og * P, P,
                       s.O * P, nb);
      }
    }
    const int64_t n = y.numel();
    if (b.defined() && n > 0) {
      add_bias_k<scalar_t><<<blocks_for(n), kThreads>>>(py, b.data<scalar_t>(), ChannelIndex(P, s.O, n), n);
      AB_CUDA_CHECK_LAUNCH();
    }
  });
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const ConvShape& s, Tensor* dx, Tensor* dw,
                     Tensor* db) {
  check_conv_args("conv2d backward", x, w);
  check_cuda("conv2d backward", "dy", dy);
  AB_DISPATCH_FLOAT(x.dtype(), "conv2d backward", [&] {
    const int64_t P = s.P(), Kg = s.Kg(), Og = s.Og();
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* pw = w.data<scalar_t>();
    const scalar_t* pdy = dy.data<scalar_t>();
    if (s.depthwise()) {  // a thread per dx element, a block per weight
      const DepthwiseIndex ix(s);
      const int64_t n = dx ? dx->numel() : 0, weights = dw ? dw->numel() : 0;
      if (n > 0) {
        depthwise_dx_k<scalar_t><<<blocks_for(n), kThreads>>>(pdy, pw, s, ix, dx->data<scalar_t>(), n);
        AB_CUDA_CHECK_LAUNCH();
      }
      if (weights > 0) {
        const int blocks = (int)std::min<int64_t>(weights, kMaxBlocks);
        depthwise_dw_k<scalar_t><<<blocks, kThreads>>>(px, pdy, s, ix, dw->data<scalar_t>(), weights);
        AB_CUDA_CHECK_LAUNCH();
      }
    } else {
      const int64_t chunk = images_per_chunk(s), rows = s.C * s.KH * s.KW;
      Tensor col = Tensor::empty({rows * chunk * P}, x.dtype(), x.device());
      Tensor dyt = Tensor::empty({s.O * chunk * P}, x.dtype(), x.device());
      for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
        const int64_t nb = std::min(chunk, s.N - n0), cols = nb * P, ny = nb * s.O * P;
        const ConvIndex ix(s, nb);
        nop_to_op_k<scalar_t><<<blocks_for(ny), kThreads>>>(pdy + n0 * s.O * P, dyt.data<scalar_t>(),
                                                            NopIndex(s.O, P, nb), ny);
        AB_CUDA_CHECK_LAUNCH();
        if (dw) {  // dW_g (Og, Kg) (+)= dYt_g (Og, cols) col_g^T (cols, Kg)
          im2col_k<scalar_t><<<blocks_for(s.C * cols), kThreads>>>(px + n0 * s.C * s.H * s.W, s, ix,
                                                                   col.data<scalar_t>(), s.C * cols);
          AB_CUDA_CHECK_LAUNCH();
          for (int64_t g = 0; g < s.G; ++g)
            gemm(false, true, Og, Kg, cols, scalar_t(1), dyt.data<scalar_t>() + g * Og * cols, cols,
                 col.data<scalar_t>() + g * Kg * cols, cols, n0 == 0 ? scalar_t(0) : scalar_t(1),
                 dw->data<scalar_t>() + g * Og * Kg, Kg);
        }
        if (dx && s.direct()) {  // dx_n,g (Kg, P) = W_g^T (Kg, Og) dYt_n,g (Og, P), n < nb: no col2im
          for (int64_t g = 0; g < s.G; ++g)
            gemm_batched(true, false, Kg, P, Og, scalar_t(1), pw + g * Og * Kg, Kg, 0,
                         dyt.data<scalar_t>() + g * Og * cols, cols, P, scalar_t(0),
                         dx->data<scalar_t>() + n0 * s.C * P + g * Kg * P, P, s.C * P, nb);
        } else if (dx) {  // dcol_g (Kg, cols) = W_g^T (Kg, Og) dYt_g (Og, cols); dx = col2im(dcol)
          for (int64_t g = 0; g < s.G; ++g)
            gemm(true, false, Kg, cols, Og, scalar_t(1), pw + g * Og * Kg, Kg, dyt.data<scalar_t>() + g * Og * cols,
                 cols, scalar_t(0), col.data<scalar_t>() + g * Kg * cols, cols);
          const int64_t n = nb * s.C * s.H * s.W;
          col2im_k<scalar_t><<<blocks_for(n), kThreads>>>(col.data<scalar_t>(), s, ix,
                                                          dx->data<scalar_t>() + n0 * s.C * s.H * s.W, n);
          AB_CUDA_CHECK_LAUNCH();
        }
      }
    }
    if (db) {  // db[o] = sum over n, p of dy[n, o, p]
      Tensor sums = Tensor::empty({s.O}, DType::F64, x.device());
      const ChanPieces p =
          channel_sums<scalar_t>(ChanSum::Sum, pdy, nullptr, nullptr, s.N, s.O, P, sums.data<double>());
      chan_total_k<scalar_t><<<blocks_for(s.O), kThreads>>>(p.sums, s.O, db->data<scalar_t>());
      AB_CUDA_CHECK_LAUNCH();
    }
  });
}

void max_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& argmax) {
  check_cuda("max_pool2d", "x", x);
  const PoolShape q = pool_shape(x, y, k, s, p);
  const int64_t n = y.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "max_pool2d", [&] {
    max_pool_k<scalar_t><<<blocks_for(n), kThreads>>>(x.data<scalar_t>(), q, Split3(q.OH, q.OW, n),
                                                      -std::numeric_limits<scalar_t>::infinity(),
                                                      y.data<scalar_t>(), argmax.data<int32_t>(), n);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, int64_t k, int64_t s, int64_t p, Tensor& dx) {
  check_cuda("max_pool2d backward", "dy", dy);
  const PoolShape q = pool_shape(dx, dy, k, s, p);
  const int64_t n = dx.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(dy.dtype(), "max_pool2d backward", [&] {
    max_pool_grad_k<scalar_t><<<blocks_for(n), kThreads>>>(dy.data<scalar_t>(), argmax.data<int32_t>(), q,
                                                           Split3(q.H, q.W, n),
                                                           dx.data<scalar_t>(), n);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void avg_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y) {
  check_cuda("avg_pool2d", "x", x);
  const PoolShape q = pool_shape(x, y, k, s, p);
  const int64_t n = y.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", [&] {
    avg_pool_k<scalar_t><<<blocks_for(n), kThreads>>>(x.data<scalar_t>(), q, Split3(q.OH, q.OW, n),
                                                      scalar_t(1) / scalar_t(k * k),
                                                      y.data<scalar_t>(), n);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void avg_pool2d_backward(const Tensor& dy, int64_t k, int64_t s, int64_t p, Tensor& dx) {
  check_cuda("avg_pool2d backward", "dy", dy);
  const PoolShape q = pool_shape(dx, dy, k, s, p);
  const int64_t n = dx.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(dy.dtype(), "avg_pool2d backward", [&] {
    avg_pool_grad_k<scalar_t><<<blocks_for(n), kThreads>>>(dy.data<scalar_t>(), q, Split3(q.H, q.W, n),
                                                           scalar_t(1) / scalar_t(k * k),
                                                           dx.data<scalar_t>(), n);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void batch_norm_train_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool relu, Tensor& y,
                              Tensor& mean, Tensor& var, Tensor& invstd, Tensor& affine,
                              const cpu::ChannelSum* across, const Tensor& residual, const BnPact* pact,
                              const BnRunning* running) {
  check_cuda("batch_norm", "x", x);
  if (running) {
    check_cuda("batch_norm", "running_mean", running->mean);
    check_cuda("batch_norm", "running_var", running->var);
  }
  const BnDims d = bn_dims(x);
  double M = double(d.N * d.S);
  if (across) (*across)(&M, 1);
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] {
    // Three passes as on the CPU: the sums for the mean, the sums of squared deviations, then y.
    Tensor sums = Tensor::empty({2 * d.C}, DType::F64, x.device());
    double *sum = sums.data<double>(), *sq = sum + d.C;
    const scalar_t* px = x.data<scalar_t>();
    const ChanPieces sum_p = channel_sums<scalar_t>(ChanSum::Sum, px, nullptr, nullptr, d.N, d.C, d.S, sum);
    const MeanOf mean_of{sum_across(sum_p.sums, d.C, across), M};  // bn_stats_k writes mean
    const ChanPieces sq_p = channel_sums<scalar_t>(ChanSum::SqDev, px, nullptr, nullptr, d.N, d.C, d.S, sq, mean_of);
    scalar_t* sc = affine.data<scalar_t>();
    bn_stats_k<scalar_t><<<blocks_for(d.C), kThreads>>>(sum, sum_across(sq_p.sums, d.C, across), M, eps,
                                                        ptr<scalar_t>(w), ptr<scalar_t>(b),
                                                        mean.data<scalar_t>(), var.data<scalar_t>(),
                                                        invstd.data<scalar_t>(), sc, sc + d.C,
                                                        running ? running->mean.data<scalar_t>() : nullptr,
                                                        running ? running->var.data<scalar_t>() : nullptr,
                                                        running ? running->momentum : 0.0, d.C);
    AB_CUDA_CHECK_LAUNCH();
    bn_affine_k<scalar_t><<<blocks_for(x.numel()), kThreads>>>(px, sc, sc + d.C, ptr<scalar_t>(residual), relu,
                                                               y.data<scalar_t>(), d.chan(), x.numel());
    AB_CUDA_CHECK_LAUNCH();
  });
  // PACT after the ReLU: one more pass, in place or (a tap) into q (the CPU writes it in the same pass)
  if (pact) {
    Tensor q = pact->q.defined() ? pact->q : y;
    pact_forward(y, pact->a, false, pact->levels, q);
  }
}

void batch_norm_eval_forward(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean, const Tensor& var,
                             double eps, bool relu, Tensor& y, Tensor& invstd, Tensor& affine, const Tensor& residual,
                             const BnPact* pact) {
  check_cuda("batch_norm", "x", x);
  check_cuda("batch_norm", "running_mean", mean);
  check_cuda("batch_norm", "running_var", var);
  const BnDims d = bn_dims(x);
  if (d.C == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm", [&] {
    scalar_t* sc = affine.data<scalar_t>();
    // About four elements per thread, so that a block's coefficient step is shared by 1024 of them;
    // one block at least: the coefficients are written even for an empty batch.
    const int64_t M = d.N * d.S;
    const dim3 grid((unsigned)std::max(blocks_for((M + 3) / 4), 1), (unsigned)std::min<int64_t>(d.C, 65535));
    bn_eval_k<scalar_t><<<grid, kThreads>>>(x.data<scalar_t>(), ptr<scalar_t>(w), ptr<scalar_t>(b),
                                            mean.data<scalar_t>(), var.data<scalar_t>(), eps, ptr<scalar_t>(residual),
                                            relu, y.data<scalar_t>(), invstd.data<scalar_t>(), sc, sc + d.C, d.C, d.S,
                                            DivMod(std::max<int64_t>(d.S, 1), M), M);
    AB_CUDA_CHECK_LAUNCH();
  });
  if (pact) {
    Tensor q = pact->q.defined() ? pact->q : y;
    pact_forward(y, pact->a, false, pact->levels, q);
  }
}

void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd, bool training,
                         const BnRelu& relu, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db,
                         const cpu::ChannelSum* across, Tensor* dy_relu, Tensor* dclip) {
  check_cuda("batch_norm backward", "x", x);
  check_cuda("batch_norm backward", "dy", dy);
  AB_CHECK(!dy_relu || relu.out.defined(), "batch_norm backward: dy_relu needs relu.out (a ReLU after a residual)");
  AB_CHECK(!relu.clip.defined() || ((relu.affine.defined() || relu.dq.defined()) && dclip),
           "batch_norm backward: PACT's clip needs relu.affine (or a tap's dq) and dclip");
  AB_CHECK(!relu.dq.defined() || (relu.clip.defined() && (relu.out.defined() || relu.affine.defined())),
           "batch_norm backward: the tap's dq needs the clip and relu.out or relu.affine");
  const BnDims d = bn_dims(x);
  double M = double(d.N * d.S);
  if (across) (*across)(&M, 1);
  AB_DISPATCH_FLOAT(x.dtype(), "batch_norm backward", [&] {
    Tensor sums = Tensor::empty({2 * d.C}, DType::F64, x.device());  // sum dy, then sum dy xhat
    Tensor coef = Tensor::empty({3 * d.C}, x.dtype(), x.device());   // a, k, d of dx = a dy + k (x - mean) + d
    const scalar_t *px = x.data<scalar_t>(), *pg = dy.data<scalar_t>(), *pm = mean.data<scalar_t>();
    Tensor masked;  // with a ReLU after the BN: dy through it first (one more pass; the CPU fuses it)
    Tensor dy_sum;  // with a tap: dy + PACT's backward of the tap's dq, by their own kernels, before the mask
    if (relu.dq.defined()) {
      Tensor r = relu.out;  // the ReLU's output: kept after a residual, else recomputed
      if (!r.defined()) {
        const scalar_t* sc = relu.affine.data<scalar_t>();
        r = Tensor::empty(x.shape(), x.dtype(), x.device());
        bn_affine_k<scalar_t><<<blocks_for(x.numel()), kThreads>>>(px, sc, sc + d.C, nullptr, true,
                                                                   r.data<scalar_t>(), d.chan(), x.numel());
        AB_CUDA_CHECK_LAUNCH();
      }
      Tensor through = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      pact_backward(r, relu.clip, false, relu.dq, through, *dclip);
      dy_sum = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      binary(BinaryOp::Add, dy, through, dy_sum);
      pg = dy_sum.data<scalar_t>();
    }
    if (relu.out.defined()) {
      check_cuda("batch_norm backward", "relu.out", relu.out);
      masked = dy_relu ? *dy_relu : Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      bn_relu_grad_k<scalar_t><<<blocks_for(dy.numel()), kThreads>>>(pg, relu.out.data<scalar_t>(),
                                                                     masked.data<scalar_t>(), dy.numel());
      AB_CUDA_CHECK_LAUNCH();
      pg = masked.data<scalar_t>();
    } else if (relu.clip.defined() && !relu.dq.defined()) {
      // PACT after the ReLU, by its own kernels: the ReLU's output recomputed, PACT's backward
      // (the clip's gradient included), then the ReLU's mask
      const scalar_t* sc = relu.affine.data<scalar_t>();
      Tensor r = Tensor::empty(x.shape(), x.dtype(), x.device());
      Tensor through = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      bn_affine_k<scalar_t><<<blocks_for(x.numel()), kThreads>>>(px, sc, sc + d.C, nullptr, true, r.data<scalar_t>(),
                                                                 d.chan(), x.numel());
      AB_CUDA_CHECK_LAUNCH();
      pact_backward(r, relu.clip, false, dy, through, *dclip);
      masked = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      bn_relu_grad_k<scalar_t><<<blocks_for(dy.numel()), kThreads>>>(through.data<scalar_t>(), r.data<scalar_t>(),
                                                                     masked.data<scalar_t>(), dy.numel());
      AB_CUDA_CHECK_LAUNCH();
      pg = masked.data<scalar_t>();
    } else if (relu.affine.defined()) {
      check_cuda("batch_norm backward", "relu.affine", relu.affine);
      masked = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
      const scalar_t* sc = relu.affine.data<scalar_t>();
      bn_relu_grad_affine_k<scalar_t><<<blocks_for(dy.numel()), kThreads>>>(pg, px, sc, sc + d.C,
                                                                            masked.data<scalar_t>(), d.chan(),
                                                                            dy.numel());
      AB_CUDA_CHECK_LAUNCH();
      pg = masked.data<scalar_t>();
    }
    const ChanPieces p = channel_sums<scalar_t>(ChanSum::GradPair, px, pg, pm, d.N, d.C, d.S, sums.data<double>());
    const bool across_first = training && across;  // the coefficients wait for the sums of every process
    bn_grad_k<scalar_t><<<blocks_for(d.C), kThreads>>>(p.sums, true, ptr<scalar_t>(w), invstd.data<scalar_t>(), M,
                                                       training, dw ? dw->data<scalar_t>() : nullptr,
                                                       db ? db->data<scalar_t>() : nullptr,
                                                       across_first ? nullptr : coef.data<scalar_t>(), d.C);
    AB_CUDA_CHECK_LAUNCH();
    if (across_first) {
      bn_grad_k<scalar_t><<<blocks_for(d.C), kThreads>>>(sum_across(p.sums.totals(), 2 * d.C, across), false,
                                                         ptr<scalar_t>(w), invstd.data<scalar_t>(), M, training,
                                                         nullptr, nullptr, coef.data<scalar_t>(), d.C);
      AB_CUDA_CHECK_LAUNCH();
    }
    bn_dx_k<scalar_t><<<blocks_for(x.numel()), kThreads>>>(px, pg, pm, coef.data<scalar_t>(), dx.data<scalar_t>(), d.chan(),
                                                           d.C, x.numel());
    AB_CUDA_CHECK_LAUNCH();
  });
}

void softmax(const Tensor& x, int64_t outer, int64_t K, int64_t inner, bool log, Tensor& y) {
  check_cuda("softmax", "x", x);
  if (outer * inner == 0 || K == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "softmax", [&] {
    softmax_k<scalar_t><<<blocks_for(outer * inner), kThreads>>>(x.data<scalar_t>(), y.data<scalar_t>(), outer, K,
                                                                 inner, log);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void softmax_backward(const Tensor& y, const Tensor& dy, int64_t outer, int64_t K, int64_t inner, bool log,
                      Tensor& dx) {
  check_cuda("softmax backward", "y", y);
  if (outer * inner == 0 || K == 0) return;
  AB_DISPATCH_FLOAT(y.dtype(), "softmax backward", [&] {
    softmax_grad_k<scalar_t><<<blocks_for(outer * inner), kThreads>>>(y.data<scalar_t>(), dy.data<scalar_t>(),
                                                                      dx.data<scalar_t>(), outer, K, inner, log);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_loss(const Tensor& logp, const Tensor& labels, double eps, Tensor& loss) {
  check_cuda("cross_entropy", "logp", logp);
  check_cuda("cross_entropy", "labels", labels);
  check_cuda("cross_entropy", "loss", loss);
  const int64_t N = logp.size(0), K = logp.size(1);
  Tensor rows = Tensor::empty({std::max<int64_t>(N, 1)}, DType::F64, logp.device());
  Tensor lab = labels.contiguous();
  AB_DISPATCH_FLOAT(logp.dtype(), "cross_entropy", [&] {
    if (N > 0) {
      ce_rows_k<scalar_t><<<blocks_for(N), kThreads>>>(logp.data<scalar_t>(), lab.data<int64_t>(), N, K, eps,
                                                       rows.data<double>());
      AB_CUDA_CHECK_LAUNCH();
    }
    // The N row losses are added in order, in double, on the GPU: the loss never visits the host.
    ce_mean_k<scalar_t><<<1, 1>>>(rows.data<double>(), lab.data<int64_t>(), N, K, loss.data<scalar_t>(),
                                  kernel_error());
    AB_CUDA_CHECK_LAUNCH();
  });
}

void add_step_stats(const Tensor& logits, const Tensor& labels, const Tensor& loss, Tensor& acc) {
  check_cuda("add_step_stats", "logits", logits);
  check_cuda("add_step_stats", "labels", labels);
  check_cuda("add_step_stats", "loss", loss);
  check_cuda("add_step_stats", "acc", acc);
  check_step_stats(logits, labels, loss, acc);
  Tensor lab = labels.contiguous();
  AB_DISPATCH_FLOAT(logits.dtype(), "add_step_stats", [&] {
    step_stats_k<scalar_t><<<1, kThreads>>>(logits.data<scalar_t>(), lab.data<int64_t>(), loss.data<scalar_t>(),
                                            logits.size(0), logits.size(1), acc.data<double>());
    AB_CUDA_CHECK_LAUNCH();
  });
}

void collab_teachers(const std::vector<Tensor>& probs, const std::vector<Tensor>& logits, const Tensor& labels,
                     Tensor& out, Tensor& counts) {
  const char* op = "collab_teachers";
  for (const std::vector<Tensor>* list : {&probs, &logits})
    for (const Tensor& t : *list) check_cuda(op, "a teacher's tensor", t);
  check_cuda(op, "labels", labels);
  check_cuda(op, "out", out);
  check_cuda(op, "counts", counts);
  check_collab_teachers(probs, logits, labels, out, counts);
  static_assert(kTeachers < kThreads, "collab_choose_k counts with one thread per teacher, plus one");
  const int64_t N = out.size(0), K = out.size(1);
  Tensor lab = labels.contiguous();
  Tensor choice = Tensor::empty({std::max<int64_t>(N, 1)}, DType::I32, out.device());
  AB_DISPATCH_FLOAT(out.dtype(), op, [&] {
    TeacherTable<scalar_t> t;
    t.count = (int)probs.size();
    for (int j = 0; j < t.count; ++j) t.probs[j] = probs[j].data<scalar_t>(), t.logits[j] = logits[j].data<scalar_t>();
    collab_choose_k<scalar_t><<<1, kThreads>>>(t, lab.data<int64_t>(), N, K, choice.data<int32_t>(),
                                               counts.data<int64_t>());
    AB_CUDA_CHECK_LAUNCH();
    if (N * K == 0) return;
    collab_gather_k<scalar_t><<<blocks_for(N * K), kThreads>>>(t, choice.data<int32_t>(), K, out.data<scalar_t>(),
                                                               N * K);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_backward(const Tensor& logp, const Tensor& labels, double eps, const Tensor& dloss,
                            Tensor& dlogits) {
  check_cuda("cross_entropy backward", "logp", logp);
  check_cuda("cross_entropy backward", "labels", labels);
  check_cuda("cross_entropy backward", "dloss", dloss);
  const int64_t N = logp.size(0), K = logp.size(1);
  if (N == 0) return;
  Tensor lab = labels.contiguous();
  AB_DISPATCH_FLOAT(logp.dtype(), "cross_entropy backward", [&] {
    ce_grad_k<scalar_t><<<blocks_for(N), kThreads>>>(logp.data<scalar_t>(), lab.data<int64_t>(), N, K, eps,
                                                     dloss.data<scalar_t>(), dlogits.data<scalar_t>());
    AB_CUDA_CHECK_LAUNCH();
  });
}

void increment(Tensor& counter) {
  check_cuda("increment", "counter", counter);
  AB_CHECK(counter.dtype() == DType::I64 && counter.numel() == 1, "increment: expects one int64, got ", counter.str());
  increment_k<<<1, 1>>>(counter.data<int64_t>());
  AB_CUDA_CHECK_LAUNCH();
}

void temporal_shift(const Tensor& x, Tensor& y, int64_t frames, int64_t fold, int dir) {
  check_cuda("temporal_shift", "x", x);
  const int64_t rows = x.size(0), C = x.size(1), HW = x.numel() / std::max<int64_t>(rows * C, 1), n = x.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "temporal_shift", [&] {
    shift_k<scalar_t><<<blocks_for(n), kThreads>>>(x.data<scalar_t>(), y.data<scalar_t>(), Split3(C, HW, n),
                                                   DivMod(frames, n), C, HW, fold, dir, n);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void max_backward(const Tensor& g, const Tensor& idx, int64_t outer, int64_t R, int64_t inner, Tensor& gx) {
  check_cuda("max backward", "g", g);
  const int64_t n = outer * R * inner;
  if (n == 0) return;
  AB_DISPATCH_FLOAT(g.dtype(), "max backward", [&] {
    max_grad_k<scalar_t><<<blocks_for(n), kThreads>>>(g.data<scalar_t>(), idx.data<int64_t>(), gx.data<scalar_t>(),
                                                      Split3(R, inner, n), inner, n);
    AB_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace anybit::cuda
