// bench_cuda.cpp - the CUDA kernels of anybit against the GPU's own limits, measured in one run:
// elementwise kernels and the sum reduction in GB/s next to a device-to-device cudaMemcpy, and
// cuda::gemm (cuBLAS) in GFLOP/s at a square size and at the GEMM shapes of ResNet-20's convs, and
// those products as conv2d's forward makes them (batched, one GEMM per image) against one GEMM and
// a copy to NCHW (how it made them before).
// Each result is first checked against the CPU. scripts/bench_cuda_torch.py measures the same
// operations in PyTorch for comparison. Without a usable GPU it says why and exits 0 (nothing
// to measure is not a failure).
//
//   build/bench_cuda [--reps N]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include "autograd/autograd.h"
#include "tensor/cuda/cuda.h"
#include "tensor/kernels.h"
#include "tensor/ops.h"
#include "tensor/random.h"

using namespace anybit;

static double time_ms(int reps, const std::function<void()>& f) {
  f();  // warm-up
  cuda::synchronize();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

static double max_rel_err(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double worst = 0, scale = 1e-30;
  for (double v : vb) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]) / scale);
  return worst;
}

int main(int argc, char** argv) {
  int reps = 50;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--reps") reps = std::atoi(argv[i + 1]);
  if (!cuda::available()) {
    std::printf("bench_cuda: skipped: %s\n", cuda::unavailable_reason().c_str());
    return 0;
  }
  try {
    NoGradGuard ng;
    Device gpu(Device::CUDA);
    Generator g(1);
    const int64_t n = 64 << 20;  // 64 Mi floats = 256 MiB per tensor
    Tensor a = Tensor::randn({n}, g).to(gpu), b = Tensor::randn({n}, g).to(gpu);
    Tensor out = Tensor::empty({n}, DType::F32, gpu);
    const double bytes = n * 4.0;

    // Correctness once, on a slice, against the CPU.
    {
      Tensor sa = a.slice(0, 0, 1 << 20), sb = b.slice(0, 0, 1 << 20);
      double e1 = max_rel_err(add(sa, sb), add(sa.to(Device()), sb.to(Device())));
      double e2 = max_rel_err(relu(sa), relu(sa.to(Device())));
      double e3 = max_rel_err(sum(sa), sum(sa.to(Device())));
      std::printf("check vs CPU: add %.1e, relu %.1e, sum %.1e (max relative error)\n", e1, e2, e3);
      if (e1 > 1e-6 || e2 > 1e-6 || e3 > 1e-4) {
        std::fprintf(stderr, "bench_cuda: CUDA results differ from the CPU\n");
        return 1;
      }
    }

    std::printf("\n%-34s %10s %10s\n", "elementwise (256 MiB tensors)", "ms", "GB/s");
    double t_copy = time_ms(reps, [&] { cuda::memcpy_d2d(out.raw_data(), a.raw_data(), n * 4); });
    std::printf("%-34s %10.3f %10.1f\n", "cudaMemcpy d2d (read + write)", t_copy, 2 * bytes / t_copy / 1e6);
    double t_relu = time_ms(reps, [&] { kernel::unary(UnaryOp::Relu, a, out); });
    std::printf("%-34s %10.3f %10.1f\n", "relu (read + write)", t_relu, 2 * bytes / t_relu / 1e6);
    double t_add = time_ms(reps, [&] { kernel::binary(BinaryOp::Add, a, b, out); });
    std::printf("%-34s %10.3f %10.1f\n", "add (2 reads + write)", t_add, 3 * bytes / t_add / 1e6);
    Tensor s = Tensor::empty({1}, DType::F32, gpu);
    double t_sum = time_ms(reps, [&] { cuda::reduce_sum(a, 1, n, 1, s); });
    std::printf("%-34s %10.3f %10.1f\n", "sum (read)", t_sum, bytes / t_sum / 1e6);
    Tensor bias = Tensor::randn({1024}, g).to(gpu);
    Tensor a2 = a.reshape({n / 1024, 1024});
    Tensor out2 = out.reshape({n / 1024, 1024});
    double t_bc = time_ms(reps, [&] { kernel::binary(BinaryOp::Add, a2, bias.expand(a2.shape()), out2); });
    std::printf("%-34s %10.3f %10.1f\n", "add broadcast row (read + write)", t_bc, 2 * bytes / t_bc / 1e6);
    std::printf("ratio relu / memcpy: %.2f, add / memcpy: %.2f\n", (2 * bytes / t_relu) / (2 * bytes / t_copy),
                (3 * bytes / t_add) / (2 * bytes / t_copy));

    // GEMM: square, then the im2col shapes of a ResNet-20 forward at batch 128 (M = out
    // channels, N = batch * output pixels, K = in channels * 9).
    struct Shape3 {
      const char* name;
      int64_t M, N, K;
    };
    Shape3 shapes[] = {{"square 4096", 4096, 4096, 4096},
                       {"res20 16ch 32x32 (16, 131072, 144)", 16, 131072, 144},
                       {"res20 32ch 16x16 (32, 32768, 288)", 32, 32768, 288},
                       {"res20 64ch 8x8 (64, 8192, 576)", 64, 8192, 576}};
    std::printf("\n%-40s %10s %10s\n", "sgemm (cuBLAS through cuda::gemm)", "ms", "GFLOP/s");
    for (auto& sh : shapes) {
      Tensor A = Tensor::randn({sh.M, sh.K}, g).to(gpu), B = Tensor::randn({sh.K, sh.N}, g).to(gpu);
      Tensor C = Tensor::empty({sh.M, sh.N}, DType::F32, gpu);
      auto run = [&] {
        cuda::gemm(false, false, sh.M, sh.N, sh.K, 1.f, A.data<float>(), sh.K, B.data<float>(), sh.N, 0.f,
                   C.data<float>(), sh.N);
      };
      if (sh.M * sh.N <= (int64_t)4096 * 4096) {  // check one column block against matmul on the CPU
        run();
        cuda::synchronize();
        Tensor ref = matmul(A.to(Device()), B.to(Device()).slice(1, 0, 64).contiguous());
        double e = max_rel_err(C.to(Device()).slice(1, 0, 64).contiguous(), ref);
        if (e > 1e-3) {
          std::fprintf(stderr, "bench_cuda: gemm %s differs from the CPU (%.1e)\n", sh.name, e);
          return 1;
        }
      }
      double t = time_ms(reps, run);
      std::printf("%-40s %10.3f %10.1f\n", sh.name, t, 2.0 * sh.M * sh.N * sh.K / t / 1e6);
    }

    // conv2d's forward (tensor/cuda/nn.cu) makes the ResNet-20 products above as 128 GEMMs of
    // (M, P, K), one per image, in one strided-batched call that writes NCHW, where it used to make
    // one (M, 128 P, K) GEMM and then move its output to NCHW (a strided copy, here as then).
    std::printf("\n%-40s %10s %10s %10s\n", "conv forward: 128 batched vs one + copy", "batched ms", "one+copy ms",
                "ratio");  // ratio: one + copy time / batched time (above 1: the batched call is faster)
    for (size_t i = 1; i < sizeof(shapes) / sizeof(shapes[0]); ++i) {
      const Shape3& sh = shapes[i];
      const int64_t images = 128, P = sh.N / images;
      Tensor A = Tensor::randn({sh.M, sh.K}, g).to(gpu), B = Tensor::randn({sh.K, sh.N}, g).to(gpu);
      Tensor C = Tensor::empty({sh.M, sh.N}, DType::F32, gpu), Y = Tensor::empty({images, sh.M, P}, DType::F32, gpu);
      auto batched = [&] {
        cuda::gemm_batched(false, false, sh.M, P, sh.K, 1.f, A.data<float>(), sh.K, 0, B.data<float>(), sh.N, P, 0.f,
                           Y.data<float>(), P, sh.M * P, images);
      };
      auto one_and_copy = [&] {
        cuda::gemm(false, false, sh.M, sh.N, sh.K, 1.f, A.data<float>(), sh.K, B.data<float>(), sh.N, 0.f,
                   C.data<float>(), sh.N);
        kernel::strided_copy(C.view({sh.M, images, P}).permute({1, 0, 2}), Y);
      };
      batched();
      Tensor y_batched = Y.to(Device());
      one_and_copy();
      const double e = max_rel_err(y_batched, Y.to(Device()));
      if (e > 1e-3) {
        std::fprintf(stderr, "bench_cuda: batched gemm %s differs from one gemm (%.1e)\n", sh.name, e);
        return 1;
      }
      const double tb = time_ms(reps, batched), to = time_ms(reps, one_and_copy);
      std::printf("%-40s %10.3f %10.3f %10.2f\n", sh.name, tb, to, to / tb);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
