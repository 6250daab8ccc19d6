// stub.cpp - the CUDA facade in a CPU-only build: every call throws "built without CUDA"
// (Caffe's STUB_GPU), except the queries, which answer "no".
#include "tensor/cuda/cuda.h"
#include "tensor/kernels.h"

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
CopyTicket copy_to_device_async(const Tensor&, Tensor&) { NO_CUDA; }
void wait_for_copy(CopyTicket) { NO_CUDA; }
Graph::~Graph() {}
void Graph::capture(const std::function<void()>&) { NO_CUDA; }
void Graph::replay() { NO_CUDA; }
bool capturing() { return false; }
void profile_begin(double) { NO_CUDA; }
Profile profile_end() { NO_CUDA; }
bool profiling() { return false; }
void set_tf32(bool on) {
  if (on) NO_CUDA;
}
bool tf32() { return false; }
void gemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float, float*,
          int64_t) {
  NO_CUDA;
}
void gemm(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*, int64_t, double,
          double*, int64_t) {
  NO_CUDA;
}
void gemm_batched(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t, const float*, int64_t,
                  int64_t, float, float*, int64_t, int64_t, int64_t) {
  NO_CUDA;
}
void gemm_batched(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, int64_t, const double*,
                  int64_t, int64_t, double, double*, int64_t, int64_t, int64_t) {
  NO_CUDA;
}

// Every kernel of tensor/kernels.inc:
void strided_copy(const Tensor&, Tensor&) { NO_CUDA; }
void fill(Tensor&, double) { NO_CUDA; }
void unary(UnaryOp, const Tensor&, Tensor&, double, double) { NO_CUDA; }
void binary(BinaryOp, const Tensor&, const Tensor&, Tensor&, double, double) { NO_CUDA; }
void reduce_sum(const Tensor&, int64_t, int64_t, int64_t, Tensor&) { NO_CUDA; }
void reduce_max(const Tensor&, int64_t, int64_t, int64_t, Tensor&, Tensor&) { NO_CUDA; }
void increment(Tensor&) { NO_CUDA; }
void max_backward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, Tensor&) { NO_CUDA; }
void gemm(bool, bool, int64_t, int64_t, int64_t, const Tensor&, int64_t, const Tensor&, int64_t, double, Tensor&) {
  NO_CUDA;
}
void conv2d_forward(const Tensor&, const Tensor&, const Tensor&, const ConvShape&, Tensor&) { NO_CUDA; }
void conv2d_backward(const Tensor&, const Tensor&, const Tensor&, const ConvShape&, Tensor*, Tensor*, Tensor*) {
  NO_CUDA;
}
void max_pool2d_forward(const Tensor&, int64_t, int64_t, int64_t, Tensor&, Tensor&) { NO_CUDA; }
void max_pool2d_backward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, Tensor&) { NO_CUDA; }
void avg_pool2d_forward(const Tensor&, int64_t, int64_t, int64_t, Tensor&) { NO_CUDA; }
void avg_pool2d_backward(const Tensor&, int64_t, int64_t, int64_t, Tensor&) { NO_CUDA; }
void batch_norm_train_forward(const Tensor&, const Tensor&, const Tensor&, double, bool, Tensor&, Tensor&, Tensor&,
                              Tensor&, Tensor&, const ChannelSum*, const Tensor&, const BnPact*, const BnRunning*) {
  NO_CUDA;
}
void batch_norm_eval_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, bool,
                             Tensor&, Tensor&, Tensor&, const Tensor&, const BnPact*) {
  NO_CUDA;
}
void batch_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool, const BnRelu&, const Tensor&,
                         Tensor&, Tensor*, Tensor*, const ChannelSum*, Tensor*, Tensor*) {
  NO_CUDA;
}
void softmax(const Tensor&, int64_t, int64_t, int64_t, bool, Tensor&) { NO_CUDA; }
void softmax_backward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, bool, Tensor&) { NO_CUDA; }
void cross_entropy_loss(const Tensor&, const Tensor&, double, Tensor&) { NO_CUDA; }
void cross_entropy_backward(const Tensor&, const Tensor&, double, const Tensor&, Tensor&) { NO_CUDA; }
void temporal_shift(const Tensor&, Tensor&, int64_t, int64_t, int) { NO_CUDA; }
void pact_forward(const Tensor&, const Tensor&, bool, double, Tensor&) { NO_CUDA; }
void pact_backward(const Tensor&, const Tensor&, bool, const Tensor&, Tensor&, Tensor&) { NO_CUDA; }
void dorefa_forward(const Tensor&, double, Tensor&, Tensor&, Tensor&, Tensor&) { NO_CUDA; }
void dorefa_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&) { NO_CUDA; }
void lsq_forward(const Tensor&, const Tensor&, double, double, Tensor&) { NO_CUDA; }
void lsq_backward(const Tensor&, const Tensor&, double, double, double, const Tensor&, Tensor&, Tensor&) {
  NO_CUDA;
}
void sgd_steps(const std::vector<SgdItem>&, double, bool) { NO_CUDA; }
void add_step_stats(const Tensor&, const Tensor&, const Tensor&, Tensor&) { NO_CUDA; }
void collab_teachers(const std::vector<Tensor>&, const std::vector<Tensor>&, const Tensor&, Tensor&, Tensor&) {
  NO_CUDA;
}
void adam_steps(const std::vector<AdamItem>&, double, double, double) { NO_CUDA; }
}  // namespace cuda

}  // namespace anybit
