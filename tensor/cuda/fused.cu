// fused.cu - CUDA twins of the fused kernels of the quantizers (PACT, LSQ) and of the optimizers
// (SGD, Adam, AdamW): one pass over the tensor, each element's formula from tensor/formulas.h, the
// same one the CPU twins in tensor/cpu/fused.cpp apply.
//
// PACT's clip value and LSQ's step stay on the GPU: every thread reads the one-element tensor
// itself, so a step never waits for a copy to the host. The backward's one number, the clip's or
// the step's gradient, is a sum over every element: each block adds its elements in double, and
// one thread then adds the blocks' partial sums in block order into the one-element gradient. The
// grid has a fixed size for a given n, so the sum is the same run to run.
// Read next: tests/test_cuda_ops.cpp.
#include "tensor/cuda/check.h"
#include "tensor/cuda/cuda.h"
#include "tensor/cuda/launch.h"
#include "tensor/formulas.h"

namespace anybit::cuda {

namespace {

using namespace anybit::formula;

constexpr int kMaxSumBlocks = 1024;

template <typename T>
__global__ void pact_k(const T* x, T* y, int64_t n, const T* clip, bool is_signed, T levels) {
  const T a = *clip, lo = is_signed ? -a : T(0), scale = levels / a, inv = a / levels;
  GRID_STRIDE_LOOP(i, n) y[i] = pact_value(x[i], lo, a, levels, scale, inv);
}

// Adds up the block's per-thread values `v` into partial[blockIdx.x].
__device__ inline void block_sum(double v, double* partial) {
  __shared__ double part[kThreads];
  part[threadIdx.x] = v;
  block_tree([&](int t, int u) { part[t] += part[u]; });
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

// out[0] = scale * the sum of partial[0 .. blocks), added in order by one thread.
template <typename T>
__global__ void add_partials_k(const double* partial, int blocks, double scale, T* out) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double total = 0;
  for (int b = 0; b < blocks; ++b) total += partial[b];
  out[0] = T(total * scale);
}

template <typename T>
__global__ void pact_grad_k(const T* x, const T* g, T* gx, int64_t n, const T* clip, bool is_signed, double* partial) {
  const T a = *clip, lo = is_signed ? -a : T(0);
  double acc = 0;
  GRID_STRIDE_LOOP(i, n) {
    gx[i] = pact_grad_x(x[i], g[i], lo, a);
    acc += (double)pact_grad_a(x[i], g[i], lo, a, is_signed);
  }
  block_sum(acc, partial);
}

// DoReFa, round store. t = tanh(w) over the grid; then one block finds m = max|t| and its first
// index (each thread scans a strided share; the tree keeps the larger value and, on a tie, the
// smaller index); then y over the grid, every thread reading m itself.
template <typename T>
__global__ void tanh_k(const T* w, T* t, int64_t n) {
  GRID_STRIDE_LOOP(i, n) t[i] = m_tanh(w[i]);
}

template <typename T>
__global__ void abs_argmax_k(const T* t, int64_t n, T* m, int64_t* k) {
  __shared__ T best[kThreads];
  __shared__ int64_t where[kThreads];
  T b = T(-1);
  int64_t at = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    if (m_abs(t[i]) > b) b = m_abs(t[i]), at = i;
  best[threadIdx.x] = b;
  where[threadIdx.x] = at;
  block_tree([&](int t, int u) {
    if (best[u] > best[t] || (best[u] == best[t] && where[u] < where[t])) best[t] = best[u], where[t] = where[u];
  });
  if (threadIdx.x == 0) *m = best[0], *k = where[0];
}

template <typename T>
__global__ void dorefa_k(const T* t, T* y, int64_t n, const T* m, T levels) {
  const T m2 = *m * T(2), inv_n = T(1.0 / double(levels));
  GRID_STRIDE_LOOP(i, n) y[i] = dorefa_value(t[i], m2, levels, inv_n);
}

template <typename T>
__global__ void dorefa_grad_k(const T* t, const T* g, T* gw, int64_t n, const T* m, double* partial) {
  const T mv = *m;
  double acc = 0;
  GRID_STRIDE_LOOP(i, n) {
    gw[i] = dorefa_grad_w(t[i], g[i] / mv);
    acc += (double)(g[i] * t[i]);
  }
  block_sum(acc, partial);
}

// dm from the blocks' sums of g t, added in block order; then the arg-max's gradient.
template <typename T>
__global__ void dorefa_argmax_grad_k(const T* t, const T* g, T* gw, const T* m, const int64_t* k,
                                     const double* partial, int blocks) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  double sum_gt = 0;
  for (int b = 0; b < blocks; ++b) sum_gt += partial[b];
  const T mv = *m, dm = T(-sum_gt / (double(mv) * double(mv)));
  const int64_t j = *k;
  gw[j] = dorefa_grad_w(t[j], dorefa_grad_t_argmax(t[j], g[j], mv, dm));
}

template <typename T>
__global__ void lsq_k(const T* v, T* y, int64_t n, const T* step, T qn, T qp) {
  const T s = *step;
  GRID_STRIDE_LOOP(i, n) y[i] = lsq_value(v[i], s, qn, qp);
}

template <typename T>
__global__ void lsq_grad_k(const T* v, const T* g, T* gv, int64_t n, const T* step, T qn, T qp, double* partial) {
  const T s = *step;
  double acc = 0;
  GRID_STRIDE_LOOP(i, n) {
    gv[i] = lsq_grad_v(v[i], g[i], s, qn, qp);
    acc += (double)lsq_grad_s(v[i], g[i], s, qn, qp);
  }
  block_sum(acc, partial);
}

// ---- the optimizers: many tensors in one launch -------------------------------------------------------
// A launch updates up to kTensors tensors, handed to it in a table passed by value (kernel
// arguments may take 4 KiB; these take under 2.5). The tensors' elements are numbered one after
// another: tensor j holds elements [start[j], start[j + 1]), and a grid-stride loop runs over all
// of them, each thread finding its element's tensor by binary search in start[].
constexpr int kTensors = 32;

template <typename T>
struct SgdTable {
  int count = 0;
  int64_t start[kTensors + 1] = {};
  T* p[kTensors];
  const T* g[kTensors];
  T* buf[kTensors];  // null: no momentum
  T lr[kTensors], wd[kTensors];
  bool first[kTensors];
  // The device pointers the table carries. A GPU needs nothing of this; the CUDA emulator moves
  // them, as it moves a kernel's pointer arguments (tensor/cuda/emu/include/cuda_runtime.h).
  template <typename F>
  void for_each_pointer(F&& f) {
    for (int j = 0; j < count; ++j) f(p[j]), f(g[j]), f(buf[j]);
  }
};

template <typename T>
struct AdamTable {
  int count = 0;
  int64_t start[kTensors + 1] = {};
  T* p[kTensors];
  const T* g[kTensors];
  T* m[kTensors];
  T* v[kTensors];
  T decay[kTensors], wd_grad[kTensors], step_size[kTensors], bc2_sqrt[kTensors];
  template <typename F>
  void for_each_pointer(F&& f) {
    for (int j = 0; j < count; ++j) f(p[j]), f(g[j]), f(m[j]), f(v[j]);
  }
};

// The tensor that element i (0 <= i < start[count]) belongs to: the last j with start[j] <= i.
__device__ inline int tensor_of(const int64_t* start, int count, int64_t i) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (start[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <typename T>
__global__ void sgd_k(SgdTable<T> t, T momentum, bool nesterov) {
  GRID_STRIDE_LOOP(i, t.start[t.count]) {
    const int j = tensor_of(t.start, t.count, i);
    const int64_t e = i - t.start[j];
    sgd_update(t.p[j][e], t.g[j][e], t.buf[j] ? t.buf[j] + e : nullptr, t.lr[j], t.wd[j], momentum, nesterov,
               t.first[j]);
  }
}

template <typename T>
__global__ void adam_k(AdamTable<T> t, T b1, T b2, T eps) {
  GRID_STRIDE_LOOP(i, t.start[t.count]) {
    const int j = tensor_of(t.start, t.count, i);
    const int64_t e = i - t.start[j];
    adam_update(t.p[j][e], t.g[j][e], t.m[j][e], t.v[j][e], t.decay[j], t.wd_grad[j], b1, b2, eps, t.step_size[j],
                t.bc2_sqrt[j]);
  }
}

// Fills tables from the items of dtype T, kTensors at a time, and launches each full one (and the
// last) with launch(table). add(table, slot, item) writes one item's pointers and hyper-parameters.
template <typename T, typename Table, typename Item, typename Add, typename Launch>
void in_tables(const std::vector<Item>& items, Add add, Launch launch) {
  Table t;
  for (const Item& it : items) {
    if (it.p.dtype() != dtype_of<T>::value || it.p.numel() == 0) continue;
    add(t, t.count, it);
    t.start[t.count + 1] = t.start[t.count] + it.p.numel();
    if (++t.count == kTensors) {
      launch(t);
      t = Table();
    }
  }
  if (t.count > 0) launch(t);
}

int sum_blocks(int64_t n) { return std::max(1, std::min(blocks_for(n), kMaxSumBlocks)); }

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  check_cuda(op, "input", a);
  check_cuda(op, "output", b);
  AB_CHECK(a.is_contiguous() && b.is_contiguous() && a.numel() == b.numel() && a.dtype() == b.dtype(), op,
           ": expects contiguous tensors of one size and dtype, got ", a.str(), " and ", b.str());
}

}  // namespace

void pact_forward(const Tensor& x, const Tensor& a, bool is_signed, double levels, Tensor& y) {
  check_pair("pact_quantize", x, y);
  check_cuda("pact_quantize", "clip", a);
  const int64_t n = x.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(x.dtype(), "pact_quantize", [&] {
    pact_k<scalar_t><<<blocks_for(n), kThreads>>>(x.data<scalar_t>(), y.data<scalar_t>(), n, a.data<scalar_t>(),
                                                  is_signed, (scalar_t)levels);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void pact_backward(const Tensor& x, const Tensor& a, bool is_signed, const Tensor& g, Tensor& gx, Tensor& ga) {
  check_pair("pact_quantize backward", x, gx);
  check_cuda("pact_quantize backward", "clip gradient", ga);
  const int64_t n = x.numel();
  const int blocks = sum_blocks(n);
  Tensor partial = Tensor::empty({blocks}, DType::F64, x.device());
  AB_DISPATCH_FLOAT(x.dtype(), "pact_quantize backward", [&] {
    if (n > 0) {
      pact_grad_k<scalar_t><<<blocks, kThreads>>>(x.data<scalar_t>(), g.data<scalar_t>(), gx.data<scalar_t>(), n,
                                                  a.data<scalar_t>(), is_signed, partial.data<double>());
      AB_CUDA_CHECK_LAUNCH();
    }
    add_partials_k<scalar_t><<<1, 1>>>(partial.data<double>(), n > 0 ? blocks : 0, 1.0, ga.data<scalar_t>());
    AB_CUDA_CHECK_LAUNCH();
  });
}

void dorefa_forward(const Tensor& w, double levels, Tensor& t, Tensor& y, Tensor& m, Tensor& k) {
  check_pair("dorefa_quantize", w, y);
  check_pair("dorefa_quantize", w, t);
  check_cuda("dorefa_quantize", "max", m);
  check_cuda("dorefa_quantize", "arg-max", k);
  const int64_t n = w.numel();
  AB_CHECK(n > 0, "dorefa_forward: no weights");
  AB_DISPATCH_FLOAT(w.dtype(), "dorefa_quantize", [&] {
    tanh_k<scalar_t><<<blocks_for(n), kThreads>>>(w.data<scalar_t>(), t.data<scalar_t>(), n);
    AB_CUDA_CHECK_LAUNCH();
    abs_argmax_k<scalar_t><<<1, kThreads>>>(t.data<scalar_t>(), n, m.data<scalar_t>(), k.data<int64_t>());
    AB_CUDA_CHECK_LAUNCH();
    dorefa_k<scalar_t><<<blocks_for(n), kThreads>>>(t.data<scalar_t>(), y.data<scalar_t>(), n, m.data<scalar_t>(),
                                                    (scalar_t)levels);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void dorefa_backward(const Tensor& t, const Tensor& m, const Tensor& k, const Tensor& g, Tensor& gw) {
  check_pair("dorefa_quantize backward", t, gw);
  check_pair("dorefa_quantize backward", g, gw);
  const int64_t n = t.numel();
  const int blocks = sum_blocks(n);
  Tensor partial = Tensor::empty({blocks}, DType::F64, t.device());
  AB_DISPATCH_FLOAT(t.dtype(), "dorefa_quantize backward", [&] {
    dorefa_grad_k<scalar_t><<<blocks, kThreads>>>(t.data<scalar_t>(), g.data<scalar_t>(), gw.data<scalar_t>(), n,
                                                  m.data<scalar_t>(), partial.data<double>());
    AB_CUDA_CHECK_LAUNCH();
    dorefa_argmax_grad_k<scalar_t><<<1, 1>>>(t.data<scalar_t>(), g.data<scalar_t>(), gw.data<scalar_t>(),
                                             m.data<scalar_t>(), k.data<int64_t>(), partial.data<double>(), blocks);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void lsq_forward(const Tensor& v, const Tensor& s, double qn, double qp, Tensor& y) {
  check_pair("lsq_quantize", v, y);
  check_cuda("lsq_quantize", "step", s);
  const int64_t n = v.numel();
  if (n == 0) return;
  AB_DISPATCH_FLOAT(v.dtype(), "lsq_quantize", [&] {
    lsq_k<scalar_t><<<blocks_for(n), kThreads>>>(v.data<scalar_t>(), y.data<scalar_t>(), n, s.data<scalar_t>(),
                                                 (scalar_t)qn, (scalar_t)qp);
    AB_CUDA_CHECK_LAUNCH();
  });
}

void lsq_backward(const Tensor& v, const Tensor& s, double qn, double qp, double gscale, const Tensor& g, Tensor& gv,
                  Tensor& gs) {
  check_pair("lsq_quantize backward", v, gv);
  check_cuda("lsq_quantize backward", "step gradient", gs);
  const int64_t n = v.numel();
  const int blocks = sum_blocks(n);
  Tensor partial = Tensor::empty({blocks}, DType::F64, v.device());
  AB_DISPATCH_FLOAT(v.dtype(), "lsq_quantize backward", [&] {
    if (n > 0) {
      lsq_grad_k<scalar_t><<<blocks, kThreads>>>(v.data<scalar_t>(), g.data<scalar_t>(), gv.data<scalar_t>(), n,
                                                 s.data<scalar_t>(), (scalar_t)qn, (scalar_t)qp, partial.data<double>());
      AB_CUDA_CHECK_LAUNCH();
    }
    add_partials_k<scalar_t><<<1, 1>>>(partial.data<double>(), n > 0 ? blocks : 0, gscale, gs.data<scalar_t>());
    AB_CUDA_CHECK_LAUNCH();
  });
}

void sgd_steps(const std::vector<SgdItem>& items, double momentum, bool nesterov) {
  for (const SgdItem& it : items) {
    check_pair("SGD.step", it.g, it.p);
    if (it.buf.defined()) check_pair("SGD.step", it.buf, it.p);
  }
  for (DType dt : {DType::F32, DType::F64})
    AB_DISPATCH_FLOAT(dt, "SGD.step", [&] {
      using Table = SgdTable<scalar_t>;
      in_tables<scalar_t, Table>(
          items,
          [](Table& t, int j, const SgdItem& it) {
            t.p[j] = it.p.data<scalar_t>();
            t.g[j] = it.g.data<scalar_t>();
            t.buf[j] = it.buf.defined() ? it.buf.data<scalar_t>() : nullptr;
            t.lr[j] = (scalar_t)it.lr;
            t.wd[j] = (scalar_t)it.wd;
            t.first[j] = it.first;
          },
          [&](const Table& t) {
            sgd_k<scalar_t><<<blocks_for(t.start[t.count]), kThreads>>>(t, (scalar_t)momentum, nesterov);
            AB_CUDA_CHECK_LAUNCH();
          });
    });
}

void adam_steps(const std::vector<AdamItem>& items, double b1, double b2, double eps) {
  for (const AdamItem& it : items) {
    check_pair("Adam.step", it.g, it.p);
    check_pair("Adam.step", it.m, it.p);
    check_pair("Adam.step", it.v, it.p);
  }
  for (DType dt : {DType::F32, DType::F64})
    AB_DISPATCH_FLOAT(dt, "Adam.step", [&] {
      using Table = AdamTable<scalar_t>;
      in_tables<scalar_t, Table>(
          items,
          [](Table& t, int j, const AdamItem& it) {
            t.p[j] = it.p.data<scalar_t>();
            t.g[j] = it.g.data<scalar_t>();
            t.m[j] = it.m.data<scalar_t>();
            t.v[j] = it.v.data<scalar_t>();
            t.decay[j] = (scalar_t)it.decay;
            t.wd_grad[j] = (scalar_t)it.wd_grad;
            t.step_size[j] = (scalar_t)it.step_size;
            t.bc2_sqrt[j] = (scalar_t)it.bc2_sqrt;
          },
          [&](const Table& t) {
            adam_k<scalar_t><<<blocks_for(t.start[t.count]), kThreads>>>(t, (scalar_t)b1, (scalar_t)b2, (scalar_t)eps);
            AB_CUDA_CHECK_LAUNCH();
          });
    });
}

}  // namespace anybit::cuda
