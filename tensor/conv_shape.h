// conv_shape.h - the geometry of one convolution, as the CPU and CUDA kernels both take it.
// A plain struct of integers (it is passed by value to CUDA kernels). cpu::conv_shape() computes
// it from the shapes of x and the weight (tensor/cpu/conv.cpp).
#pragma once
#include <cstdint>

#include "tensor/ops.h"

namespace anybit {

// x: (N, C, H, W), w: (O, C / G, KH, KW), y: (N, O, OH, OW), with the options.
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
  // One input channel per group, more than one group (MobileNetV2's 3x3 convs).
  bool depthwise() const { return G > 1 && C == G; }
  // Stride 1 and output size = input size (3x3 with padding 1, 5x5 with padding 2, ...).
  bool same_stride1() const { return opt.stride_h == 1 && opt.stride_w == 1 && OH == H && OW == W; }
  double flops() const { return 2.0 * N * O * P() * Kg(); }  // multiply-adds of the forward, x2
};

}  // namespace anybit
