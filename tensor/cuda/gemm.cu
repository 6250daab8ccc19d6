// gemm.cu - row-major GEMM (float32 and float64) through cuBLAS (cuda::gemm in cuda.h).
//
// cuBLAS is column-major. A row-major matrix X (r, c) with leading dimension ldx is, read as
// column-major, the matrix X^T (c, r) with the same ldx. So the row-major product
//   C (M, N) = op(A) (M, K) * op(B) (K, N)
// is, transposed, the column-major product
//   C^T (N, M) = op(B)^T (N, K) * op(A)^T (K, M),
// which is cublasSgemm (cublasDgemm) with the operands swapped, m = N, n = M, and each operand's transpose
// flag unchanged. The result lands in C's memory already in row-major order.
// With set_tf32(true), float32 GEMMs run in cuBLAS's TF32 math mode (cuda.h).
// Read next: tests/test_cuda.cpp (compared with a plain CPU loop).
#include <algorithm>
#include <atomic>
#include <climits>
#include <mutex>

#include "tensor/cuda/check.h"
#include "tensor/cuda/cuda.h"

namespace anybit::cuda {

namespace {

// One handle for the process, made on first use (creating it initialises cuBLAS: slow, and it
// needs a GPU, so a CPU-only run never does it). Never destroyed: the CUDA context may be gone at exit.
// It works on the thread's default stream, as our kernels (cuBLAS itself is not compiled with
// per-thread streams, so NULL would mean the legacy stream), with a workspace of its own given
// once, so that a GEMM inside a CUDA graph capture never allocates (runtime.cu: Graph).
cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t made = nullptr;
    AB_CUBLAS_CHECK(cublasCreate(&made));
    AB_CUBLAS_CHECK(cublasSetStream(made, cudaStreamPerThread));
    constexpr size_t kWorkspace = 32u << 20;
    void* workspace = nullptr;
    AB_CUDA_CHECK(cudaMalloc(&workspace, kWorkspace));
    AB_CUBLAS_CHECK(cublasSetWorkspace(made, workspace, kWorkspace));
    return made;
  }();
  return h;
}

std::atomic<bool> use_tf32{false};  // set_tf32

// cublasSgemm or cublasDgemm, by the element type, or their strided-batched forms when a call
// makes several GEMMs (batch > 1). The math mode is a setting of the handle, read when a GEMM is
// queued: set before each float32 one (a host-side store, no GPU work).
cublasStatus_t gemm_call(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
                         const float* A, int lda, long long sa, const float* B, int ldb, long long sb,
                         const float* beta, float* C, int ldc, long long sc, int batch) {
  AB_CUBLAS_CHECK(cublasSetMathMode(handle(), use_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  if (batch == 1) return cublasSgemm(handle(), ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  return cublasSgemmStridedBatched(handle(), ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}
cublasStatus_t gemm_call(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
                         const double* A, int lda, long long sa, const double* B, int ldb, long long sb,
                         const double* beta, double* C, int ldc, long long sc, int batch) {
  if (batch == 1) return cublasDgemm(handle(), ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
  return cublasDgemmStridedBatched(handle(), ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

// `batch` GEMMs C_i = alpha op(A_i) op(B_i) + beta C_i, X_i starting stride_x elements after
// X_(i-1) (row-major; see the top of the file for the operand swap).
template <typename T>
void gemm_t(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
            int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta, T* C, int64_t ldc, int64_t stride_c,
            int64_t batch) {
  AB_CHECK(M >= 0 && N >= 0 && K >= 0 && batch >= 0, "cuda::gemm: negative size M=", M, " N=", N, " K=", K,
           " batch=", batch);
  AB_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
               ldc <= INT_MAX && batch <= INT_MAX,
           "cuda::gemm: sizes M=", M, " N=", N, " K=", K, " batch=", batch, " exceed cuBLAS's 32-bit int");
  if (M == 0 || N == 0 || batch == 0) return;  // nothing to write (callers may then pass ld = 0)
  // Row-major leading dimensions: the row length of each operand as stored.
  AB_CHECK(lda >= std::max<int64_t>(1, trans_a ? M : K) && ldb >= std::max<int64_t>(1, trans_b ? K : N) &&
               ldc >= std::max<int64_t>(1, N),
           "cuda::gemm: leading dimensions lda=", lda, " ldb=", ldb, " ldc=", ldc, " too small for M=", M,
           " N=", N, " K=", K, (trans_a ? " A^T" : " A"), (trans_b ? " B^T" : " B"));
  AB_CHECK(batch == 1 || (stride_a >= 0 && stride_b >= 0 && stride_c > 0), "cuda::gemm: strides a=", stride_a,
           " b=", stride_b, " c=", stride_c, " for a batch of ", batch, " (C's stride must be positive: the outputs "
           "may not overlap)");
  cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  // C^T = op(B)^T op(A)^T in column-major terms (see the top of the file).
  AB_CUBLAS_CHECK(gemm_call(op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, stride_b, A, (int)lda, stride_a,
                            &beta, C, (int)ldc, stride_c, (int)batch));
  if (profiling()) {  // the shape too, for the GPU time profile
    const std::string shape = (batch > 1 ? std::to_string(batch) + " x " : std::string()) + std::to_string(M) + "x" +
                              std::to_string(N) + "x" + std::to_string(K) + (trans_a ? " A^T" : " A") +
                              (trans_b ? " B^T" : " B");
    profile_mark(__FILE__, __LINE__, 2.0 * double(batch) * double(M) * double(N) * double(K), 0, shape.c_str());
  }
}

}  // namespace

void set_tf32(bool on) { use_tf32 = on; }
bool tf32() { return use_tf32; }

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_t(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_t(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch) {
  gemm_t(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch);
}
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, int64_t stride_a, const double* B, int64_t ldb, int64_t stride_b, double beta,
                  double* C, int64_t ldc, int64_t stride_c, int64_t batch) {
  gemm_t(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch);
}

// The Tensor form of the kernel list (tensor/kernels.inc): the raw GEMM on the tensors' data.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Tensor& a, int64_t lda, const Tensor& b,
          int64_t ldb, double beta, Tensor& y) {
  AB_DISPATCH_FLOAT(y.dtype(), "gemm", [&] {
    gemm(trans_a, trans_b, M, N, K, scalar_t(1), a.data<scalar_t>(), lda, b.data<scalar_t>(), ldb, scalar_t(beta),
         y.data<scalar_t>(), std::max<int64_t>(N, 1));
  });
}

}  // namespace anybit::cuda
