// int_engine.cpp - integer inference of an exported CIFAR ResNet (see int_engine.h).
#include "quant/int_engine.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <sstream>
#include <tuple>

#include "quant/export.h"
#include "tensor/ops.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace anybit::quant {

// ---- the integer product ------------------------------------------------------------------------

// The kernels this build has, slowest first: the portable loop always; the AVX2 one with AVX2;
// the AVX-512 VNNI one where the compiler targets it (-march=native on such a CPU).
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define ANYBIT_INT_VNNI 1
#endif

std::vector<IntKernel> IntMatmul::kernels() {
  std::vector<IntKernel> k = {IntKernel::Portable};
#if defined(__AVX2__)
  k.push_back(IntKernel::Avx2);
#endif
#if defined(ANYBIT_INT_VNNI)
  k.push_back(IntKernel::Vnni512);
#endif
  return k;
}

const char* IntMatmul::kernel_name(IntKernel k) {
  switch (k) {
    case IntKernel::Portable: return "portable";
    case IntKernel::Avx2: return "AVX2";
    case IntKernel::Vnni512: return "AVX-512 VNNI";
  }
  return "?";
}

namespace {
std::atomic<IntKernel> g_kernel{IntMatmul::kernels().back()};
}  // namespace

void IntMatmul::use_kernel(IntKernel k) {
  const auto have = kernels();
  AB_CHECK(std::find(have.begin(), have.end(), k) != have.end(), "IntMatmul: this build has no ", kernel_name(k),
           " kernel");
  g_kernel = k;
}
IntKernel IntMatmul::kernel() { return g_kernel; }

IntMatmul::IntMatmul(const std::vector<int8_t>& w, int64_t M, int64_t K, int weight_bits, int act_bits)
    : M_(M), K_(K), Kp_((K + 3) / 4 * 4), Mp_((M + 7) / 8 * 8) {
  AB_CHECK(M >= 1 && K >= 1 && (int64_t)w.size() == M * K, "IntMatmul: ", w.size(), " weights for ", M, " x ", K);
  AB_CHECK(weight_bits >= 1 && weight_bits <= 8 && act_bits >= 1 && act_bits <= 8, "IntMatmul: ", weight_bits,
           "-bit weights and ", act_bits, "-bit activations (each must be in 1..8)");
  const int32_t wlo = -(1 << (weight_bits - 1)), whi = (1 << (weight_bits - 1)) - 1;
  for (int8_t v : w) AB_CHECK(v >= wlo && v <= whi, "IntMatmul: weight code ", (int)v, " is not a ", weight_bits, "-bit signed code");
  plain_.assign(M * Kp_, 0);
  for (int64_t m = 0; m < M; ++m) std::copy(w.begin() + m * K, w.begin() + (m + 1) * K, plain_.begin() + m * Kp_);

  // vpmaddubsw adds two products u q into one int16 and saturates it: split q = 16 hi + lo when
  // 2 umax |q|max can pass 32767 (only 8-bit weights with 8-bit codes).
  const int32_t umax = (1 << act_bits) - 1, qmax = 1 << (weight_bits - 1);
  std::vector<std::vector<int8_t>> halves;
  std::vector<int32_t> bound;  // the largest |q| of each plane
  if (2 * umax * qmax > 32767) {
    std::vector<int8_t> hi(plain_.size()), lo(plain_.size());
    for (size_t i = 0; i < plain_.size(); ++i) {
      hi[i] = int8_t(plain_[i] >> 4);  // arithmetic shift: floor(q / 16), in -8..7
      lo[i] = int8_t(plain_[i] & 15);  // q - 16 hi, in 0..15
    }
    halves = {hi, lo};
    plane_mult_ = {16, 1};
    bound = {8, 15};
  } else {
    halves = {plain_};
    plane_mult_ = {1};
    bound = {qmax};
  }
  // Each int16 lane gains at most 2 umax bound per 4-byte step: sum that many steps, then widen.
  const int32_t worst = 2 * umax * *std::max_element(bound.begin(), bound.end());
  flush_ = std::max(1, 32767 / std::max(1, worst));
  // The kernel's order: [Mp / 8][Kp / 4][8][4], channels beyond M zero.
  const int64_t G = Kp_ / 4;
  for (auto& h : halves) {
    std::vector<int8_t> packed(Mp_ * Kp_, 0);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < Kp_; ++k) packed[((m / 8) * G + k / 4) * 32 + (m % 8) * 4 + k % 4] = h[m * Kp_ + k];
    planes_.push_back(std::move(packed));
  }
#if defined(ANYBIT_INT_VNNI)
  // vpdpbusd adds four products u q into an int32 lane, exactly: one plane whatever the bits,
  // in blocks of 16 channels: [Mp16 / 16][Kp / 4][16][4], channels beyond M zero.
  const int64_t Mp16 = (M + 15) / 16 * 16;
  vnni_.assign(Mp16 * Kp_, 0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < Kp_; ++k) vnni_[((m / 16) * G + k / 4) * 64 + (m % 16) * 4 + k % 4] = plain_[m * Kp_ + k];
#endif
}

namespace {

void matmul_portable(const uint8_t* const* rows, const int32_t* goff, int64_t P, int64_t Kp, const int8_t* w,
                     int64_t M, int32_t* acc) {
  for (int64_t p = 0; p < P; ++p)
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* wr = w + m * Kp;
      int32_t s = 0;
      for (int64_t g = 0; g < Kp / 4; ++g)
        for (int64_t j = 0; j < 4; ++j) s += int32_t(rows[p][goff[g] + j]) * int32_t(wr[4 * g + j]);
      acc[p * M + m] = s;
    }
}

#if defined(__AVX2__)
// acc + v in int16 lanes, as _mm256_add_epi16, in asm so that the sum stays in acc's register:
// GCC 12 writes _mm256_add_epi16's sum to the other operand's register and copies it back, one
// register move per sum in rows_times_blocks' loop (the same story as dpbusd's, further down).
inline __m256i add_epi16_in_place(__m256i acc, __m256i v) {
  __asm__("vpaddw %1, %0, %0" : "+x"(acc) : "x"(v));
  return acc;
}

// PB rows against MB blocks of 8 channels: acc[j][i] (8 int32 lanes, one per channel of block j)
// += row i's dot products over all Kp; row i's group g is at x[i] + goff[g]. w: the first block's
// [Kp / 4][8][4] bytes, the next blocks following it. Each 4 bytes of a row are broadcast once
// and used for MB blocks.
template <int PB, int MB>
inline void rows_times_blocks(const uint8_t* const* x, const int32_t* goff, int64_t Kp, const int8_t* w, int flush,
                              __m256i (*acc)[PB]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t G = Kp / 4;
  for (int64_t g0 = 0; g0 < G; g0 += flush) {
    const int64_t g1 = std::min<int64_t>(G, g0 + flush);
    __m256i s[MB][PB];
    for (int j = 0; j < MB; ++j)
      for (int i = 0; i < PB; ++i) s[j][i] = _mm256_setzero_si256();
    for (int64_t g = g0; g < g1; ++g) {
      __m256i wv[MB];
      for (int j = 0; j < MB; ++j) wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (j * G + g) * 32));
      const int64_t at = goff[g];
      for (int i = 0; i < PB; ++i) {
        int32_t four;  // row i's 4 bytes of group g, copied to all 8 lanes
        std::memcpy(&four, x[i] + at, 4);
        const __m256i xv = _mm256_set1_epi32(four);
        for (int j = 0; j < MB; ++j) s[j][i] = add_epi16_in_place(s[j][i], _mm256_maddubs_epi16(xv, wv[j]));
      }
    }
    for (int j = 0; j < MB; ++j)
      for (int i = 0; i < PB; ++i) acc[j][i] = _mm256_add_epi32(acc[j][i], _mm256_madd_epi16(s[j][i], ones));
  }
}

template <int PB, int MB>
void rows_blocks_avx2(const uint8_t* const* x, const int32_t* goff, int64_t Kp,
                      const std::vector<std::vector<int8_t>>& planes, const std::vector<int32_t>& mult, int flush,
                      int64_t mb, int64_t M, int32_t* acc) {
  const int64_t G = Kp / 4;
  __m256i total[MB][PB];
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < PB; ++i) total[j][i] = _mm256_setzero_si256();
  for (size_t h = 0; h < planes.size(); ++h) {
    __m256i part[MB][PB];
    for (int j = 0; j < MB; ++j)
      for (int i = 0; i < PB; ++i) part[j][i] = _mm256_setzero_si256();
    rows_times_blocks<PB, MB>(x, goff, Kp, planes[h].data() + mb * G * 32, flush, part);
    const __m256i k = _mm256_set1_epi32(mult[h]);
    for (int j = 0; j < MB; ++j)
      for (int i = 0; i < PB; ++i) total[j][i] = _mm256_add_epi32(total[j][i], _mm256_mullo_epi32(part[j][i], k));
  }
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < PB; ++i) {
      const int64_t m0 = (mb + j) * 8;
      if (m0 + 8 <= M) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + i * M + m0), total[j][i]);
      } else {  // the last, partial block of channels
        alignas(32) int32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total[j][i]);
        for (int64_t m = m0; m < M; ++m) acc[i * M + m] = lanes[m - m0];
      }
    }
}

// All channel blocks for PB rows: two blocks at a time, then the odd one.
template <int PB>
void rows_avx2(const uint8_t* const* x, const int32_t* goff, int64_t Kp, const std::vector<std::vector<int8_t>>& planes,
               const std::vector<int32_t>& mult, int flush, int64_t M, int64_t Mp, int32_t* acc) {
  int64_t mb = 0;
  for (; mb + 2 <= Mp / 8; mb += 2) rows_blocks_avx2<PB, 2>(x, goff, Kp, planes, mult, flush, mb, M, acc);
  for (; mb < Mp / 8; ++mb) rows_blocks_avx2<PB, 1>(x, goff, Kp, planes, mult, flush, mb, M, acc);
}

#if defined(ANYBIT_INT_VNNI)
// acc += the four products of each lane, as vpdpbusd. Written in asm because GCC 12 gives
// _mm512_dpbusd_epi32 a fresh output register and copies it back to the accumulator: two
// register moves per product in rows_blocks_vnni's loop.
inline __m512i dpbusd(__m512i acc, __m512i x, __m512i w) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
  return acc;
}

// PB rows against MB blocks of 16 channels with AVX-512 VNNI: vpdpbusd multiplies row i's 4 bytes
// of group g (broadcast to the 16 lanes) by each channel's 4 weight bytes and adds the four
// products to that channel's int32 lane, exactly (no int16 step, no saturation, no split of
// 8-bit weights). w: block mb's [Kp / 4][16][4] bytes, the next blocks following it.
template <int PB, int MB>
void rows_blocks_vnni(const uint8_t* const* x, const int32_t* goff, int64_t Kp, const int8_t* w, int64_t mb,
                      int64_t M, int32_t* acc) {
  const int64_t G = Kp / 4;
  __m512i s[MB][PB];
  for (int j = 0; j < MB; ++j)
    for (int i = 0; i < PB; ++i) s[j][i] = _mm512_setzero_si512();
  const int8_t* wb = w + mb * G * 64;
  for (int64_t g = 0; g < G; ++g) {
    __m512i wv[MB];
    for (int j = 0; j < MB; ++j) wv[j] = _mm512_loadu_si512(wb + (j * G + g) * 64);
    const int64_t at = goff[g];
    for (int i = 0; i < PB; ++i) {
      int32_t four;
      std::memcpy(&four, x[i] + at, 4);
      const __m512i xv = _mm512_set1_epi32(four);
      for (int j = 0; j < MB; ++j) s[j][i] = dpbusd(s[j][i], xv, wv[j]);
    }
  }
  for (int j = 0; j < MB; ++j) {
    const int64_t m0 = (mb + j) * 16;
    const __mmask16 keep = m0 + 16 <= M ? __mmask16(0xFFFF) : __mmask16((1u << (M - m0)) - 1);  // a partial last block
    for (int i = 0; i < PB; ++i) _mm512_mask_storeu_epi32(acc + i * M + m0, keep, s[j][i]);
  }
}

// All channel blocks for PB rows: two blocks at a time, then the odd one.
template <int PB>
void rows_vnni(const uint8_t* const* x, const int32_t* goff, int64_t Kp, const int8_t* w, int64_t M, int32_t* acc) {
  const int64_t blocks = (M + 15) / 16;
  int64_t mb = 0;
  for (; mb + 2 <= blocks; mb += 2) rows_blocks_vnni<PB, 2>(x, goff, Kp, w, mb, M, acc);
  for (; mb < blocks; ++mb) rows_blocks_vnni<PB, 1>(x, goff, Kp, w, mb, M, acc);
}
#endif

#if defined(__AVX512BW__)
// The sum of n bytes: vpsadbw adds 8 bytes at a time into 64-bit lanes, 64 bytes a step, the
// last n % 64 through a masked load (the bytes beyond n are neither read nor counted); the lanes
// are added once, at the end. (GCC 12 warns that the extracts' own "undefined" pass-through
// operands may be used uninitialized; they are not: no lane is masked.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
inline uint32_t byte_sum(const uint8_t* p, int64_t n) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i s = zero;
  int64_t k = 0;
  for (; k + 64 <= n; k += 64) s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_loadu_si512(p + k), zero));
  if (k < n) s = _mm512_add_epi64(s, _mm512_sad_epu8(_mm512_maskz_loadu_epi8((1ull << (n - k)) - 1, p + k), zero));
  const __m256i half = _mm256_add_epi64(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
  const __m128i quarter = _mm_add_epi64(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
  return uint32_t(_mm_cvtsi128_si64(quarter) + _mm_extract_epi64(quarter, 1));
}
#pragma GCC diagnostic pop
#else
// The sum of n bytes: vpsadbw adds 8 bytes at a time into 64-bit lanes, 32 bytes a step.
inline uint32_t byte_sum(const uint8_t* p, int64_t n) {
  __m256i s = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= n; k += 32)
    s = _mm256_add_epi64(s, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k)), _mm256_setzero_si256()));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  uint32_t total = uint32_t(lanes[0] + lanes[1] + lanes[2] + lanes[3]);
  for (; k < n; ++k) total += p[k];
  return total;
}
#endif
#else
inline uint32_t byte_sum(const uint8_t* p, int64_t n) {
  uint32_t s = 0;
  for (int64_t k = 0; k < n; ++k) s += p[k];
  return s;
}
#endif

}  // namespace

void IntMatmul::run(const uint8_t* x, int64_t P, int32_t* acc) const {
  // rows one after the other, Kp bytes apart, their groups in order
  std::vector<const uint8_t*> rows(P);
  for (int64_t p = 0; p < P; ++p) rows[p] = x + p * Kp_;
  std::vector<int32_t> goff(Kp_ / 4);
  for (int64_t g = 0; g < Kp_ / 4; ++g) goff[g] = int32_t(4 * g);
  run_rows(rows.data(), goff.data(), P, acc);
}

void IntMatmul::run_rows(const uint8_t* const* rows, const int32_t* goff, int64_t P, int32_t* acc) const {
  [[maybe_unused]] const IntKernel kernel = g_kernel;  // unused in a build with neither SIMD kernel
#if defined(ANYBIT_INT_VNNI)
  if (kernel == IntKernel::Vnni512) {
    constexpr int PB = 8;
    int64_t p = 0;
    for (; p + PB <= P; p += PB) rows_vnni<PB>(rows + p, goff, Kp_, vnni_.data(), M_, acc + p * M_);
    for (; p < P; ++p) rows_vnni<1>(rows + p, goff, Kp_, vnni_.data(), M_, acc + p * M_);
    return;
  }
#endif
#if defined(__AVX2__)
  if (kernel == IntKernel::Avx2) {
    constexpr int PB = 4;
    int64_t p = 0;
    for (; p + PB <= P; p += PB)
      rows_avx2<PB>(rows + p, goff, Kp_, planes_, plane_mult_, flush_, M_, Mp_, acc + p * M_);
    for (; p < P; ++p) rows_avx2<1>(rows + p, goff, Kp_, planes_, plane_mult_, flush_, M_, Mp_, acc + p * M_);
    return;
  }
#endif
  matmul_portable(rows, goff, P, Kp_, plain_.data(), M_, acc);
}

std::vector<int64_t> int_matmul_reference(const std::vector<uint8_t>& x, const std::vector<int8_t>& w, int64_t P,
                                          int64_t M, int64_t K) {
  std::vector<int64_t> out(P * M, 0);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) out[p * M + m] += int64_t(x[p * K + k]) * int64_t(w[m * K + k]);
  return out;
}

// ---- activation codes -----------------------------------------------------------------------------

// The same float operations as pact_forward and lsq_forward (quantizers.cpp, lsq.cpp), so that
// the codes are the fake-quantized network's, bit for bit; written without branches (min and max
// equal the fake forms' comparisons for every non-NaN x) so that the compiler vectorises the loop.
//
// With AVX2, 32 values at a time: the same division or product, clamp and rounding (vcvtps2dq
// rounds to nearest even, as nearbyint in the default rounding mode), then the int32 codes, all in
// 0..255, packed to bytes. The packs interleave the 128-bit lanes, which one permutation undoes.
// With AVX-512, 16 at a time, narrowed to bytes by one vpmovusdb.
void ActCodes::codes(const float* x, int64_t n, uint8_t* out) const {
  int64_t i = 0;
#if defined(__AVX512F__)
  // (GCC 12 warns that the intrinsics' own "undefined" pass-through operands may be used
  // uninitialized here; they are not: every lane is written.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
  {
    const __m512 zero = _mm512_setzero_ps(), div = _mm512_set1_ps(step), top = _mm512_set1_ps(levels);
    const __m512 a = _mm512_set1_ps(clip), scale = _mm512_set1_ps(levels / clip);
    auto store16 = [&](int64_t at, __m512 v) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + at), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
    };
    if (lsq)
      for (; i + 16 <= n; i += 16)
        store16(i, _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(_mm512_loadu_ps(x + i), div), zero), top));
    else
      for (; i + 16 <= n; i += 16)
        store16(i, _mm512_mul_ps(_mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(x + i), zero), a), scale));
  }
#pragma GCC diagnostic pop
#elif defined(__AVX2__)
  {
    const __m256 zero = _mm256_setzero_ps(), div = _mm256_set1_ps(step), top = _mm256_set1_ps(levels);
    const __m256 a = _mm256_set1_ps(clip), scale = _mm256_set1_ps(levels / clip);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    auto code8 = [&](const float* p) {
      __m256 v = _mm256_loadu_ps(p);
      v = lsq ? _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, div), zero), top)
              : _mm256_mul_ps(_mm256_min_ps(_mm256_max_ps(v, zero), a), scale);
      return _mm256_cvtps_epi32(v);
    };
    for (; i + 32 <= n; i += 32) {
      const __m256i c0 = code8(x + i), c1 = code8(x + i + 8), c2 = code8(x + i + 16), c3 = code8(x + i + 24);
      const __m256i w01 = _mm256_packs_epi32(c0, c1), w23 = _mm256_packs_epi32(c2, c3);
      const __m256i b = _mm256_packus_epi16(w01, w23);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_permutevar8x32_epi32(b, order));
    }
  }
#endif
  if (lsq) {
    const float s = step, top = levels;
    for (; i < n; ++i) out[i] = (uint8_t)(int32_t)std::nearbyint(std::min(std::max(x[i] / s, 0.0f), top));
  } else {
    const float a = clip, scale = levels / clip;
    for (; i < n; ++i) out[i] = (uint8_t)(int32_t)std::nearbyint(std::min(std::max(x[i], 0.0f), a) * scale);
  }
}

uint8_t ActCodes::code(float x) const {
  uint8_t c;
  codes(&x, 1, &c);
  return c;
}

// ---- reading the network from the file ----------------------------------------------------------

namespace {

const Tensor& need(const nn::SafeTensors& file, const std::string& name, const std::string& why) {
  const Tensor* t = file.find(name);
  AB_CHECK(t, "integer engine: the export file has no tensor ", name, " (", why, ")");
  return *t;
}

double scalar(const nn::SafeTensors& file, const std::string& name, const std::string& why) {
  return need(file, name, why).to_vector<double>().at(0);
}

ActCodes act_codes(const nn::SafeTensors& file, const std::string& layer, int bits, const std::string& kind) {
  ActCodes a;
  const std::string b = std::to_string(bits);
  a.levels = float((1 << bits) - 1);
  if (kind == "lsq") {
    a.lsq = true;
    a.step = (float)scalar(file, layer + ".act_step_b" + b, "LSQ's activation step");
    AB_CHECK(a.step > 0, "integer engine: ", layer, ": LSQ step ", a.step, " at ", bits, " bits is not positive");
    a.unit = a.step;
  } else {
    a.clip = (float)scalar(file, layer + ".clip_b" + b, "PACT's clip value");
    AB_CHECK(a.clip > 0, "integer engine: ", layer, ": PACT clip ", a.clip, " at ", bits, " bits is not positive");
    a.unit = a.clip / a.levels;  // pact_forward's inv = a / levels, in float
  }
  return a;
}

std::pair<std::vector<float>, std::vector<float>> folded_bn(const nn::SafeTensors& file, const std::string& bn, int bits,
                                                            int64_t channels) {
  const std::string k = bn + ".b" + std::to_string(bits);
  auto scale = need(file, k + ".scale", "the folded BN").to_vector<float>();
  auto shift = need(file, k + ".shift", "the folded BN").to_vector<float>();
  AB_CHECK((int64_t)scale.size() == channels && (int64_t)shift.size() == channels, "integer engine: ", bn, " has ",
           scale.size(), " channels, its conv ", channels);
  return {scale, shift};
}

IntConv read_conv(const nn::SafeTensors& file, const std::string& name, const std::string& bn, int bits, int64_t stride,
                  const std::string& act_kind) {
  IntConv c;
  c.name = name;
  auto shape = need(file, name + ".shape", "a quantized layer's shape").to_vector<int64_t>();
  AB_CHECK(shape.size() == 4 && shape[2] == shape[3] && (shape[2] == 1 || shape[2] == 3), "integer engine: ", name,
           " is not a 1x1 or 3x3 convolution (shape of ", shape.size(), " dims)");
  c.cout = shape[0], c.cin = shape[1], c.kernel = shape[2], c.stride = stride, c.pad = c.kernel / 2;
  c.act = act_codes(file, name, bits, act_kind);

  // The unsigned codes t of this bit-width (export.h: the first code_bits - shift planes).
  const std::string k = name + ".b" + std::to_string(bits);
  AB_CHECK(!file.find(k + ".weight"), "integer engine: ", name, " is stored in float at ", bits, " bits");
  const bool own = file.find(k + ".codes") != nullptr;
  const Tensor& codes = need(file, own ? k + ".codes" : name + ".codes", "weight codes");
  const int code_bits = (int)scalar(file, own ? k + ".code_bits" : name + ".code_bits", "weight code bits");
  const int shift = (int)scalar(file, k + ".shift", "weight code shift");
  const int n = code_bits - shift;  // the bits of t
  AB_CHECK(n >= 1 && n <= 8, "integer engine: ", name, " has ", n, "-bit weight codes at ", bits,
           " bits (the integer kernels take 1..8)");
  const int64_t count = c.cout * c.cin * c.kernel * c.kernel;
  std::vector<int64_t> t = unpack_codes(codes.data<uint8_t>(), (size_t)codes.numel(), count, code_bits, n);
  // w = scale (t << shift) + offset = S q + O, q = t - z (int_engine.h)
  const double S = scalar(file, k + ".scale", "weight scale") * std::ldexp(1.0, shift);
  const int64_t z = int64_t(1) << (n - 1);
  const double O = scalar(file, k + ".offset", "weight offset") + S * double(z);
  // The file's order is (m, c, ky, kx); the gathered windows' is (ky, kx, c).
  const int64_t K = c.cin * c.kernel * c.kernel;
  std::vector<int8_t> q(c.cout * K);
  for (int64_t m = 0; m < c.cout; ++m)
    for (int64_t ci = 0; ci < c.cin; ++ci)
      for (int64_t ky = 0; ky < c.kernel; ++ky)
        for (int64_t kx = 0; kx < c.kernel; ++kx)
          q[m * K + (ky * c.kernel + kx) * c.cin + ci] =
              int8_t(t[((m * c.cin + ci) * c.kernel + ky) * c.kernel + kx] - z);
  c.matmul = IntMatmul(q, c.cout, K, n, bits);
  c.codes.resize(count);
  for (int64_t i = 0; i < count; ++i) c.codes[i] = int8_t(t[i] - z);
  c.weight_scale = S, c.weight_offset = O, c.weight_bits = n;

  auto [g, h] = folded_bn(file, bn, bits, c.cout);
  std::vector<float> bias(c.cout, 0.0f);
  if (const Tensor* b = file.find(name + ".bias")) bias = b->to_vector<float>();
  c.bn_scale = g, c.bn_shift = h, c.bias = bias;
  const double D = c.act.unit;
  for (int64_t m = 0; m < c.cout; ++m) {
    c.alpha.push_back(float(D * S * g[m]));
    c.beta.push_back(float(D * O * g[m]));
    c.gamma.push_back(float(h[m] + double(g[m]) * bias[m]));
  }
  return c;
}

}  // namespace

IntegerResNet::IntegerResNet(const nn::SafeTensors& file, int bits) : bits_(bits) {
  auto meta = [&](const char* key) {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  AB_CHECK(meta("format") == "anybit-export-1", "integer engine: not an anybit export file (format '", meta("format"),
           "'; write one with anybit export)");
  AB_CHECK(meta("arch") == "resnet20", "integer engine: the model is ", meta("arch"),
           "; the integer engine runs the CIFAR ResNets (resnet20) so far");
  const std::string act = meta("act_quant");
  AB_CHECK(act == "pact" || act == "lsq", "integer engine: activation quantizer '", act,
           "' has no integer form here (pact and lsq have)");
  bool exported = false;
  std::stringstream list(meta("export_bits"));  // "8,4,2"
  for (std::string item; std::getline(list, item, ',');) exported = exported || item == std::to_string(bits);
  AB_CHECK(exported && bits >= 1 && bits <= 8, "integer engine: ", bits, " bits: the file holds ",
           meta("export_bits"), " (the integer kernels take 1..8)");

  stem_w_ = need(file, "conv1.weight", "the FP stem");
  if (const Tensor* b = file.find("conv1.bias")) stem_b_ = *b;
  std::tie(stem_scale_, stem_shift_) = folded_bn(file, "bn1", bits, stem_w_.size(0));
  fc_w_ = need(file, "fc.weight", "the FP classifier");
  fc_b_ = need(file, "fc.bias", "the FP classifier");

  for (int stage = 1; file.find("layer" + std::to_string(stage) + ".0.conv1.shape"); ++stage)
    for (int i = 0;; ++i) {
      const std::string p = "layer" + std::to_string(stage) + "." + std::to_string(i);
      if (!file.find(p + ".conv1.shape")) break;
      const int64_t stride = (stage > 1 && i == 0) ? 2 : 1;  // CifarResNet (nn/models.cpp)
      IntBlock b;
      b.conv1 = read_conv(file, p + ".conv1", p + ".bn1", bits, stride, act);
      b.conv2 = read_conv(file, p + ".conv2", p + ".bn2", bits, 1, act);
      b.has_shortcut = file.find(p + ".shortcut.0.shape") != nullptr;
      if (b.has_shortcut) b.shortcut = read_conv(file, p + ".shortcut.0", p + ".shortcut.1", bits, stride, act);
      blocks_.push_back(std::move(b));
    }
  AB_CHECK(!blocks_.empty(), "integer engine: no residual block (layer1.0.conv1) in the file");
}

// ---- running it -----------------------------------------------------------------------------------

namespace {

// An NHWC activation map: float (the residual stream) or u8 codes. A code map may have a border
// of b zero pixels on every side (code 0 is the value 0, the convolution's zero padding): a conv
// with padding <= b then reads every window where it lies, without a copy (run_conv).
struct Geometry {
  int64_t n = 0, h = 0, w = 0, c = 0, b = 0;
  int64_t pixels() const { return n * h * w; }
  int64_t size() const { return n * (h + 2 * b) * (w + 2 * b) * c; }  // values, border included
  // where pixel (n, y, x) starts; y and x may reach b pixels into the border
  int64_t at(int64_t in, int64_t y, int64_t x) const { return ((in * (h + 2 * b) + y + b) * (w + 2 * b) + x + b) * c; }
};

// Makes map m hold at least n values. It never shrinks: the maps swap roles between stages of
// different sizes, and a vector that grew back would zero its new values on every forward.
template <typename T>
void hold(std::vector<T>& m, int64_t n) {
  if ((int64_t)m.size() < n) m.resize(n);
}

// Sizes code map m for g and zeroes its border (the interior is written by the producer).
void prepare(std::vector<uint8_t>& m, const Geometry& g) {
  hold(m, g.size());
  if (g.b == 0) return;
  const int64_t wp = g.w + 2 * g.b, row = wp * g.c, side = g.b * g.c;
  for (int64_t n = 0; n < g.n; ++n) {
    uint8_t* img = m.data() + g.at(n, -g.b, -g.b);
    std::fill(img, img + g.b * row, 0);                                          // rows above
    std::fill(img + (g.b + g.h) * row, img + (2 * g.b + g.h) * row, 0);         // rows below
    for (int64_t y = 0; y < g.h; ++y) {
      uint8_t* r = img + (g.b + y) * row;
      std::fill(r, r + side, 0);                       // left
      std::fill(r + row - side, r + row, 0);           // right
    }
  }
}

// What the epilogue writes for output pixel p, channel m, from v = BN(conv)[p][m]:
//   codes_next != null: relu, then the next conv's codes (conv1 -> conv2);
//   residual != null:   relu(v + residual[p][m]) to out_float (conv2 -> the block's output),
//                       and that in the codes of up to two next convs (next[i] -> next_out[i]);
//   otherwise:          v to out_float (the projection shortcut).
// The code maps have borders of zero pixels (Geometry): out_border around out_codes,
// next_border[i] around next_out[i]; the float maps none.
struct Epilogue {
  const ActCodes* codes_next = nullptr;
  uint8_t* out_codes = nullptr;
  const float* residual = nullptr;
  float* out_float = nullptr;
  const ActCodes* next[2] = {nullptr, nullptr};
  uint8_t* next_out[2] = {nullptr, nullptr};
  int64_t out_border = 0, next_border[2] = {0, 0};
};

// n bytes from src to dst, and n zero bytes to dst: a window row is 16 to 192 bytes, too short
// for a call to memcpy or memset to pay. GCC recognises a copy or zeroing loop, even one of
// vector moves, and turns it back into such a call: the empty asm with a memory clobber in each
// iteration keeps the loops as written.
#define AB_KEEP_LOOP() __asm__ volatile("" ::: "memory")
inline void copy_bytes(uint8_t* dst, const uint8_t* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 32 <= n; i += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    AB_KEEP_LOOP();
  }
  for (; i + 16 <= n; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    AB_KEEP_LOOP();
  }
#endif
  for (; i < n; ++i) {
    dst[i] = src[i];
    AB_KEEP_LOOP();
  }
}

inline void zero_bytes(uint8_t* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + 32 <= n; i += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_setzero_si256());
    AB_KEEP_LOOP();
  }
  for (; i + 16 <= n; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_setzero_si128());
    AB_KEEP_LOOP();
  }
#endif
  for (; i < n; ++i) {
    dst[i] = 0;
    AB_KEEP_LOOP();
  }
}
#undef AB_KEEP_LOOP

// Every pixel's code sum, for `pixels` pixels of C codes one after the other. With C a multiple
// of 16 and AVX-512, the sums of 16-byte chunks come 4 at a time (vpsadbw gives each chunk's two
// 8-byte halves, added and packed into 4 int32), then a pixel adds its C / 16 chunks. (GCC 12
// warns that vpmovqd's own "undefined" pass-through operand may be used uninitialized; it is not:
// no lane is masked.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
void pixel_sums(const uint8_t* p, int64_t pixels, int64_t C, int32_t* out) {
#if defined(__AVX512BW__)
  if (C % 16 == 0) {
    const int64_t chunks = pixels * C / 16, per_pixel = C / 16;
    std::vector<int32_t> one(per_pixel == 1 ? 0 : chunks);
    int32_t* t = per_pixel == 1 ? out : one.data();
    const __m512i zero = _mm512_setzero_si512();
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0);
    int64_t j = 0;
    for (; j + 4 <= chunks; j += 4) {
      __m512i q = _mm512_sad_epu8(_mm512_loadu_si512(p + j * 16), zero);  // chunk i's halves: qwords 2i, 2i + 1
      q = _mm512_add_epi64(q, _mm512_bsrli_epi128(q, 8));                 // qword 2i: chunk i's sum
      const __m256i d = _mm256_permutevar8x32_epi32(_mm512_cvtepi64_epi32(q), even);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(t + j), _mm256_castsi256_si128(d));
    }
    for (; j < chunks; ++j) t[j] = (int32_t)byte_sum(p + j * 16, 16);
    if (per_pixel > 1)
      for (int64_t i = 0; i < pixels; ++i) {
        int32_t sum = 0;
        for (int64_t u = 0; u < per_pixel; ++u) sum += t[i * per_pixel + u];
        out[i] = sum;
      }
    return;
  }
#endif
  for (int64_t i = 0; i < pixels; ++i) out[i] = (int32_t)byte_sum(p + i * C, C);
}
#pragma GCC diagnostic pop

// The code sum of every output pixel's window (in place: the map's border covers the conv's
// padding), the term O's correction needs: each pixel's C codes are summed once (S, over the map
// with its border, whose pixels sum to 0), then k neighbours along each row (H), then k rows;
// the last two are loops over int32 that the compiler vectorises. out: the P output pixels'.
void window_sums(const IntConv& c, const uint8_t* in, const Geometry& g, int64_t oh, int64_t ow, int32_t* out) {
  const int64_t hp = g.h + 2 * g.b, wp = g.w + 2 * g.b, k = c.kernel, st = c.stride, off = g.b - c.pad;
  std::vector<int32_t> S(g.n * hp * wp), H(hp * ow);
  pixel_sums(in, g.n * hp * wp, g.c, S.data());  // the images' maps, borders included, one after the other
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t y = 0; y < hp; ++y) {
      const int32_t* sr = S.data() + (n * hp + y) * wp + off;
      int32_t* hr = H.data() + y * ow;
      for (int64_t x = 0; x < ow; ++x) hr[x] = sr[x * st];
      for (int64_t kx = 1; kx < k; ++kx)
        for (int64_t x = 0; x < ow; ++x) hr[x] += sr[x * st + kx];
    }
    int32_t* o = out + n * oh * ow;
    for (int64_t oy = 0; oy < oh; ++oy) {
      const int32_t* hr = H.data() + (oy * st + off) * ow;
      for (int64_t x = 0; x < ow; ++x) o[oy * ow + x] = hr[x];
      for (int64_t ky = 1; ky < k; ++ky)
        for (int64_t x = 0; x < ow; ++x) o[oy * ow + x] += hr[ky * ow + x];
    }
  }
}

// The epilogue's arithmetic for np pixels of M channels: v = alpha a + beta s + gamma from the
// int32 sums a (Sums: with the pixel's window code sum s; without, beta is 0 and the term is
// left out), then with a residual relu(v + res) (v rounded to float first, as when the two steps
// were loops of their own). The pointers do not overlap (__restrict), so the compiler keeps no
// check between the loads of one pixel and the stores of the last.
template <bool Sums, bool Res>
void epilogue(const int32_t* __restrict acc, int64_t np, int64_t M, const float* __restrict alpha,
              const float* __restrict beta, const float* __restrict gamma, const int32_t* __restrict sums,
              const float* __restrict res, float* __restrict v) {
  for (int64_t r = 0; r < np; ++r) {
    const int32_t* a = acc + r * M;
    float* vr = v + r * M;
    const float s = Sums ? float(sums[r]) : 0.0f;
    for (int64_t m = 0; m < M; ++m) {
      const float t = Sums ? alpha[m] * float(a[m]) + beta[m] * s + gamma[m] : alpha[m] * float(a[m]) + gamma[m];
      vr[m] = Res ? std::max(0.0f, t + res[r * M + m]) : t;
    }
  }
}

// One conv over a whole batch, a tile of output pixels per step of a thread: the tile's windows
// (with their code sums where the epilogue needs them), their product with the weights, then the
// epilogue, so a tile's rows and sums stay in that thread's cache. Where the input map's border
// covers the conv's padding and each tap's C bytes are whole 4-byte groups (C % 4 == 0), the
// product reads every window where it lies in the map (IntMatmul::run_rows): a row pointer per
// pixel and one table of group offsets, the windows' code sums computed for the whole map first
// (window_sums, by the calling thread, before the tiles). Otherwise each window is first copied
// out (im2col of bytes, zeros for the padding) and summed there.
void run_conv(const IntConv& c, const uint8_t* in, const Geometry& g, const Epilogue& e, Geometry* out_geom) {
  const int64_t oh = (g.h + 2 * c.pad - c.kernel) / c.stride + 1, ow = (g.w + 2 * c.pad - c.kernel) / c.stride + 1;
  *out_geom = {g.n, oh, ow, c.cout};
  const int64_t P = g.n * oh * ow, Kp = c.matmul.padded_k(), M = c.cout, C = g.c;
  AB_CHECK(C == c.cin, "integer engine: ", c.name, " takes ", c.cin, " channels, got ", C);
  const bool in_place = C % 4 == 0 && c.pad <= g.b;
  const int64_t taps = c.kernel * c.kernel;
  // In place: where tap t's bytes start, from the window's top-left pixel; the group offsets.
  std::vector<int64_t> tap_at(taps);
  std::vector<int32_t> goff(Kp / 4);
  const int64_t wp = g.w + 2 * g.b;
  for (int64_t t = 0; t < taps; ++t) tap_at[t] = ((t / c.kernel) * wp + t % c.kernel) * C;
  for (int64_t k = 0; k < Kp / 4; ++k)
    goff[k] = in_place ? int32_t(tap_at[4 * k / C] + 4 * k % C) : int32_t(4 * k);  // gathered rows: in order
  // Tiles of 64 pixels, smaller (down to 8, a multiple of the product's 4 rows) when there are too
  // few pixels to give every thread at least two tiles: at batch 1 the last stage has 64.
  const int64_t per_thread = P / (2 * std::max(1, omp_get_max_threads()));
  const int64_t kTile = std::max<int64_t>(8, std::min<int64_t>(64, per_thread / 4 * 4));
  const int64_t tiles = (P + kTile - 1) / kTile;
  // O = 0 (LSQ's symmetric weights): beta is 0 and the code sums are not needed.
  const bool need_sums = std::any_of(c.beta.begin(), c.beta.end(), [](float b) { return b != 0.0f; });
  std::vector<int32_t> in_place_sums(in_place && need_sums ? P : 0);
  if (in_place && need_sums) window_sums(c, in, g, oh, ow, in_place_sums.data());
#pragma omp parallel if (!omp_in_parallel())
  {
    std::vector<uint8_t> rows(in_place ? 0 : kTile * Kp);
    std::vector<const uint8_t*> row_at(kTile);
    std::vector<int32_t> sums(kTile), acc(kTile * M);
    std::vector<float> vtile(kTile * M);
    const float *alpha = c.alpha.data(), *beta = c.beta.data(), *gamma = c.gamma.data();
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t p0 = t * kTile, np = std::min(kTile, P - p0);
      // The tile's first pixel (n, oy, ox); the next ones follow by counting (no division per pixel).
      const int64_t n0 = p0 / (oh * ow), oy0 = (p0 / ow) % oh, ox0 = p0 % ow;
      const int32_t* tile_sums = in_place ? in_place_sums.data() + p0 : sums.data();  // read if need_sums
      // In place: a stretch of an output row at a time, whose windows start stride * C bytes apart.
      for (int64_t r = 0, n = n0, oy = oy0, ox = ox0; in_place && r < np;) {
        const int64_t len = std::min(np - r, ow - ox);
        const uint8_t* at = in + g.at(n, oy * c.stride - c.pad, ox * c.stride - c.pad);
        for (int64_t i = 0; i < len; ++i) row_at[r + i] = at + i * c.stride * C;
        r += len, ox = 0;
        if (++oy == oh) oy = 0, ++n;
      }
      int64_t n = n0, oy = oy0, ox = ox0;
      for (int64_t r = 0; !in_place && r < np; ++r, ++ox) {
        if (ox == ow) {
          ox = 0;
          if (++oy == oh) oy = 0, ++n;
        }
        uint8_t* row = rows.data() + r * Kp;
        row_at[r] = row;
        uint8_t* dst = row;
        const int64_t ix0 = ox * c.stride - c.pad, span = c.kernel * C;  // a window row: k pixels
        for (int64_t ky = 0; ky < c.kernel; ++ky, dst += span) {
          const int64_t iy = oy * c.stride - c.pad + ky;
          if (iy < -g.b || iy >= g.h + g.b) {
            zero_bytes(dst, span);  // zero padding: code 0 is the value 0
            continue;
          }
          const uint8_t* src = in + g.at(n, iy, 0);
          if (ix0 >= -g.b && ix0 + c.kernel <= g.w + g.b) {  // the window row is contiguous in NHWC
            copy_bytes(dst, src + ix0 * C, span);
            continue;
          }
          for (int64_t kx = 0; kx < c.kernel; ++kx) {
            const int64_t ix = ix0 + kx;
            if (ix < -g.b || ix >= g.w + g.b)
              zero_bytes(dst + kx * C, C);
            else
              copy_bytes(dst + kx * C, src + ix * C, C);
          }
        }
        zero_bytes(dst, Kp - c.kernel * c.kernel * C);
        sums[r] = need_sums ? (int32_t)byte_sum(row, Kp) : 0;  // the window's code sum, < 2^31
      }
      c.matmul.run_rows(row_at.data(), goff.data(), np, acc.data());
      // The epilogue over the whole tile (its np pixels' M values lie one after the other in
      // every float map): the values, then the next convs' codes from them.
      float* v = e.codes_next ? vtile.data() : e.out_float + p0 * M;
      const float* res = e.residual ? e.residual + p0 * M : nullptr;
      if (need_sums && res)
        epilogue<true, true>(acc.data(), np, M, alpha, beta, gamma, tile_sums, res, v);
      else if (need_sums)
        epilogue<true, false>(acc.data(), np, M, alpha, beta, gamma, tile_sums, nullptr, v);
      else if (res)  // beta = 0: the same values without the term
        epilogue<false, true>(acc.data(), np, M, alpha, beta, gamma, nullptr, res, v);
      else
        epilogue<false, false>(acc.data(), np, M, alpha, beta, gamma, nullptr, nullptr, v);
      // The codes go to maps with a border: one call per run of pixels within an output row (the
      // whole tile at once without a border).
      auto write_codes = [&](const ActCodes& q, uint8_t* map, int64_t border) {
        const Geometry og{g.n, oh, ow, M, border};
        if (border == 0) return q.codes(v, np * M, map + p0 * M);
        int64_t r = 0, y = oy0, x = ox0, in_n = n0;
        while (r < np) {
          const int64_t len = std::min(np - r, ow - x);
          q.codes(v + r * M, len * M, map + og.at(in_n, y, x));
          r += len, x = 0;
          if (++y == oh) y = 0, ++in_n;
        }
      };
      if (e.codes_next) {
        write_codes(*e.codes_next, e.out_codes, e.out_border);
      } else if (e.residual) {
        for (int i = 0; i < 2; ++i)
          if (e.next[i]) write_codes(*e.next[i], e.next_out[i], e.next_border[i]);
      }
    }
  }
}

}  // namespace

std::vector<float> int_conv_bn(const IntConv& c, const uint8_t* codes, int64_t n, int64_t h, int64_t w,
                               int64_t border) {
  Geometry in{n, h, w, c.cin, border}, out;
  std::vector<uint8_t> map;
  prepare(map, in);
  for (int64_t r = 0; r < n * h; ++r)
    std::copy(codes + r * w * c.cin, codes + (r + 1) * w * c.cin, map.begin() + in.at(r / h, r % h, 0));
  const int64_t oh = (h + 2 * c.pad - c.kernel) / c.stride + 1, ow = (w + 2 * c.pad - c.kernel) / c.stride + 1;
  std::vector<float> y(n * oh * ow * c.cout);
  Epilogue e;
  e.out_float = y.data();
  run_conv(c, map.data(), in, e, &out);
  return y;
}

Tensor IntegerResNet::forward(const Tensor& images) {
  AB_CHECK(images.dim() == 4 && images.size(1) == stem_w_.size(1), "integer engine: expected images (N, ",
           stem_w_.size(1), ", H, W), got ", shape_str(images.shape()));
  AB_CHECK(images.dtype() == DType::F32 && images.device().is_cpu(), "integer engine: images must be float32 on the CPU");
  // The FP stem's conv, for the whole batch.
  Tensor y = conv2d(images.contiguous(), stem_w_, stem_b_, Conv2dOptions::make(1, stem_w_.size(2) / 2)).contiguous();
  const int64_t N = y.size(0), image = y.size(1) * y.size(2) * y.size(3), pooled_c = fc_w_.size(1);
  Tensor pooled = Tensor::empty({N, pooled_c});
  // A large batch goes through the network kGroup images at a time, each thread taking the next
  // group (the images do not depend on each other, so the results are the same whatever thread
  // takes which): a group's maps fit in the thread's own caches, and the threads meet once, at
  // the end, not at every conv. A small batch (latency) goes through whole, each conv shared out
  // among the threads (run_conv).
  constexpr int64_t kGroup = 4;
  const int threads = std::max(1, omp_get_max_threads());
  if (maps_.size() < (size_t)threads) maps_.resize(threads);
  if (grouping_ && N >= 4 * kGroup * threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t g0 = 0; g0 < N; g0 += kGroup)
      forward_images(y.data<float>() + g0 * image, std::min(kGroup, N - g0), y.size(1), y.size(2), y.size(3),
                     maps_[omp_get_thread_num()], pooled.data<float>() + g0 * pooled_c);
  } else {
    forward_images(y.data<float>(), N, y.size(1), y.size(2), y.size(3), maps_[0], pooled.data<float>());
  }
  return linear(pooled, fc_w_, fc_b_);
}

void IntegerResNet::forward_images(const float* stem, int64_t count, int64_t channels, int64_t height, int64_t width,
                                   Maps& maps, float* pooled) const {
  Geometry g{count, height, width, channels};
  // The maps are reused call after call (int_engine.h), sized by hold().
  auto& [x, sc, out, u1, us, u2, next1, nexts] = maps;
  hold(x, g.pixels() * g.c);
  // The block input in the codes of its conv1 and (if it has one) its projection shortcut: from
  // the stem here, then from each block's conv2 epilogue for the next block. Each code map has a
  // border as wide as the padding of the conv that reads it, so that conv reads its windows in
  // place (run_conv).
  Geometry g1c = g, gsc = g;  // the geometries of u1 and us
  g1c.b = blocks_[0].conv1.pad;
  gsc.b = blocks_[0].shortcut.pad;
  prepare(u1, g1c);
  if (blocks_[0].has_shortcut) prepare(us, gsc);
  {
    // NCHW to NHWC in blocks of 64 pixels, so that the channel-strided writes stay in one 64-pixel
    // stretch of x (a few KiB, in L1) while each plane is read in order; each block's codes are
    // written while it is in L1, one call per stretch of an image row (the maps have borders).
    const float* src = stem;
    const int64_t hw = g.h * g.w, kBlock = 64;
    auto write_codes = [&](const ActCodes& q, uint8_t* map, const Geometry& gm, int64_t n, int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1;) {
        const int64_t row = i / g.w, col = i % g.w, len = std::min(i1 - i, g.w - col);
        q.codes(x.data() + (n * hw + i) * g.c, len * g.c, map + gm.at(n, row, col));
        i += len;
      }
    };
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t i0 = 0; i0 < hw; i0 += kBlock) {
        const int64_t i1 = std::min(hw, i0 + kBlock);
        for (int64_t c = 0; c < g.c; ++c)
          for (int64_t i = i0; i < i1; ++i)
            x[(n * hw + i) * g.c + c] = std::max(0.0f, src[(n * g.c + c) * hw + i] * stem_scale_[c] + stem_shift_[c]);
        write_codes(blocks_[0].conv1.act, u1.data(), g1c, n, i0, i1);
        if (blocks_[0].has_shortcut) write_codes(blocks_[0].shortcut.act, us.data(), gsc, n, i0, i1);
      }
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const IntBlock& b = blocks_[i];
    Geometry g1, g2, gs;
    // conv1 -> BN1 -> ReLU -> conv2's codes, in a map with conv2's border
    {
      const int64_t oh = (g.h + 2 * b.conv1.pad - b.conv1.kernel) / b.conv1.stride + 1;
      const int64_t ow = (g.w + 2 * b.conv1.pad - b.conv1.kernel) / b.conv1.stride + 1;
      prepare(u2, {g.n, oh, ow, b.conv1.cout, b.conv2.pad});
    }
    Epilogue e1;
    e1.codes_next = &b.conv2.act, e1.out_codes = u2.data(), e1.out_border = b.conv2.pad;
    run_conv(b.conv1, u1.data(), g1c, e1, &g1);
    g1.b = b.conv2.pad;
    // the shortcut: the input itself, or the 1x1 projection's BN output
    const float* residual = x.data();
    if (b.has_shortcut) {
      hold(sc, g1.pixels() * b.shortcut.cout);
      Epilogue e;
      e.out_float = sc.data();
      run_conv(b.shortcut, us.data(), gsc, e, &gs);
      residual = sc.data();
    } else {
      AB_CHECK(g.c == b.conv2.cout, "integer engine: ", b.conv1.name, ": identity shortcut of ", g.c, " channels into ",
               b.conv2.cout);
    }
    // conv2 -> BN2 -> + shortcut -> ReLU: the block's output, float, and in the next block's codes
    const int64_t count = g1.pixels() * b.conv2.cout;
    hold(out, count);
    Epilogue e;
    e.residual = residual;
    e.out_float = out.data();
    Geometry next1c, nextsc;
    if (i + 1 < blocks_.size()) {
      const IntBlock& next = blocks_[i + 1];
      // the next block's input maps: this block's output geometry, with the border its convs read
      next1c = {g1.n, g1.h, g1.w, b.conv2.cout, next.conv1.pad};
      nextsc = {g1.n, g1.h, g1.w, b.conv2.cout, next.shortcut.pad};
      prepare(next1, next1c);
      e.next[0] = &next.conv1.act, e.next_out[0] = next1.data(), e.next_border[0] = next1c.b;
      if (next.has_shortcut) {
        prepare(nexts, nextsc);
        e.next[1] = &next.shortcut.act, e.next_out[1] = nexts.data(), e.next_border[1] = nextsc.b;
      }
    }
    run_conv(b.conv2, u2.data(), g1, e, &g2);
    x.swap(out);
    u1.swap(next1);
    us.swap(nexts);
    g = g2;
    g1c = next1c, gsc = nextsc;
  }
  // Global average pool (the FP classifier follows in forward). Each channel's sum runs over the
  // pixels in order; the channels side by side (x is NHWC), so the loop over them vectorises.
  AB_CHECK(g.c == fc_w_.size(1), "integer engine: the last block gives ", g.c, " channels, the classifier takes ",
           fc_w_.size(1));
  const int64_t hw = g.h * g.w;
#pragma omp parallel for schedule(static) if (!omp_in_parallel())
  for (int64_t n = 0; n < g.n; ++n) {
    float* s = pooled + n * g.c;
    std::fill(s, s + g.c, 0.0f);
    for (int64_t i = 0; i < hw; ++i) {
      const float* px = x.data() + (n * hw + i) * g.c;
      for (int64_t c = 0; c < g.c; ++c) s[c] += px[c];
    }
    for (int64_t c = 0; c < g.c; ++c) s[c] /= float(hw);
  }
}

}  // namespace anybit::quant
