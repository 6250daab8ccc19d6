// views.cpp - joining and splitting tensors: cat and split.
//
// The single-tensor views (reshape, permute, slice, expand, ...) are methods of Tensor and live in
// tensor/tensor.cpp. split is built from Tensor::slice, so its pieces are views that share x's
// storage and get their gradients from slice's backward. cat copies, so it records its own
// backward: each input's gradient is the slice of dY where that input was copied.
#include <cstring>

#include "autograd/autograd.h"
#include "tensor/ops.h"

namespace anybit {

using Grads = std::vector<Tensor>;

// xs: tensors with equal shapes except along dim -> their concatenation along dim.
Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  AB_CHECK(!xs.empty(), "cat: no tensors given");
  const Tensor& x0 = xs[0];
  const int64_t nd = x0.dim();
  AB_CHECK(nd > 0, "cat: cannot concatenate zero-dimensional tensors (", x0.str(), ")");
  const int64_t d = wrap_dim(dim, nd, "cat");
  Shape out_shape = x0.shape();
  out_shape[d] = 0;
  for (size_t j = 0; j < xs.size(); ++j) {
    const Tensor& x = xs[j];
    check_same_device("cat", x0, x);
    check_same_dtype("cat", x0, x);
    bool ok = x.dim() == nd;
    for (int64_t i = 0; ok && i < nd; ++i) ok = i == d || x.shape()[i] == x0.shape()[i];
    AB_CHECK(ok, "cat: tensor ", j, " has shape ", shape_str(x.shape()), " but tensor 0 has shape ",
             shape_str(x0.shape()), "; all dimensions except ", d, " must match");
    out_shape[d] += x.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, x0.dtype(), x0.device());

  // out viewed as (outer, out_shape[d] * inner); input j fills the columns
  // [start_j * inner, (start_j + size_j) * inner) of every row.
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= out_shape[i];
  for (int64_t i = d + 1; i < nd; ++i) inner *= out_shape[i];
  const size_t es = dtype_size(x0.dtype());
  if (out.device().is_cpu()) {
    char* po = static_cast<char*>(out.raw_data());
    const int64_t row = out_shape[d] * inner;
    int64_t start = 0;
    for (const Tensor& x : xs) {
      const int64_t w = x.shape()[d] * inner;
      if (w == 0 || outer == 0) continue;
      Tensor xc = x.detach().contiguous();
      const char* px = static_cast<const char*>(xc.raw_data());
      for (int64_t o = 0; o < outer; ++o)
        std::memcpy(po + (o * row + start) * es, px + o * w * es, w * es);
      start += w;
    }
  } else {
    // On CUDA, copy_ needs a contiguous destination: fill a buffer with dim d moved to the front,
    // where every input's slice is contiguous, then move dim d back.
    std::vector<int64_t> to_front{d}, back(nd);
    for (int64_t i = 0; i < nd; ++i)
      if (i != d) to_front.push_back(i);
    for (int64_t i = 0; i < nd; ++i) back[to_front[i]] = i;
    Shape buf_shape;
    for (int64_t i : to_front) buf_shape.push_back(out_shape[i]);
    Tensor buf = Tensor::empty(buf_shape, x0.dtype(), x0.device());
    int64_t start = 0;
    for (const Tensor& x : xs) {
      int64_t n = x.shape()[d];
      if (n > 0 && x.numel() > 0) buf.slice(0, start, start + n).copy_(x.detach().permute(to_front));
      start += n;
    }
    out = buf.permute(back).contiguous();
  }

  // dX_j = dY[..., start_j : start_j + size_j, ...] along dim
  if (needs_grad(xs)) {
    std::vector<int64_t> sizes;
    for (const Tensor& x : xs) sizes.push_back(x.shape()[d]);
    record("cat", out, xs, [sizes, d](const Tensor& g) {
      Grads gs;
      int64_t start = 0;
      for (int64_t n : sizes) {
        Tensor gj = g.slice(d, start, start + n);
        gs.push_back(gj.numel() > 0 ? gj.contiguous() : Tensor::zeros(gj.shape(), g.dtype(), g.device()));
        start += n;
      }
      return gs;
    });
  }
  return out;
}

// x: (..., sum(sizes), ...) along dim -> views of x of sizes[j] along dim.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  const int64_t d = wrap_dim(dim, x.dim(), "split");
  AB_CHECK(x.dim() > 0, "split: cannot split a zero-dimensional tensor ", x.str());
  int64_t total = 0;
  for (int64_t n : sizes) {
    AB_CHECK(n >= 0, "split: negative size ", n, " for ", x.str());
    total += n;
  }
  AB_CHECK(total == x.shape()[d], "split: sizes add up to ", total, " but dimension ", d, " of ",
           shape_str(x.shape()), " has ", x.shape()[d], " elements");
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t n : sizes) {
    out.push_back(x.slice(d, start, start + n));  // dX: slice's backward
    start += n;
  }
  return out;
}

}  // namespace anybit
