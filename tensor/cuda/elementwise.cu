// elementwise.cu - CUDA twins of the elementwise, reduction, copy and fill kernels
// (tensor/elementwise.h, tensor/cuda/cuda.h). Each op's scalar formula is the one the CPU applies
// (tensor/formulas.h); tests/test_cuda.cpp compares the two.
//
// Operands may be strided views (transposes, slices, broadcasts with stride 0), passed to a kernel
// as a View (tensor/cuda/launch.h). Outputs are contiguous.
// Read next: gemm.cu.
#include <algorithm>
#include <vector>

#include "tensor/cuda/check.h"
#include "tensor/cuda/cuda.h"
#include "tensor/elementwise.h"
#include "tensor/formulas.h"
#include "tensor/cuda/launch.h"

namespace anybit::cuda {

namespace {

using formula::apply_binary;
using formula::apply_unary;

template <typename T>
__device__ inline bool m_isnan(T x) { return x != x; }

// ---- kernels ----------------------------------------------------------------------------------------
// The op is a kernel argument, not a template parameter: every thread of a launch takes the same
// branch, which costs next to nothing, and the build stays small (STYLE.md rule 14).

// Four independent loads in flight per thread, so that each thread keeps the memory system busy
// (one at a time ran contiguous kernels at 0.58x memcpy's speed on an H200, four at 0.95x).
// Contiguous operands have an empty View (offset(i) = i); strided ones split i without dividing.
template <typename T>
__global__ void unary_k(UnaryOp op, const T* __restrict__ x, View vx, T* __restrict__ y, int64_t n, T p0, T p1) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    T v0 = x[vx.offset(i)], v1 = x[vx.offset(i + stride)], v2 = x[vx.offset(i + 2 * stride)],
      v3 = x[vx.offset(i + 3 * stride)];
    y[i] = apply_unary(op, v0, p0, p1);
    y[i + stride] = apply_unary(op, v1, p0, p1);
    y[i + 2 * stride] = apply_unary(op, v2, p0, p1);
    y[i + 3 * stride] = apply_unary(op, v3, p0, p1);
  }
  for (; i < n; i += stride) y[i] = apply_unary(op, x[vx.offset(i)], p0, p1);
}

template <typename T>
__global__ void binary_k(BinaryOp op, const T* __restrict__ a, View va, const T* __restrict__ b, View vb,
                         T* __restrict__ y, int64_t n, T p0, T p1) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    T a0 = a[va.offset(i)], a1 = a[va.offset(i + stride)], a2 = a[va.offset(i + 2 * stride)],
      a3 = a[va.offset(i + 3 * stride)];
    T b0 = b[vb.offset(i)], b1 = b[vb.offset(i + stride)], b2 = b[vb.offset(i + 2 * stride)],
      b3 = b[vb.offset(i + 3 * stride)];
    y[i] = apply_binary(op, a0, b0, p0, p1);
    y[i + stride] = apply_binary(op, a1, b1, p0, p1);
    y[i + 2 * stride] = apply_binary(op, a2, b2, p0, p1);
    y[i + 3 * stride] = apply_binary(op, a3, b3, p0, p1);
  }
  for (; i < n; i += stride) y[i] = apply_binary(op, a[va.offset(i)], b[vb.offset(i)], p0, p1);
}

template <typename S, typename D>
__global__ void copy_k(const S* src, View vs, D* dst, View vd, int64_t n) {
  GRID_STRIDE_LOOP(i, n) dst[vd.offset(i)] = static_cast<D>(src[vs.offset(i)]);
}

template <typename T>
__global__ void fill_k(T* p, int64_t n, T v) {
  GRID_STRIDE_LOOP(i, n) p[i] = v;
}

// Reductions over x (outer, R, inner) into y (outer, inner), output j = o * inner + i.
// Two shapes of work: one thread per output when there are many outputs or short rows (threads
// side by side read neighbouring i, so the loads coalesce when inner > 1), and one block per
// output when a few outputs each sum a long row. Sums accumulate in double, like the CPU's row sums.

template <typename T>
__global__ void sum_thread_k(const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
  GRID_STRIDE_LOOP(j, outer * inner) {
    const T* p = x + (j / inner) * R * inner + j % inner;
    double acc = 0;
    for (int64_t r = 0; r < R; ++r) acc += p[r * inner];
    y[j] = (T)acc;
  }
}

template <typename T>
__global__ void sum_block_k(const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
  __shared__ double part[kThreads];
  for (int64_t j = blockIdx.x; j < outer * inner; j += gridDim.x) {  // same j for the whole block
    const T* p = x + (j / inner) * R * inner + j % inner;
    double acc = 0;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) acc += p[r * inner];
    part[threadIdx.x] = acc;
    block_tree([&](int t, int u) { part[t] += part[u]; });  // the block's partial sums, added up
    if (threadIdx.x == 0) y[j] = (T)part[0];
    __syncthreads();  // part[] is reused for the next j
  }
}

// Few outputs over very long rows (a whole-tensor sum): one block per output would leave most of
// the GPU idle, so each row is cut into `chunks` pieces summed by separate blocks into double
// partial sums (stage 1), which one block per output then adds up (stage 2).
template <typename T>
__global__ void sum_partial_k(const T* x, double* partial, int64_t R, int64_t inner, int64_t chunks) {
  __shared__ double part[kThreads];
  const int64_t j = blockIdx.x / chunks, c = blockIdx.x % chunks;
  const int64_t per = (R + chunks - 1) / chunks, r0 = c * per, r1 = r0 + per < R ? r0 + per : R;
  const T* p = x + (j / inner) * R * inner + j % inner;
  double acc = 0;
  for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) acc += p[r * inner];
  part[threadIdx.x] = acc;
  block_tree([&](int t, int u) { part[t] += part[u]; });
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

template <typename T>
__global__ void sum_finish_k(const double* partial, T* y, int64_t chunks) {
  __shared__ double part[kThreads];
  const double* p = partial + blockIdx.x * chunks;
  double acc = 0;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) acc += p[c];
  part[threadIdx.x] = acc;
  block_tree([&](int t, int u) { part[t] += part[u]; });
  if (threadIdx.x == 0) y[blockIdx.x] = (T)part[0];
}

// Max with the CPU's tie rules: the first index of the largest value, except that a NaN wins over
// any number (the first NaN). better() says whether candidate (v, r) beats (bv, br); br < 0 means
// "no candidate yet".
template <typename T>
__device__ inline bool better(T v, int64_t r, T bv, int64_t br) {
  if (r < 0) return false;
  if (br < 0) return true;
  bool vn = m_isnan(v), bn = m_isnan(bv);
  if (vn != bn) return vn;
  if (!vn && v != bv) return v > bv;
  return r < br;
}

template <typename T>
__global__ void max_thread_k(const T* x, T* vals, int64_t* idx, int64_t outer, int64_t R, int64_t inner) {
  GRID_STRIDE_LOOP(j, outer * inner) {
    const T* p = x + (j / inner) * R * inner + j % inner;
    T bv = p[0];
    int64_t best = 0;
    for (int64_t r = 1; r < R; ++r) {
      T v = p[r * inner];
      if (v > bv || (m_isnan(v) && !m_isnan(bv))) {
        bv = v;
        best = r;
      }
    }
    vals[j] = bv;
    idx[j] = best;
  }
}

template <typename T>
__global__ void max_block_k(const T* x, T* vals, int64_t* idx, int64_t outer, int64_t R, int64_t inner) {
  __shared__ T sv[kThreads];
  __shared__ int64_t si[kThreads];
  for (int64_t j = blockIdx.x; j < outer * inner; j += gridDim.x) {
    const T* p = x + (j / inner) * R * inner + j % inner;
    T bv = T(0);
    int64_t best = -1;
    for (int64_t r = threadIdx.x; r < R; r += blockDim.x) {
      T v = p[r * inner];
      if (better(v, r, bv, best)) {
        bv = v;
        best = r;
      }
    }
    sv[threadIdx.x] = bv;
    si[threadIdx.x] = best;
    block_tree([&](int t, int u) {
      if (better(sv[u], si[u], sv[t], si[t])) sv[t] = sv[u], si[t] = si[u];
    });
    if (threadIdx.x == 0) {
      vals[j] = sv[0];
      idx[j] = si[0];
    }
    __syncthreads();
  }
}

// One block per output only when there are few outputs and their rows are long.
bool block_per_output(int64_t outputs, int64_t R) { return outputs < 1024 && R > 64; }

void check_reduce(const char* op, const Tensor& x, int64_t outer, int64_t R, int64_t inner, const Tensor& out) {
  check_cuda(op, "x", x);
  check_cuda(op, "out", out);
  AB_CHECK(x.is_contiguous() && x.numel() == outer * R * inner, op, ": x ", x.str(),
           " must be contiguous with outer * R * inner = ", outer, " * ", R, " * ", inner, " elements");
  AB_CHECK(out.is_contiguous() && out.numel() == outer * inner, op, ": output ", out.str(),
           " must be contiguous with outer * inner = ", outer, " * ", inner, " elements");
}

}  // namespace

// ---- the facade's entry points ------------------------------------------------------------------

void unary(UnaryOp op, const Tensor& x, Tensor& out, double p0, double p1) {
  check_cuda("unary kernel", "x", x);
  check_cuda("unary kernel", "out", out);
  AB_CHECK(out.is_contiguous() && out.shape() == x.shape(), "unary kernel: bad output ", out.str(),
           " for input ", x.str());
  int64_t n = x.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "unary kernel", [&] {
    unary_k<scalar_t><<<blocks_for((n + 3) / 4), kThreads>>>(op, x.data<scalar_t>(), make_view(x, "unary kernel"),
                                                             out.data<scalar_t>(), n, (scalar_t)p0, (scalar_t)p1);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out, double p0, double p1) {
  check_cuda("binary kernel", "a", a);
  check_cuda("binary kernel", "b", b);
  check_cuda("binary kernel", "out", out);
  AB_CHECK(out.is_contiguous() && a.shape() == out.shape() && b.shape() == out.shape(),
           "binary kernel: operands ", a.str(), ", ", b.str(), " must match output ", out.str());
  int64_t n = out.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(out.dtype(), "binary kernel", [&] {
    binary_k<scalar_t><<<blocks_for((n + 3) / 4), kThreads>>>(op, a.data<scalar_t>(), make_view(a, "binary kernel"),
                                                              b.data<scalar_t>(), make_view(b, "binary kernel"),
                                                              out.data<scalar_t>(), n, (scalar_t)p0, (scalar_t)p1);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void reduce_sum(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& out) {
  check_reduce("sum kernel", x, outer, R, inner, out);
  int64_t m = outer * inner;
  if (m == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "sum kernel", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* py = out.data<scalar_t>();
    const int64_t chunks = std::min<int64_t>(1024, R / 16384);
    if (m < 256 && chunks >= 4) {
      Tensor partial = Tensor::empty({m * chunks}, DType::F64, x.device());
      double* pp = partial.data<double>();
      sum_partial_k<scalar_t><<<(int)(m * chunks), kThreads>>>(px, pp, R, inner, chunks);
      AB_CUDA_CHECK_LAUNCH();
      sum_finish_k<scalar_t><<<(int)m, kThreads>>>(pp, py, chunks);
    } else if (block_per_output(m, R)) {
      sum_block_k<scalar_t><<<(int)m, kThreads>>>(px, py, outer, R, inner);
    } else {
      sum_thread_k<scalar_t><<<blocks_for(m), kThreads>>>(px, py, outer, R, inner);
    }
    AB_CUDA_CHECK_LAUNCH();
  });
}

void reduce_max(const Tensor& x, int64_t outer, int64_t R, int64_t inner, Tensor& values, Tensor& indices) {
  check_reduce("max kernel", x, outer, R, inner, values);
  check_reduce("max kernel", x, outer, R, inner, indices);
  AB_CHECK(R > 0, "max kernel: cannot take the max over 0 elements of ", x.str());
  AB_CHECK(indices.dtype() == DType::I64, "max kernel: indices must be int64, got ", indices.str());
  int64_t m = outer * inner;
  if (m == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "max kernel", [&] {
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* pv = values.data<scalar_t>();
    int64_t* pi = indices.data<int64_t>();
    if (block_per_output(m, R))
      max_block_k<scalar_t><<<(int)m, kThreads>>>(px, pv, pi, outer, R, inner);
    else
      max_thread_k<scalar_t><<<blocks_for(m), kThreads>>>(px, pv, pi, outer, R, inner);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void strided_copy(const Tensor& src, Tensor& dst) {
  check_cuda("strided_copy", "src", src);
  check_cuda("strided_copy", "dst", dst);
  AB_CHECK(dst.shape() == src.shape(), "strided_copy: dst must have the shape of src ", shape_str(src.shape()),
           ", got ", shape_str(dst.shape()));
  int64_t n = src.numel();
  if (n == 0) return;  // (a launch of 0 blocks would fail)
  if (src.is_contiguous() && dst.is_contiguous() && src.dtype() == dst.dtype()) {
    memcpy_d2d(dst.raw_data(), src.raw_data(), n * dtype_size(src.dtype()));
    return;
  }
  const View vs = make_view(src, "strided_copy"), vd = make_view(dst, "strided_copy");
  AB_DISPATCH_ALL(src.dtype(), "strided_copy", [&] {
    using S = scalar_t;
    AB_DISPATCH_ALL(dst.dtype(), "strided_copy", [&] {
      copy_k<S, scalar_t><<<blocks_for(n), kThreads>>>(src.data<S>(), vs, dst.data<scalar_t>(), vd, n);
    });
  });
  AB_CUDA_CHECK_LAUNCH();
}

void fill(Tensor& dst, double value) {
  check_cuda("fill", "dst", dst);
  AB_CHECK(dst.is_contiguous(), "fill: dst must be contiguous, got ", dst.str());
  int64_t n = dst.numel();
  if (n == 0) return;
  AB_DISPATCH_ALL(dst.dtype(), "fill", [&] {
    fill_k<scalar_t><<<blocks_for(n), kThreads>>>(dst.data<scalar_t>(), n, (scalar_t)value);
  });
  AB_CUDA_CHECK_LAUNCH();
}

}  // namespace anybit::cuda
