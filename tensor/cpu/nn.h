// nn.h - what is particular to the CPU's neural-network kernels: the convolution's geometry
// (conv_shape), how it uses the threads, and the direct convolution of conv_direct.cpp.
//
// The kernels themselves (conv2d, pooling, batch norm) are declared once for both devices in
// tensor/kernels.inc; the autograd side (autograd/conv.cpp, pool.cpp, norm.cpp) checks arguments
// and shapes, makes inputs contiguous and allocates outputs, and the kernels only compute. Each is
// tested against its scalar twin in tensor/ref.h. Threads: cpu::num_threads() (OpenMP); BLAS
// called inside our parallel loops runs single-threaded. Read next: tensor/cpu/conv.cpp.
#pragma once
#include <functional>
#include <cstdint>
#include <vector>

#include "tensor/conv_shape.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace anybit::cpu {

// ---- conv2d (conv.cpp): im2col + gemm per sample, OpenMP over the batch ----------------------
// The geometry of one convolution: ConvShape (tensor/conv_shape.h), shared with the CUDA kernels.
using anybit::ConvShape;
using anybit::ChannelSum;
ConvShape conv_shape(const Shape& x, const Shape& w, const Conv2dOptions& opt);

// How conv2d uses the threads. OverImages (the default, and the faster one on ResNet-20 shapes:
// docs/BENCHMARKS.md): our OpenMP loop over images, each GEMM single-threaded. InsideGemm: one
// image at a time, OpenBLAS threads each GEMM. Kept switchable for apps/bench_kernels.cpp.
enum class ConvThreading { OverImages, InsideGemm };
void set_conv_threading(ConvThreading t);
ConvThreading conv_threading();

// The direct convolution of conv_direct.cpp: float32 "same" stride-1 convolutions (not 1x1)
// without im2col, on AVX-512 or AVX2 builds. conv2d_forward/backward use it where supported; the switch
// (on by default) lets tests and benchmarks compare it with the im2col + GEMM path.
void set_conv_direct(bool on);
bool conv_direct();
struct DirectPlan {
  int64_t chunks = 0, taps = 0;  // one-vector chunks of an output plane (16 or 8 pixels); KH * KW
  std::vector<int64_t> off;      // per tap: input pixel - output pixel
  std::vector<uint16_t> mask;    // per (chunk, tap): the lanes whose input pixel is inside the image
  Tensor w;                      // the weights per group as (tap, input channel, output channel)
  // The padded layout (conv_direct.cpp, AVX2 builds, W a multiple of the lanes): the input is
  // copied into planes of Hp = H + 2 pad_h rows of Wp floats (a cache line per chunk of the row),
  // xs floats apart; the chunk's tap t reads base[chunk] + pad_off[t] onwards, a plain load.
  // xs == 0: not padded.
  int64_t Wp = 0, Hp = 0, xs = 0;
  std::vector<int64_t> base, pad_off;
  // Stride 2 without the padded layout (output rows shorter than a vector): the input is first
  // split into its four parity planes (rows 2i + py, columns 2j + px: OH x OW each, plane
  // (py, px) at (2 py + px) C OH OW floats), where every tap is a stride-1 tap; off[t] then
  // includes its plane's offset and mask its edges, as in the masked stride-1 path.
  bool planes = false;
};
bool direct_conv_supported(const ConvShape& s, DType dt);
DirectPlan make_direct_plan(const ConvShape& s, const float* w);  // w: (O, C/G, KH, KW), or null
// One image; threads > 1 shares its pixel blocks out among that many threads (for batches smaller
// than the thread count, where the loop over images cannot use them all).
void direct_conv_image(const float* x, float* y, const ConvShape& s, const DirectPlan& plan, int threads = 1);
// dw (O, C/G, KH, KW) += the weight gradient of nimg consecutive images x, dy (3x3 taps only;
// plan from make_direct_plan(s, nullptr)).
bool direct_dw_supported(const ConvShape& s, DType dt);
void direct_conv_dw(const float* x, const float* dy, float* dw, int64_t nimg, const ConvShape& s, const DirectPlan& plan);

// The input gradient of a stride-2 convolution (H = 2 OH, W = 2 OW, no groups; dY read through
// the padded layout when its rows are whole vectors, masked otherwise):
// dx's pixels of row parity py and column parity px form a plane of OH x OW, which is a stride-1
// convolution of dY with the taps of that parity (conv_direct.cpp). plan: from
// make_dx_s2_plan(s, w); one image, dy (O, OH, OW) -> dx (C, H, W).
struct DxS2Plan {
  ConvShape sy;           // the stride-1 geometry over dY that the four phases share
  DirectPlan phase[2][2];  // [py][px]: the taps of that parity, their weights packed
};
bool direct_dx_s2_supported(const ConvShape& s, DType dt);
DxS2Plan make_dx_s2_plan(const ConvShape& s, const float* w);
void direct_dx_s2_image(const float* dy, float* dx, const ConvShape& s, const DxS2Plan& plan, int threads = 1);

// conv2d_forward / conv2d_backward, pooling and batch norm: declared in tensor/kernels.inc.

}  // namespace anybit::cpu
