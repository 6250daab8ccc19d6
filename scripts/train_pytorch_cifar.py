#!/usr/bin/python3
"""train_pytorch_cifar.py - the CIFAR-10 full-precision recipe of configs/cifar10_fp.cfg, in PyTorch.

The reference that tells whether a test accuracy of anybit's FP run comes from the recipe and the
data (the lossy JPEG copy of CIFAR-10) or from anybit: same model (check_checkpoint.py's ResNet20,
torchvision's initialisation), same augmentation (4-pixel zero padding + random 32x32 crop,
horizontal flip with p = 0.5, then the same per-channel normalisation), same optimiser (SGD 0.1,
momentum 0.9, Nesterov, weight decay 5e-4 on every parameter), the same cosine schedule stepped per
iteration down to 0, batch 128, reshuffled every epoch.

    /usr/bin/python3 scripts/train_pytorch_cifar.py --data datasets/cifar10 --out runs/torch_cifar10_fp

Writes OUT/metrics.jsonl (one line per epoch: lr, train loss/accuracy, test top-1, seconds) and
prints the same line. After every epoch OUT/state.pt holds the model, the optimiser, the epoch and
both random generators (written to a temporary file, then renamed), so a stopped run continues
with --resume 1 and ends as the uninterrupted run would. --epochs and --limit (images per split)
make a smoke run.
Needs: Debian's python3-torch, python3-numpy and python3-pil; run with /usr/bin/python3.
"""
import argparse
import json
import math
import os
import sys
import time

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from PIL import Image
except ImportError as e:
    print(f"train_pytorch_cifar: SKIP torch, numpy or PIL is not importable ({e}); run with /usr/bin/python3",
          file=sys.stderr)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_checkpoint import ResNet20  # noqa: E402  (anybit's resnet20, same names)

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)  # data/transforms.cpp kCifar10Mean
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)  # kCifar10Std


def load_split(root, split, limit):
    """root/split/<class>/<file> -> uint8 images (N, 32, 32, 3), int64 labels; classes sorted by name."""
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        sys.exit(f"train_pytorch_cifar: {folder}: not a folder (expected an image-folder tree; "
                 "scripts/get-data.sh cifar10 puts one in place)")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files = [(os.path.join(folder, c, f), k) for k, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(folder, c)))]
    if limit:
        files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:limit]]
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in files])
    labels = np.array([k for _, k in files], np.int64)
    return images, labels


def to_tensor(images):
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, H, W)."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def augment(images, rng):
    """Zero padding of 4 (black pixels, before normalisation), a random 32x32 window, a coin-flip mirror."""
    n, h, w, _ = images.shape
    padded = np.zeros((n, h + 8, w + 8, 3), np.uint8)
    padded[:, 4:4 + h, 4:4 + w] = images
    ys, xs, flips = rng.integers(0, 9, n), rng.integers(0, 9, n), rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, ys[i]:ys[i] + h, xs[i]:xs[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def init_torchvision(model):
    """nn/models.cpp init_torchvision: Kaiming-normal (fan_out, ReLU) convs, BN 1/0; Linear as PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def evaluate(model, x, y, batch):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(y)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="image-folder root with train/ and test/")
    ap.add_argument("--out", required=True, help="folder for metrics.jsonl")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only this many images of each split (smoke runs)")
    ap.add_argument("--resume", type=int, default=0, help="1: continue from OUT/state.pt")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    train_images, train_labels = load_split(args.data, "train", args.limit)
    test_images, test_labels = load_split(args.data, "test", args.limit)
    x_test, y_test = to_tensor(test_images), torch.from_numpy(test_labels)
    print(f"train_pytorch_cifar: {len(train_labels)} train, {len(test_labels)} test images "
          f"decoded in {time.time() - t0:.1f} s", flush=True)

    model = ResNet20()
    init_torchvision(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(train_labels) // args.batch  # the last partial batch is dropped, as anybit does
    total = steps_per_epoch * args.epochs
    os.makedirs(args.out, exist_ok=True)
    state_path = os.path.join(args.out, "state.pt")
    it, first_epoch = 0, 1
    if args.resume:
        if not os.path.isfile(state_path):
            sys.exit(f"train_pytorch_cifar: --resume 1: {state_path} does not exist (nothing to continue)")
        state = torch.load(state_path)
        saved = (state["epochs"], state["batch"], state["lr"], state["limit"])
        if saved != (args.epochs, args.batch, args.lr, args.limit):
            sys.exit(f"train_pytorch_cifar: --resume 1: {state_path} was written by a run with --epochs, --batch, "
                     f"--lr, --limit = {saved}, this one has {(args.epochs, args.batch, args.lr, args.limit)}: "
                     "the schedule would not continue")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        it, first_epoch = state["iteration"], state["epoch"] + 1
        print(f"train_pytorch_cifar: resumed from {state_path} after epoch {state['epoch']}", flush=True)
    log = open(os.path.join(args.out, "metrics.jsonl"), "a" if args.resume else "w")
    for epoch in range(first_epoch, args.epochs + 1):
        model.train()
        t0 = time.time()
        order = rng.permutation(len(train_labels))
        loss_sum, correct, seen = 0.0, 0, 0
        for s in range(steps_per_epoch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            x, y = to_tensor(augment(train_images[idx], rng)), torch.from_numpy(train_labels[idx])
            lr = 0.5 * args.lr * (1 + math.cos(math.pi * it / total))  # cosine per iteration, 0 at the end
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            it += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        rec = {"epoch": epoch, "iteration": it, "lr": lr, "seconds": round(time.time() - t0, 1),
               "train": {"loss": loss_sum / seen, "acc": 100.0 * correct / seen},
               "test": evaluate(model, x_test, y_test, 500)}
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        save_state(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                                "epoch": epoch, "iteration": it, "epochs": args.epochs, "batch": args.batch,
                                "lr": args.lr, "limit": args.limit})


def save_state(path, state):
    """torch.save to path + ".tmp", fsync, rename: a stop mid-write leaves the previous state whole."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
