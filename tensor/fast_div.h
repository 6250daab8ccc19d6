// fast_div.h - integer division by a number that stays the same for a whole kernel launch, as a
// multiply and a shift: the CUDA kernels' index arithmetic (which channel, row or pixel element i
// belongs to).
//
// A GPU has no integer divider. It divides in a software routine of many instructions (more for
// 64-bit integers than for 32-bit ones), where a memory-bound kernel can spend only a few dozen
// instructions per element on everything. So the host works out, once per launch,
// a magic number m and a shift s for each divisor d, and a kernel computes n / d as
//     (umulhi(n, m) + n) >> s        (umulhi: the high 32 bits of the 64-bit product)
// a multiply, an add and a shift (Granlund and Montgomery, "Division by invariant integers using
// multiplication", 1994; PyTorch's IntDivider does the same). With s the smallest shift such that
// 2^s >= d, and m = floor(2^32 (2^s - d) / d) + 1, it is exact for every 0 <= n < 2^31 and
// 1 <= d < 2^31 (tests/test_formulas.cpp checks it against `/` on 1.5 million numerators and
// divisors spread over that range, its edges included). A launch
// whose indices may reach 2^31 divides in 64 bits instead (DivMod, below).
// Read next: tensor/cuda/launch.h (View), tensor/cuda/nn.cu (im2col_k, the batch norm kernels).
#pragma once
#include <algorithm>
#include <cstdint>

#include "tensor/error.h"

#ifdef __CUDACC__
#define AB_FD_HD __host__ __device__
#else
#define AB_FD_HD
#endif

namespace anybit {

struct FastDiv {
  uint32_t d = 1;      // the divisor
  uint32_t magic = 0;  // m
  uint32_t shift = 0;  // s

  FastDiv() = default;
  explicit FastDiv(int64_t divisor) {
    AB_CHECK(divisor >= 1 && divisor < (int64_t(1) << 31), "FastDiv: the divisor must be in [1, 2^31), got ",
             divisor);
    d = uint32_t(divisor);
    while ((uint64_t(1) << shift) < d) ++shift;
    magic = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }

  // n / d and n % d, for 0 <= n < 2^31.
  AB_FD_HD uint32_t div(uint32_t n) const { return (umulhi(n, magic) + n) >> shift; }
  AB_FD_HD uint32_t mod(uint32_t n) const { return n - div(n) * d; }

  static AB_FD_HD uint32_t umulhi(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return uint32_t((uint64_t(a) * b) >> 32);
#endif
  }
};

// n / d and n % d for every 0 <= n < limit, the limit being the launch's count of indices: FastDiv
// when they fit in 31 bits (nearly always), 64-bit division otherwise. The test is the same for
// every thread of a launch, so it costs no divergence.
struct DivMod {
  FastDiv fast;
  int64_t d = 1;
  bool fits = true;

  DivMod() = default;
  DivMod(int64_t divisor, int64_t limit)
      : d(divisor), fits(limit < (int64_t(1) << 31) && divisor < (int64_t(1) << 31)) {
    AB_CHECK(divisor >= 1, "DivMod: the divisor must be positive, got ", divisor);
    if (fits) fast = FastDiv(divisor);
  }
  AB_FD_HD int64_t div(int64_t n) const { return fits ? int64_t(fast.div(uint32_t(n))) : n / d; }
  AB_FD_HD int64_t mod(int64_t n) const { return fits ? int64_t(fast.mod(uint32_t(n))) : n % d; }
};

// Element i < n of a contiguous (outer, mid, inner) tensor split into its three indices (a pixel of
// an (N C, H, W) stack of planes: the plane, the row and the column).
struct Split3 {
  DivMod inner, mid;
  Split3() = default;
  Split3(int64_t mid_, int64_t inner_, int64_t n)
      : inner(std::max<int64_t>(inner_, 1), n), mid(std::max<int64_t>(mid_, 1), n) {}
  AB_FD_HD void operator()(int64_t i, int64_t& o, int64_t& m, int64_t& in) const {
    const int64_t q = inner.div(i);
    in = i - q * inner.d;
    o = mid.div(q);
    m = q - o * mid.d;
  }
};

// The channel of element i < n of a contiguous (N, C, S) tensor: (i / S) % C, Split3's middle index.
struct ChannelIndex {
  Split3 at;
  ChannelIndex() = default;
  ChannelIndex(int64_t s, int64_t c, int64_t n) : at(c, s, n) {}
  AB_FD_HD int64_t operator()(int64_t i) const {
    int64_t n, c, s;
    at(i, n, c, s);
    return c;
  }
};

}  // namespace anybit
