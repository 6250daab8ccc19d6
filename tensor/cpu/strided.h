// strided.h - walking the elements of strided views in row-major order (CPU).
//
// for_each_strided(shape, {strides_a, strides_b, ...}, f) calls f(i, off) for every element,
// where i is the row-major index into `shape` and off[k] the element offset into operand k
// (offsets start at 0: add the view's own offset to its data pointer first). The innermost
// dimension is a plain loop so the compiler can vectorise the common cases.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "tensor/dtype.h"

namespace anybit::cpu {

template <size_t N, typename F>
void for_each_strided(const Shape& shape, const std::array<const Shape*, N>& strides, F&& f) {
  const int nd = (int)shape.size();
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  if (nd == 0) {
    std::array<int64_t, N> off{};
    f(int64_t(0), off);
    return;
  }
  const int64_t inner = shape[nd - 1];
  std::array<int64_t, N> step{}, off{};
  for (size_t k = 0; k < N; ++k) step[k] = (*strides[k])[nd - 1];
  std::vector<int64_t> idx(nd, 0);
  for (int64_t i = 0; i < n; i += inner) {
    std::array<int64_t, N> o = off;
    for (int64_t j = 0; j < inner; ++j) {
      f(i + j, o);
      for (size_t k = 0; k < N; ++k) o[k] += step[k];
    }
    for (int d = nd - 2; d >= 0; --d) {  // odometer increment of the outer dimensions
      for (size_t k = 0; k < N; ++k) off[k] += (*strides[k])[d];
      if (++idx[d] < shape[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= (*strides[k])[d] * shape[d];
      idx[d] = 0;
    }
  }
}

}  // namespace anybit::cpu
