// conv.cpp - conv2d: argument checks, forward, backward formulas, and the CPU kernel calls.
//
// x: (N, C, H, W), weight: (O, C / groups, KH, KW), bias: (O) or undefined -> y: (N, O, OH, OW),
// OH = (H + 2 pad_h - dil_h (KH - 1) - 1) / stride_h + 1 (floor), OW likewise.
// The kernels: tensor/cpu/conv.cpp (direct, or im2col + GEMM per image) and tensor/cuda/nn.cu
// (im2col + cuBLAS); the scalar spec is ref::conv2d in tensor/ref.cpp.
#include "autograd/autograd.h"
#include "tensor/cpu/nn.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

void check_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  AB_CHECK(x.dim() == 4 && w.dim() == 4, "conv2d: expected x (N, C, H, W) and weight (O, C/groups, KH, KW), got x ",
           shape_str(x.shape()), " and weight ", shape_str(w.shape()),
           "; add a batch dimension with unsqueeze(0) for a single image");
  check_same_device("conv2d", x, w);
  check_same_dtype("conv2d", x, w);
  AB_CHECK(o.stride_h >= 1 && o.stride_w >= 1 && o.dil_h >= 1 && o.dil_w >= 1 && o.pad_h >= 0 &&
               o.pad_w >= 0 && o.groups >= 1,
           "conv2d: invalid options stride (", o.stride_h, ", ", o.stride_w, "), padding (", o.pad_h, ", ",
           o.pad_w, "), dilation (", o.dil_h, ", ", o.dil_w, "), groups ", o.groups,
           " for x ", shape_str(x.shape()), "; strides, dilations and groups must be >= 1, padding >= 0");
  const int64_t C = x.size(1), O = w.size(0);
  AB_CHECK(C % o.groups == 0 && O % o.groups == 0, "conv2d: groups = ", o.groups,
           " must divide both the input channels of x ", shape_str(x.shape()),
           " and the output channels of weight ", shape_str(w.shape()));
  AB_CHECK(w.size(1) * o.groups == C, "conv2d: x ", shape_str(x.shape()), " has ", C,
           " channels but weight ", shape_str(w.shape()), " with groups = ", o.groups, " expects ",
           w.size(1) * o.groups, " (", dtype_name(x.dtype()), "); weight is (O, C / groups, KH, KW)");
  if (b.defined()) {
    check_same_device("conv2d", x, b);
    check_same_dtype("conv2d", x, b);
    AB_CHECK(b.dim() == 1 && b.size(0) == O, "conv2d: bias ", shape_str(b.shape()), " does not match weight ",
             shape_str(w.shape()), "; bias must be (O) = [", O, "]");
  }
  const int64_t eh = o.dil_h * (w.size(2) - 1) + 1, ew = o.dil_w * (w.size(3) - 1) + 1;
  AB_CHECK(x.size(2) + 2 * o.pad_h >= eh && x.size(3) + 2 * o.pad_w >= ew, "conv2d: the kernel ",
           shape_str(w.shape()), " (", eh, "x", ew, " with dilation) is larger than the padded input x ",
           shape_str(x.shape()), " with padding (", o.pad_h, ", ", o.pad_w, ")");
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt) {
  check_conv(x, weight, bias, opt);
  Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  cpu::ConvShape s = cpu::conv_shape(x.shape(), weight.shape(), opt);
  Tensor y = Tensor::empty({s.N, s.O, s.OH, s.OW}, x.dtype(), x.device());
  kernel::conv2d_forward(xc, wc, bc, s, y);
  // dX[n] = col2im(W^T dY[n]) (for a "same" stride-1 conv: dY convolved with the flipped,
  // transposed weights), dW = sum_n dY[n] im2col(x[n])^T, db = sum_{n, oh, ow} dY
  // (per group; see tensor/cpu/conv.cpp)
  if (needs_grad({x, weight, bias})) {
    bool gx = x.requires_grad(), gw = weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    record("conv2d", y, {x, weight, bias}, [=](const Tensor& g) {
      Tensor dy = g.contiguous();
      Tensor dx = gx ? Tensor::empty(xc.shape(), xc.dtype(), xc.device()) : Tensor();
      Tensor dw = gw ? Tensor::empty(wc.shape(), wc.dtype(), wc.device()) : Tensor();
      Tensor db = gb ? Tensor::empty({s.O}, wc.dtype(), wc.device()) : Tensor();
      kernel::conv2d_backward(xc, wc, dy, s, gx ? &dx : nullptr, gw ? &dw : nullptr, gb ? &db : nullptr);
      return Grads{dx, dw, db};
    });
  }
  return y;
}

}  // namespace anybit
