// stub.cpp - the CUDA facade in a CPU-only build: every call throws "built without CUDA"
// (Caffe's STUB_GPU), except the queries, which answer "no".
#include "tensor/cuda/cuda.h"
#include "tensor/elementwise.h"

namespace anybit {

#define NO_CUDA AB_FAIL("anybit was built without CUDA (nvcc was not found at build time)")

Allocator* cuda_allocator() { NO_CUDA; }

namespace cuda {
bool built() { return false; }
bool available() { return false; }
std::string unavailable_reason() { return "anybit was built without CUDA"; }
void* malloc(size_t) { NO_CUDA; }
void free(void*) { NO_CUDA; }
void memcpy_h2d(void*, const void*, size_t) { NO_CUDA; }
void memcpy_d2h(void*, const void*, size_t) { NO_CUDA; }
void memcpy_d2d(void*, const void*, size_t) { NO_CUDA; }
void synchronize() { NO_CUDA; }
int device_count() { return 0; }
void use_device(int) { NO_CUDA; }
void strided_copy(const Tensor&, Tensor&) { NO_CUDA; }
void fill(Tensor&, double) { NO_CUDA; }
void gemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
          float*, int64_t) {
  NO_CUDA;
}
void unary(UnaryOp, const Tensor&, Tensor&, double, double) { NO_CUDA; }
void binary(BinaryOp, const Tensor&, const Tensor&, Tensor&, double, double) { NO_CUDA; }
void reduce_sum(const Tensor&, int64_t, int64_t, int64_t, Tensor&) { NO_CUDA; }
void reduce_max(const Tensor&, int64_t, int64_t, int64_t, Tensor&, Tensor&) { NO_CUDA; }
}  // namespace cuda

}  // namespace anybit
