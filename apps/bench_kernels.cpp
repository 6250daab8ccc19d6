// bench_kernels.cpp - the kernel lab for issue 2: conv2d and elementwise kernels on the CPU.
//
// 1. Validates cpu conv2d (forward, dx, dw, db) against ref::conv2d on a small batch of every
//    ResNet-20 layer shape; exits non-zero on a mismatch, before any timing.
// 2. Times conv2d forward and backward (input and weight gradients) for every conv layer shape
//    of a CIFAR ResNet-20 at batch 128, under both threading policies (tensor/cpu/nn.h), and
//    OpenBLAS sgemm on the equivalent GEMMs: the batch as one GEMM per pass (what im2col of
//    the whole batch would run, OpenBLAS threading it), in the same run. Prints GFLOP/s and the
//    ratio conv / sgemm.
// 3. Times the elementwise kernels add, mul, relu in GB/s next to memcpy.
// Usage: bench_kernels [--threads 2] [--batch 128] [--reps 5]. Figures: docs/BENCHMARKS.md.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "tensor/cpu/kernels.h"
#include "tensor/cpu/nn.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/ref.h"

#include "apps/bench_timing.h"

using namespace anybit;

namespace {

using bench::median_time;
using bench::now;

struct Layer {
  const char* name;
  int64_t C, HW, O, k, stride, pad;
  int count;  // how many ResNet-20 layers have this shape
};

// CIFAR ResNet-20: conv1, three stages of three basic blocks (two 3x3 convs each), the first block
// of stages 2 and 3 downsampling with a stride-2 3x3 conv and a 1x1 stride-2 shortcut conv.
const std::vector<Layer> kLayers = {
    {"conv1 3->16 32x32 3x3", 3, 32, 16, 3, 1, 1, 1},
    {"16->16 32x32 3x3", 16, 32, 16, 3, 1, 1, 6},
    {"16->32 32x32 3x3 s2", 16, 32, 32, 3, 2, 1, 1},
    {"16->32 32x32 1x1 s2", 16, 32, 32, 1, 2, 0, 1},
    {"32->32 16x16 3x3", 32, 16, 32, 3, 1, 1, 5},
    {"32->64 16x16 3x3 s2", 32, 16, 64, 3, 2, 1, 1},
    {"32->64 16x16 1x1 s2", 32, 16, 64, 1, 2, 0, 1},
    {"64->64 8x8 3x3", 64, 8, 64, 3, 1, 1, 5},
};

double max_rel_err(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double worst = 0, scale = 0;
  for (double v : vb) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]));
  return worst / std::max(scale, 1e-30);
}

// Checks the fast kernels against ref:: on a batch of 3; returns false (and prints) on mismatch.
bool validate(Generator& gen) {
  bool ok = true;
  for (const Layer& L : kLayers) {
    Conv2dOptions opt = Conv2dOptions::make(L.stride, L.pad);
    Tensor x = Tensor::randn({3, L.C, L.HW, L.HW}, gen), w = Tensor::randn({L.O, L.C, L.k, L.k}, gen);
    Tensor b = Tensor::randn({L.O}, gen);
    cpu::ConvShape s = cpu::conv_shape(x.shape(), w.shape(), opt);
    Tensor y = Tensor::empty({s.N, s.O, s.OH, s.OW});
    cpu::conv2d_forward(x, w, b, s, y);
    Tensor dy = Tensor::randn(y.shape(), gen);
    Tensor dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape()), db = Tensor::empty({L.O});
    cpu::conv2d_backward(x, w, dy, s, &dx, &dw, &db);
    Tensor rdx, rdw, rdb;
    ref::conv2d_backward(x, w, b, dy, opt, rdx, rdw, rdb);
    double e[4] = {max_rel_err(y, ref::conv2d(x, w, b, opt)), max_rel_err(dx, rdx), max_rel_err(dw, rdw),
                   max_rel_err(db, rdb)};
    for (double v : e)
      if (!(v < 1e-5)) {
        std::printf("VALIDATION FAILED %s: max error / max |ref| y %.2e dx %.2e dw %.2e db %.2e\n", L.name,
                    e[0], e[1], e[2], e[3]);
        ok = false;
        break;
      }
  }
  if (ok) std::printf("validation: conv2d forward, dx, dw, db match ref::conv2d on all %zu shapes (batch 3)\n", kLayers.size());
  return ok;
}

struct ConvTimes {
  double fwd, bwd_x, bwd_w;
};

ConvTimes time_conv(const Layer& L, int64_t N, int reps, Generator& gen) {
  Conv2dOptions opt = Conv2dOptions::make(L.stride, L.pad);
  Tensor x = Tensor::randn({N, L.C, L.HW, L.HW}, gen), w = Tensor::randn({L.O, L.C, L.k, L.k}, gen);
  cpu::ConvShape s = cpu::conv_shape(x.shape(), w.shape(), opt);
  Tensor y = Tensor::empty({s.N, s.O, s.OH, s.OW}), dy = Tensor::randn(y.shape(), gen);
  Tensor dx = Tensor::empty(x.shape()), dw = Tensor::empty(w.shape());
  ConvTimes t;
  t.fwd = median_time(reps, [&] { cpu::conv2d_forward(x, w, Tensor(), s, y); });
  t.bwd_x = median_time(reps, [&] { cpu::conv2d_backward(x, w, dy, s, &dx, nullptr, nullptr); });
  t.bwd_w = median_time(reps, [&] { cpu::conv2d_backward(x, w, dy, s, nullptr, &dw, nullptr); });
  return t;
}

// sgemm on the conv's three GEMMs with the batch as one GEMM (B = N*OH*OW columns), threaded by
// OpenBLAS: forward (O x B) = (O x K)(K x B); dcol (K x B) = (O x K)^T (O x B); dW (O x K) =
// (O x B)(K x B)^T, K = C*KH*KW.
ConvTimes time_sgemm(const Layer& L, int64_t N, int reps) {
  const int64_t OHW = (L.HW + 2 * L.pad - L.k) / L.stride + 1, B = N * OHW * OHW, K = L.C * L.k * L.k, O = L.O;
  std::vector<float> a(O * K, 0.5f), col(K * B, 0.25f), y(O * B, 0.f), dcol(K * B, 0.f), dw(O * K, 0.f);
  ConvTimes t;
  t.fwd = median_time(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, O, B, K, 1.f, a.data(), K, col.data(), B, 0.f, y.data(), B);
  });
  t.bwd_x = median_time(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, B, O, 1.f, a.data(), K, y.data(), B, 0.f, dcol.data(), B);
  });
  t.bwd_w = median_time(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, O, K, B, 1.f, y.data(), B, col.data(), B, 0.f, dw.data(), K);
  });
  return t;
}

void bench_conv(int64_t N, int reps, Generator& gen) {
  std::printf("\nconv2d, batch %lld, float32 (GFLOP/s; a pass = 2*N*O*OH*OW*C*KH*KW flops; ratio = conv / sgemm)\n",
              (long long)N);
  std::printf("%-24s %3s | %22s | %22s | %22s | %6s\n", "layer", "n", "forward conv/sgemm", "input grad conv/sgemm",
              "weight grad conv/sgemm", "ratio");
  double tot_flops = 0, tot_conv = 0, tot_gemm = 0, tot_conv_inside = 0;
  for (const Layer& L : kLayers) {
    cpu::set_conv_threading(cpu::ConvThreading::OverImages);
    ConvTimes c = time_conv(L, N, reps, gen);
    cpu::set_conv_threading(cpu::ConvThreading::InsideGemm);
    ConvTimes ci = time_conv(L, N, reps, gen);
    cpu::set_conv_threading(cpu::ConvThreading::OverImages);
    ConvTimes g = time_sgemm(L, N, reps);
    const int64_t OHW = (L.HW + 2 * L.pad - L.k) / L.stride + 1;
    const double f = 2.0 * N * L.O * OHW * OHW * L.C * L.k * L.k / 1e9;  // GFLOP per pass
    const double conv_t = c.fwd + c.bwd_x + c.bwd_w, gemm_t = g.fwd + g.bwd_x + g.bwd_w;
    std::printf("%-24s %3d | %9.1f / %9.1f  | %9.1f / %9.1f  | %9.1f / %9.1f  | %5.0f%%   (GEMM threaded inside: %.1f)\n",
                L.name, L.count, f / c.fwd, f / g.fwd, f / c.bwd_x, f / g.bwd_x, f / c.bwd_w, f / g.bwd_w,
                100 * gemm_t / conv_t, 3 * f / (ci.fwd + ci.bwd_x + ci.bwd_w));
    tot_flops += L.count * 3 * f;
    tot_conv += L.count * conv_t;
    tot_gemm += L.count * gemm_t;
    tot_conv_inside += L.count * (ci.fwd + ci.bwd_x + ci.bwd_w);
  }
  std::printf("ResNet-20 all 19 convs, forward + both gradients: conv %.1f GFLOP/s (%.1f ms), sgemm %.1f GFLOP/s "
              "(%.1f ms): conv reaches %.0f%% of sgemm\n",
              tot_flops / tot_conv, 1e3 * tot_conv, tot_flops / tot_gemm, 1e3 * tot_gemm, 100 * tot_gemm / tot_conv);
  std::printf("threading policy: over images (BLAS single-threaded) %.1f GFLOP/s, one image at a time with "
              "OpenBLAS threading each GEMM %.1f GFLOP/s\n",
              tot_flops / tot_conv, tot_flops / tot_conv_inside);
}

void bench_elementwise(int reps, Generator& gen, int threads) {
  const int64_t n = 8 << 20;  // 8 Mi floats = 32 MiB per tensor, well beyond the caches
  Tensor a = Tensor::randn({n}, gen), b = Tensor::randn({n}, gen);
  const double mb = n * 4.0 / 1e9;  // GB per tensor
  std::printf("\nelementwise, %lld float32 (GB/s counting bytes read + written)\n", (long long)n);
  NoGradGuard ng;
  Tensor out;
  double t_add = median_time(reps, [&] { out = add(a, b); });
  double t_mul = median_time(reps, [&] { out = mul(a, b); });
  double t_relu = median_time(reps, [&] { out = relu(a); });
  std::vector<float> dst(n);
  const float* src = a.data<float>();
  double t_cpy1 = median_time(reps, [&] { std::memcpy(dst.data(), src, n * 4); });
  double t_cpy = median_time(reps, [&] {
#pragma omp parallel num_threads(threads)
    {
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
      std::memcpy(dst.data() + lo, src + lo, (hi - lo) * 4);
    }
  });
  std::printf("add  %6.1f GB/s\nmul  %6.1f GB/s\nrelu %6.1f GB/s\nmemcpy %6.1f GB/s (%d threads), %6.1f GB/s (1 thread)\n",
              3 * mb / t_add, 3 * mb / t_mul, 2 * mb / t_relu, 2 * mb / t_cpy, threads, 2 * mb / t_cpy1);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int threads = 2, reps = 5;
    int64_t batch = 128;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> const char* {
        AB_CHECK(i + 1 < argc, "bench_kernels: ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--threads") threads = std::atoi(next());
      else if (a == "--batch") batch = std::atoll(next());
      else if (a == "--reps") reps = std::atoi(next());
      else AB_FAIL("bench_kernels: unknown option ", a, "; usage: bench_kernels [--threads 2] [--batch 128] [--reps 5]");
    }
    cpu::set_num_threads(threads);
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    std::printf("bench_kernels: %d threads, OPENBLAS_CORETYPE=%s, %s\n", threads, core ? core : "(unset)",
                openblas_get_config());
    Generator gen(1);
    if (!validate(gen)) return 1;
    bench_conv(batch, reps, gen);
    bench_elementwise(reps, gen, threads);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
}
