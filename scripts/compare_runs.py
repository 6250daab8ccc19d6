#!/usr/bin/python3
"""compare_runs.py RUN_A RUN_B - how far apart two training runs ended (docs/RESULTS.md, data-parallel
training): the training loss of every bit-width in the last line of each metrics.jsonl, and every tensor
of each model.safetensors (weights, clip values, BN statistics of every set), as relative differences.

A tensor's difference is max |a - b| / max |a| over its elements; the loss's is |a - b| / |a|; the
model's is ||a - b|| / ||a|| over every floating-point tensor together. Prints the worst tensors and
exits 1 when anything is above --rtol (default 1e-5). Reads safetensors with numpy alone (no torch).

Tensors that training has barely moved from zero (BN biases after a few steps from scratch) have
the largest relative differences: their values are a few updates, each a sum over the batch with
cancellation, so the rounding of those sums is a large part of them."""
import argparse, json, struct, sys
import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def last_losses(run):
    lines = [l for l in open(run + "/metrics.jsonl") if l.strip()]
    return {bits: v["loss"] for bits, v in json.loads(lines[-1])["train"].items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--show", type=int, default=3, help="how many of the worst tensors to print")
    args = ap.parse_args()
    worst = 0.0
    la, lb = last_losses(args.a), last_losses(args.b)
    for bits in la:
        r = abs(la[bits] - lb[bits]) / max(abs(la[bits]), 1e-30)
        worst = max(worst, r)
        print(f"loss {bits:>6}: {la[bits]:.6g} vs {lb[bits]:.6g}  relative difference {r:.2e}")
    ta, tb = read_safetensors(args.a + "/model.safetensors"), read_safetensors(args.b + "/model.safetensors")
    assert ta.keys() == tb.keys(), "the two models have different tensors"
    diffs = []
    num = den = 0.0
    for name in ta:
        if ta[name].dtype.kind == "f":
            num += float(np.sum((ta[name].astype(np.float64) - tb[name].astype(np.float64)) ** 2))
            den += float(np.sum(ta[name].astype(np.float64) ** 2))
        x, y = ta[name].astype(np.float64), tb[name].astype(np.float64)
        mag = np.max(np.abs(x)) if x.size else 0.0
        diffs.append(((np.max(np.abs(x - y)) / mag) if mag > 0 else float(np.max(np.abs(y), initial=0)), name))
    diffs.sort(reverse=True)
    print(f"{len(diffs)} tensors; the largest relative differences:")
    for r, name in diffs[:args.show]:
        print(f"  {r:.2e}  {name}")
    print(f"whole model: ||a - b|| / ||a|| = {np.sqrt(num / den):.2e}")
    worst = max(worst, diffs[0][0])
    print(f"worst: {worst:.2e} ({'within' if worst <= args.rtol else 'ABOVE'} {args.rtol:g})")
    sys.exit(0 if worst <= args.rtol else 1)


if __name__ == "__main__":
    main()
