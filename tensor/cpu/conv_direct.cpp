// conv_direct.cpp - a direct float32 convolution for "same" stride-1 convolutions (3x3 with
// padding 1, 5x5 with padding 2, ...) and stride-2 ones: all 21 of ResNet-20's convolutions,
// computed without an im2col matrix and without GEMM packing.
//
// Why it works. In a "same" stride-1 convolution output pixel p = oh*W + ow reads, for the tap
// (kh, kw), input pixel p + off, off = (kh*dil_h - pad_h)*W + (kw*dil_w - pad_w), whenever that
// pixel lies inside the image, and zero otherwise. So L consecutive output pixels (L = the lanes
// of a vector: 16 with AVX-512, 8 with AVX2) read L consecutive input pixels per tap, some of them
// replaced by zero: one masked vector load (masked-off lanes are neither read nor faulted on). The
// masks depend only on the tap and on which L pixels, so they are computed once per call
// (DirectPlan). Most (chunk, tap) pairs lie wholly inside the image and take a plain load; a tap
// that falls wholly outside (the row above the first one, say) is skipped.
//
// The padded layout. Masks cost AVX2 registers the accumulators need, and a load that straddles
// two cache lines costs two. So where the output rows are a whole number of chunks, the input is
// first copied (pad_input) to rows of lines, one line per chunk of output pixels, holding the
// input the chunk's taps read from 4 columns before it to 4 after, zeros outside the image: with
// AVX2 a cache line (16 floats) per 8 pixels, and the kernel holds 12 accumulators instead of 8;
// with AVX-512 two lines (32 floats) per 16 pixels. Every tap is then a plain load at
// base[chunk] + pad_off[tap]. Stride 2 splits each padded row in two: the even input columns'
// lines, then the odd ones' (deinterleaved as they are copied); a tap reads the half its column
// parity says. (With AVX-512 the copy pays too, though masks cost it nothing: the forward and
// input gradient of ResNet-20's padded-layout convolutions ran 7-16% faster, its first
// downsampling convolution's forward 1.9x; bench_kernels on an AMD Zen 5.)
//
// The parity planes. A stride-2 convolution whose output rows are shorter than a vector (8
// pixels with AVX-512: ResNet-20's second downsampling conv) cannot use the padded layout. Its
// input, of twice the output's size, is split into four planes of OH x OW (even and odd rows
// times even and odd columns), and on them every tap is a stride-1 tap with a shift of -1, 0 or
// +1 row and column: the masked path above, with each tap's offset pointing into its plane
// (DirectPlan::planes). Its input gradient likewise: each parity plane of dX is a masked
// stride-1 convolution of dY with the taps of that parity (direct_dx_s2_image). On the Zen 5
// that conv went from 96-110 to 174 GFLOP/s forward and from 103-117 to 161 backward.
//
// The kernel keeps a block of OB output channels x PB vectors of pixels in registers. For each
// tap and input channel it loads PB vectors of input and broadcasts OB weights: OB*PB fused
// multiply-adds for OB + PB loads. The loop order (pixel block, then output-channel block, then
// tap, then input channel) keeps one pixel block's input window in L1 while every output channel
// visits it. The weights are repacked per call to (tap, input channel, output channel), so the
// inner loop reads them in order.
//
// The weight gradient of 3x3 convolutions is a sum over pixels of dY times the shifted input.
// With output channels in whole vectors (lanes_dw) it puts them in the vector lanes
// (lanes_dw_block: dY transposed to pixel-major, each input value one broadcast, no horizontal
// sums); otherwise the same loads as the forward, with OB output channels x TB taps of vector
// accumulators, reduced once per block of images (direct_dw_block).
//
// The block sizes are the ISA's (namespace isa below): AVX-512 has 32 vector registers, AVX2 16.
// Used by tensor/cpu/conv.cpp for the forward pass, the input gradient of stride-1 convolutions
// (itself such a convolution, see there) and the weight gradient. Without AVX2 and FMA at build
// time (-DANYBIT_PORTABLE=ON, or an older CPU), direct_conv_supported() is false and conv.cpp
// keeps its im2col + GEMM path. bench_train --conv-direct 0 measures the difference.
#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <vector>

#include "tensor/cpu/nn.h"
#include "tensor/error.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define ANYBIT_DIRECT_CONV 1
#include <immintrin.h>
#endif

namespace anybit::cpu {

namespace {
bool g_direct = true;
}

void set_conv_direct(bool on) { g_direct = on; }
bool conv_direct() { return g_direct; }

#if defined(ANYBIT_DIRECT_CONV)

// The few vector operations the kernels use, for the widest ISA of the build. A mask is given
// by its lane bits (bit l set: lane l is read); mask(bits) turns them into the ISA's mask.
namespace isa {
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
using V = __m512;
using Mask = __mmask16;
inline Mask mask(uint32_t bits) { return (Mask)bits; }
inline V zero() { return _mm512_setzero_ps(); }
inline V broadcast(float a) { return _mm512_set1_ps(a); }
inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline V load(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
inline void store(Mask m, float* p, V v) { _mm512_mask_storeu_ps(p, m, v); }
// even / odd: the even / odd lanes of the 2 kLanes values a, b (a's first)
inline void deinterleave(V a, V b, V& even, V& odd) {
  const __m512i e = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  even = _mm512_permutex2var_ps(a, e, b);
  odd = _mm512_permutex2var_ps(a, _mm512_add_epi32(e, _mm512_set1_epi32(1)), b);
}
// lo / hi: a and b's lanes alternated (a0 b0 a1 b1 ...), the first kLanes of them, then the rest
inline void interleave(V a, V b, V& lo, V& hi) {
  const __m512i i = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  lo = _mm512_permutex2var_ps(a, i, b);
  hi = _mm512_permutex2var_ps(a, _mm512_add_epi32(i, _mm512_set1_epi32(8)), b);
}
// Register blocks (32 registers): forward 4 x 4 accumulators; weight gradient 3 output
// channels x all 9 taps (27 accumulators), so each dY vector is loaded once.
constexpr int kOB = 4, kPB = 4, kDwOB = 3, kDwTB = 9;
// The padded layout: two cache lines per 16 output pixels, 8 output channels x 3 vectors (24
// accumulators: 11 loads of a tap and input channel, 3 of them vectors, feed 24 FMAs; 4 x 4, 6 x 4
// and 4 x 6 ran slower on ResNet-20's layers, bench_kernels).
constexpr int kPadOB = 8, kPadPB = 3;
constexpr int64_t kLine = 32, kLead = 4;
constexpr int kPadDwOB = kDwOB;
// The direct weight gradient is used for every 3x3 "same" convolution.
constexpr int64_t kDwMaxOg = std::numeric_limits<int64_t>::max();
// The weight gradient with output channels in the lanes (lanes_dw_block) holds 24 accumulators:
// 2 vectors of output channels x 4 input channels x 3 taps, or 1 vector x 8 input channels.
constexpr int kLanesCB2 = 4, kLanesCB1 = 8;
#else  // AVX2 + FMA
constexpr int64_t kLanes = 8;
using V = __m256;
using Mask = __m256i;  // lane l is read when its sign bit is set
inline Mask mask(uint32_t bits) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), lane_bit), lane_bit);
}
inline V zero() { return _mm256_setzero_ps(); }
inline V broadcast(float a) { return _mm256_set1_ps(a); }
inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline V load(Mask m, const float* p) { return _mm256_maskload_ps(p, m); }
inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
inline void store(Mask m, float* p, V v) { _mm256_maskstore_ps(p, m, v); }
// even / odd: the even / odd lanes of the 2 kLanes values a, b (a's first)
inline void deinterleave(V a, V b, V& even, V& odd) {
  // within 128-bit halves: a0 a2 b0 b2 | a4 a6 b4 b6, then the 64-bit pairs put in order
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}
// lo / hi: a and b's lanes alternated (a0 b0 a1 b1 ...), the first kLanes of them, then the rest
inline void interleave(V a, V b, V& lo, V& hi) {
  const V l = _mm256_unpacklo_ps(a, b), h = _mm256_unpackhi_ps(a, b);  // a0 b0 a1 b1 | a4 b4 a5 b5, ...
  lo = _mm256_permute2f128_ps(l, h, 0x20);
  hi = _mm256_permute2f128_ps(l, h, 0x31);
}
// Register blocks (16 registers): forward 4 output channels x 2 vectors (8 accumulators, 2
// inputs, their 2 masks, a weight); weight gradient 3 output channels x the 3 taps of one kernel
// row (9 accumulators, 3 dY vectors, an input and its mask).
constexpr int kOB = 4, kPB = 2, kDwOB = 3, kDwTB = 3;
// Where the input is copied zero-padded (DirectPlan::xs), no masks take registers and the
// forward holds 12 accumulators: 4 output channels x 3 vectors, 3 inputs and a weight.
constexpr int kPadOB = 4, kPadPB = 3;
// The padded layout gives each chunk of 8 output pixels a cache line of its own (16 floats), the
// chunk's input starting kLead floats in: the loads of taps up to kLead columns left or right
// then never straddle two lines (a straddling load costs two).
constexpr int64_t kLine = 16, kLead = 4;
constexpr int kPadDwOB = 4;
// With AVX2 the direct weight gradient (about 90 GFLOP/s on 2 cores whatever the shape) beats
// im2col + OpenBLAS only on thin 16-channel layers; from 32 output channels on, the GEMM is
// faster (105 and 137 GFLOP/s at ResNet-20's 32- and 64-channel shapes: bench_kernels).
constexpr int64_t kDwMaxOg = 16;
// lanes_dw_block: 2 vectors of output channels x 2 input channels x 3 taps (12 accumulators).
constexpr int kLanesCB2 = 2, kLanesCB1 = 4;
#endif
constexpr uint32_t kFull = (1u << kLanes) - 1;
// dst[j * dst_stride + i] = src[i * src_stride + j] for i, j < 8: pairs of rows interleaved, then
// pairs of pairs, then the 128-bit halves exchanged (AVX2's 8-float vectors, AVX-512 builds too).
inline void transpose8x8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (int i = 0; i < 8; i += 4)
    for (int k = 0; k < 2; ++k) {
      r[i + 2 * k] = _mm256_shuffle_ps(t[i + k], t[i + k + 2], 0x44);      // a0 b0 c0 d0 | a4 b4 c4 d4 (k = 0)
      r[i + 2 * k + 1] = _mm256_shuffle_ps(t[i + k], t[i + k + 2], 0xEE);  // a1 b1 c1 d1 | a5 b5 c5 d5
    }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * dst_stride, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * dst_stride, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
  }
}

// The sum of the lanes of v (in a fixed order: results do not depend on the compiler's choice).
inline float lane_sum(V v) {
  alignas(64) float lanes[kLanes];
  store(lanes, v);
  float s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}
}  // namespace isa

using isa::kLanes, isa::kLine, isa::kLead;

// Software prefetching (pad_input): one cache line is kLineFloats floats, and the copy asks for
// the data one 4 KiB page ahead of where it reads.
constexpr int64_t kLineFloats = 16, kPrefetchAhead = 1024;

// An offset d = S a + phase split into whole strides a and a phase 0 <= phase < S.
struct ColumnShift {
  int64_t a, phase;
};
ColumnShift split_shift(int64_t d, int64_t S) {
  const int64_t phase = ((d % S) + S) % S;
  return {(d - phase) / S, phase};
}
// Tap kw's input column for output column ow is ow S + kw dil - pad = S (ow + a) + phase.
ColumnShift column_shift(const ConvShape& s, int64_t kw) {
  return split_shift(kw * s.opt.dil_w - s.opt.pad_w, s.opt.stride_w);
}

// Whether the input is read through the padded layout (DirectPlan::xs): stride 1 or 2 (the same
// both ways), output rows a whole number of chunks, every tap's column shift within a line's lead.
bool padded_layout(const ConvShape& s) {
  const int64_t S = s.opt.stride_w;
  if (s.opt.stride_h != S || (S != 1 && S != 2) || s.OW % kLanes != 0) return false;
  for (int64_t kw = 0; kw < s.KW; ++kw)
    if (std::abs(column_shift(s, kw).a) > kLead) return false;
  return true;
}

// Stride 2 on the input's four parity planes (DirectPlan::planes): an input of exactly twice the
// output's size, so that every plane is OH x OW.
bool parity_planes(const ConvShape& s) {
  return s.opt.stride_h == 2 && s.opt.stride_w == 2 && s.H == 2 * s.OH && s.W == 2 * s.OW && !padded_layout(s);
}

bool direct_conv_supported(const ConvShape& s, DType dt) {
  // "same" stride-1 convolutions everywhere; stride 2 through the padded layout, or through the
  // parity planes where the output rows are shorter than a vector
  return g_direct && dt == DType::F32 && !s.direct() &&
         (s.same_stride1() || (s.opt.stride_w == 2 && padded_layout(s)) || parity_planes(s));
}

namespace {
// The masks of tap t (of T) for an output plane of H x W pixels that reads the plane of the same
// size at rows + dh, columns + dw: lane p is on where that pixel lies inside the plane.
void mark_inside(DirectPlan& pl, int64_t t, int64_t T, int64_t H, int64_t W, int64_t dh, int64_t dw) {
  for (int64_t p = 0; p < H * W; ++p) {
    const int64_t i = p / W + dh, j = p % W + dw;
    if (i >= 0 && i < H && j >= 0 && j < W) pl.mask[(p / kLanes) * T + t] |= uint16_t(1u << (p % kLanes));
  }
}
}  // namespace

DirectPlan make_direct_plan(const ConvShape& s, const float* w) {
  DirectPlan pl;
  const int64_t P = s.P(), T = s.KH * s.KW, Cg = s.Cg(), Og = s.Og();
  pl.chunks = (P + kLanes - 1) / kLanes;
  pl.taps = T;
  pl.off.resize(T);
  pl.mask.assign(pl.chunks * T, 0);
  if (padded_layout(s)) {
    // Per padded row (Hp of them, every input row and the zero rows a tap reaches), S phases of
    // row_chunks lines: line (phase, q) holds the input columns S (8 q + j - kLead) + phase,
    // j < kLine. Output pixel (oh, 8 q + l) reads tap (kh, kw) at row oh S + kh dil, line
    // (phase, q), element l + a + kLead (column_shift).
    const int64_t S = s.opt.stride_w, row_chunks = s.OW / kLanes;
    pl.Hp = std::max(s.H + s.opt.pad_h, (s.OH - 1) * S + (s.KH - 1) * s.opt.dil_h + 1);
    pl.Wp = S * row_chunks * kLine;
    pl.xs = pl.Hp * pl.Wp;
    if (pl.xs % 256 == 0) pl.xs += kLine;  // planes 1 KiB apart alias in L1
    pl.pad_off.resize(T);
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const ColumnShift cs = column_shift(s, kw);
        pl.pad_off[kh * s.KW + kw] = kh * s.opt.dil_h * pl.Wp + cs.phase * row_chunks * kLine + cs.a + kLead;
      }
    pl.base.resize(pl.chunks);
    for (int64_t chunk = 0; chunk < pl.chunks; ++chunk)
      pl.base[chunk] = (chunk / row_chunks) * S * pl.Wp + (chunk % row_chunks) * kLine;
  } else if (parity_planes(s)) {
    // Tap (kh, kw) of output pixel (i, j) reads input row 2 i + kh dil - pad = 2 (i + a) + py:
    // row i + a of the planes of row parity py (split_shift), the columns likewise.
    pl.planes = true;
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const int64_t t = kh * s.KW + kw;
        const ColumnShift row = split_shift(kh * s.opt.dil_h - s.opt.pad_h, 2);
        const ColumnShift col = split_shift(kw * s.opt.dil_w - s.opt.pad_w, 2);
        pl.off[t] = (row.phase * 2 + col.phase) * s.C * P + row.a * s.OW + col.a;
        mark_inside(pl, t, T, s.OH, s.OW, row.a, col.a);
      }
  } else {  // masks and offsets in the image itself ("same" stride 1)
    for (int64_t kh = 0; kh < s.KH; ++kh)
      for (int64_t kw = 0; kw < s.KW; ++kw) {
        const int64_t t = kh * s.KW + kw;
        const int64_t dh = kh * s.opt.dil_h - s.opt.pad_h, dw = kw * s.opt.dil_w - s.opt.pad_w;
        pl.off[t] = dh * s.W + dw;
        mark_inside(pl, t, T, s.H, s.W, dh, dw);
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

using isa::V;

// acc[i][j] += w[c][i] * x[j][c] over the input channels c of one tap: the inner loop of the
// forward. xp[j]: the tap's input for pixel vector j, planes xs floats apart; wt: the tap's
// weights (Cg, Og) from o0. Masked: the loads go through m (a chunk at the image's edge).
template <int OB, int PB, bool Masked>
[[gnu::always_inline]] inline void accumulate_tap(V (&acc)[OB][PB], const isa::Mask (&m)[PB],
                                                  const float* const (&xp)[PB], const float* wt, int64_t Cg,
                                                  int64_t Og, int64_t xs) {
  for (int64_t c = 0; c < Cg; ++c) {
    V v[PB];
#pragma GCC unroll 8
    for (int j = 0; j < PB; ++j) v[j] = Masked ? isa::load(m[j], xp[j] + c * xs) : isa::load(xp[j] + c * xs);
#pragma GCC unroll 8
    for (int i = 0; i < OB; ++i) {
      const V b = isa::broadcast(wt[c * Og + i]);
#pragma GCC unroll 8
      for (int j = 0; j < PB; ++j) acc[i][j] = isa::fma(b, v[j], acc[i][j]);
    }
  }
}

// y[o0 + i, pixels of chunks chunk0 + j] for i < OB, j < PB, over every tap and input channel.
// x: the group's input planes (Cg of P pixels, xs floats apart); w: the group's packed weights
// (T, Cg, Og).
template <int OB, int PB>
inline void direct_block(const float* x, int64_t xs, const float* w, float* y, const DirectPlan& pl, int64_t Cg,
                         int64_t Og, int64_t P, int64_t o0, int64_t chunk0) {
  V acc[OB][PB];
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < PB; ++j) acc[i][j] = isa::zero();
  for (int64_t t = 0; t < pl.taps; ++t) {
    isa::Mask m[PB];
    const float* xp[PB];
    uint32_t all = isa::kFull, any = 0;  // the lanes read by every / by some vector of the block
#pragma GCC unroll 4
    for (int j = 0; j < PB; ++j) {
      const uint32_t bits = pl.mask[(chunk0 + j) * pl.taps + t];
      all &= bits, any |= bits;
      m[j] = isa::mask(bits);
      // may point before x or past its end: only the lanes of m[j], all inside x, are read
      xp[j] = x + (chunk0 + j) * kLanes + pl.off[t];
    }
    if (!any) continue;  // the tap lies outside the image for every pixel of the block
    const float* wt = w + t * Cg * Og + o0;
    if (all == isa::kFull)  // wholly inside the image: plain loads
      accumulate_tap<OB, PB, false>(acc, m, xp, wt, Cg, Og, xs);
    else
      accumulate_tap<OB, PB, true>(acc, m, xp, wt, Cg, Og, xs);
  }
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < PB; ++j) {
      const int64_t p = (chunk0 + j) * kLanes;
      float* out = y + (o0 + i) * P + p;
      if (p + kLanes <= P)
        isa::store(out, acc[i][j]);
      else
        isa::store(isa::mask((1u << (P - p)) - 1), out, acc[i][j]);
    }
}

// Every output channel of one group, for the chunks [chunk0, chunk0 + PB).
template <int PB>
void direct_chunks(const float* x, int64_t xs, const float* w, float* y, const DirectPlan& pl, int64_t Cg, int64_t Og,
                   int64_t P, int64_t chunk0) {
  int64_t o0 = 0;
  for (; o0 + isa::kOB <= Og; o0 += isa::kOB) direct_block<isa::kOB, PB>(x, xs, w, y, pl, Cg, Og, P, o0, chunk0);
  for (; o0 < Og; ++o0) direct_block<1, PB>(x, xs, w, y, pl, Cg, Og, P, o0, chunk0);
}

// The zero-padded layout (plan.xs != 0): output channels o0 .. o0 + OB - 1 of the chunks
// chunk0 .. chunk0 + PB - 1, every tap read with plain loads from the padded planes x (xs floats
// apart), zeros included; every chunk is whole.
template <int OB, int PB>
inline void padded_block(const float* x, const float* w, float* y, const DirectPlan& pl, int64_t Cg, int64_t Og,
                         int64_t P, int64_t o0, int64_t chunk0) {
  V acc[OB][PB];
#pragma GCC unroll 8
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < PB; ++j) acc[i][j] = isa::zero();
  const isa::Mask none[PB] = {};  // unused: the loads are plain
  for (int64_t t = 0; t < pl.taps; ++t) {
    const float* xp[PB];
#pragma GCC unroll 8
    for (int j = 0; j < PB; ++j) xp[j] = x + pl.base[chunk0 + j] + pl.pad_off[t];
    accumulate_tap<OB, PB, false>(acc, none, xp, w + t * Cg * Og + o0, Cg, Og, pl.xs);
  }
#pragma GCC unroll 8
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < PB; ++j) isa::store(y + (o0 + i) * P + (chunk0 + j) * kLanes, acc[i][j]);
}

// Every output channel of one group, for the chunks [chunk0, chunk0 + PB), padded layout.
template <int PB>
void padded_chunks(const float* x, const float* w, float* y, const DirectPlan& pl, int64_t Cg, int64_t Og, int64_t P,
                   int64_t chunk0) {
  int64_t o0 = 0;
  for (; o0 + isa::kPadOB <= Og; o0 += isa::kPadOB) padded_block<isa::kPadOB, PB>(x, w, y, pl, Cg, Og, P, o0, chunk0);
  for (; o0 + 2 <= Og; o0 += 2) padded_block<2, PB>(x, w, y, pl, Cg, Og, P, o0, chunk0);
  for (; o0 < Og; ++o0) padded_block<1, PB>(x, w, y, pl, Cg, Og, P, o0, chunk0);
}

// Copies the image x (C planes of H x W) into the padded layout of DirectPlan: per input row
// (pad_h zero rows above and below), one cache line per chunk of output pixels, holding the
// input columns ow0 - kLead .. ow0 + kLanes + kLead - 1 of the chunk's first column ow0, zeros
// outside the image. The image comes from memory, not cache, and the copy's short masked rows did
// not keep the memory busy on their own: each row asks for the data one 4 KiB page ahead
// (kPrefetchAhead), and pad_input's share of a training step fell from 7.3% to 3.3% (perf,
// bench_train on the Zen 5).
void pad_input(const float* x, float* xp, const ConvShape& s, const DirectPlan& pl) {
  const int64_t S = s.opt.stride_w, ph = s.opt.pad_h, row_chunks = s.OW / kLanes;
  const int64_t vectors = row_chunks * kLine / kLanes;  // of one phase of a padded row
  // Vector v of a phase's lines is made of S consecutive input vectors (deinterleaved when S = 2),
  // from input column first(v); inside[v * S + i]: the lanes of the i-th whose column lies in
  // the image (masked-off lanes are not read, so the loads may point outside the row).
  auto first = [&](int64_t v) { return S * ((v * kLanes / kLine) * kLanes - kLead + v * kLanes % kLine); };
  thread_local std::vector<uint32_t> inside;
  inside.assign(vectors * S, 0);
  for (int64_t v = 0; v < vectors; ++v)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t col = first(v) + i * kLanes + l;
        inside[v * S + i] |= uint32_t(col >= 0 && col < s.W) << l;
      }
  auto load = [&](const float* in, int64_t v, int64_t i) {
    const uint32_t bits = inside[v * S + i];
    const float* at = in + first(v) + i * kLanes;
    return bits == isa::kFull ? isa::load(at) : bits ? isa::load(isa::mask(bits), at) : isa::zero();
  };
  for (int64_t c = 0; c < s.C; ++c) {
    const float* src = x + c * s.H * s.W;
    float* dst = xp + c * pl.xs;
    std::fill(dst, dst + ph * pl.Wp, 0.0f);
    for (int64_t h = 0; h < s.H; ++h) {
      const float* in = src + h * s.W;
      float* row = dst + (ph + h) * pl.Wp;
      for (int64_t f = 0; f < s.W; f += kLineFloats) __builtin_prefetch(in + f + kPrefetchAhead);
      for (int64_t v = 0; v < vectors; ++v) {
        if (S == 1) {
          isa::store(row + v * kLanes, load(in, v, 0));
        } else {  // S = 2: the even columns to phase 0's line, the odd ones to phase 1's
          V even, odd;
          isa::deinterleave(load(in, v, 0), load(in, v, 1), even, odd);
          isa::store(row + v * kLanes, even);
          isa::store(row + (vectors + v) * kLanes, odd);
        }
      }
    }
    std::fill(dst + (ph + s.H) * pl.Wp, dst + pl.xs, 0.0f);
  }
}

// The weight gradient of 3x3 taps (T = 9), for the TB taps [t0, t0 + TB): for output channels
// o0 .. o0 + OB - 1 and input channel c, dw[o][c][t] += sum over the nimg images and their
// pixels p of dY[o][p] * x[c][p + off[t]] (masked as in the forward). OB x TB vector
// accumulators, reduced to scalars once per call: every output-gradient vector is loaded once
// for the TB taps. It runs about as fast per multiply-add as OpenBLAS on im2col, without the
// im2col. Padded: x holds nimg images in the padded layout (plan.xs != 0), x_image floats apart,
// read with plain loads at base[chunk] + pad_off[t]; every chunk is whole.
template <int OB, int TB, bool Padded>
inline void direct_dw_block(const float* x, const float* dy, float* dw, const DirectPlan& pl, int64_t nimg,
                            int64_t x_image, int64_t dy_image, int64_t Cg, int64_t P, int64_t o0, int64_t c,
                            int64_t t0) {
  constexpr int T = 9;
  V acc[OB][TB];
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 9
    for (int t = 0; t < TB; ++t) acc[i][t] = isa::zero();
  for (int64_t n = 0; n < nimg; ++n) {
    const float* xc = x + n * x_image + c * (Padded ? pl.xs : P);
    const float* yo = dy + n * dy_image + o0 * P;
    for (int64_t chunk = 0; chunk < pl.chunks; ++chunk) {
      const int64_t p = chunk * kLanes;
      V d[OB];
      if (Padded || p + kLanes <= P) {
#pragma GCC unroll 4
        for (int i = 0; i < OB; ++i) d[i] = isa::load(yo + i * P + p);
      } else {
        const isa::Mask tail = isa::mask((1u << (P - p)) - 1);
#pragma GCC unroll 4
        for (int i = 0; i < OB; ++i) d[i] = isa::load(tail, yo + i * P + p);
      }
      const uint16_t* m = &pl.mask[chunk * T + t0];
#pragma GCC unroll 9
      for (int t = 0; t < TB; ++t) {
        V v;
        if constexpr (Padded) {
          v = isa::load(xc + pl.base[chunk] + pl.pad_off[t0 + t]);
        } else {
          const float* xt = xc + p + pl.off[t0 + t];
          v = m[t] == isa::kFull ? isa::load(xt) : isa::load(isa::mask(m[t]), xt);
        }
#pragma GCC unroll 4
        for (int i = 0; i < OB; ++i) acc[i][t] = isa::fma(d[i], v, acc[i][t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < OB; ++i)
#pragma GCC unroll 9
    for (int t = 0; t < TB; ++t) dw[((o0 + i) * Cg + c) * T + t0 + t] += isa::lane_sum(acc[i][t]);
}

// The weight gradient with the output channels in the vector lanes: dyT holds dY transposed,
// (image, pixel, output channel) with O channels a pixel, so the OV vectors of output channels
// o0 .. o0 + OV kLanes - 1 of a pixel are OV loads; each of its CB input channels x 3 taps
// (kernel row kh) of x is one broadcast, read from x itself (C planes of H x W a image, x_image
// floats apart): rows the tap row misses are skipped, and only a row's first and last pixels check
// which taps fall outside it. OV x 3 CB accumulators (AVX2: 2 x 6, and 2 dY vectors and a
// broadcast: 15 of its 16 registers; AVX-512: 24 of 32) sum over every pixel of the nimg images,
// with no horizontal sum: lane l of acc[i][j] is dw[o0 + kLanes i + l][c0 + j / 3][kh][j % 3].
// Without GCC's predictive commoning: it saw that a pixel pair's last two broadcasts of each input
// channel are the next pair's first two and kept those 16 values from one pair to the next, which
// left no registers for 8 of the 24 accumulators (loaded and stored every pair). Without it the
// loop is 48 FMAs, 32 broadcasts and 2 loads, every accumulator in a register (objdump), and the
// training step 1.02x as fast (docs/BENCHMARKS.md).
template <int OV, int CB>
__attribute__((optimize("no-predictive-commoning")))
inline void lanes_dw_block(const float* x, int64_t x_image, const float* dyT, float* dw, const ConvShape& s,
                           int64_t nimg, int64_t o0, int64_t c0, int64_t kh) {
  constexpr int J = 3 * CB;
  const int64_t S = s.opt.stride_w, dil = s.opt.dil_w, pw = s.opt.pad_w, HW = s.H * s.W, O = s.O, Cg = s.Cg();
  // the output columns whose 3 taps all lie inside a row: ow S + kw dil - pw in [0, W)
  const int64_t ow_lo = std::min(s.OW, (pw + S - 1) / S), last = s.W - 1 - 2 * dil + pw;  // ow S <= last
  const int64_t ow_hi = std::max(ow_lo, std::min(s.OW, last < 0 ? 0 : last / S + 1));
  V acc[OV][J];
#pragma GCC unroll 2
  for (int i = 0; i < OV; ++i)
#pragma GCC unroll 24
    for (int j = 0; j < J; ++j) acc[i][j] = isa::zero();
  auto pixel = [&](const float* xr, const float* d, int64_t ow, bool check) {
    V dv[OV];
#pragma GCC unroll 2
    for (int i = 0; i < OV; ++i) dv[i] = isa::load(d + i * kLanes);
#pragma GCC unroll 8
    for (int ci = 0; ci < CB; ++ci)
#pragma GCC unroll 3
      for (int kw = 0; kw < 3; ++kw) {
        const int64_t iw = ow * S + kw * dil - pw;
        if (check && (iw < 0 || iw >= s.W)) continue;
        const V b = isa::broadcast(xr[ci * HW + iw]);
#pragma GCC unroll 2
        for (int i = 0; i < OV; ++i) acc[i][ci * 3 + kw] = isa::fma(dv[i], b, acc[i][ci * 3 + kw]);
      }
  };
  // Stride 1, dilation 1: pixels ow and ow + 1 share two of their four input columns
  // (ow - pw .. ow - pw + 3), so a pair takes 4 broadcasts per input channel for its 6 multiply-adds
  // instead of 6: with one vector of output channels the loads, not the multiply-adds, bound the
  // loop (25 loads per 24 FMAs a pixel), and the pair brings that to 34 per 48.
  auto pixel_pair = [&](const float* xr, const float* d, int64_t ow) {
    V dv0[OV], dv1[OV];
#pragma GCC unroll 2
    for (int i = 0; i < OV; ++i) dv0[i] = isa::load(d + i * kLanes), dv1[i] = isa::load(d + O + i * kLanes);
#pragma GCC unroll 8
    for (int ci = 0; ci < CB; ++ci) {
      const float* xc = xr + ci * HW + ow - pw;
      V b[4];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) b[j] = isa::broadcast(xc[j]);
#pragma GCC unroll 3
      for (int kw = 0; kw < 3; ++kw)
#pragma GCC unroll 2
        for (int i = 0; i < OV; ++i)
          acc[i][ci * 3 + kw] = isa::fma(dv1[i], b[kw + 1], isa::fma(dv0[i], b[kw], acc[i][ci * 3 + kw]));
    }
  };
  const bool pairs = OV == 1 && S == 1 && dil == 1;
  for (int64_t n = 0; n < nimg; ++n)
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const int64_t ih = oh * s.opt.stride_h + kh * s.opt.dil_h - s.opt.pad_h;
      if (ih < 0 || ih >= s.H) continue;  // the tap row lies in the zero padding
      const float* xr = x + n * x_image + c0 * HW + ih * s.W;
      const float* yr = dyT + (n * s.OH + oh) * s.OW * O + o0;
      int64_t ow = 0;
      for (; ow < ow_lo; ++ow) pixel(xr, yr + ow * O, ow, true);
      if (pairs)
        for (; ow + 2 <= ow_hi; ow += 2) pixel_pair(xr, yr + ow * O, ow);
      for (; ow < ow_hi; ++ow) pixel(xr, yr + ow * O, ow, false);
      for (; ow < s.OW; ++ow) pixel(xr, yr + ow * O, ow, true);
    }
  for (int i = 0; i < OV; ++i)
    for (int j = 0; j < J; ++j) {
      alignas(64) float lanes[kLanes];
      isa::store(lanes, acc[i][j]);
      for (int64_t l = 0; l < kLanes; ++l)
        dw[((o0 + i * kLanes + l) * Cg + c0 + j / 3) * 9 + kh * 3 + j % 3] += lanes[l];
    }
}

// Output channels [o0, o0 + OB) of one group, every input channel and every tap.
template <int OB, bool Padded>
void direct_dw_channels(const float* x, const float* dy, float* dw, const DirectPlan& pl, int64_t nimg,
                        int64_t x_image, int64_t dy_image, int64_t Cg, int64_t P, int64_t o0) {
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t t0 = 0; t0 < 9; t0 += isa::kDwTB)
      direct_dw_block<OB, isa::kDwTB, Padded>(x, dy, dw, pl, nimg, x_image, dy_image, Cg, P, o0, c, t0);
}

// Every output channel of one group.
template <bool Padded>
void direct_dw_group(const float* x, const float* dy, float* dw, const DirectPlan& pl, int64_t nimg,
                     int64_t x_image, int64_t dy_image, int64_t Cg, int64_t Og, int64_t P) {
  constexpr int OB = Padded ? isa::kPadDwOB : isa::kDwOB;
  int64_t o0 = 0;
  for (; o0 + OB <= Og; o0 += OB) direct_dw_channels<OB, Padded>(x, dy, dw, pl, nimg, x_image, dy_image, Cg, P, o0);
  if constexpr (OB > 3)
    for (; o0 + 3 <= Og; o0 += 3) direct_dw_channels<3, Padded>(x, dy, dw, pl, nimg, x_image, dy_image, Cg, P, o0);
  for (; o0 + 2 <= Og; o0 += 2) direct_dw_channels<2, Padded>(x, dy, dw, pl, nimg, x_image, dy_image, Cg, P, o0);
  for (; o0 < Og; ++o0) direct_dw_channels<1, Padded>(x, dy, dw, pl, nimg, x_image, dy_image, Cg, P, o0);
}

}  // namespace

// Whether the weight gradient puts output channels in the lanes (lanes_dw_block): 3x3 taps (not
// 1x9), pixels and channels in blocks of 8 (dY transposes in 8 x 8 blocks), output channels in
// whole vectors, and enough input channels (with the stem's 3 the other kernel wins).
//   AVX2: shapes the direct convolution runs on the padded layout, pairs of vectors.
//   AVX-512: single vectors too (16-channel layers), and any stride, so it also takes the
//   weight gradient of stride-2 convolutions whose forward stays im2col + GEMM.
bool lanes_dw(const ConvShape& s, DType dt) {
  if (!g_direct || dt != DType::F32 || s.KH != 3 || s.KW != 3 || s.Cg() < 8 || s.P() % 8 != 0 || s.O % 8 != 0)
    return false;
  if (kLanes == 8) return direct_conv_supported(s, dt) && padded_layout(s) && s.Og() % (2 * kLanes) == 0;
  return s.Og() % kLanes == 0;
}

bool direct_dw_supported(const ConvShape& s, DType dt) {
  // on the padded layout (AVX2) it beats im2col + OpenBLAS on every ResNet-20 width but the
  // 8-pixel one (bench_kernels: 125, 115-121, 94-100 GFLOP/s at 32, 16 and 8 pixels, against 90,
  // 113 and 117-121)
  return lanes_dw(s, dt) || (direct_conv_supported(s, dt) && !parity_planes(s) && s.KH * s.KW == 9 &&
                             (s.Og() <= isa::kDwMaxOg || (padded_layout(s) && s.W >= 16)));
}

void direct_conv_dw(const float* x, const float* dy, float* dw, int64_t nimg, const ConvShape& s,
                    const DirectPlan& pl) {
  static_assert(9 % isa::kDwTB == 0, "the weight gradient's tap blocks must tile the 9 taps");
  const int64_t P = s.P(), Cg = s.Cg(), Og = s.Og(), T = pl.taps;
  const int64_t dy_image = s.O * P;
  if (lanes_dw(s, DType::F32)) {  // output channels in the lanes: dY transposed first, x read as it is
    thread_local std::vector<float> transposed;
    transposed.resize(nimg * P * s.O);
    float* dyT = transposed.data();
    for (int64_t n = 0; n < nimg; ++n)  // in blocks of 8 x 8 (P and O are multiples of 8)
      for (int64_t o = 0; o < s.O; o += 8)
        for (int64_t p = 0; p < P; p += 8)
          isa::transpose8x8(dy + n * dy_image + o * P + p, P, dyT + (n * P + p) * s.O + o, s.O);
    const int64_t x_image = s.C * s.H * s.W;
    for (int64_t g = 0; g < s.G; ++g) {
      const float* xg = x + g * Cg * s.H * s.W;
      float* wg = dw + g * Og * Cg * T;
      for (int64_t o0 = 0; o0 < Og;) {
        const bool pair = o0 + 2 * kLanes <= Og;  // 2 vectors of output channels, or the last 1
        for (int64_t kh = 0; kh < 3; ++kh) {
          const float* d = dyT + g * Og;
          int64_t c0 = 0;
          if (pair) {
            for (; c0 + isa::kLanesCB2 <= Cg; c0 += isa::kLanesCB2)
              lanes_dw_block<2, isa::kLanesCB2>(xg, x_image, d, wg, s, nimg, o0, c0, kh);
            for (; c0 < Cg; ++c0) lanes_dw_block<2, 1>(xg, x_image, d, wg, s, nimg, o0, c0, kh);
          } else {
            for (; c0 + isa::kLanesCB1 <= Cg; c0 += isa::kLanesCB1)
              lanes_dw_block<1, isa::kLanesCB1>(xg, x_image, d, wg, s, nimg, o0, c0, kh);
            for (; c0 < Cg; ++c0) lanes_dw_block<1, 1>(xg, x_image, d, wg, s, nimg, o0, c0, kh);
          }
        }
        o0 += pair ? 2 * kLanes : kLanes;
      }
    }
    return;
  }
  if (pl.xs) {  // the images copied to the padded layout first
    thread_local std::vector<float> padded;
    const int64_t x_image = s.C * pl.xs;
    padded.resize(nimg * x_image + 16);
    float* xpad = padded.data();  // on a cache line, as pad_input's lines must be
    xpad += (64 - reinterpret_cast<uintptr_t>(xpad) % 64) % 64 / sizeof(float);
    for (int64_t n = 0; n < nimg; ++n) pad_input(x + n * s.C * s.H * s.W, xpad + n * x_image, s, pl);
    for (int64_t g = 0; g < s.G; ++g)
      direct_dw_group<true>(xpad + g * Cg * pl.xs, dy + g * Og * P, dw + g * Og * Cg * T, pl, nimg, x_image, dy_image,
                            Cg, Og, P);
    return;
  }
  const int64_t x_image = s.C * s.H * s.W;
  for (int64_t g = 0; g < s.G; ++g)
    direct_dw_group<false>(x + g * Cg * P, dy + g * Og * P, dw + g * Og * Cg * T, pl, nimg, x_image, dy_image, Cg,
                           Og, P);
}

namespace {
// y (G groups of Og planes of P pixels) from x (G groups of Cg planes, xs floats apart) with plan
// pl's taps, masks and weights. Work items: (group, block of kPB chunks), the last block of a
// group possibly shorter; with threads > 1 (one image, as at batch 1) they are shared out.
void run_masked(const float* x, int64_t xs, float* y, const DirectPlan& pl, int64_t G, int64_t Cg, int64_t Og,
                int64_t P, int threads) {
  const int64_t blocks = (pl.chunks + isa::kPB - 1) / isa::kPB;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t item = 0; item < G * blocks; ++item) {
    const int64_t g = item / blocks, chunk0 = (item % blocks) * isa::kPB;
    const float* xg = x + g * Cg * xs;
    const float* wg = pl.w.data<float>() + g * pl.taps * Cg * Og;
    float* yg = y + g * Og * P;
    if (chunk0 + isa::kPB <= pl.chunks)
      direct_chunks<isa::kPB>(xg, xs, wg, yg, pl, Cg, Og, P, chunk0);
    else
      for (int64_t chunk = chunk0; chunk < pl.chunks; ++chunk) direct_chunks<1>(xg, xs, wg, yg, pl, Cg, Og, P, chunk);
  }
}

// planes[(2 py + px) C + c] (OH x OW) = x[c] at rows 2 i + py, columns 2 j + px (H = 2 OH, W = 2 OW).
void split_parity_planes(const float* x, float* planes, const ConvShape& s) {
  const int64_t P = s.OH * s.OW;
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t i = 0; i < s.OH; ++i)
      for (int64_t py = 0; py < 2; ++py) {
        const float* row = x + (c * s.H + 2 * i + py) * s.W;
        float* even = planes + ((py * 2) * s.C + c) * P + i * s.OW;
        float* odd = planes + ((py * 2 + 1) * s.C + c) * P + i * s.OW;
        for (int64_t j = 0; j < s.OW; ++j) even[j] = row[2 * j], odd[j] = row[2 * j + 1];
      }
}

// y (G groups of Og planes of P pixels) from the padded input xpad (G groups of Cg planes) with
// plan pl's taps and weights; threads > 1 shares the pixel blocks out.
void run_padded(const float* xpad, float* y, const DirectPlan& pl, int64_t G, int64_t Cg, int64_t Og, int64_t P,
                int threads) {
  const int64_t blocks = (pl.chunks + isa::kPadPB - 1) / isa::kPadPB;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t item = 0; item < G * blocks; ++item) {
    const int64_t g = item / blocks, chunk0 = (item % blocks) * isa::kPadPB;
    const float* xg = xpad + g * Cg * pl.xs;
    const float* wg = pl.w.data<float>() + g * pl.taps * Cg * Og;
    float* yg = y + g * Og * P;
    const int64_t left = pl.chunks - chunk0;
    if (left >= isa::kPadPB)
      padded_chunks<isa::kPadPB>(xg, wg, yg, pl, Cg, Og, P, chunk0);
    else if (left == 2)
      padded_chunks<2>(xg, wg, yg, pl, Cg, Og, P, chunk0);
    else
      for (int64_t chunk = chunk0; chunk < pl.chunks; ++chunk) padded_chunks<1>(xg, wg, yg, pl, Cg, Og, P, chunk);
  }
}
}  // namespace

// ---- the input gradient of a stride-2 convolution -------------------------------------------------
//
// dx[c][y][x] = sum over o, kh, kw of w[o][c][kh][kw] dy[o][i][j] where y = 2 i + kh dil - pad_h,
// x = 2 j + kw dil - pad_w. For y = 2 i' + py (py its parity) the taps that reach it are those
// with kh dil - pad_h of parity py, from dY row i = i' - (kh dil - pad_h - py) / 2; likewise the
// columns. So dx's pixels of parity (py, px), an OH x OW plane, are a stride-1 convolution of dY
// (O input channels, C output channels) with those taps only, at row and column shifts of -1, 0
// or 1 (3x3 taps, padding 1: ResNet's downsampling convs) or up to the padded layout's lead. Each
// phase runs on the padded copy of dY through the forward's kernel, into a scratch plane; two
// phases of a row parity are then interleaved into dx's rows.

bool direct_dx_s2_supported(const ConvShape& s, DType dt) {
  if (!direct_conv_supported(s, dt) || s.opt.stride_w != 2 || s.opt.stride_h != 2 || s.G != 1) return false;
  if (parity_planes(s)) return true;  // masked phases: any shift
  if (s.H != 2 * s.OH || s.W != 2 * s.OW || s.OW % kLanes != 0) return false;
  for (int64_t kh = 0; kh < s.KH; ++kh)  // row shifts within the one padding row of sy
    if (std::abs(split_shift(kh * s.opt.dil_h - s.opt.pad_h, 2).a) > 1) return false;
  for (int64_t kw = 0; kw < s.KW; ++kw)  // column shifts within a line's lead
    if (std::abs(column_shift(s, kw).a) > kLead) return false;
  return true;
}

DxS2Plan make_dx_s2_plan(const ConvShape& s, const float* w) {
  DxS2Plan plan;
  // dY's geometry as the input of a "same" 3x3 stride-1 convolution: its padded layout, one zero
  // row above and below, serves every phase (rows of whole vectors; otherwise each phase reads
  // dY itself, masked at its edges)
  ConvShape& sy = plan.sy;
  sy = s;
  sy.C = s.O, sy.O = s.C, sy.H = s.OH, sy.W = s.OW, sy.OH = s.OH, sy.OW = s.OW, sy.KH = 3, sy.KW = 3;
  sy.opt = Conv2dOptions::make(1, 1);
  const bool masked = parity_planes(s);
  const DirectPlan base = make_direct_plan(sy, nullptr);
  for (int64_t py = 0; py < 2; ++py)
    for (int64_t px = 0; px < 2; ++px) {
      DirectPlan& pl = plan.phase[py][px];
      pl.chunks = base.chunks, pl.Wp = base.Wp, pl.Hp = base.Hp, pl.xs = masked ? 0 : base.xs, pl.base = base.base;
      std::vector<std::pair<int64_t, int64_t>> taps;  // (kh, kw) of this parity
      for (int64_t kh = 0; kh < s.KH; ++kh)
        for (int64_t kw = 0; kw < s.KW; ++kw) {
          const ColumnShift row = split_shift(kh * s.opt.dil_h - s.opt.pad_h, 2), col = column_shift(s, kw);
          if (row.phase != py || col.phase != px) continue;
          taps.push_back({kh, kw});
          // dx (2 i + py) reads dY row i - row.a: padded row (that + 1), column likewise; masked,
          // dY pixel p - row.a OW - col.a
          if (masked)
            pl.off.push_back(-row.a * s.OW - col.a);
          else
            pl.pad_off.push_back((1 - row.a) * pl.Wp - col.a + kLead);
        }
      if (masked) {  // the lanes whose dY pixel lies inside dY
        const int64_t T = (int64_t)taps.size();
        pl.mask.assign(pl.chunks * T, 0);
        for (int64_t t = 0; t < T; ++t) {
          const ColumnShift row = split_shift(taps[t].first * s.opt.dil_h - s.opt.pad_h, 2);
          const ColumnShift col = column_shift(s, taps[t].second);
          mark_inside(pl, t, T, s.OH, s.OW, -row.a, -col.a);
        }
      }
      pl.taps = (int64_t)taps.size();
      // weights (T', O, C): tap, input channel (dY's o), output channel (dx's c)
      pl.w = Tensor::empty({std::max<int64_t>(1, pl.taps * s.O * s.C)}, DType::F32);
      float* pw = pl.w.data<float>();
      for (int64_t t = 0; t < pl.taps; ++t)
        for (int64_t o = 0; o < s.O; ++o)
          for (int64_t c = 0; c < s.C; ++c)
            pw[(t * s.O + o) * s.C + c] = w[((o * s.C + c) * s.KH + taps[t].first) * s.KW + taps[t].second];
    }
  return plan;
}

void direct_dx_s2_image(const float* dy, float* dx, const ConvShape& s, const DxS2Plan& plan, int threads) {
  const ConvShape& sy = plan.sy;
  const DirectPlan& any = plan.phase[0][0];
  const bool masked = any.xs == 0;
  thread_local std::vector<float> padded, planes;
  float* dypad = nullptr;
  if (!masked) {
    padded.resize(sy.C * any.xs + 16);
    dypad = padded.data();  // on a cache line, as pad_input's lines must be
    dypad += (64 - reinterpret_cast<uintptr_t>(dypad) % 64) % 64 / sizeof(float);
    pad_input(dy, dypad, sy, any);
  }
  const int64_t P = s.OH * s.OW;
  planes.resize(4 * s.C * P);
  for (int64_t py = 0; py < 2; ++py)
    for (int64_t px = 0; px < 2; ++px) {
      const DirectPlan& pl = plan.phase[py][px];
      float* out = planes.data() + (py * 2 + px) * s.C * P;
      if (pl.taps == 0)
        std::fill(out, out + s.C * P, 0.0f);
      else if (masked)
        run_masked(dy, P, out, pl, 1, s.O, s.C, P, threads);
      else
        run_padded(dypad, out, pl, 1, s.O, s.C, P, threads);
    }
  // dx row 2 i + py = the phases (py, 0) and (py, 1) of row i, alternated
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t i = 0; i < s.OH; ++i)
      for (int64_t py = 0; py < 2; ++py) {
        const float* even = planes.data() + ((py * 2) * s.C + c) * P + i * s.OW;
        const float* odd = planes.data() + ((py * 2 + 1) * s.C + c) * P + i * s.OW;
        float* row = dx + (c * s.H + 2 * i + py) * s.W;
        if (s.OW % kLanes != 0) {
          for (int64_t j = 0; j < s.OW; ++j) row[2 * j] = even[j], row[2 * j + 1] = odd[j];
          continue;
        }
        for (int64_t j = 0; j < s.OW; j += kLanes) {
          V lo, hi;
          isa::interleave(isa::load(even + j), isa::load(odd + j), lo, hi);
          isa::store(row + 2 * j, lo);
          isa::store(row + 2 * j + kLanes, hi);
        }
      }
}

void direct_conv_image(const float* x, float* y, const ConvShape& s, const DirectPlan& pl, int threads) {
  const int64_t P = s.P(), Cg = s.Cg(), Og = s.Og();
  if (pl.xs) {  // zero-padded planes, plain loads
    thread_local std::vector<float> padded;
    padded.resize(s.C * pl.xs + 16);
    float* xpad = padded.data();  // on a cache line, as pad_input's lines must be
    xpad += (64 - reinterpret_cast<uintptr_t>(xpad) % 64) % 64 / sizeof(float);
    pad_input(x, xpad, s, pl);
    run_padded(xpad, y, pl, s.G, Cg, Og, P, threads);
    return;
  }
  if (pl.planes) {  // stride 2: the four parity planes, then stride-1 taps on them
    thread_local std::vector<float> planes;
    planes.resize(4 * s.C * P);
    split_parity_planes(x, planes.data(), s);
    run_masked(planes.data(), P, y, pl, s.G, Cg, Og, P, threads);
    return;
  }
  // Planes of a multiple of 256 floats lie a multiple of 1 KiB apart, so the same pixel of every
  // fourth channel (of every channel, at 1,024 floats) falls in one set of the L1 cache. A tap's
  // loads touch one line per channel: 16 channels of 32x32 or 32 of 16x16 (ResNet-20's first
  // two stages) overflow its 8 ways, and the kernel ran at 70 and 138 GFLOP/s instead of 110 and
  // 150 (bench_kernels, AVX2). Such inputs are first copied to planes one cache line further
  // apart, which costs about 2% of the work.
  int64_t xs = P;
  if (P % 256 == 0 && s.C > 4) {
    thread_local std::vector<float> staggered;
    xs = P + 64 / (int64_t)sizeof(float);
    staggered.resize(s.C * xs);
    for (int64_t c = 0; c < s.C; ++c) std::copy(x + c * P, x + (c + 1) * P, staggered.data() + c * xs);
    x = staggered.data();
  }
  run_masked(x, xs, y, pl, s.G, Cg, Og, P, threads);
}

#else  // neither AVX-512 nor AVX2 + FMA: conv.cpp keeps im2col + GEMM

bool direct_conv_supported(const ConvShape&, DType) { return false; }
bool direct_dw_supported(const ConvShape&, DType) { return false; }
void direct_conv_dw(const float*, const float*, float*, int64_t, const ConvShape&, const DirectPlan&) {
  AB_FAIL("direct_conv_dw: this build has neither AVX-512 nor AVX2 (check direct_dw_supported first)");
}
DirectPlan make_direct_plan(const ConvShape&, const float*) { return {}; }
bool direct_dx_s2_supported(const ConvShape&, DType) { return false; }
DxS2Plan make_dx_s2_plan(const ConvShape&, const float*) { return {}; }
void direct_dx_s2_image(const float*, float*, const ConvShape&, const DxS2Plan&, int) {
  AB_FAIL("direct_dx_s2_image: this build has neither AVX-512 nor AVX2 (check direct_dx_s2_supported first)");
}
void direct_conv_image(const float*, float*, const ConvShape&, const DirectPlan&, int) {
  AB_FAIL("direct_conv_image: this build has neither AVX-512 nor AVX2 (check direct_conv_supported first)");
}

#endif

}  // namespace anybit::cpu
