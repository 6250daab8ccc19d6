#!/usr/bin/env python3
"""Gathers the report.json of several anybit run folders into one Markdown table (methods as
rows, bit-widths as columns, test top-1 in %), the form used in README.md and docs/RESULTS.md.

    scripts/collect_results.py runs/mnist_dedicated runs/mnist_adabits ... runs/mnist_ours
"""
import json
import os
import sys


def main(dirs):
    if not dirs:
        sys.exit("usage: collect_results.py RUN_DIR [RUN_DIR ...]")
    reports = []
    for d in dirs:
        path = os.path.join(d, "report.json")
        try:
            with open(path) as f:
                reports.append((d, json.load(f)))
        except (OSError, ValueError) as e:
            sys.exit(f"collect_results.py: cannot read {path}: {e}")
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


if __name__ == "__main__":
    main(sys.argv[1:])
