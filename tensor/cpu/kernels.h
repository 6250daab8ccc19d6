// kernels.h - CPU kernels shared by several ops (the per-op kernels sit with their op).
#pragma once
#include "tensor/tensor.h"

namespace anybit::cpu {

// dst (contiguous, shape of src) = src converted to dst's dtype; src may have any strides.
void strided_copy(const Tensor& src, Tensor& dst);
void fill(Tensor& dst, double value);  // dst contiguous

// Row-major GEMM through OpenBLAS (cblas_sgemm / cblas_dgemm):
// C (M, N) = alpha * op(A) * op(B) + beta * C, op(X) = X^T when trans_x.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// Number of threads our own OpenMP loops use (set by --threads; OpenBLAS is told the same).
void set_num_threads(int n);
int num_threads();

}  // namespace anybit::cpu
