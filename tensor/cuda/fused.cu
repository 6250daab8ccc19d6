// fused.cu - CUDA twins of the fused kernels of the quantizers (PACT, LSQ) and of the optimizers
// (SGD, Adam, AdamW): one pass over the tensor, each element's formula from tensor/formulas.h, the
// same one the CPU twins in tensor/cpu/fused.cpp apply.
//
// The backward of PACT and LSQ also returns one number, the clip's or the step's gradient, a sum
// over every element: each block adds its elements in double, and the blocks' partial sums are
// added on the host in block order. The grid has a fixed size for a given n, so the sum is the
// same run to run. Read next: tests/test_cuda_ops.cpp.
#include <vector>

#include "tensor/cuda/check.h"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/launch.h"
#include "tensor/formulas.h"

namespace anybit::cuda {

namespace {

using namespace anybit::formula;

constexpr int kMaxSumBlocks = 1024;

template <typename T>
__global__ void pact_k(const T* x, T* y, int64_t n, T lo, T a, T levels, T scale, T inv) {
  GRID_STRIDE_LOOP(i, n) y[i] = pact_value(x[i], lo, a, levels, scale, inv);
}

// Adds up the block's per-thread values `v` into partial[blockIdx.x].
__device__ inline void block_sum(double v, double* partial) {
  __shared__ double part[kThreads];
  part[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

template <typename T>
__global__ void pact_grad_k(const T* x, const T* g, T* gx, int64_t n, T lo, T a, bool is_signed, double* partial) {
  double acc = 0;
  GRID_STRIDE_LOOP(i, n) {
    gx[i] = pact_grad_x(x[i], g[i], lo, a);
    acc += (double)pact_grad_a(x[i], g[i], lo, a, is_signed);
  }
  block_sum(acc, partial);
}

template <typename T>
__global__ void lsq_k(const T* v, T* y, int64_t n, T s, T qn, T qp) {
  GRID_STRIDE_LOOP(i, n) y[i] = lsq_value(v[i], s, qn, qp);
}

template <typename T>
__global__ void lsq_grad_k(const T* v, const T* g, T* gv, int64_t n, T s, T qn, T qp, double* partial) {
  double acc = 0;
  GRID_STRIDE_LOOP(i, n) {
    gv[i] = lsq_grad_v(v[i], g[i], s, qn, qp);
    acc += (double)lsq_grad_s(v[i], g[i], s, qn, qp);
  }
  block_sum(acc, partial);
}

template <typename T>
__global__ void sgd_k(T* p, const T* g, T* buf, int64_t n, T lr, T wd, T momentum, bool nesterov, bool first) {
  GRID_STRIDE_LOOP(i, n) sgd_update(p[i], g[i], buf ? buf + i : nullptr, lr, wd, momentum, nesterov, first);
}

template <typename T>
__global__ void adam_k(T* p, const T* g, T* m, T* v, int64_t n, T decay, T wd_grad, T b1, T b2, T eps, T step_size,
                       T bc2_sqrt) {
  GRID_STRIDE_LOOP(i, n) adam_update(p[i], g[i], m[i], v[i], decay, wd_grad, b1, b2, eps, step_size, bc2_sqrt);
}

int sum_blocks(int64_t n) { return std::max(1, std::min(blocks_for(n), kMaxSumBlocks)); }

double add_partials(const Tensor& partial, int blocks) {
  std::vector<double> host(blocks);
  memcpy_d2h(host.data(), partial.data<double>(), blocks * sizeof(double));
  double total = 0;
  for (double v : host) total += v;
  return total;
}

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  check_cuda(op, "input", a);
  check_cuda(op, "output", b);
  AB_CHECK(a.is_contiguous() && b.is_contiguous() && a.numel() == b.numel() && a.dtype() == b.dtype(), op,
           ": expects contiguous tensors of one size and dtype, got ", a.str(), " and ", b.str());
}

}  // namespace

void pact_forward(const Tensor& x, Tensor& y, double lo, double a, double levels) {
  check_pair("pact_quantize", x, y);
  const int64_t n = x.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "pact_quantize", [&] {
    const scalar_t L = (scalar_t)levels, A = (scalar_t)a;
    pact_k<scalar_t><<<blocks_for(n), kThreads>>>(x.data<scalar_t>(), y.data<scalar_t>(), n, (scalar_t)lo, A, L, L / A,
                                                  A / L);
    AB_CUDA_CHECK_LAUNCH();
  });
}

double pact_backward(const Tensor& x, const Tensor& g, Tensor& gx, double lo, double a) {
  check_pair("pact_quantize backward", x, gx);
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const int blocks = sum_blocks(n);
  Tensor partial = Tensor::empty({blocks}, DType::F64, x.device());
  AB_DISPATCH_FLOAT(x.dtype(), "pact_quantize backward", [&] {
    pact_grad_k<scalar_t><<<blocks, kThreads>>>(x.data<scalar_t>(), g.data<scalar_t>(), gx.data<scalar_t>(), n,
                                                (scalar_t)lo, (scalar_t)a, lo < 0, partial.data<double>());
    AB_CUDA_CHECK_LAUNCH();
  });
  return add_partials(partial, blocks);
}

void lsq_forward(const Tensor& v, Tensor& y, double s, double qn, double qp) {
  check_pair("lsq_quantize", v, y);
  const int64_t n = v.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(v.dtype(), "lsq_quantize", [&] {
    lsq_k<scalar_t><<<blocks_for(n), kThreads>>>(v.data<scalar_t>(), y.data<scalar_t>(), n, (scalar_t)s, (scalar_t)qn,
                                                 (scalar_t)qp);
    AB_CUDA_CHECK_LAUNCH();
  });
}

double lsq_backward(const Tensor& v, const Tensor& g, Tensor& gv, double s, double qn, double qp) {
  check_pair("lsq_quantize backward", v, gv);
  const int64_t n = v.numel();
  if (n == 0) return 0.0;
  const int blocks = sum_blocks(n);
  Tensor partial = Tensor::empty({blocks}, DType::F64, v.device());
  AB_DISPATCH_FLOAT(v.dtype(), "lsq_quantize backward", [&] {
    lsq_grad_k<scalar_t><<<blocks, kThreads>>>(v.data<scalar_t>(), g.data<scalar_t>(), gv.data<scalar_t>(), n,
                                               (scalar_t)s, (scalar_t)qn, (scalar_t)qp, partial.data<double>());
    AB_CUDA_CHECK_LAUNCH();
  });
  return add_partials(partial, blocks);
}

void sgd_step(Tensor& p, const Tensor& g, Tensor* buf, double lr, double wd, double momentum, bool nesterov,
              bool first) {
  check_pair("SGD.step", g, p);
  const int64_t n = p.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(p.dtype(), "SGD.step", [&] {
    sgd_k<scalar_t><<<blocks_for(n), kThreads>>>(p.data<scalar_t>(), g.data<scalar_t>(),
                                                 buf ? buf->data<scalar_t>() : nullptr, n, (scalar_t)lr, (scalar_t)wd,
                                                 (scalar_t)momentum, nesterov, first);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void adam_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double decay, double wd_grad, double b1, double b2,
               double eps, double step_size, double bc2_sqrt) {
  check_pair("Adam.step", g, p);
  const int64_t n = p.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(p.dtype(), "Adam.step", [&] {
    adam_k<scalar_t><<<blocks_for(n), kThreads>>>(p.data<scalar_t>(), g.data<scalar_t>(), m.data<scalar_t>(),
                                                  v.data<scalar_t>(), n, (scalar_t)decay, (scalar_t)wd_grad,
                                                  (scalar_t)b1, (scalar_t)b2, (scalar_t)eps, (scalar_t)step_size,
                                                  (scalar_t)bc2_sqrt);
    AB_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace anybit::cuda
