#!/usr/bin/env python3
"""profile_emu_step.py - what one training or inference step asks of a GPU, counted on the CUDA
emulator: kernel launches, cuBLAS GEMMs and their FLOPs, copies, memsets, and the host's calls that
queue them. The counts are those of a real GPU, since the host code that decides them is the same
code; what they cost there is not measured here (see docs/BENCHMARKS.md, "A step's work on the
GPU, counted").

How: build/bench_train_emu (bench_train on the emulated device, brought up to date first) runs
each workload with ANYBIT_EMU_PROFILE set, once with `--steps 1` and once with `--steps 1+K`,
after the same warm-up (one step; three with a CUDA graph, which is captured at a step's third
call). The difference of the two profiles, divided by K, is the work of one step in steady state.
The emulator is slow (about 25 s for one FP step of ResNet-20 at batch 128 on one core), so this
takes a while.

  scripts/profile_emu_step.py [--build build] [--only NAME[,NAME...]] [--steps K] [--kernels N]

NAME is a bench_train workload, with ":graph" for --cuda-graph 1 (default: resnet20_train,
resnet20_train:graph, resnet20_infer, resnet20_infer:graph, joint_ce, joint_ours). --kernels N
lists each workload's N most launched kernels (default 0: none).
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time

DEFAULT = ["resnet20_train", "resnet20_train:graph", "resnet20_infer", "resnet20_infer:graph", "joint_ce",
           "joint_ours"]


def read_profile(path):
    """{(side, what, name): (times, amount)} from an ANYBIT_EMU_PROFILE file."""
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            side, what, name, times = parts[:4]
            amount = float(parts[4]) if len(parts) > 4 else 0.0
            rows[(side, what, name)] = (int(times), amount)
    return rows


def run_profile(program, workload, graph, steps):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "profile.tsv")
        env = dict(os.environ, ANYBIT_EMU_PROFILE=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [program, "--device", "cuda", "--cuda-graph", "1" if graph else "0", "--only", workload,
               "--warmup", "3" if graph else "1", "--repeats", "1", "--steps", str(steps), "--threads", "1"]
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            sys.exit("profile_emu_step: %s failed (exit %d):\n%s" % (" ".join(cmd), done.returncode, done.stdout))
        return read_profile(path)


def one_step(program, workload, graph, k):
    """The profile of one step: (run of 1 + k steps) - (run of 1 step), divided by k."""
    base = run_profile(program, workload, graph, 1)
    more = run_profile(program, workload, graph, 1 + k)
    step = {}
    for key in set(base) | set(more):
        t0, a0 = base.get(key, (0, 0.0))
        t1, a1 = more.get(key, (0, 0.0))
        if t1 != t0 or a1 != a0:
            step[key] = ((t1 - t0) / k, (a1 - a0) / k)
    return step


def summary(step):
    s = collections.Counter()
    for (side, what, name), (times, amount) in step.items():
        if side == "host":
            s["host calls"] += times
            if name == "cudaMemcpy":  # synchronous: the host waits for the GPU
                s["waits"] += times
        else:
            s[what + " times"] += times
            s[what + " amount"] += amount
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default=",".join(DEFAULT))
    ap.add_argument("--steps", type=int, default=1, help="K: steps to average over (default 1)")
    ap.add_argument("--kernels", type=int, default=0, help="list each workload's N most launched kernels")
    args = ap.parse_args()
    if args.steps < 1:
        sys.exit("profile_emu_step: --steps needs a positive integer, got %d" % args.steps)
    program = os.path.join(args.build, "bench_train_emu")
    # bench_train_emu is not in the default build: bring it up to date first, so that the counts are
    # those of the source as it is (a stale binary once gave a whole table of old counts).
    if subprocess.run(["cmake", "--build", args.build, "--target", "bench_train_emu"],
                      stdout=subprocess.DEVNULL).returncode != 0 or not os.access(program, os.X_OK):
        sys.exit("profile_emu_step: cannot build %s (cmake --build %s --target bench_train_emu; it needs "
                 "-DANYBIT_CUDA_EMULATOR=ON)" % (program, args.build))

    print("# one step in steady state at the workload's batch (apps/bench_train.cpp lists them), counted on the CUDA emulator (%s)" % program)
    print("| workload | host calls | kernels | GEMMs | GEMM GFLOP | copies | copied MB | memsets | memset MB | "
          "waits for the GPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    details = []
    for item in args.only.split(","):
        workload, _, mode = item.partition(":")
        if mode not in ("", "graph"):
            sys.exit("profile_emu_step: '%s': the only mode is ':graph'" % item)
        t0 = time.time()
        step = one_step(program, workload, mode == "graph", args.steps)
        s = summary(step)
        print("| %s | %g | %g | %g | %.2f | %g | %.2f | %g | %.2f | %g |" % (
            item, s["host calls"], s["kernel times"], s["gemm times"], s["gemm amount"] / 1e9, s["copy times"],
            s["copy amount"] / 1e6, s["memset times"], s["memset amount"] / 1e6, s["waits"]), flush=True)
        print("  (%s: %.0f s)" % (item, time.time() - t0), file=sys.stderr, flush=True)
        details.append((item, step))

    if args.kernels > 0:
        for item, step in details:
            print("\n# %s: the %d most launched kernels (launches and threads per step)" % (item, args.kernels))
            print("| kernel | launches | threads |")
            print("| --- | ---: | ---: |")
            kernels = sorted(((t, a, name) for (side, what, name), (t, a) in step.items() if what == "kernel"),
                             reverse=True)
            for t, a, name in kernels[:args.kernels]:
                print("| `%s` | %g | %.3g |" % (name, t, a))
            host = sorted(((t, name) for (side, what, name), (t, a) in step.items() if side == "host"), reverse=True)
            print("host calls: " + ", ".join("%s %g" % (name, t) for t, name in host))


if __name__ == "__main__":
    main()
