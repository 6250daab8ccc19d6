#!/usr/bin/python3
"""check_checkpoint.py - does an anybit checkpoint mean the same network in PyTorch?

Reads an anybit safetensors checkpoint with numpy alone (the header is parsed here, by hand),
loads it strictly into the same model written in PyTorch (definitions below, with anybit's
names: see nn/models.h), runs the batch stored in a second safetensors file ("input" and anybit's
"logits") in evaluation mode, and checks that the logits match.

    /usr/bin/python3 scripts/check_checkpoint.py --model resnet20 \
        --checkpoint model.safetensors --batch batch.safetensors [--num-classes 10] [--width 1]

or several at once (torch imports once), one check per line "model width checkpoint batch":

    /usr/bin/python3 scripts/check_checkpoint.py --manifest checks.txt

Exit status 0 when names, shapes, order and logits all match; 1 (one line per check saying what
differs) otherwise; 77 when torch cannot be imported (the test then skips).
tests/test_nn.cpp ("[torch]") writes such files and runs this.
Needs: python3 with numpy and torch (Debian: python3-numpy python3-torch).
"""
import argparse
import json
import struct
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the test skips on 77
    print(f"SKIP numpy or torch is not importable: {e}")
    sys.exit(77)

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "U8": np.uint8, "I8": np.int8}


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata, [names in file order])."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: truncated: {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} beyond the file size {len(data)}")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n:]
    tensors, order = {}, []
    meta = header.pop("__metadata__", {})
    for name, e in header.items():
        dt = np.dtype(DTYPES[e["dtype"]]).newbyteorder("<")
        b, end = e["data_offsets"]
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        if end > len(body) or end - b != count * dt.itemsize:
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {b}, {end}")
        arr = np.frombuffer(body[b:end], dtype=dt, count=count).reshape(e["shape"])
        tensors[name] = arr.copy()
        order.append(name)
    return tensors, meta, order


# ---- the models, with anybit's names -----------------------------------------------------------


class LeNet5(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def plain_conv(inp, out, k, stride=1, padding=0):
    return nn.Conv2d(inp, out, k, stride, padding, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + shortcut, ReLU. `conv` and `norm` make its layers: plain ones here,
    quantized ones in scripts/bench_pytorch.py (same names either way)."""

    def __init__(self, inp, planes, stride, conv=plain_conv, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv(inp, planes, 3, stride, 1)
        self.bn1 = norm(planes)
        self.conv2 = conv(planes, planes, 3, 1, 1)
        self.bn2 = norm(planes)
        self.shortcut = None
        if stride != 1 or inp != planes:  # option B: 1x1 conv + BN
            self.shortcut = nn.Sequential(conv(inp, planes, 1, stride), norm(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20. The stem conv and the classifier are always plain (full precision)."""

    def __init__(self, num_classes=10, conv=plain_conv, norm=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = plain_conv(3, 16, 3, 1, 1)
        self.bn1 = norm(16)
        inp = 16
        for s, w in enumerate([16, 32, 64]):
            blocks = []
            for b in range(3):
                blocks.append(BasicBlock(inp, w, 2 if (s > 0 and b == 0) else 1, conv, norm))
                inp = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PreActBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or inp != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False))

    def forward(self, x):
        o = F.relu(self.bn1(x))
        s = self.shortcut(o) if self.shortcut is not None else x
        y = self.conv1(o)
        return self.conv2(F.relu(self.bn2(y))) + s


class PreActResNet20(nn.Module):
    def __init__(self, num_classes=10, width=1.0):
        super().__init__()
        ws = [int(round(16 * width)), int(round(32 * width)), int(round(64 * width))]
        self.conv1 = nn.Conv2d(3, ws[0], 3, 1, 1, bias=False)
        inp = ws[0]
        for s, w in enumerate(ws):
            blocks = []
            for b in range(3):
                blocks.append(PreActBlock(inp, w, 2 if (s > 0 and b == 0) else 1))
                inp = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(inp)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name, num_classes, width):
    if name == "lenet5":
        return LeNet5(num_classes)
    if name == "resnet20":
        return ResNet20(num_classes)
    if name == "preact_resnet20":
        return PreActResNet20(num_classes, width)
    raise SystemExit(f"check_checkpoint: unknown model {name!r} (lenet5, resnet20, preact_resnet20)")


def check(model_name, width, checkpoint, batch_path, num_classes, rtol, atol):
    """Returns None when everything matches, else a line saying what differs."""
    model = build(model_name, num_classes, width)
    state, meta, order = read_safetensors(checkpoint)
    torch_names = list(model.state_dict().keys())
    if set(order) != set(torch_names):
        missing = sorted(set(torch_names) - set(order))
        extra = sorted(set(order) - set(torch_names))
        return f"names differ: missing from the checkpoint {missing[:10]}, not in PyTorch {extra[:10]}"
    if order != torch_names:
        first = next(i for i, (x, y) in enumerate(zip(order, torch_names)) if x != y)
        return f"state dict order differs at {first}: anybit {order[first]}, PyTorch {torch_names[first]}"
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.eval()

    batch, _, _ = read_safetensors(batch_path)
    x = torch.from_numpy(batch["input"])
    want = batch["logits"]
    with torch.no_grad():
        got = model(x).numpy()
    if got.shape != want.shape:
        return f"logits shape: PyTorch {got.shape}, anybit {want.shape}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    tol = atol + rtol * np.abs(want.astype(np.float64))
    if not np.all(err <= tol):
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        return (f"logits differ: max |diff| {err.max():.3g} at {tuple(int(j) for j in i)} "
                f"(PyTorch {got[i]:.6g}, anybit {want[i]:.6g})")
    print(f"OK {model_name}: {len(order)} tensors, {sum(v.size for v in state.values())} values, "
          f"logits {tuple(want.shape)} match (max |diff| {err.max():.3g})")
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--checkpoint")
    ap.add_argument("--batch", help='safetensors with "input" and "logits"')
    ap.add_argument("--manifest", help='lines "model width checkpoint batch"')
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-4)
    a = ap.parse_args()

    torch.set_num_threads(1)
    checks = []
    if a.manifest:
        with open(a.manifest) as f:
            for line in f:
                if line.strip():
                    m, w, c, b = line.split()
                    checks.append((m, float(w), c, b))
    elif a.model and a.checkpoint and a.batch:
        checks.append((a.model, a.width, a.checkpoint, a.batch))
    else:
        ap.error("give --model, --checkpoint and --batch, or --manifest")
    failed = 0
    for m, w, c, b in checks:
        try:
            err = check(m, w, c, b, a.num_classes, a.rtol, a.atol)
        except Exception as e:  # a reader or load_state_dict error: report it as this check's failure
            err = f"{type(e).__name__}: {e}"
        if err:
            print(f"FAIL {m} ({c}): {err}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
