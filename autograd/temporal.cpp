// temporal.cpp - temporal_shift, the one op of the Temporal Shift Module (TSM, Lin et al. 2019).
//
// x holds N clips of T frames as (N * T, C, H, W), frame t of clip n at row n * T + t (the
// DataLoader's layout for video, data/loader.h). With fold = C / fold_div:
//   y[n, t, c] = x[n, t + 1, c]   for c <  fold          (features move one frame back in time:
//                                                          frame t sees frame t + 1)
//   y[n, t, c] = x[n, t - 1, c]   for fold <= c < 2 fold (one frame forward)
//   y[n, t, c] = x[n, t, c]       for c >= 2 fold        (unchanged)
// with zeros where t + 1 or t - 1 falls outside the clip (zero padding, not wrapping around).
// It is a permutation with zero padding, so its backward is the same shift in the opposite
// directions: dX[n, t, c] = dY[n, t - 1, c] for c < fold, dY[n, t + 1, c] for the next fold,
// dY[n, t, c] for the rest.
#include "autograd/autograd.h"
#include "tensor/error.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"

namespace anybit {

namespace {

using Grads = std::vector<Tensor>;

// y = x shifted: the first fold channels take frame t + dir, the next fold frame t - dir.
// dir = +1 is the forward op, -1 its backward.
Tensor shift(const Tensor& x, int64_t frames, int64_t fold, int dir) {
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  kernel::temporal_shift(xc, y, frames, fold, dir);
  return y;
}

}  // namespace

Tensor temporal_shift(const Tensor& x, int64_t frames, int64_t fold_div) {
  AB_CHECK(x.dim() == 4, "temporal_shift: expected x (N * T, C, H, W), got ", shape_str(x.shape()));
  AB_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::F64, "temporal_shift: expected float32 or float64, got ",
           dtype_name(x.dtype()));
  AB_CHECK(frames >= 1 && x.size(0) % frames == 0, "temporal_shift: ", x.size(0), " rows are not clips of ",
           frames, " frames");
  AB_CHECK(fold_div >= 2, "temporal_shift: fold_div must be >= 2 (two folds are shifted), got ", fold_div);
  const int64_t fold = x.size(1) / fold_div;
  Tensor y = shift(x.detach(), frames, fold, +1);
  if (needs_grad({x}))
    record("temporal_shift", y, {x},
           [=](const Tensor& g) { return Grads{shift(g, frames, fold, -1)}; });
  return y;
}

}  // namespace anybit
