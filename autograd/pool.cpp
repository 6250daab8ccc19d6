// pool.cpp - max_pool2d, avg_pool2d, global_avg_pool2d: checks, forward, backward formulas.
//
// x: (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2 pad - kernel) / stride + 1 (floor).
// Kernels: tensor/cpu/pool.cpp, tensor/cuda/nn.cu; scalar spec: ref::max_pool2d, ref::avg_pool2d (tensor/ref.cpp).
// global_avg_pool2d is a mean over (H, W) and reuses the reduction op (CPU and CUDA).
#include "autograd/autograd.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

Shape check_pool(const char* op, const Tensor& x, int64_t k, int64_t s, int64_t p) {
  AB_CHECK(x.dim() == 4, op, ": expected x (N, C, H, W), got ", shape_str(x.shape()), " ",
           dtype_name(x.dtype()), "; add a batch dimension with unsqueeze(0) for a single image");
  AB_CHECK(is_floating(x.dtype()), op, ": x must be float32 or float64, got ", x.str());
  AB_CHECK(k >= 1 && s >= 1 && p >= 0 && 2 * p <= k, op, ": invalid kernel ", k, ", stride ", s,
           ", padding ", p, " for x ", shape_str(x.shape()),
           "; need kernel >= 1, stride >= 1, 0 <= padding <= kernel / 2");
  AB_CHECK(x.size(2) + 2 * p >= k && x.size(3) + 2 * p >= k, op, ": kernel ", k,
           " is larger than the padded input x ", shape_str(x.shape()), " with padding ", p);
  return {x.size(0), x.size(1), (x.size(2) + 2 * p - k) / s + 1, (x.size(3) + 2 * p - k) / s + 1};
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t ksize, int64_t stride, int64_t pad) {
  Shape ys = check_pool("max_pool2d", x, ksize, stride, pad);
  Tensor xc = x.detach().contiguous();
  Tensor y = Tensor::empty(ys, x.dtype(), x.device()), argmax = Tensor::empty(ys, DType::I32, x.device());
  kernel::max_pool2d_forward(xc, ksize, stride, pad, y, argmax);
  // dX[argmax of each window] += dY (the first maximum of the window)
  if (needs_grad({x})) {
    Shape xs = x.shape();
    record("max_pool2d", y, {x}, [=](const Tensor& g) {
      Tensor dx = Tensor::empty(xs, g.dtype(), g.device());
      kernel::max_pool2d_backward(g.contiguous(), argmax, ksize, stride, pad, dx);
      return Grads{dx};
    });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, int64_t ksize, int64_t stride, int64_t pad) {
  Shape ys = check_pool("avg_pool2d", x, ksize, stride, pad);
  Tensor xc = x.detach().contiguous();
  Tensor y = Tensor::empty(ys, x.dtype(), x.device());
  kernel::avg_pool2d_forward(xc, ksize, stride, pad, y);
  // dX[window] += dY / ksize^2
  if (needs_grad({x})) {
    Shape xs = x.shape();
    record("avg_pool2d", y, {x}, [=](const Tensor& g) {
      Tensor dx = Tensor::empty(xs, g.dtype(), g.device());
      kernel::avg_pool2d_backward(g.contiguous(), ksize, stride, pad, dx);
      return Grads{dx};
    });
  }
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  AB_CHECK(x.dim() == 4, "global_avg_pool2d: expected x (N, C, H, W), got ", shape_str(x.shape()), " ",
           dtype_name(x.dtype()));
  // y = mean over (H, W); its gradient dX = dY / (H W) broadcast comes from mean().
  return mean(x, {2, 3});
}

}  // namespace anybit
