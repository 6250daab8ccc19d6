// pool.cpp - max and average pooling on the CPU, one (H, W) plane per OpenMP iteration.
//
// max: y[n, c, oh, ow] = max over the window of x (padding is -inf); argmax remembers the first
//      maximum in (kh, kw) order, and the backward sends dY there: dX[argmax] += dY.
// avg: y = sum over the window / k^2 (padding counts as zeros, count_include_pad = true);
//      backward: dX[window] += dY / k^2.
// The scalar spec is ref::max_pool2d / ref::avg_pool2d (tensor/ref.cpp).
#include <algorithm>
#include <limits>

#include "tensor/cpu/kernels.h"
#include "tensor/cpu/nn.h"

namespace anybit::cpu {

namespace {

template <typename T>
void max_fwd(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& am) {
  const int64_t NC = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), OH = y.size(2), OW = y.size(3);
  const T* X = x.data<T>();
  T* Y = y.data<T>();
  int32_t* A = am.data<int32_t>();
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t plane = 0; plane < NC; ++plane) {
    const T* xp = X + plane * H * W;
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        T best = -std::numeric_limits<T>::infinity();
        int32_t arg = -1;
        for (int64_t ih = std::max<int64_t>(oh * s - p, 0); ih < std::min(oh * s - p + k, H); ++ih)
          for (int64_t iw = std::max<int64_t>(ow * s - p, 0); iw < std::min(ow * s - p + k, W); ++iw)
            if (xp[ih * W + iw] > best) best = xp[ih * W + iw], arg = (int32_t)(ih * W + iw);
        Y[(plane * OH + oh) * OW + ow] = best;
        A[(plane * OH + oh) * OW + ow] = arg;
      }
  }
}

template <typename T>
void max_bwd(const Tensor& dy, const Tensor& am, Tensor& dx) {
  const int64_t NC = dx.size(0) * dx.size(1), HW = dx.size(2) * dx.size(3), OHW = dy.size(2) * dy.size(3);
  const T* G = dy.data<T>();
  const int32_t* A = am.data<int32_t>();
  T* dX = dx.data<T>();
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t plane = 0; plane < NC; ++plane) {
    T* d = dX + plane * HW;
    std::fill(d, d + HW, T(0));
    for (int64_t i = 0; i < OHW; ++i) {
      int32_t a = A[plane * OHW + i];
      if (a >= 0) d[a] += G[plane * OHW + i];
    }
  }
}

template <typename T>
void avg_fwd(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y) {
  const int64_t NC = x.size(0) * x.size(1), H = x.size(2), W = x.size(3), OH = y.size(2), OW = y.size(3);
  const T* X = x.data<T>();
  T* Y = y.data<T>();
  const T scale = T(1) / T(k * k);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t plane = 0; plane < NC; ++plane) {
    const T* xp = X + plane * H * W;
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        T acc = 0;
        for (int64_t ih = std::max<int64_t>(oh * s - p, 0); ih < std::min(oh * s - p + k, H); ++ih)
          for (int64_t iw = std::max<int64_t>(ow * s - p, 0); iw < std::min(ow * s - p + k, W); ++iw)
            acc += xp[ih * W + iw];
        Y[(plane * OH + oh) * OW + ow] = acc * scale;
      }
  }
}

template <typename T>
void avg_bwd(const Tensor& dy, int64_t k, int64_t s, int64_t p, Tensor& dx) {
  const int64_t NC = dx.size(0) * dx.size(1), H = dx.size(2), W = dx.size(3), OH = dy.size(2), OW = dy.size(3);
  const T* G = dy.data<T>();
  T* dX = dx.data<T>();
  const T scale = T(1) / T(k * k);
#pragma omp parallel for num_threads(num_threads()) schedule(static)
  for (int64_t plane = 0; plane < NC; ++plane) {
    T* d = dX + plane * H * W;
    std::fill(d, d + H * W, T(0));
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const T g = G[(plane * OH + oh) * OW + ow] * scale;
        for (int64_t ih = std::max<int64_t>(oh * s - p, 0); ih < std::min(oh * s - p + k, H); ++ih)
          for (int64_t iw = std::max<int64_t>(ow * s - p, 0); iw < std::min(ow * s - p + k, W); ++iw)
            d[ih * W + iw] += g;
      }
  }
}

}  // namespace

void max_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& argmax) {
  AB_DISPATCH_FLOAT(x.dtype(), "max_pool2d", [&] { max_fwd<scalar_t>(x, k, s, p, y, argmax); });
}
void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, int64_t, int64_t, int64_t, Tensor& dx) {
  // The window geometry is not needed here: the CPU scatters dY to each window's recorded argmax.
  AB_DISPATCH_FLOAT(dy.dtype(), "max_pool2d backward", [&] { max_bwd<scalar_t>(dy, argmax, dx); });
}
void avg_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y) {
  AB_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", [&] { avg_fwd<scalar_t>(x, k, s, p, y); });
}
void avg_pool2d_backward(const Tensor& dy, int64_t k, int64_t s, int64_t p, Tensor& dx) {
  AB_DISPATCH_FLOAT(dy.dtype(), "avg_pool2d backward", [&] { avg_bwd<scalar_t>(dy, k, s, p, dx); });
}

}  // namespace anybit::cpu
