// check.h - checking every CUDA runtime and cuBLAS call (STYLE.md rule 11). Included by the .cu
// files only.
//
// AB_CUDA_CHECK(call) throws anybit::Error with "file:line: CUDA error in <call>: <message>" when
// a runtime call fails. Kernel launches return nothing: AB_CUDA_CHECK_LAUNCH() after a launch
// reports a bad launch configuration at once; an error while the kernel runs surfaces at the next
// synchronising call (a copy back to the host, synchronize()), which is checked too. It also
// names the launch (file:line) to the GPU time profile, which does nothing unless one is running
// (cuda.h: profile_begin).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "tensor/error.h"

#define AB_CUDA_CHECK(call)                                                                     \
  do {                                                                                          \
    cudaError_t ab_err_ = (call);                                                               \
    if (ab_err_ != cudaSuccess)                                                                 \
      AB_FAIL("CUDA error in ", #call, ": ", cudaGetErrorName(ab_err_), ": ",                    \
              cudaGetErrorString(ab_err_));                                                     \
  } while (0)

namespace anybit::cuda {
// The GPU work just queued at file:line (a kernel, a GEMM of `flops` operations, a copy of `bytes`;
// `detail` says more, such as a GEMM's shape) ends here, for the GPU time profile
// (tensor/cuda/runtime.cu).
void profile_mark(const char* file, int line, double flops = 0, double bytes = 0, const char* detail = nullptr);
}  // namespace anybit::cuda

#define AB_CUDA_CHECK_LAUNCH()                         \
  do {                                                 \
    AB_CUDA_CHECK(cudaGetLastError());                 \
    ::anybit::cuda::profile_mark(__FILE__, __LINE__);  \
  } while (0)

#define AB_CUBLAS_CHECK(call)                                                                   \
  do {                                                                                          \
    cublasStatus_t ab_st_ = (call);                                                             \
    if (ab_st_ != CUBLAS_STATUS_SUCCESS)                                                        \
      AB_FAIL("cuBLAS error in ", #call, ": ", cublasGetStatusString(ab_st_));     \
  } while (0)
