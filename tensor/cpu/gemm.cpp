// gemm.cpp - cpu::gemm: row-major GEMM through OpenBLAS (declared in tensor/cpu/kernels.h).
//
// C (M, N) = alpha * op(A) * op(B) + beta * C, op(X) = X^T when trans_x; lda/ldb/ldc are the
// row strides of A, B, C as stored (so A is (M, K) with lda >= K, or (K, M) with lda >= M when
// trans_a). Threads: OpenBLAS is the OpenMP build; called inside one of our own `omp parallel`
// regions it runs single-threaded, called outside it uses cpu::num_threads() threads.
// Read next: tensor/cpu/conv.cpp (im2col + gemm), autograd/linalg.cpp.
#include <cblas.h>

#include <algorithm>

#include "tensor/cpu/kernels.h"

namespace anybit::cpu {

static void check_gemm(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                       bool ta, bool tb) {
  AB_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=", M, " N=", N, " K=", K);
  AB_CHECK(lda >= std::max<int64_t>(1, ta ? M : K) && ldb >= std::max<int64_t>(1, tb ? K : N) &&
               ldc >= std::max<int64_t>(1, N),
           "gemm: leading dimensions too small for M=", M, " N=", N, " K=", K, " (lda=", lda,
           ", ldb=", ldb, ", ldc=", ldc, ")");
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  check_gemm(M, N, K, lda, ldb, ldc, trans_a, trans_b);
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C,
              (blasint)ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  check_gemm(M, N, K, lda, ldb, ldc, trans_a, trans_b);
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C,
              (blasint)ldc);
}

// The Tensor form of the kernel list (tensor/kernels.inc): the raw GEMM on the tensors' data.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Tensor& a, int64_t lda, const Tensor& b,
          int64_t ldb, double beta, Tensor& y) {
  AB_DISPATCH_FLOAT(y.dtype(), "gemm", [&] {
    gemm(trans_a, trans_b, M, N, K, scalar_t(1), a.data<scalar_t>(), lda, b.data<scalar_t>(), ldb, scalar_t(beta),
         y.data<scalar_t>(), std::max<int64_t>(N, 1));
  });
}

}  // namespace anybit::cpu
