#!/usr/bin/env python3
"""The operations of apps/bench_cuda.cpp in PyTorch on the same GPU, timed the same way
(one warm-up, then the mean of --reps runs between two synchronizations). Run it right after
build/bench_cuda, on the same machine, and compare line by line."""
import argparse
import time

import torch


def time_ms(reps, f):
    f()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    reps = ap.parse_args().reps
    if not torch.cuda.is_available():
        print("bench_cuda_torch: skipped: no CUDA device visible to PyTorch")
        return
    print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
    torch.backends.cuda.matmul.allow_tf32 = False  # plain fp32, as cuda::gemm
    n = 64 << 20
    g = torch.Generator(device="cuda").manual_seed(1)
    a = torch.randn(n, device="cuda", generator=g)
    b = torch.randn(n, device="cuda", generator=g)
    out = torch.empty_like(a)
    nbytes = n * 4.0
    print("\n%-34s %10s %10s" % ("elementwise (256 MiB tensors)", "ms", "GB/s"))
    t = time_ms(reps, lambda: out.copy_(a))
    print("%-34s %10.3f %10.1f" % ("copy_ d2d (read + write)", t, 2 * nbytes / t / 1e6))
    t = time_ms(reps, lambda: torch.clamp_min(a, 0, out=out))
    print("%-34s %10.3f %10.1f" % ("relu (read + write)", t, 2 * nbytes / t / 1e6))
    t = time_ms(reps, lambda: torch.add(a, b, out=out))
    print("%-34s %10.3f %10.1f" % ("add (2 reads + write)", t, 3 * nbytes / t / 1e6))
    t = time_ms(reps, lambda: torch.sum(a))
    print("%-34s %10.3f %10.1f" % ("sum (read)", t, nbytes / t / 1e6))
    a2 = a.view(n // 1024, 1024)
    out2 = out.view(n // 1024, 1024)
    bias = torch.randn(1024, device="cuda", generator=g)
    t = time_ms(reps, lambda: torch.add(a2, bias, out=out2))
    print("%-34s %10.3f %10.1f" % ("add broadcast row (read + write)", t, 2 * nbytes / t / 1e6))
    print("\n%-40s %10s %10s" % ("sgemm (torch.mm, TF32 off)", "ms", "GFLOP/s"))
    for name, M, N, K in [("square 4096", 4096, 4096, 4096),
                          ("res20 16ch 32x32 (16, 131072, 144)", 16, 131072, 144),
                          ("res20 32ch 16x16 (32, 32768, 288)", 32, 32768, 288),
                          ("res20 64ch 8x8 (64, 8192, 576)", 64, 8192, 576)]:
        A = torch.randn(M, K, device="cuda", generator=g)
        B = torch.randn(K, N, device="cuda", generator=g)
        C = torch.empty(M, N, device="cuda")
        t = time_ms(reps, lambda: torch.mm(A, B, out=C))
        print("%-40s %10.3f %10.1f" % (name, t, 2.0 * M * N * K / t / 1e6))


if __name__ == "__main__":
    main()
