#!/usr/bin/env python3
"""Gathers anybit run folders into the Markdown tables used in README.md and docs/RESULTS.md.

    scripts/collect_results.py runs/mnist_dedicated runs/mnist_adabits ... runs/mnist_ours
        one row per run (its report.json): test top-1 in % per bit-width
    scripts/collect_results.py --curves runs/cifar10_adabits runs/cifar10_anyprec runs/cifar10_ours
        one row per epoch (each run's metrics.jsonl): every run's test top-1 per bit-width, side by side
    scripts/collect_results.py --seeds runs/seeds/mnist_*_s1 runs/seeds/mnist_*_s2 runs/seeds/mnist_*_s3
        one row per method (the runs' report name), in the order first seen: the mean test top-1 per
        bit-width over its runs, the sample standard deviation, and the lowest and highest run
"""
import json
import os
import statistics
import sys


def read_reports(dirs):
    reports = []
    for d in dirs:
        path = os.path.join(d, "report.json")
        try:
            with open(path) as f:
                reports.append((d, json.load(f)))
        except (OSError, ValueError) as e:
            sys.exit(f"collect_results.py: cannot read {path}: {e}")
    return reports


def final_table(dirs):
    reports = read_reports(dirs)
    labels = []
    for _, r in reports:
        for row in r["results"]:
            if row["label"] not in labels:
                labels.append(row["label"])
    print("| method | " + " | ".join(labels) + " |")
    print("| --- | " + " | ".join("---:" for _ in labels) + " |")
    for d, r in reports:
        by = {row["label"]: row["top1"] for row in r["results"]}
        cells = [f"{by[l]:.2f}" if l in by else "-" for l in labels]
        print(f"| {r['name']} (`{d}`) | " + " | ".join(cells) + " |")


def read_curve(d):
    """epoch -> {bit label: test top-1} from d/metrics.jsonl (the last line of an epoch wins: a resumed
    run may repeat one)."""
    path = os.path.join(d, "metrics.jsonl")
    curve = {}
    try:
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                test = rec["test"]
                curve[rec["epoch"]] = test if isinstance(test, dict) else {"fp32": test}
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"collect_results.py: cannot read the per-epoch test accuracy of {path}: {e}")
    return curve


def curves_table(dirs):
    curves = [(os.path.basename(d.rstrip("/")), read_curve(d)) for d in dirs]
    labels = []
    for _, c in curves:
        for test in c.values():
            labels += [l for l in test if l not in labels]
    epochs = sorted({e for _, c in curves for e in c})
    print("| epoch | " + " | ".join(f"{name} {' / '.join(labels)}" for name, _ in curves) + " |")
    print("| ---: | " + " | ".join("---" for _ in curves) + " |")
    for e in epochs:
        cells = []
        for _, c in curves:
            test = c.get(e)
            cells.append(" / ".join(f"{test[l]:.2f}" if test and l in test else "-" for l in labels))
        print(f"| {e} | " + " | ".join(cells) + " |")


def seeds_table(dirs):
    """Runs of the same method with different seeds, grouped by the name in their report."""
    reports = read_reports(dirs)
    labels, methods = [], {}  # methods: name -> {label: [top-1 of each run]}
    for _, r in reports:
        by_label = methods.setdefault(r["name"], {})
        for row in r["results"]:
            if row["label"] not in labels:
                labels.append(row["label"])
            by_label.setdefault(row["label"], []).append(row["top1"])
    print("| method (runs) | " + " | ".join(f"{l} mean ± sd (min-max)" for l in labels) + " |")
    print("| --- | " + " | ".join("---:" for _ in labels) + " |")
    for name, by_label in methods.items():
        cells = []
        for l in labels:
            v = by_label.get(l, [])
            if not v:
                cells.append("-")
                continue
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            cells.append(f"{statistics.mean(v):.2f} ± {sd:.2f} ({min(v):.2f}-{max(v):.2f})")
        n = max(len(v) for v in by_label.values())
        print(f"| {name} ({n}) | " + " | ".join(cells) + " |")


def main(argv):
    mode = argv[0] if argv[:1] in (["--curves"], ["--seeds"]) else ""
    dirs = argv[1:] if mode else argv
    if not dirs:
        sys.exit("usage: collect_results.py [--curves | --seeds] RUN_DIR [RUN_DIR ...]")
    {"--curves": curves_table, "--seeds": seeds_table, "": final_table}[mode](dirs)


if __name__ == "__main__":
    main(sys.argv[1:])
