// norm.cpp - batch_norm: checks, running statistics, forward and backward through fused kernels.
//
// x: (N, C) or (N, C, H, W); weight, bias, running_mean, running_var: (C) or undefined.
// Training normalises with the batch mean and biased variance and updates the running statistics
// in place with the unbiased variance; evaluation normalises with the running statistics.
// Kernels: tensor/cpu/norm.cpp, tensor/cuda/nn.cu; scalar spec: ref::batch_norm (tensor/ref.cpp).
// batch_norm_sync is the same op with the statistics of every process's batch (data-parallel
// training with synchronised BN, nn/distributed.h). With a residual, the op is a ResNet block's
// relu(bn(x) + shortcut) in one pass forward, and in the BN's two passes backward. With `pact`,
// it is pact_quantize(relu(bn(x))) the same way: a residual block's first BN, whose output only
// the next quantized convolution reads. With `pact` and `tapped`, the op has two outputs, y and
// PACT of y (a block output that the next block's shortcut and first conv both read): one Node
// with two outputs (autograd.h, record_outputs), whose backward adds the two gradients in the
// BN's first pass.
#include <cmath>

#include "autograd/autograd.h"
#include "tensor/formulas.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/process_group.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

void check_param(const Tensor& x, const Tensor& p, const char* name) {
  if (!p.defined()) return;
  check_same_device("batch_norm", x, p);
  check_same_dtype("batch_norm", x, p);
  AB_CHECK(p.dim() == 1 && p.size(0) == x.size(1), "batch_norm: ", name, " ", shape_str(p.shape()),
           " does not match the ", x.size(1), " channels of x ", shape_str(x.shape()), "; expected [",
           x.size(1), "]");
}

}  // namespace

namespace {

// batch_norm, and with `sync` batch_norm_sync: the kernels then add up their per-channel sums
// across the processes of dist::world() (tensor/kernels.h: ChannelSum), so the statistics, the
// running statistics and dx are those of every process's batch together; dw and db stay this
// process's share (the trainer sums parameter gradients across processes).
Tensor batch_norm_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, bool training, double momentum, double eps, bool sync, bool relu,
                       const Tensor& residual, const PactAfter& pact, Tensor* tapped) {
  AB_CHECK(x.dim() == 2 || x.dim() == 4, "batch_norm: expected x (N, C) or (N, C, H, W), got ",
           shape_str(x.shape()), " ", dtype_name(x.dtype()));
  AB_CHECK(is_floating(x.dtype()), "batch_norm: x must be float32 or float64, got ", x.str());
  check_param(x, weight, "weight");
  check_param(x, bias, "bias");
  check_param(x, running_mean, "running_mean");
  check_param(x, running_var, "running_var");
  AB_CHECK(running_mean.defined() == running_var.defined(),
           "batch_norm: running_mean and running_var must be both defined or both undefined (x ",
           shape_str(x.shape()), ")");
  AB_CHECK(running_mean.defined() || training,
           "batch_norm: evaluation mode needs running_mean and running_var (x ", shape_str(x.shape()), ")");
  const int64_t C = x.size(1);
  double M = double(x.numel() / std::max<int64_t>(C, 1));  // values per channel (over every process)
  const ChannelSum across = [](double* sums, int64_t n) { dist::world().sum(sums, n); };
  const ChannelSum* sum_across = sync ? &across : nullptr;
  if (sync) across(&M, 1);
  AB_CHECK(!training || M > 1, "batch_norm: training needs more than one value per channel, got x ",
           shape_str(x.shape()), sync ? " (on all processes together)" : "", "; use a batch larger than 1 or evaluation mode");
  AB_CHECK(!running_mean.defined() || (running_mean.is_contiguous() && running_var.is_contiguous()),
           "batch_norm: running statistics must be contiguous (they are updated in place)");
  if (residual.defined()) {
    check_same_device("batch_norm", x, residual);
    check_same_dtype("batch_norm", x, residual);
    AB_CHECK(residual.shape() == x.shape(), "batch_norm: the residual ", shape_str(residual.shape()),
             " must have x's shape ", shape_str(x.shape()));
  }
  // A backward will run: the values it needs that an optimizer or a later training step changes in
  // place (the clip value, the running mean) are copied. Without one (inference) they are not.
  const bool backward = needs_grad({x, weight, bias, residual, pact.clip});
  // PACT after the ReLU: pact_quantize's checks (quant/quantizers.cpp), and the clip's value
  // copied (the backward uses the forward's value)
  const bool has_pact = pact.clip.defined();
  Tensor clip;
  BnPact bn_pact;
  if (has_pact) {
    AB_CHECK(relu && (tapped || !residual.defined()),
             "batch_norm: PACT after the BN needs relu, and a tapped output where there is a residual");
    AB_CHECK(pact.clip.numel() == 1, "batch_norm: PACT's clip value must have one element, got shape ",
             shape_str(pact.clip.shape()));
    AB_CHECK(pact.bits == 32 || (pact.bits >= 1 && pact.bits <= 16), "batch_norm: PACT's bit-width ", pact.bits,
             " is not in 1..16 or 32");
    check_same_dtype("batch_norm", x, pact.clip);
    check_same_device("batch_norm", x, pact.clip);
    clip = backward ? pact.clip.detach().clone() : pact.clip.detach();
    if (clip.device().is_cpu())
      AB_CHECK(clip.item<double>() > 0, "batch_norm: PACT's clip value must be positive, got ", clip.item<double>());
    bn_pact.a = clip;
    bn_pact.levels = formula::pact_levels(pact.bits, false);
  }
  AB_CHECK(!tapped || has_pact, "batch_norm: a tapped output needs pact (its clip value and bit-width)");

  Tensor xc = x.detach().contiguous();
  Tensor wc = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  Tensor rc = residual.defined() ? residual.detach().contiguous() : Tensor();
  const Device dev = x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor affine = Tensor::empty({2 * C}, x.dtype(), dev);  // y = x scale + shift: scale, then shift
  Tensor q;  // the tap: PACT of y
  if (tapped) bn_pact.q = q = Tensor::empty(x.shape(), x.dtype(), dev);
  Tensor mean, invstd;
  if (training) {
    mean = Tensor::empty({C}, x.dtype(), dev);
    invstd = Tensor::empty({C}, x.dtype(), dev);
    Tensor var = Tensor::empty({C}, x.dtype(), dev);
    // running = (1 - momentum) running + momentum batch, the variance unbiased: var * M / (M - 1)
    const BnRunning running{running_mean, running_var, momentum};
    kernel::batch_norm_train_forward(xc, wc, bc, eps, relu, y, mean, var, invstd, affine, sum_across, rc,
                                     has_pact ? &bn_pact : nullptr, running_mean.defined() ? &running : nullptr);
  } else {
    // Evaluation: the running statistics (copied for a backward: a later training step updates them
    // in place).
    mean = backward ? running_mean.detach().clone() : running_mean.detach();
    invstd = Tensor::empty({C}, x.dtype(), dev);
    kernel::batch_norm_eval_forward(xc, wc, bc, mean, running_var, eps, relu, y, invstd, affine, rc,
                                    has_pact ? &bn_pact : nullptr);
  }
  // training:   dX = (1/M) w invstd (M dY - sum dY - xhat sum(dY xhat)), xhat = (x - mean) invstd
  // evaluation: dX = dY w invstd
  // dW = sum dY xhat, db = sum dY (sums over n, h, w per channel)
  // with relu, dY first goes through the ReLU's backward: dY where y > 0, else 0 (without a
  // residual y's sign is recomputed from x, scale and shift, so y itself is not kept for it)
  // d residual = dY (through the ReLU's backward with relu)
  // with PACT after the ReLU, dY first goes through PACT's backward (dY where the ReLU's output r
  // is <= the clip), and d clip = sum of dY where r >= the clip
  // with a tap, dY = dY + PACT's backward of dQ (the tap's gradient), then the ReLU's, and d clip
  // = sum of dQ where r >= the clip
  if (backward) {
    bool gw = weight.defined() && weight.requires_grad(), gb = bias.defined() && bias.requires_grad();
    bool gr = residual.defined() && residual.requires_grad();
    // the ReLU's mask: y's values without its history (the closure must not own the node that
    // owns it), or without a residual the forward's scale and shift
    BnRelu mask;
    if (relu && residual.defined())
      mask.out = y.detach();
    else if (relu)
      mask.affine = affine;
    if (has_pact) mask.clip = clip;
    const char* name = tapped ? (residual.defined() ? (sync ? "batch_norm_sync_add_relu_tap" : "batch_norm_add_relu_tap")
                                                    : (sync ? "batch_norm_sync_relu_tap" : "batch_norm_relu_tap"))
                       : residual.defined() ? (relu ? (sync ? "batch_norm_sync_add_relu" : "batch_norm_add_relu")
                                                  : (sync ? "batch_norm_sync_add" : "batch_norm_add"))
                       : has_pact ? (sync ? "batch_norm_sync_relu_pact" : "batch_norm_relu_pact")
                       : relu ? (sync ? "batch_norm_sync_relu" : "batch_norm_relu")
                              : (sync ? "batch_norm_sync" : "batch_norm");
    const Shape clip_shape = has_pact ? pact.clip.shape() : Shape{};
    const bool tap = tapped != nullptr;
    std::vector<Tensor*> outs = {&y};
    if (tap) outs.push_back(&q);
    record_outputs(name, outs, {x, weight, bias, residual, pact.clip}, [=](const Grads& grads) {
      // y's gradient (zeros if none reached it) and, with a tap, the tap's (none: no PACT backward)
      Tensor gc = grads[0].defined() ? grads[0].contiguous() : Tensor::zeros(xc.shape(), xc.dtype(), xc.device());
      BnRelu m = mask;
      if (tap && grads[1].defined()) m.dq = grads[1].contiguous();
      if (tap && !m.dq.defined()) m.clip = Tensor();  // y alone: a ReLU (after the residual, or recomputed)
      const bool pact_grad = m.clip.defined();
      Tensor dx = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
      Tensor dw = gw ? Tensor::empty({C}, xc.dtype(), xc.device()) : Tensor();
      Tensor db = gb ? Tensor::empty({C}, xc.dtype(), xc.device()) : Tensor();
      // the residual's gradient: dY, through the ReLU with relu (written by the first pass)
      Tensor dr = gr && relu ? Tensor::empty(gc.shape(), gc.dtype(), gc.device()) : gr ? gc : Tensor();
      Tensor dclip = pact_grad ? Tensor::empty(clip_shape, xc.dtype(), xc.device()) : Tensor();
      kernel::batch_norm_backward(xc, wc, mean, invstd, training, m, gc, dx, gw ? &dw : nullptr, gb ? &db : nullptr,
                                  sync ? &across : nullptr, gr && relu ? &dr : nullptr, pact_grad ? &dclip : nullptr);
      return Grads{dx, dw, db, dr, dclip};
    });
  }
  if (tapped) *tapped = q;
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                  Tensor running_var, bool training, double momentum, double eps, bool relu, const Tensor& residual,
                  const PactAfter& pact, Tensor* tapped) {
  return batch_norm_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, false, relu, residual,
                         pact, tapped);
}

Tensor batch_norm_sync(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, double momentum, double eps, bool relu, const Tensor& residual,
                       const PactAfter& pact, Tensor* tapped) {
  return batch_norm_impl(x, weight, bias, running_mean, running_var, true, momentum, eps, true, relu, residual, pact,
                         tapped);
}

}  // namespace anybit
