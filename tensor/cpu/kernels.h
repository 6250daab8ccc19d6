// kernels.h - CPU helpers shared by several kernels: raw-pointer GEMM and the thread count.
// The CPU twins of the kernel list (strided_copy, fill, conv2d_forward, ...) are declared in
// tensor/kernels.h.
#pragma once
#include "tensor/kernels.h"
#include "tensor/tensor.h"

namespace anybit::cpu {

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
