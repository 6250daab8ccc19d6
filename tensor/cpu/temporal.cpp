// temporal.cpp - the CPU twin of the temporal shift (TSM; the op and its formulas are in
// autograd/temporal.cpp, the source frame in formula::shift_source).
#include <algorithm>

#include "tensor/cpu/kernels.h"
#include "tensor/formulas.h"

namespace anybit::cpu {

namespace {

template <typename T>
void shift_frames(const T* src, T* dst, int64_t clips, int64_t frames, int64_t C, int64_t HW, int64_t fold, int dir) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < clips; ++n)
    for (int64_t t = 0; t < frames; ++t) {
      T* out = dst + (n * frames + t) * C * HW;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t from = formula::shift_source(t, c, fold, dir);
        T* o = out + c * HW;
        if (from < 0 || from >= frames) {
          for (int64_t i = 0; i < HW; ++i) o[i] = T(0);
        } else {
          const T* in = src + ((n * frames + from) * C + c) * HW;
          for (int64_t i = 0; i < HW; ++i) o[i] = in[i];
        }
      }
    }
}

}  // namespace

void temporal_shift(const Tensor& x, Tensor& y, int64_t frames, int64_t fold, int dir) {
  const int64_t rows = x.size(0), C = x.size(1), HW = x.numel() / std::max<int64_t>(rows * C, 1);
  AB_DISPATCH_FLOAT(x.dtype(), "temporal_shift", [&] {
    shift_frames(x.data<scalar_t>(), y.data<scalar_t>(), rows / frames, frames, C, HW, fold, dir);
  });
}

}  // namespace anybit::cpu
