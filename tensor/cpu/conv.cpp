// conv.cpp - conv2d forward and backward on the CPU: im2col + GEMM per image, OpenMP over images.
//
// For one image n and one group g, with col = im2col(x[n]) of shape (C*KH*KW, OH*OW) whose rows
// are ordered (c, kh, kw) so that group g owns rows [g*Kg, (g+1)*Kg):
//   forward:        Y[n, g] (Og, P)  = W[g] (Og, Kg) * col[g] (Kg, P)          (+ b)
//   input grad:     dcol[g] (Kg, P)  = W[g]^T (Kg, Og) * dY[n, g] (Og, P);  dX[n] = col2im(dcol)
//     or, for a "same" stride-1 convolution (output size = input size, e.g. 3x3 with padding 1),
//     dX is the convolution of dY with the same padding and the weights flipped and transposed,
//     W'[c][o][kh][kw] = W[o][c][KH-1-kh][KW-1-kw]: dX[n, g] (Cg, P) = W'[g] (Cg, Og*KH*KW) *
//     im2col(dY[n])[g]. Same arithmetic, but a GEMM of depth Og*KH*KW (144 for 16 channels)
//     instead of depth Og (16), which OpenBLAS runs much faster, and no col2im.
//   weight grad:    dW[g]^T (Kg, Og) += col[g] (Kg, P) * dY[n, g]^T (P, Og)   (transposed: faster)
//   bias grad:      db[o]           += sum_p dY[n, o, p]
// Why per image: col of one image is small enough to stay in L2 (16x3x3 channels x 32x32 pixels
// = 590 KB in float32), where a whole-batch im2col would stream 75 MB through memory. Each thread
// owns a col buffer and a private dW, summed at the end in thread order (deterministic). BLAS runs
// single-threaded inside our parallel loop (OpenBLAS's OpenMP build detects the nesting); when
// there are fewer images than threads we loop serially and let OpenBLAS use the threads.
// A 1x1 stride-1 unpadded convolution skips im2col: x[n] (C, H*W) already is the col matrix.
// In float32 on AVX-512 and AVX2 builds, the forward and the input gradient of "same" stride-1
// convolutions, and the weight gradient of 3x3 ones, skip im2col and GEMM altogether:
// tensor/cpu/conv_direct.cpp computes them directly.
// Read next: tensor/ref.cpp (the scalar spec), autograd/conv.cpp (checks, shapes, autograd).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
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

// One row of the col matrix: the (c, kh, kw) tap read at every output pixel. For a pixel
// (oh, ow) it reads input row oh*stride_h + hoff and column ow*stride_w + woff; the output rows
// that read inside the image are [oh_lo, oh_hi), the columns [lo, hi) (valid_range).
struct Tap {
  int64_t hoff, woff, oh_lo, oh_hi, lo, hi;
};

inline Tap tap(const ConvShape& s, int64_t kh, int64_t kw) {
  const Conv2dOptions& o = s.opt;
  Tap t;
  t.hoff = kh * o.dil_h - o.pad_h;
  t.woff = kw * o.dil_w - o.pad_w;
  valid_range(t.hoff, o.stride_h, s.H, s.OH, t.oh_lo, t.oh_hi);
  valid_range(t.woff, o.stride_w, s.W, s.OW, t.lo, t.hi);
  return t;
}

// Stride 1 with OW == W (a "same"-width convolution, such as 3x3 with padding 1): the valid part
// of a col row is then one contiguous stretch of the input plane, shifted by hoff*W + woff, apart
// from the columns that hang over the left or right edge. Copying the stretch in one go and then
// zeroing those few columns is much faster than copying row by row (rows are only 8-32 floats).
inline bool same_width_stride1(const ConvShape& s) {
  return s.opt.stride_h == 1 && s.opt.stride_w == 1 && s.OW == s.W;
}

// col (C*KH*KW, OH*OW) = the input patches of x (C, H, W); zeros where a patch hangs over the edge.
template <typename T>
void im2col(const T* x, T* col, const ConvShape& s) {
  const Conv2dOptions& o = s.opt;
  const int64_t P = s.P();
  const bool contiguous = same_width_stride1(s);
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        T* row = col + ((c * s.KH + kh) * s.KW + kw) * P;
        const T* plane = x + c * s.H * s.W;
        const Tap t = tap(s, kh, kw);
        if (t.oh_lo >= t.oh_hi || t.lo >= t.hi) {  // the tap never lands inside the image
          std::fill(row, row + P, T(0));
          continue;
        }
        std::fill(row, row + t.oh_lo * s.OW, T(0));
        std::fill(row + t.oh_hi * s.OW, row + P, T(0));
        if (contiguous) {
          // row[i] = plane[i + hoff*W + woff] for i from the first valid pixel of row oh_lo to
          // the last valid pixel of row oh_hi - 1; then clear the edge columns in between.
          const int64_t begin = t.oh_lo * s.W + t.lo, end = (t.oh_hi - 1) * s.W + t.hi;
          std::memcpy(row + begin, plane + begin + t.hoff * s.W + t.woff, (end - begin) * sizeof(T));
          for (int64_t oh = t.oh_lo; oh < t.oh_hi; ++oh) {
            T* r = row + oh * s.W;
            for (int64_t ow = 0; ow < t.lo; ++ow) r[ow] = T(0);
            for (int64_t ow = t.hi; ow < s.W; ++ow) r[ow] = T(0);
          }
          continue;
        }
        for (int64_t oh = t.oh_lo; oh < t.oh_hi; ++oh) {
          T* r = row + oh * s.OW;
          const T* xr = plane + (oh * o.stride_h + t.hoff) * s.W + t.woff;
          std::fill(r, r + t.lo, T(0));
          if (o.stride_w == 1)
            std::memcpy(r + t.lo, xr + t.lo, (t.hi - t.lo) * sizeof(T));
          else
            for (int64_t ow = t.lo; ow < t.hi; ++ow) r[ow] = xr[ow * o.stride_w];
          std::fill(r + t.hi, r + s.OW, T(0));
        }
      }
}

// dx (C, H, W) = the adjoint of im2col: every col entry added back to the pixel it was read from.
// In the same-width stride-1 case the edge columns of col are zeroed first (col is scratch), so
// that each row of taps is added back as one contiguous stretch, like im2col copies it.
template <typename T>
void col2im(T* col, T* dx, const ConvShape& s) {
  const Conv2dOptions& o = s.opt;
  const int64_t P = s.P();
  const bool contiguous = same_width_stride1(s);
  std::fill(dx, dx + s.C * s.H * s.W, T(0));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        T* row = col + ((c * s.KH + kh) * s.KW + kw) * P;
        T* plane = dx + c * s.H * s.W;
        const Tap t = tap(s, kh, kw);
        if (t.oh_lo >= t.oh_hi || t.lo >= t.hi) continue;
        if (contiguous) {
          const int64_t begin = t.oh_lo * s.W + t.lo, end = (t.oh_hi - 1) * s.W + t.hi;
          for (int64_t oh = t.oh_lo; oh < t.oh_hi; ++oh) {
            T* r = row + oh * s.W;
            for (int64_t ow = 0; ow < t.lo; ++ow) r[ow] = T(0);
            for (int64_t ow = t.hi; ow < s.W; ++ow) r[ow] = T(0);
          }
          const int64_t shift = t.hoff * s.W + t.woff;
          for (int64_t i = begin; i < end; ++i) plane[i + shift] += row[i];
          continue;
        }
        for (int64_t oh = t.oh_lo; oh < t.oh_hi; ++oh) {
          const T* r = row + oh * s.OW;
          T* xr = plane + (oh * o.stride_h + t.hoff) * s.W + t.woff;
          if (o.stride_w == 1)
            for (int64_t ow = t.lo; ow < t.hi; ++ow) xr[ow] += r[ow];
          else
            for (int64_t ow = t.lo; ow < t.hi; ++ow) xr[ow * o.stride_w] += r[ow];
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
  const T *X = x.data<T>(), *Wt = w.data<T>(), *B = b.defined() ? b.data<T>() : nullptr;
  T* Y = y.data<T>();
  if constexpr (std::is_same_v<T, float>) {
    if (direct_conv_supported(s, x.dtype())) {  // conv_direct.cpp: no im2col, no GEMM
      const DirectPlan plan = make_direct_plan(s, Wt);
      // one thread per image; with a single image (batch 1) the threads share its pixels
      const int inner = nt == 1 ? (int)num_threads() : 1;
      for_each_image(s.N, nt, [&](int64_t n, int) {
        T* yn = Y + n * s.O * P;
        direct_conv_image(X + n * s.C * s.H * s.W, yn, s, plan, inner);
        if (B)
          for (int64_t o = 0; o < s.O; ++o)
            for (int64_t p = 0; p < P; ++p) yn[o * P + p] += B[o];
      });
      return;
    }
  }
  const bool direct = s.direct();
  Tensor col_buf = direct ? Tensor() : Tensor::empty({nt * col_size}, x.dtype());
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
  // A "same" stride-1 convolution gets its input gradient as another convolution, of dY with the
  // flipped and transposed weights (see the top of the file): im2col of dY, then a GEMM as deep as
  // the forward's, instead of a GEMM of depth Og (thin, slow) into dcol and col2im.
  const bool dx_as_conv = dx && !direct && s.same_stride1();
  ConvShape sy = s;  // the geometry of that convolution: O input channels, C output channels
  sy.C = s.O, sy.O = s.C;
  const int64_t Ky = sy.Kg(), ycol_size = s.O * s.KH * s.KW * P;
  // ... and that convolution runs without im2col where conv_direct.cpp supports it
  const bool dx_direct = dx_as_conv && direct_conv_supported(sy, x.dtype());
  // A stride-2 convolution's input gradient runs directly too, as four stride-1 ones (conv_direct.cpp).
  const bool dx_s2 = dx && !dx_as_conv && direct_dx_s2_supported(s, x.dtype());
  // The weight gradient of 3x3 "same" convolutions, too, is computed directly (conv_direct.cpp).
  const bool dw_direct = dw && direct_dw_supported(s, x.dtype());
  // Per-thread buffers: col (for dW), dcol or the col of dY (for dX), a private dW and db.
  Tensor col_buf = direct || !dw || dw_direct ? Tensor() : Tensor::empty({nt * col_size}, x.dtype());
  Tensor dcol_buf = direct || !dx || dx_direct || dx_s2 ? Tensor()
                                               : Tensor::empty({nt * (dx_as_conv ? ycol_size : col_size)}, x.dtype());
  Tensor wflip_buf = dx_as_conv ? Tensor::empty({s.C * Ky}, x.dtype()) : Tensor();
  if (dx_as_conv) {
    // W'[g*Cg + c][o][kh][kw] = W[g*Og + o][c][KH-1-kh][KW-1-kw]
    const T* Wt = w.data<T>();
    T* Wf = wflip_buf.data<T>();
    const int64_t Cg = s.Cg(), KK = s.KH * s.KW;
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t o = 0; o < Og; ++o)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t kh = 0; kh < s.KH; ++kh)
            for (int64_t kw = 0; kw < s.KW; ++kw)
              Wf[((g * Cg + c) * Og + o) * KK + (s.KH - 1 - kh) * s.KW + (s.KW - 1 - kw)] =
                  Wt[((g * Og + o) * Cg + c) * KK + kh * s.KW + kw];
  }
  DirectPlan dx_plan;
  DxS2Plan dx_s2_plan;
  if constexpr (std::is_same_v<T, float>) {
    if (dx_direct) dx_plan = make_direct_plan(sy, wflip_buf.data<float>());
    if (dx_s2) dx_s2_plan = make_dx_s2_plan(s, w.data<float>());
  }
  Tensor dw_buf = dw ? Tensor::zeros({nt * w_size}, x.dtype()) : Tensor();
  Tensor db_buf = db ? Tensor::zeros({nt * s.O}, x.dtype()) : Tensor();
  const T *X = x.data<T>(), *Wt = w.data<T>(), *dY = dy.data<T>();
  T* dX = dx ? dx->data<T>() : nullptr;
  T* cols = col_buf.defined() ? col_buf.data<T>() : nullptr;
  T* dcols = dcol_buf.defined() ? dcol_buf.data<T>() : nullptr;
  T* dWs = dw ? dw_buf.data<T>() : nullptr;
  T* dBs = db ? db_buf.data<T>() : nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (dw_direct) {
      // Thread t sums blocks of images into its own dW (O, Kg); blocks of at least 512 pixels,
      // so that small images reduce their vector accumulators less often.
      const DirectPlan plan = make_direct_plan(s, nullptr);
      const int64_t per_block = std::max<int64_t>(1, 512 / P), blocks = (s.N + per_block - 1) / per_block;
      const int bt = (int)std::min<int64_t>(nt, blocks);
#pragma omp parallel for num_threads(bt) schedule(static) if (bt > 1)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t n0 = blk * per_block, count = std::min(per_block, s.N - n0);
        direct_conv_dw(X + n0 * s.C * s.H * s.W, dY + n0 * s.O * P, dWs + omp_get_thread_num() * w_size, count, s,
                       plan);
      }
    }
  }
  for_each_image(s.N, nt, [&](int64_t n, int t) {
    const T* xn = X + n * s.C * s.H * s.W;
    const T* dyn = dY + n * s.O * P;
    if (dWs && !dw_direct) {
      // dW[g] += dY[n, g] * col[g]^T
      const T* col = xn;
      if (!direct) {
        im2col(xn, cols + t * col_size, s);
        col = cols + t * col_size;
      }
      // computed transposed, dW[g]^T (Kg, Og) += col[g] (Kg, P) * dY[n, g]^T (P, Og): OpenBLAS
      // runs this orientation about twice as fast for the thin 16-channel shapes
      T* dwt = dWs + t * w_size;
      for (int64_t g = 0; g < s.G; ++g)
        gemm(false, true, Kg, Og, P, T(1), col + g * Kg * P, P, dyn + g * Og * P, P, T(1),
             dwt + g * Kg * Og, Og);
    }
    if (dX && dx_direct) {
      // (one image at a time when nt == 1: the threads share its pixels, as in the forward)
      if constexpr (std::is_same_v<T, float>)
        direct_conv_image(dyn, dX + n * s.C * s.H * s.W, sy, dx_plan, nt == 1 ? (int)num_threads() : 1);
    } else if (dX && dx_s2) {
      if constexpr (std::is_same_v<T, float>)
        direct_dx_s2_image(dyn, dX + n * s.C * s.H * s.W, s, dx_s2_plan, nt == 1 ? (int)num_threads() : 1);
    } else if (dX && dx_as_conv) {
      // dX[n, g] (Cg, P) = W'[g] (Cg, Ky) * im2col(dY[n])[g] (Ky, P)
      T* dxn = dX + n * s.C * s.H * s.W;
      T* ycol = dcols + t * ycol_size;
      im2col(dyn, ycol, sy);
      const T* Wf = wflip_buf.data<T>();
      for (int64_t g = 0; g < s.G; ++g)
        gemm(false, false, s.Cg(), P, Ky, T(1), Wf + g * s.Cg() * Ky, Ky, ycol + g * Ky * P, P, T(0),
             dxn + g * s.Cg() * P, P);
    } else if (dX) {
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
  if (dw && dw_direct) {
    // dW = sum over threads of their dW, in thread order
    T* out = dw->data<T>();
    std::copy(dWs, dWs + w_size, out);
    for (int t = 1; t < nt; ++t)
      for (int64_t i = 0; i < w_size; ++i) out[i] += dWs[t * w_size + i];
  } else if (dw) {
    // dW[g][o][k] = sum over threads of dW[g]^T[k][o]
    T* out = dw->data<T>();
    for (int64_t g = 0; g < s.G; ++g)
      for (int64_t o = 0; o < Og; ++o)
        for (int64_t k = 0; k < Kg; ++k) {
          T acc = 0;
          for (int t = 0; t < nt; ++t) acc += dWs[t * w_size + (g * Kg + k) * Og + o];
          out[(g * Og + o) * Kg + k] = acc;
        }
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
