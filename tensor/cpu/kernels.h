// kernels.h - CPU kernels shared by several ops (the per-op kernels sit with their op).
#pragma once
#include "tensor/tensor.h"

namespace anybit::cpu {

// dst (contiguous, shape of src) = src converted to dst's dtype; src may have any strides.
void strided_copy(const Tensor& src, Tensor& dst);
void fill(Tensor& dst, double value);  // dst contiguous

// Number of threads our own OpenMP loops use (set by --threads; OpenBLAS is told the same).
void set_num_threads(int n);
int num_threads();

}  // namespace anybit::cpu
