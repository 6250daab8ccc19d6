// nn.h - CPU kernels of the neural-network ops: conv2d, pooling, batch norm.
//
// The autograd side (autograd/conv.cpp, pool.cpp, norm.cpp) checks arguments and shapes, makes
// inputs contiguous and allocates outputs; these kernels only compute. All tensors here are
// contiguous CPU float32 or float64 of one dtype. Each is tested against its scalar twin in
// tensor/ref.h. Threads: cpu::num_threads() (OpenMP); BLAS called inside our parallel loops runs
// single-threaded. Read next: tensor/cpu/conv.cpp.
#pragma once
#include <functional>
#include <cstdint>
#include <vector>

#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace anybit::cpu {

// ---- conv2d (conv.cpp): im2col + gemm per sample, OpenMP over the batch ----------------------
// The geometry of one convolution, from x: (N, C, H, W), w: (O, C / G, KH, KW) and the options.
struct ConvShape {
  int64_t N, C, H, W, O, KH, KW, OH, OW, G;
  Conv2dOptions opt;
  int64_t Cg() const { return C / G; }
  int64_t Og() const { return O / G; }
  int64_t Kg() const { return Cg() * KH * KW; }  // GEMM depth of one group (rows of its im2col)
  int64_t P() const { return OH * OW; }          // output pixels per image
  // 1x1 kernel, stride 1, no padding: x itself is the im2col matrix (C, H*W).
  bool direct() const {
    return KH == 1 && KW == 1 && opt.stride_h == 1 && opt.stride_w == 1 && opt.pad_h == 0 &&
           opt.pad_w == 0;
  }
  // Stride 1 and output size = input size (3x3 with padding 1, 5x5 with padding 2, ...).
  bool same_stride1() const { return opt.stride_h == 1 && opt.stride_w == 1 && OH == H && OW == W; }
  double flops() const { return 2.0 * N * O * P() * Kg(); }  // multiply-adds of the forward, x2
};
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

// y: (N, O, OH, OW) = conv(x, w) + b (b may be undefined).
void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, const ConvShape& s, Tensor& y);
// Any of dx (N, C, H, W), dw (O, C/G, KH, KW), db (O) may be null (not wanted); they are
// overwritten, not accumulated.
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const ConvShape& s,
                     Tensor* dx, Tensor* dw, Tensor* db);

// ---- pooling (pool.cpp); x: (N, C, H, W), y: (N, C, OH, OW) ------------------------------------
// argmax: int32 (N, C, OH, OW), the index within the (H, W) plane of each window's first maximum,
// -1 for a window that lies entirely in the padding.
void max_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y, Tensor& argmax);
void max_pool2d_backward(const Tensor& dy, const Tensor& argmax, Tensor& dx);
void avg_pool2d_forward(const Tensor& x, int64_t k, int64_t s, int64_t p, Tensor& y);
void avg_pool2d_backward(const Tensor& dy, int64_t k, int64_t s, int64_t p, Tensor& dx);

// ---- batch norm (norm.cpp); x, y: (N, C, S) with S = H*W (1 for 2-D input) ----------------------
// Synchronised BN: adds up per-channel partial sums (double[n]) across processes, in place. Given to
// the kernels below, it makes their statistics those of every process's batch together.
using ChannelSum = std::function<void(double* sums, int64_t n)>;
// Training forward: mean and invstd = 1 / sqrt(var + eps) (biased var) per channel are written to
// mean, var (biased) and invstd: (C); y = (x - mean) * invstd * w + b. w, b may be undefined.
void batch_norm_train_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                              Tensor& y, Tensor& mean, Tensor& var, Tensor& invstd,
                              const ChannelSum* across = nullptr);
// y = (x - mean) * invstd * w + b with given statistics (evaluation: the running ones).
void batch_norm_apply(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& mean,
                      const Tensor& invstd, Tensor& y);
// dx, dw, db as in ref::batch_norm_backward; dw / db may be null (not wanted).
// With `across`, dw and db are this process's share (the sums of its dy) and dx uses the sums of
// every process.
void batch_norm_backward(const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& invstd,
                         bool training, const Tensor& dy, Tensor& dx, Tensor* dw, Tensor* db,
                         const ChannelSum* across = nullptr);

}  // namespace anybit::cpu
