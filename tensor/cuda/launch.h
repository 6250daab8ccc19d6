// launch.h - what every CUDA kernel file shares: the launch shape, the grid-stride loop, and the
// View that lets a kernel read a strided operand. Included by the .cu files only.
//
// Every loop is a grid-stride loop with 64-bit indices, so any size fits any grid. A strided
// operand reaches a kernel as a View passed by value: up to 8 dimensions after merging the ones
// that are laid out as one; element i of the output (row-major) reads element offset(i) of it.
// Indices are split into their parts without dividing (tensor/fast_div.h).
#pragma once
#include <algorithm>
#include <vector>

#include "tensor/fast_div.h"
#include "tensor/tensor.h"

namespace anybit::cuda {

constexpr int kMaxDims = 8;
constexpr int kThreads = 256;      // threads per block (a power of two: the block reductions halve it)
constexpr int64_t kMaxBlocks = 1 << 16;

// A strided operand as a kernel sees it. nd == 0 means contiguous: offset(i) = i.
struct View {
  int nd = 0;
  bool fits = false;  // fewer than 2^31 elements: the indices are split with FastDiv (tensor/fast_div.h)
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};  // in elements
  FastDiv by[kMaxDims];           // by[d] divides by shape[d] (when fits)

  __device__ int64_t offset(int64_t i) const {
    if (nd == 0) return i;
    int64_t off = 0;
    if (fits) {
      uint32_t j = uint32_t(i);
      for (int d = nd - 1; d > 0; --d) {
        const uint32_t q = by[d].div(j);
        off += int64_t(j - q * by[d].d) * stride[d];
        j = q;
      }
      return off + int64_t(j) * stride[0];
    }
    for (int d = nd - 1; d >= 0; --d) {
      int64_t s = shape[d];
      off += (i % s) * stride[d];
      i /= s;
    }
    return off;
  }
};

// Drops dimensions of size 1 and merges neighbours that are laid out as one dimension
// (stride[d] == stride[d+1] * shape[d+1]); a transposed matrix stays 2-d, a broadcast row of a
// 4-d tensor becomes 2-d. Merging never changes which element row-major index i names.
inline View make_view(const Tensor& t, const char* op) {
  View v;
  if (t.is_contiguous()) return v;
  std::vector<int64_t> shape, stride;  // innermost first
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    int64_t n = t.shape()[d], s = t.strides()[d];
    if (n == 1) continue;
    if (!shape.empty() && s == stride.back() * shape.back()) {
      shape.back() *= n;
    } else {
      shape.push_back(n);
      stride.push_back(s);
    }
  }
  AB_CHECK(shape.size() <= (size_t)kMaxDims, op, ": a view of ", shape_str(t.shape()), " with strides ",
           shape_str(t.strides()), " has more than ", kMaxDims,
           " dimensions on CUDA even after merging (hint: call contiguous() first)");
  v.nd = (int)shape.size();
  v.fits = t.numel() < (int64_t(1) << 31);
  for (int j = 0; j < v.nd; ++j) {
    v.shape[j] = shape[v.nd - 1 - j];
    v.stride[j] = stride[v.nd - 1 - j];
    if (v.fits) v.by[j] = FastDiv(v.shape[j]);
  }
  return v;
}

inline int blocks_for(int64_t n) { return (int)std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks); }

// The tree that every block reduction climbs. Each thread has put its value in its own slot
// (threadIdx.x) of the caller's __shared__ arrays; in log2(blockDim.x) rounds, thread t < s folds
// slot t + s into slot t (fold(t, t + s)), so slot 0 ends with the whole block's result. The
// order of the folds is fixed, so a block's sum comes out the same on every run. Every thread of
// the block must call it; it waits for all slots to be written before the first round and for the
// last round before it returns.
template <typename Fold>
__device__ inline void block_tree(Fold fold) {
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) fold(int(threadIdx.x), int(threadIdx.x) + s);
    __syncthreads();
  }
}

inline void check_cuda(const char* op, const char* arg, const Tensor& t) {
  AB_CHECK(t.device().is_cuda(), op, ": ", arg, " must be a CUDA tensor, got ", t.str());
}

// ---- bad input that a kernel finds --------------------------------------------------------------
// A kernel cannot throw. One that finds bad input (cross-entropy's label out of range) writes its
// first finding to this record, in pinned host memory that the GPU writes directly, and the host
// reports it (throws, naming the op and the value) at its next wait for the GPU: synchronize()
// and every copy to the host (tensor/cuda/runtime.cu). So an eager step does not wait for the GPU
// to check its labels, and a replayed CUDA graph checks every batch's; the report comes after the
// fact, as PyTorch's device-side asserts do. A kernel writes the record from one thread, in
// stream order, and only while code is 0 (the first finding stands until it is reported).
struct KernelError {
  int64_t code;                 // 0: none; KernelError::kLabel: a label out of range
  int64_t value, index, limit;  // kLabel: the label, its index in the batch, K
  static constexpr int64_t kLabel = 1;
};
KernelError* kernel_error();  // the record, handed to the kernels that check their input

#define GRID_STRIDE_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

}  // namespace anybit::cuda
