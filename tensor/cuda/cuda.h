// cuda.h - the CUDA side of the device facade (STYLE.md rule 2).
//
// These functions exist in every build. With CUDA they are implemented in tensor/cuda/*.cu; in a
// CPU-only build tensor/cuda/stub.cpp defines them to throw "built without CUDA" (and
// available() to return false). Kernels take contiguous tensors unless a comment says otherwise.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "tensor/kernels.h"
#include "tensor/tensor.h"

namespace anybit::cuda {

bool built();                 // compiled with CUDA support?
bool available();             // built, and a GPU with a working driver is present
std::string unavailable_reason();  // why available() is false, for skip messages

void* malloc(size_t nbytes);
void free(void* p);
void memcpy_h2d(void* dst, const void* src, size_t nbytes);
void memcpy_d2h(void* dst, const void* src, size_t nbytes);
void memcpy_d2d(void* dst, const void* src, size_t nbytes);
void synchronize();
int device_count();
// Makes GPU `index` this process's device (cudaSetDevice), before any other CUDA call: one process
// per GPU under mpirun (nn/distributed.h picks the index from the process's rank on its node).
void use_device(int index);

// Batches on their way to the GPU (data/device_batches.h). dst (contiguous, on the GPU) = src (a
// contiguous CPU tensor of the same bytes), copied through pinned staging memory on a separate
// copy stream, behind the compute work queued so far, and returns at once; the copy overlaps the
// compute queued after it. Hand the ticket to wait_for_copy() before dst is first used: the
// compute stream then waits for the copy (the host does not).
using CopyTicket = void*;
CopyTicket copy_to_device_async(const Tensor& src, Tensor& dst);
void wait_for_copy(CopyTicket ticket);

// A CUDA graph (STYLE: "beyond PyTorch eager"): the GPU work that `work` queues is recorded once by
// capture() (the host code of `work` runs that once; its GPU work does not run then) and queued
// again, as one launch, by each replay(). The blocks the capture allocates belong to the graph
// for good (tensor/cuda/runtime.cu), so the tensors made during the capture keep their addresses
// and are rewritten by each replay. `work` must not read GPU values on the host or copy from
// pageable host memory (the ops check their GPU inputs on the GPU instead: KernelError,
// tensor/cuda/launch.h).
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  void capture(const std::function<void()>& work);
  void replay();
  bool captured() const { return exec_ != nullptr; }

 private:
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  int pool_ = 0;
};
bool capturing();  // a capture is running on this process's stream

// ---- where the GPU's time goes (bench_train --gpu-profile) -------------------------------------
// Between profile_begin() and profile_end(), every kernel launch, GEMM, copy and graph replay on
// this thread's stream is followed by a CUDA event and named by the line that queued it
// (AB_CUDA_CHECK_LAUNCH, tensor/cuda/check.h); the time between two events is the GPU's time for
// the work between them. That is the work's own time only if the GPU had it queued when it got
// there, not if it sat idle waiting for the host to queue it: so profile_begin() first queues a
// kernel that keeps the GPU busy for hold_ms, and the work queued meanwhile runs back to back.
// Each entry says whether it was queued in time. Not during a capture (a replay is one entry).
struct ProfileEntry {
  std::string site;     // the line that queued it: "tensor/cuda/nn.cu:487"
  double gpu_ms = 0;    // GPU time from the end of the entry before to this one's end
  double flops = 0;     // a GEMM's floating-point operations (2 M N K), else 0
  double bytes = 0;     // a copy's or a memset's bytes, else 0
  std::string detail;   // a GEMM's shape: "MxNxK A B^T" (C = op(A) op(B), row-major)
  bool in_time = true;  // queued before the GPU was done with the entry before: gpu_ms is the GPU's alone
};
struct Profile {
  std::vector<ProfileEntry> entries;  // in queue order
  double hold_ms = 0;                 // how long the GPU was held
  double queue_ms = 0;                // the host's time from profile_begin to the last entry queued
  bool truncated = false;             // more entries than events (the later ones are not listed)
};
void profile_begin(double hold_ms = 100);
Profile profile_end();  // waits for the GPU
bool profiling();       // a profile is running (and no capture)

// TF32: float32 GEMMs (and so the convolutions and linear layers built on them) on the tensor
// cores of an Ampere or newer GPU, their inputs rounded to TF32's 10-bit mantissa (float32 has 23),
// products summed in float32. Several times the float32 speed, at about 3 decimal digits per input.
// Off by default: float32 GEMMs are then plain float32, as on the CPU. (PyTorch's default is on
// for cuDNN's convolutions, torch.backends.cudnn.allow_tf32, and off for matmul.) float64 GEMMs
// never use it. Per process; it applies from the next GEMM queued, so a CUDA graph keeps the mode
// it was captured with. `anybit train --cuda-tf32 1`, `bench_train --cuda-tf32 1`.
void set_tf32(bool on);
bool tf32();

// Row-major GEMM through cuBLAS (float32 and float64), with the same meaning as cpu::gemm:
// C (M, N) = alpha * op(A) * op(B) + beta * C, op(X) = X^T when trans_x. Pointers are on the GPU.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);
// `batch` such GEMMs in one cuBLAS call (strided-batched): C_i = alpha op(A_i) op(B_i) + beta C_i,
// where X_i starts stride_x elements after X_(i-1); stride_a = 0 gives every product the same A.
// The C_i must not overlap.
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch);
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, int64_t stride_a, const double* B, int64_t ldb, int64_t stride_b, double beta,
                  double* C, int64_t ldc, int64_t stride_c, int64_t batch);

// The CUDA twins of every kernel of tensor/kernels.inc are declared in tensor/kernels.h.

}  // namespace anybit::cuda
