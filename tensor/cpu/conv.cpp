// conv.cpp - conv2d forward and backward on the CPU: im2col + GEMM per image, OpenMP over images.
//
// For one image n and one group g, with col = im2col(x[n]) of shape (C*KH*KW, OH*OW) whose rows
// are ordered (c, kh, kw) so that group g owns rows [g*Kg, (g+1)*Kg):
//   forward:        Y[n, g] (Og, P)  = W[g] (Og, Kg) * col[g] (Kg, P)          (+ b)
//   input grad:     dcol[g] (Kg, P)  = W[g]^T (Kg, Og) * dY[n, g] (Og, P);  dX[n] = col2im(dcol)
//   weight grad:    dW[g] (Og, Kg)  += dY[n, g] (Og, P) * col[g]^T (P, Kg)
//   bias grad:      db[o]           += sum_p dY[n, o, p]
// Why per image: col of one image is small enough to stay in L2 (16x3x3 channels x 32x32 pixels
// = 590 KB in float32), where a whole-batch im2col would stream 75 MB through memory. Each thread
// owns a col buffer and a private dW, summed at the end in thread order (deterministic). BLAS runs
// single-threaded inside our parallel loop (OpenBLAS's OpenMP build detects the nesting); when
// there are fewer images than threads we loop serially and let OpenBLAS use the threads.
// A 1x1 stride-1 unpadded convolution skips im2col: x[n] (C, H*W) already is the col matrix.
// Read next: tensor/ref.cpp (the scalar spec), autograd/conv.cpp (checks, shapes, autograd).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/nn.h"

namespace anybit::cpu {

ConvShape conv_shape(const Shape& x, const Shape& w, const Conv2dOptions& opt) {
  ConvShape s;
  s.N = x[0], s.C = x[1], s.H = x[2], s.W = x[3];
  s.O = w[0], s.KH = w[2], s.KW = w[3], s.G = opt.groups;
  s.opt = opt;
  s.OH = (s.H + 2 * opt.pad_h - opt.dil_h * (s.KH - 1) - 1) / opt.stride_h + 1;
  s.OW = (s.W + 2 * opt.pad_w - opt.dil_w * (s.KW - 1) - 1) / opt.stride_w + 1;
  return s;
}

static ConvThreading g_threading = ConvThreading::OverImages;
void set_conv_threading(ConvThreading t) { g_threading = t; }
ConvThreading conv_threading() { return g_threading; }

namespace {

// The output columns ow whose input column ow*stride + off lies inside [0, W): [lo, hi).
inline void valid_range(int64_t off, int64_t stride, int64_t W, int64_t OW, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  hi = W - 1 - off >= 0 ? (W - 1 - off) / stride + 1 : 0;
  hi = std::min(hi, OW);
  lo = std::min(lo, hi);
}

// col (C*KH*KW, OH*OW) = the input patches of x (C, H, W); zeros where a patch hangs over the edge.
template <typename T>
void im2col(const T* x, T* col, const ConvShape& s) {
  const Conv2dOptions& o = s.opt;
  const int64_t P = s.P();
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        T* row = col + ((c * s.KH + kh) * s.KW + kw) * P;
        const int64_t woff = kw * o.dil_w - o.pad_w;
        int64_t lo, hi;
        valid_range(woff, o.stride_w, s.W, s.OW, lo, hi);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          T* r = row + oh * s.OW;
          const int64_t ih = oh * o.stride_h - o.pad_h + kh * o.dil_h;
          if (ih < 0 || ih >= s.H) {
            std::fill(r, r + s.OW, T(0));
            continue;
          }
          const T* xr = x + (c * s.H + ih) * s.W + woff;
          std::fill(r, r + lo, T(0));
          if (o.stride_w == 1)
            std::memcpy(r + lo, xr + lo, (hi - lo) * sizeof(T));
          else
            for (int64_t ow = lo; ow < hi; ++ow) r[ow] = xr[ow * o.stride_w];
          std::fill(r + hi, r + s.OW, T(0));
        }
      }
}

// dx (C, H, W) = the adjoint of im2col: every col entry added back to the pixel it was read from.
template <typename T>
void col2im(const T* col, T* dx, const ConvShape& s) {
  const Conv2dOptions& o = s.opt;
  const int64_t P = s.P();
  std::fill(dx, dx + s.C * s.H * s.W, T(0));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const T* row = col + ((c * s.KH + kh) * s.KW + kw) * P;
        const int64_t woff = kw * o.dil_w - o.pad_w;
        int64_t lo, hi;
        valid_range(woff, o.stride_w, s.W, s.OW, lo, hi);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * o.stride_h - o.pad_h + kh * o.dil_h;
          if (ih < 0 || ih >= s.H) continue;
          const T* r = row + oh * s.OW;
          T* xr = dx + (c * s.H + ih) * s.W + woff;
          if (o.stride_w == 1)
            for (int64_t ow = lo; ow < hi; ++ow) xr[ow] += r[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) xr[ow * o.stride_w] += r[ow];
        }
      }
}

// The number of threads of our own loop over images (1: serial, OpenBLAS threads each GEMM).
int image_threads(int64_t N) {
  if (g_threading == ConvThreading::InsideGemm) return 1;
  return (int)std::min<int64_t>(num_threads(), std::max<int64_t>(N, 1));
}

// Runs body(n, thread) for n in [0, N) on nt threads: in parallel over images (BLAS
// single-threaded inside), or serially when nt == 1 (BLAS threads itself). body may use the
// per-thread buffers of index `thread` < nt.
template <typename F>
void for_each_image(int64_t N, int nt, F body) {
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num();
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) body(n, t);
    }
  } else {
    for (int64_t n = 0; n < N; ++n) body(n, 0);
  }
}

template <typename T>
void forward_impl(const Tensor& x, const Tensor& w, const Tensor& b, const ConvShape& s, Tensor& y) {
  const int64_t P = s.P(), Kg = s.Kg(), Og = s.Og(), col_size = s.C * s.KH * s.KW * P;
  const int nt = image_threads(s.N);
  const bool direct = s.direct();
  Tensor col_buf = direct ? Tensor() : Tensor::empty({nt * col_size}, x.dtype());
  const T *X = x.data<T>(), *Wt = w.data<T>(), *B = b.defined() ? b.data<T>() : nullptr;
  T* Y = y.data<T>();
  T* cols = direct ? nullptr : col_buf.data<T>();
  for_each_image(s.N, nt, [&](int64_t n, int t) {
    const T* xn = X + n * s.C * s.H * s.W;
    const T* col = xn;
    if (!direct) {
      im2col(xn, cols + t * col_size, s);
      col = cols + t * col_size;
    }
    T* yn = Y + n * s.O * P;
    for (int64_t g = 0; g < s.G; ++g)
      gemm(false, false, Og, P, Kg, T(1), Wt + g * Og * Kg, Kg, col + g * Kg * P, P, T(0),
           yn + g * Og * P, P);
    if (B)
      for (int64_t o = 0; o < s.O; ++o)
        for (int64_t p = 0; p < P; ++p) yn[o * P + p] += B[o];
  });
}

template <typename T>
void backward_impl(const Tensor& x, const Tensor& w, const Tensor& dy, const ConvShape& s, Tensor* dx,
                   Tensor* dw, Tensor* db) {
  const int64_t P = s.P(), Kg = s.Kg(), Og = s.Og(), col_size = s.C * s.KH * s.KW * P;
  const int64_t w_size = s.O * Kg;
  const int nt = image_threads(s.N);
  const bool direct = s.direct();
  // Per-thread buffers: col (for dW), dcol (for dX), a private dW and db.
  Tensor col_buf = direct || !dw ? Tensor() : Tensor::empty({nt * col_size}, x.dtype());
  Tensor dcol_buf = direct || !dx ? Tensor() : Tensor::empty({nt * col_size}, x.dtype());
  Tensor dw_buf = dw ? Tensor::zeros({nt * w_size}, x.dtype()) : Tensor();
  Tensor db_buf = db ? Tensor::zeros({nt * s.O}, x.dtype()) : Tensor();
  const T *X = x.data<T>(), *Wt = w.data<T>(), *dY = dy.data<T>();
  T* dX = dx ? dx->data<T>() : nullptr;
  T* cols = col_buf.defined() ? col_buf.data<T>() : nullptr;
  T* dcols = dcol_buf.defined() ? dcol_buf.data<T>() : nullptr;
  T* dWs = dw ? dw_buf.data<T>() : nullptr;
  T* dBs = db ? db_buf.data<T>() : nullptr;
  for_each_image(s.N, nt, [&](int64_t n, int t) {
    const T* xn = X + n * s.C * s.H * s.W;
    const T* dyn = dY + n * s.O * P;
    if (dWs) {
      // dW[g] += dY[n, g] * col[g]^T
      const T* col = xn;
      if (!direct) {
        im2col(xn, cols + t * col_size, s);
        col = cols + t * col_size;
      }
      T* dwt = dWs + t * w_size;
      for (int64_t g = 0; g < s.G; ++g)
        gemm(false, true, Og, Kg, P, T(1), dyn + g * Og * P, P, col + g * Kg * P, P, T(1),
             dwt + g * Og * Kg, Kg);
    }
    if (dX) {
      // dcol[g] = W[g]^T * dY[n, g]; dX[n] = col2im(dcol) (direct: dcol is dX[n] itself)
      T* dxn = dX + n * s.C * s.H * s.W;
      T* dcol = direct ? dxn : dcols + t * col_size;
      for (int64_t g = 0; g < s.G; ++g)
        gemm(true, false, Kg, P, Og, T(1), Wt + g * Og * Kg, Kg, dyn + g * Og * P, P, T(0),
             dcol + g * Kg * P, P);
      if (!direct) col2im(dcol, dxn, s);
    }
    if (dBs) {
      // db[o] += sum_p dY[n, o, p]
      T* dbt = dBs + t * s.O;
      for (int64_t o = 0; o < s.O; ++o) {
        T acc = 0;
        for (int64_t p = 0; p < P; ++p) acc += dyn[o * P + p];
        dbt[o] += acc;
      }
    }
  });
  // Sum the per-thread partials in thread order.
  if (dw) {
    T* out = dw->data<T>();
    std::copy(dWs, dWs + w_size, out);
    for (int t = 1; t < nt; ++t)
      for (int64_t i = 0; i < w_size; ++i) out[i] += dWs[t * w_size + i];
  }
  if (db) {
    T* out = db->data<T>();
    std::copy(dBs, dBs + s.O, out);
    for (int t = 1; t < nt; ++t)
      for (int64_t o = 0; o < s.O; ++o) out[o] += dBs[t * s.O + o];
  }
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const ConvShape& s, Tensor& y) {
  AB_DISPATCH_FLOAT(x.dtype(), "conv2d", [&] { forward_impl<scalar_t>(x, w, b, s, y); });
}

void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const ConvShape& s,
                     Tensor* dx, Tensor* dw, Tensor* db) {
  AB_DISPATCH_FLOAT(x.dtype(), "conv2d backward", [&] { backward_impl<scalar_t>(x, w, dy, s, dx, dw, db); });
}

}  // namespace anybit::cpu
