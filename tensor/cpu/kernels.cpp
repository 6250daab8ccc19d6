// kernels.cpp - strided copy with dtype conversion, fill, and the thread count.
#include "tensor/cpu/kernels.h"

#include <omp.h>

#include <cstring>

#include "tensor/cpu/strided.h"

extern "C" void openblas_set_num_threads(int);

namespace anybit::cpu {

template <typename T>
static void dispatch_dst(DType t, void* p, int64_t i, T v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = (float)v; break;
    case DType::F64: static_cast<double*>(p)[i] = (double)v; break;
    case DType::I32: static_cast<int32_t*>(p)[i] = (int32_t)v; break;
    case DType::I64: static_cast<int64_t*>(p)[i] = (int64_t)v; break;
    case DType::U8: static_cast<uint8_t*>(p)[i] = (uint8_t)v; break;
    case DType::I8: static_cast<int8_t*>(p)[i] = (int8_t)v; break;
  }
}

template <typename S>
static void copy_from(const Tensor& src, Tensor& dst) {
  const S* s = src.data<S>();
  void* d = dst.raw_data();
  if (src.is_contiguous() && dst.is_contiguous() && src.dtype() == dst.dtype()) {
    std::memcpy(d, s, src.numel() * sizeof(S));
    return;
  }
  DType dt = dst.dtype();
  for_each_strided<2>(src.shape(), {&src.strides(), &dst.strides()},
                      [&](int64_t, const std::array<int64_t, 2>& o) { dispatch_dst(dt, d, o[1], s[o[0]]); });
}

void strided_copy(const Tensor& src, Tensor& dst) {
  AB_CHECK(dst.shape() == src.shape(), "strided_copy: dst must have the shape of src ", shape_str(src.shape()),
           ", got ", shape_str(dst.shape()));
  switch (src.dtype()) {
    case DType::F32: copy_from<float>(src, dst); break;
    case DType::F64: copy_from<double>(src, dst); break;
    case DType::I32: copy_from<int32_t>(src, dst); break;
    case DType::I64: copy_from<int64_t>(src, dst); break;
    case DType::U8: copy_from<uint8_t>(src, dst); break;
    case DType::I8: copy_from<int8_t>(src, dst); break;
  }
}

void fill(Tensor& dst, double value) {
  AB_CHECK(dst.is_contiguous(), "fill: dst must be contiguous");
  int64_t n = dst.numel();
  void* d = dst.raw_data();
  DType t = dst.dtype();
  if (t == DType::F32) {
    float v = (float)value;
    float* p = (float*)d;
    for (int64_t i = 0; i < n; ++i) p[i] = v;
    return;
  }
  for (int64_t i = 0; i < n; ++i) dispatch_dst(t, d, i, value);
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
