#!/usr/bin/env python3
"""gpu_profile.py - where one step's GPU time goes, from `bench_train --gpu-profile DIR`.

bench_train writes DIR/<workload>.csv: one line per kernel, GEMM, copy or graph replay of one
step, in queue order, with the line of anybit that queued it (tensor/cuda/*.cu:LINE) and its GPU
time (cuda::profile_begin, tensor/cuda/cuda.h). This script names each line by what it queued
(the kernel launched there, read from the source; "cuBLAS GEMM" with its shape; the copy) and
prints, per workload, the time of each, largest first:

    scripts/gpu_profile.py DIR [--top N]

A line whose `in_time` is 0 was queued after the GPU had finished the work before it (the step
waited for the GPU, or the host was slower than the hold), so its time includes the GPU's wait
for the host: the totals say how many.
"""
import argparse
import csv
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = re.compile(r"([A-Za-z_]\w*)\s*(<[^<>;()]*>)?\s*<<<")
FUNCTION = re.compile(r"^\S.*?\b([A-Za-z_]\w*)\(")  # a definition starting at column 0


def name_of(site, detail, cache={}):
    """What the line `site` (path:line) queued (read from the source as it is now: profile a build
    of the source you have)."""
    path, line = site.rsplit(":", 1)
    if path.endswith("gemm.cu"):
        return "cuBLAS GEMM " + detail  # one line queues every GEMM: its shape tells them apart
    if site in cache:
        return cache[site]
    line = int(line)
    try:
        with open(os.path.join(ROOT, path)) as f:
            lines = f.read().split("\n")
    except OSError:
        lines = []
    name = None
    # a kernel: launched on the lines before AB_CUDA_CHECK_LAUNCH (a launch may span several)
    for i in range(line - 2, max(line - 8, -1), -1):
        m = LAUNCH.search(lines[i]) if i < len(lines) else None
        if m:
            name = m.group(1)
            break
    if name is None:  # a copy, a memset or a replay: the function that queued it
        for i in range(min(line - 1, len(lines) - 1), -1, -1):
            m = FUNCTION.match(lines[i])
            if m and not lines[i].startswith(("//", "#", "}")):
                name = m.group(1)
                break
    cache[site] = name or site
    return cache[site]


def report(path, top):
    rows = list(csv.DictReader(open(path)))
    workload = os.path.splitext(os.path.basename(path))[0]
    groups = {}
    total = 0.0
    late = 0
    for r in rows:
        us = float(r["gpu_us"])
        total += us
        late += r["in_time"] != "1"
        key = name_of(r["site"], r["detail"])
        g = groups.setdefault(key, {"us": 0.0, "n": 0, "flops": 0.0, "bytes": 0.0, "sites": set()})
        g["us"] += us
        g["n"] += 1
        g["flops"] += float(r["flops"])
        g["bytes"] += float(r["bytes"])
        g["sites"].add(r["site"])
    print(f"## {workload}: {len(rows)} entries, GPU time {total / 1e3:.3f} ms"
          + (f"; {late} queued late (their times include waits for the host)" if late else ""))
    print(f"{'what':<44} {'calls':>6} {'us':>10} {'share':>7} {'us/call':>9}  rate")
    for key, g in sorted(groups.items(), key=lambda kv: -kv[1]["us"])[:top]:
        rate = ""
        if g["flops"] and g["us"]:
            rate = f"{g['flops'] / g['us'] * 1e-6:.2f} TFLOP/s"
        elif g["bytes"] and g["us"]:
            rate = f"{g['bytes'] / g['us'] * 1e-3:.1f} GB/s"
        print(f"{key[:44]:<44} {g['n']:>6} {g['us']:>10.1f} {100 * g['us'] / max(total, 1e-9):>6.1f}% "
              f"{g['us'] / g['n']:>9.2f}  {rate}")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the folder given to bench_train --gpu-profile")
    ap.add_argument("--top", type=int, default=25, help="lines per workload (default 25)")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.dir, "*.csv")))
    if not files:
        sys.exit(f"gpu_profile.py: no .csv files in {a.dir} (run bench_train --device cuda --gpu-profile {a.dir})")
    for f in files:
        report(f, a.top)


if __name__ == "__main__":
    main()
