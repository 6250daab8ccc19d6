// kernels.h - every kernel of anybit, with its CPU twin, its CUDA twin and one facade.
//
// The one rule for where an op runs: an op (autograd/, quant/, nn/) computes through kernel::f,
// and kernel::f calls cpu::f or cuda::f by the device of its tensors (tensor/kernels.cpp; the
// device of the first tensor argument, and the others must be on the same one). The twins share
// one signature, written once in tensor/kernels.inc; the scalar formulas they apply are written
// once in tensor/formulas.h. Outputs are allocated by the op, on its inputs' device.
//
// Read next: tensor/kernels.inc (the list), then tensor/cpu/ and tensor/cuda/.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "tensor/conv_shape.h"
#include "tensor/elementwise.h"
#include "tensor/tensor.h"

namespace anybit {

// Synchronised BN: adds up per-channel partial sums (double[n], on the host) across processes, in
// place. Given to the batch-norm kernels, it makes their statistics those of every process's batch.
using ChannelSum = std::function<void(double* sums, int64_t n)>;

// A batch norm that ended in a ReLU, for its backward: where the ReLU's mask (y > 0) comes from.
// `out`: the forward's output (needed with a residual, whose values y depends on too). `affine`:
// or (without a residual) the forward's per-channel scale then shift, (2C), from which the
// backward recomputes y's sign from x (bn_value, tensor/formulas.h), so y is neither kept nor read.
// Both undefined: no ReLU.
struct BnRelu {
  Tensor out, affine;
  Tensor clip;  // with affine: PACT's clip value after the ReLU (BnPact); dy counts where 0 < y <= clip
  // with clip and (out or affine): the gradient of the tapped output q = PACT(y) (BnPact::q); dy
  // becomes dy + (dq where 0 <= y <= clip) before the ReLU's mask, and the clip's gradient sums
  // dq where y >= clip
  Tensor dq;
};

// A training batch norm's running statistics, (C) each, updated in place with the batch's
// (formula::bn_running_update) by the kernel that computes them.
struct BnRunning {
  Tensor mean, var;
  double momentum = 0.1;
};

// PACT after a batch norm's ReLU, in the same passes: y -> formula::pact_value(y, 0, a, levels)
// with the clip value `a` (one element, on x's device) and `levels` rounding steps per a
// (2^b - 1; 0: the clip alone, at 32 bits). Backward, the clip's gradient is the sum of dy where
// y >= a (tensor/formulas.h: pact_grad_a).
// With q defined (the tap), y stays the ReLU's output and PACT's values go to q, a second output.
struct BnPact {
  Tensor a;
  double levels = 0;
  Tensor q;
};

// One parameter's share of an optimizer step (kernel::sgd_steps, adam_steps): the tensors, all
// contiguous, of one shape and dtype, and its group's hyper-parameters. The update of each element
// is formula::sgd_update (adam_update).
struct SgdItem {
  Tensor p;       // the parameter, updated in place
  Tensor g;       // its gradient
  Tensor buf;     // the momentum buffer, or undefined without momentum
  double lr = 0, wd = 0;
  bool first = false;  // the buffer's first step: buf = d, whatever it held
};
struct AdamItem {
  Tensor p, g, m, v;  // the parameter (updated in place), its gradient, the two moments
  double decay = 1, wd_grad = 0, step_size = 0, bc2_sqrt = 1;  // Adam: decay 1; AdamW: wd_grad 0
};

// add_step_stats' arguments (tensor/kernels.inc), checked by both twins.
inline void check_step_stats(const Tensor& logits, const Tensor& labels, const Tensor& loss, const Tensor& acc) {
  AB_CHECK(logits.dim() == 2 && logits.is_contiguous() && labels.dim() == 1 && labels.size(0) == logits.size(0) &&
               labels.dtype() == DType::I64 && loss.numel() == 1 && loss.dtype() == logits.dtype() &&
               acc.numel() == 2 && acc.dtype() == DType::F64 && acc.is_contiguous(),
           "add_step_stats: expects contiguous logits (N, K), int64 labels (N), a loss of one element of the "
           "logits' dtype and float64 acc (2), got ",
           logits.str(), ", ", labels.str(), ", ", loss.str(), ", ", acc.str());
}

// collab_teachers' arguments (tensor/kernels.inc), checked by both twins. At most 16 teachers
// (a CUDA launch carries their pointers in a table of that size; bit-widths run from 1 to 16).
inline void check_collab_teachers(const std::vector<Tensor>& probs, const std::vector<Tensor>& logits,
                                  const Tensor& labels, const Tensor& out, const Tensor& counts) {
  const char* op = "collab_teachers";
  const int64_t J = (int64_t)probs.size();
  AB_CHECK(J >= 1 && J <= 16 && logits.size() == probs.size(), op, ": expects 1 to 16 teachers, as many logits as ",
           "probabilities, got ", probs.size(), " and ", logits.size());
  AB_CHECK(out.dim() == 2 && out.is_contiguous(), op, ": out must be contiguous (N, K), got ", out.str());
  AB_CHECK(labels.dim() == 1 && labels.size(0) == out.size(0) && labels.dtype() == DType::I64, op,
           ": labels must be int64 (N) for out ", out.str(), ", got ", labels.str());
  AB_CHECK(counts.dim() == 1 && counts.numel() == J + 1 && counts.dtype() == DType::I64 && counts.is_contiguous(),
           op, ": counts must be contiguous int64 (", J + 1, "), got ", counts.str());
  for (const std::vector<Tensor>* list : {&probs, &logits})
    for (const Tensor& t : *list)
      AB_CHECK(t.shape() == out.shape() && t.dtype() == out.dtype() && t.is_contiguous(), op,
               ": each teacher's probabilities and logits must be contiguous and of out's shape and dtype ",
               out.str(), ", got ", t.str());
}

namespace cpu {
#include "tensor/kernels.inc"
}  // namespace cpu

namespace cuda {
#include "tensor/kernels.inc"
}  // namespace cuda

namespace kernel {
#include "tensor/kernels.inc"
}  // namespace kernel

}  // namespace anybit
