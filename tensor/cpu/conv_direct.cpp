// conv_direct.cpp - a direct float32 convolution for "same" stride-1 convolutions (3x3 with
// padding 1, 5x5 with padding 2, ...): the shape of 17 of ResNet-20's 21 convolutions, computed
// without an im2col matrix and without GEMM packing.
//
// Why it works. In a "same" stride-1 convolution output pixel p = oh*W + ow reads, for the tap
// (kh, kw), input pixel p + off, off = (kh*dil_h - pad_h)*W + (kw*dil_w - pad_w), whenever that
// pixel lies inside the image, and zero otherwise. So 16 consecutive output pixels read 16
// consecutive input pixels per tap, some of them replaced by zero: one AVX-512 load under a
// 16-bit mask (masked-off lanes are neither read nor faulted on). The masks depend only on the
// tap and on which 16 pixels, so they are computed once per call (DirectPlan).
//
// The kernel keeps a block of 4 output channels x 64 pixels (16 vectors) in registers. For each
// tap and input channel it loads 4 vectors of input and broadcasts 4 weights: 16 fused
// multiply-adds for 8 loads. The loop order (pixel block, then output-channel block, then tap,
// then input channel) keeps one pixel block's input window in L1 while every output channel
// visits it. The weights are repacked per call to (tap, input channel, output channel), so the
// inner loop reads them in order.
//
// The weight gradient of 3x3 convolutions is a sum over pixels of dY times the shifted input:
// the same masked loads, with 3 output channels x 9 taps of vector accumulators, reduced once per
// block of images (direct_dw_block).
//
// Used by tensor/cpu/conv.cpp for the forward pass, the input gradient (itself such a
// convolution, see there) and the weight gradient. Without AVX-512 at build time
// (-DANYBIT_PORTABLE=ON, or a CPU without it), direct_conv_supported() is false and conv.cpp
// keeps its im2col + GEMM path. bench_train --conv-direct 0 measures the difference.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "tensor/cpu/nn.h"
#include "tensor/error.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace anybit::cpu {

namespace {
bool g_direct = true;
}

void set_conv_direct(bool on) { g_direct = on; }
bool conv_direct() { return g_direct; }

#if defined(__AVX512F__)

constexpr int64_t kLanes = 16;

bool direct_conv_supported(const ConvShape& s, DType dt) {
  return g_direct && dt == DType::F32 && s.same_stride1() && !s.direct();
}

DirectPlan make_direct_plan(const ConvShape& s, const float* w) {
  DirectPlan pl;
  const int64_t P = s.P(), T = s.KH * s.KW, Cg = s.Cg(), Og = s.Og();
  pl.chunks = (P + kLanes - 1) / kLanes;
  pl.taps = T;
  pl.off.resize(T);
  pl.mask.assign(pl.chunks * T, 0);
  for (int64_t kh = 0; kh < s.KH; ++kh)
    for (int64_t kw = 0; kw < s.KW; ++kw) {
      const int64_t t = kh * s.KW + kw;
      const int64_t dh = kh * s.opt.dil_h - s.opt.pad_h, dw = kw * s.opt.dil_w - s.opt.pad_w;
      pl.off[t] = dh * s.W + dw;
      for (int64_t p = 0; p < P; ++p) {
        const int64_t ih = p / s.W + dh, iw = p % s.W + dw;
        if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) pl.mask[(p / kLanes) * T + t] |= uint16_t(1u << (p % kLanes));
      }
    }
  if (!w) return pl;  // a plan for the weight gradient: no weights to pack
  // w (O, Cg, KH, KW) -> per group (T, Cg, Og)
  pl.w = Tensor::empty({s.G * T * Cg * Og}, DType::F32);  // the caching allocator: no system call per step
  float* pw = pl.w.data<float>();
  for (int64_t g = 0; g < s.G; ++g)
    for (int64_t o = 0; o < Og; ++o)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < T; ++t)
          pw[((g * T + t) * Cg + c) * Og + o] = w[((g * Og + o) * Cg + c) * T + t];
  return pl;
}

namespace {

// y[o0 + i, pixels of chunks chunk0 + j] for i < OB, j < PB, over every tap and input channel.
// x: the group's input planes (Cg, P); w: the group's packed weights (T, Cg, Og).
template <int OB, int PB>
inline void direct_block(const float* x, const float* w, float* y, const DirectPlan& pl, int64_t Cg, int64_t Og,
                         int64_t P, int64_t o0, int64_t chunk0) {
  __m512 acc[OB][PB];
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < PB; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < pl.taps; ++t) {
    __mmask16 m[PB];
    const float* xp[PB];
#pragma GCC unroll 4
    for (int j = 0; j < PB; ++j) {
      m[j] = pl.mask[(chunk0 + j) * pl.taps + t];
      // may point before x or past its end: only the lanes of m[j], all inside x, are read
      xp[j] = x + (chunk0 + j) * kLanes + pl.off[t];
    }
    const float* wt = w + t * Cg * Og + o0;
    for (int64_t c = 0; c < Cg; ++c) {
      __m512 v[PB];
#pragma GCC unroll 4
      for (int j = 0; j < PB; ++j) v[j] = _mm512_maskz_loadu_ps(m[j], xp[j] + c * P);
#pragma GCC unroll 4
      for (int i = 0; i < OB; ++i) {
        const __m512 b = _mm512_set1_ps(wt[c * Og + i]);
#pragma GCC unroll 4
        for (int j = 0; j < PB; ++j) acc[i][j] = _mm512_fmadd_ps(b, v[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < PB; ++j) {
      const int64_t p = (chunk0 + j) * kLanes;
      float* out = y + (o0 + i) * P + p;
      if (p + kLanes <= P)
        _mm512_storeu_ps(out, acc[i][j]);
      else
        _mm512_mask_storeu_ps(out, (__mmask16)((1u << (P - p)) - 1), acc[i][j]);
    }
}

// Every output channel of one group, for the chunks [chunk0, chunk0 + PB).
template <int PB>
void direct_chunks(const float* x, const float* w, float* y, const DirectPlan& pl, int64_t Cg, int64_t Og, int64_t P,
                   int64_t chunk0) {
  int64_t o0 = 0;
  for (; o0 + 4 <= Og; o0 += 4) direct_block<4, PB>(x, w, y, pl, Cg, Og, P, o0, chunk0);
  for (; o0 < Og; ++o0) direct_block<1, PB>(x, w, y, pl, Cg, Og, P, o0, chunk0);
}

// The sum of the 16 lanes of v (in a fixed order: results do not depend on the compiler's choice).
inline float lane_sum(__m512 v) {
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// The weight gradient of 3x3 taps (T = 9): for output channels o0 .. o0 + OB - 1 and input
// channel c, dw[o][c][t] += sum over the nimg images and their pixels p of
// dY[o][p] * x[c][p + off[t]] (masked as in the forward). OB x 9 vector accumulators, reduced
// to scalars once per call: every output-gradient vector is loaded once for all 9 taps. OB = 3
// (27 accumulators) is the most the 32 vector registers hold; it runs about as fast per
// multiply-add as OpenBLAS on im2col, without the im2col.
template <int OB>
inline void direct_dw_block(const float* x, const float* dy, float* dw, const DirectPlan& pl, int64_t nimg,
                            int64_t x_image, int64_t dy_image, int64_t Cg, int64_t P, int64_t o0, int64_t c) {
  constexpr int T = 9;
  __m512 acc[OB][T];
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t n = 0; n < nimg; ++n) {
    const float* xc = x + n * x_image + c * P;
    const float* yo = dy + n * dy_image + o0 * P;
    for (int64_t chunk = 0; chunk < pl.chunks; ++chunk) {
      const int64_t p = chunk * kLanes;
      const __mmask16 tail = p + kLanes <= P ? (__mmask16)0xFFFF : (__mmask16)((1u << (P - p)) - 1);
      __m512 d[OB];
#pragma GCC unroll 4
      for (int i = 0; i < OB; ++i) d[i] = _mm512_maskz_loadu_ps(tail, yo + i * P + p);
      const uint16_t* m = &pl.mask[chunk * T];
#pragma GCC unroll 9
      for (int t = 0; t < T; ++t) {
        const __m512 v = _mm512_maskz_loadu_ps(m[t], xc + p + pl.off[t]);
#pragma GCC unroll 4
        for (int i = 0; i < OB; ++i) acc[i][t] = _mm512_fmadd_ps(d[i], v, acc[i][t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 9
    for (int t = 0; t < T; ++t) dw[((o0 + i) * Cg + c) * T + t] += lane_sum(acc[i][t]);
}

}  // namespace

bool direct_dw_supported(const ConvShape& s, DType dt) { return direct_conv_supported(s, dt) && s.KH * s.KW == 9; }

void direct_conv_dw(const float* x, const float* dy, float* dw, int64_t nimg, const ConvShape& s,
                    const DirectPlan& pl) {
  const int64_t P = s.P(), Cg = s.Cg(), Og = s.Og(), T = pl.taps;
  const int64_t x_image = s.C * s.H * s.W, dy_image = s.O * P;
  for (int64_t g = 0; g < s.G; ++g) {
    const float* xg = x + g * Cg * P;
    const float* yg = dy + g * Og * P;
    float* wg = dw + g * Og * Cg * T;
    int64_t o0 = 0;
    for (; o0 + 3 <= Og; o0 += 3)
      for (int64_t c = 0; c < Cg; ++c) direct_dw_block<3>(xg, yg, wg, pl, nimg, x_image, dy_image, Cg, P, o0, c);
    for (; o0 + 2 <= Og; o0 += 2)
      for (int64_t c = 0; c < Cg; ++c) direct_dw_block<2>(xg, yg, wg, pl, nimg, x_image, dy_image, Cg, P, o0, c);
    for (; o0 < Og; ++o0)
      for (int64_t c = 0; c < Cg; ++c) direct_dw_block<1>(xg, yg, wg, pl, nimg, x_image, dy_image, Cg, P, o0, c);
  }
}

void direct_conv_image(const float* x, float* y, const ConvShape& s, const DirectPlan& pl) {
  const int64_t P = s.P(), Cg = s.Cg(), Og = s.Og();
  for (int64_t g = 0; g < s.G; ++g) {
    const float* xg = x + g * Cg * P;
    const float* wg = pl.w.data<float>() + g * pl.taps * Cg * Og;
    float* yg = y + g * Og * P;
    int64_t chunk = 0;
    for (; chunk + 4 <= pl.chunks; chunk += 4) direct_chunks<4>(xg, wg, yg, pl, Cg, Og, P, chunk);
    for (; chunk < pl.chunks; ++chunk) direct_chunks<1>(xg, wg, yg, pl, Cg, Og, P, chunk);
  }
}

#else  // no AVX-512: conv.cpp keeps im2col + GEMM

bool direct_conv_supported(const ConvShape&, DType) { return false; }
bool direct_dw_supported(const ConvShape&, DType) { return false; }
void direct_conv_dw(const float*, const float*, float*, int64_t, const ConvShape&, const DirectPlan&) {
  AB_FAIL("direct_conv_dw: this build has no AVX-512 (check direct_dw_supported first)");
}
DirectPlan make_direct_plan(const ConvShape&, const float*) { return {}; }
void direct_conv_image(const float*, float*, const ConvShape&, const DirectPlan&) {
  AB_FAIL("direct_conv_image: this build has no AVX-512 (check direct_conv_supported first)");
}

#endif

}  // namespace anybit::cpu
