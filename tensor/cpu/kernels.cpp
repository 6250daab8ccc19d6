// kernels.cpp - strided copy with dtype conversion, fill, and the thread count.
#include "tensor/cpu/kernels.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "tensor/cpu/strided.h"

extern "C" void openblas_set_num_threads(int);

namespace anybit::cpu {

// dst = src, element by element, converting S to D (C++'s conversion, as PyTorch's .to()).
template <typename S, typename D>
static void copy_as(const Tensor& src, Tensor& dst) {
  const S* s = src.data<S>();
  D* d = dst.data<D>();
  for_each_strided<2>(src.shape(), {&src.strides(), &dst.strides()},
                      [&](int64_t, const std::array<int64_t, 2>& o) { d[o[1]] = (D)s[o[0]]; });
}

void strided_copy(const Tensor& src, Tensor& dst) {
  AB_CHECK(dst.shape() == src.shape(), "strided_copy: dst must have the shape of src ", shape_str(src.shape()),
           ", got ", shape_str(dst.shape()));
  if (src.is_contiguous() && dst.is_contiguous() && src.dtype() == dst.dtype()) {
    std::memcpy(dst.raw_data(), src.raw_data(), src.numel() * dtype_size(src.dtype()));
    return;
  }
  AB_DISPATCH_ALL(src.dtype(), "strided_copy", [&] {
    using S = scalar_t;
    AB_DISPATCH_ALL(dst.dtype(), "strided_copy", [&] { copy_as<S, scalar_t>(src, dst); });
  });
}

void fill(Tensor& dst, double value) {
  AB_CHECK(dst.is_contiguous(), "fill: dst must be contiguous");
  AB_DISPATCH_ALL(dst.dtype(), "fill", [&] { std::fill_n(dst.data<scalar_t>(), dst.numel(), (scalar_t)value); });
}

static int g_threads = 0;

void set_num_threads(int n) {
  AB_CHECK(n >= 1, "--threads must be at least 1, got ", n);
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

void increment(Tensor& counter) {
  AB_CHECK(counter.dtype() == DType::I64 && counter.numel() == 1, "increment: expects one int64, got ", counter.str());
  *counter.data<int64_t>() += 1;
}

}  // namespace anybit::cpu
