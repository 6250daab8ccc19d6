#!/usr/bin/python3
"""scaling_model.py [--anybit build/anybit] - the data-parallel scaling model of docs/BENCHMARKS.md.

Per network: the bytes all-reduced per step (every trained float32 parameter, counted by
`anybit info`, FP and with the bit set {8,6,4,2}: the joint trainer all-reduces once per step, so
its extra BN sets and clip values are all it adds), the compute time of one step, and the
efficiency T_compute / (T_compute + T_allreduce) of 8 GPUs in one node and of 4 nodes of 8 GPUs, with
no overlap of the all-reduce and the backward pass (the worst case; anybit sums after the backward).

All-reduce time, ring algorithm over p ranks of a link of bandwidth BW and latency a per message:
    T = 2 (p - 1) / p * bytes / BW + 2 (p - 1) * a
4 nodes of 8: a reduction inside each node (NVLink), the ring between the 4 nodes over their network
links, a broadcast inside each node: T = 2 T_node(8, bytes / 2) + T_ring(4, bytes, network).

Compute time of one step:
  CPU (this machine): measured by `build/bench_train --only resnet20_train,resnet18_train,resnet50_train`
  (--cpu-ms) and, for the joint step, scripts/bench_mpi.sh's joint-1x2 run (--cpu-joint-ms).
  GPU: estimated from FLOPs (training step = 3 x 2 x MACs per sample x batch) at a fraction
  --gpu-efficiency of the fp32 GEMM rate measured on the H200 (docs/BENCHMARKS.md, CUDA kernels:
  51,341 GFLOP/s at 4096^3, no TF32). anybit has no CUDA convolution yet (issue 11): replace the
  estimate with a measurement when it has.
The bandwidths are assumptions, given as options and printed with the table."""
import argparse, re, subprocess

NETS = [  # name, anybit info arguments, per-GPU batch, CPU batch of bench_train
    ("ResNet-20 (CIFAR)", ["--model", "resnet20", "--classes", "10", "--input", "3,32,32"], 128, 128),
    ("ResNet-18 (ImageNet)", ["--model", "resnet18", "--classes", "1000", "--input", "3,224,224"], 256, 32),
    ("ResNet-50 (ImageNet)", ["--model", "resnet50", "--classes", "1000", "--input", "3,224,224"], 256, 32),
]


def info(anybit, args):
    out = subprocess.run([anybit, "info"] + args, capture_output=True, text=True, check=True).stdout
    params = int(re.search(r"^parameters: (\d+)", out, re.M).group(1))
    macs = int(re.search(r"^MACs per sample[^:]*: (\d+)", out, re.M).group(1))
    return params, macs


def ring(p, nbytes, bw, lat):
    return 2 * (p - 1) / p * nbytes / bw + 2 * (p - 1) * lat if p > 1 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anybit", default="build/anybit")
    ap.add_argument("--cpu-ms", default="381,2906,6154",
                    help="measured CPU FP step times (ms) of resnet20 (batch 128), resnet18, resnet50 (batch 32)")
    ap.add_argument("--cpu-joint-ms", default="1795,,",
                    help="the same for the joint {8,6,4,2} step (empty: not measured)")
    ap.add_argument("--gpu-gflops", type=float, default=51341.0)
    ap.add_argument("--gpu-efficiency", type=float, default=0.5)
    ap.add_argument("--nvlink-gbs", type=float, default=200.0, help="all-reduce bus bandwidth inside a node, GB/s")
    ap.add_argument("--staged-gbs", type=float, default=20.0,
                    help="the same staged through host memory (no CUDA-aware MPI), GB/s")
    ap.add_argument("--network-gbs", type=float, default=10.0, help="per node between nodes (100 Gb/s at 80%%), GB/s")
    ap.add_argument("--latency-us", type=float, default=10.0)
    a = ap.parse_args()
    cpu_ms = [float(x) for x in a.cpu_ms.split(",")]
    cpu_joint = [float(x) if x else None for x in a.cpu_joint_ms.split(",")]
    lat = a.latency_us * 1e-6
    print(f"assumptions: NVLink all-reduce {a.nvlink_gbs:g} GB/s, host-staged {a.staged_gbs:g} GB/s, network "
          f"{a.network_gbs:g} GB/s per node, {a.latency_us:g} us per message; GPU compute at "
          f"{a.gpu_efficiency:.0%} of {a.gpu_gflops:,.0f} GFLOP/s\n")
    print("| network | trained parameters | MB all-reduced per step | CPU step here (2 threads) "
          "| GPU step, estimated (batch/GPU) | 8 GPUs, NVLink | 8 GPUs, host-staged | 4 x 8 GPUs, 100 Gb/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (name, args, gpu_batch, cpu_batch), cms, cjoint in zip(NETS, cpu_ms, cpu_joint):
        p_fp, macs = info(a.anybit, args)
        p_q, _ = info(a.anybit, args + ["--bits", "8,6,4,2"])
        rows = []
        for label, params, passes, cpu in (("FP", p_fp, 1, cms), ("joint {8,6,4,2}", p_q, 4, cjoint)):
            nbytes = 4 * params
            t_gpu = passes * 6 * macs * gpu_batch / (a.gpu_gflops * 1e9 * a.gpu_efficiency)
            t_node = ring(8, nbytes, a.nvlink_gbs * 1e9, lat)
            t_staged = ring(8, nbytes, a.staged_gbs * 1e9, lat)
            t_multi = 2 * ring(8, nbytes / 2, a.nvlink_gbs * 1e9, lat) + ring(4, nbytes, a.network_gbs * 1e9, lat)
            eff = lambda t: f"{t_gpu / (t_gpu + t) * 100:.1f}% ({t * 1e3:.2f} ms)"
            rows.append((label, params, nbytes, cpu, t_gpu, eff(t_node), eff(t_staged), eff(t_multi)))
        for label, params, nbytes, cpu, t_gpu, e1, e2, e3 in rows:
            cpu = f"{cpu:,.0f} ms (batch {cpu_batch})" if cpu else "not measured"
            print(f"| {name} {label} | {params:,} | {nbytes / 1e6:.2f} | {cpu} | {t_gpu * 1e3:.1f} ms ({gpu_batch}) "
                  f"| {e1} | {e2} | {e3} |")


if __name__ == "__main__":
    main()
