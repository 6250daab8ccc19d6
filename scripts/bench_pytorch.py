#!/usr/bin/python3
"""bench_pytorch.py - the workloads of apps/bench_train.cpp written in PyTorch: the reference
anybit's training speed is compared with (scripts/bench.sh runs both, alternating).

Workloads (same names, batch sizes, step contents and timing method as bench_train):
  resnet20_train   CIFAR ResNet-20 (16/32/64, option-B 1x1 conv + BN shortcuts), batch 128 of
                   (3, 32, 32): forward, cross-entropy, backward, SGD (momentum 0.9, wd 5e-4)
  resnet20_infer   eval mode under torch.no_grad(), batch 128
  resnet20_infer_1 the same at batch 1 (latency; only with --only, as in bench_train)
  lenet5_train     LeNet-5, batch 256 of (1, 28, 28)
  lenet5_infer     LeNet-5 inference, batch 256
  joint_ce         fake-quantized ResNet-20 over bit-widths 8, 6, 4, 2: four forward + CE +
                   backward passes into the shared weights, then one SGD step. DoReFa weights
                   (tanh normalise, round with a straight-through estimator), PACT activations
                   (learnable clip per bit-width) on the input of every conv except the stem,
                   switchable BN (one BN set per bit-width); stem conv and classifier in FP
                   (anybit's quant/qlayers.h, METHOD.md section 2)
  joint_ours       not run here: PyTorch has no reference for collab + swap (bench_train only)
  quant4_train     the same quantized ResNet-20 with the bit set {4}: one pass and one step
  mobilenetv2_train        MobileNetV2 (torchvision's), batch 128 of (3, 224, 224); only with --only
  mobilenetv2_cifar_train  the same with small_input (stem and first stride-2 stage at stride 1),
                           batch 128 of (3, 32, 32); only with --only
The models are those of scripts/check_checkpoint.py (anybit's names and architectures).
Timing: `warmup` untimed steps, then `repeats` runs of `steps` steps; images/s of the median run.
Output: `name images_per_s` lines, and a human table whose lines start with '#'.

    /usr/bin/python3 scripts/bench_pytorch.py [--only NAME[,NAME]] [--steps 3] [--repeats 3]
                                              [--device cpu|cuda] [--tf32 default|0|1]

Threads: torch.set_num_threads(2) (Debian's torch defaults to 1 here). glibc malloc is tuned as
docs/PERF-NOTES.md says (MALLOC_MMAP_THRESHOLD_ and friends); they must be set before the process
starts, so the script re-executes itself with them when they are missing.
Needs: Debian's python3-torch (1.13.1, CPU), run with /usr/bin/python3.
"""
import argparse
import functools
import os
import sys
import time

MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "1073741824",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "MALLOC_TOP_PAD_": "536870912",
}
if any(k not in os.environ for k in MALLOC_ENV):
    env = dict(os.environ)
    for k, v in MALLOC_ENV.items():
        env.setdefault(k, v)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    print(f"bench_pytorch: SKIP torch is not importable ({e}); run with /usr/bin/python3", file=sys.stderr)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_checkpoint import LeNet5, ResNet20  # noqa: E402  (the same definitions as anybit's)

WORKLOADS = ["resnet20_train", "resnet20_infer", "lenet5_train", "lenet5_infer", "joint_ce", "quant4_train"]
EXTRA = ["resnet20_infer_1", "mobilenetv2_train", "mobilenetv2_cifar_train"]  # only with --only
# bench_train's workloads with no PyTorch counterpart: named in --only, they are skipped, saying so
# (scripts/bench.sh passes one --only to both programs).
ANYBIT_ONLY = ["joint_ours"] + [f"{k}{b}_infer{s}" for k in ("int", "pact") for b in (8, 6, 4, 2) for s in ("", "_1")]


# ---- fake quantization (quant/quantizers.h) -------------------------------------------------------


def round_ste(x):
    """round(x) forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def dorefa_weight(w, bits):
    """u = tanh(w) / (2 max|tanh w|) + 1/2;  w_q = 2 round((2^b - 1) u) / (2^b - 1) - 1."""
    t = torch.tanh(w)
    u = t / (2 * t.abs().max()) + 0.5
    n = 2 ** bits - 1
    return 2 * round_ste(u * n) / n - 1


def pact(x, a, bits):
    """y = clamp(x, 0, a);  x_q = round(y (2^b - 1) / a) a / (2^b - 1). dx: 1 inside [0, a]; da: x >= a."""
    y = torch.minimum(F.relu(x), a)
    n = 2 ** bits - 1
    return round_ste(y * (n / a)) * (a / n)


class Bits:
    """The bit-width every quantized layer of one model uses now (shared by reference)."""

    def __init__(self, bit_set):
        self.bit_set = list(bit_set)
        self.active = self.bit_set[0]


class QConv2d(nn.Conv2d):
    def __init__(self, bits, inp, out, k, stride=1, padding=0, clip_init=8.0):
        super().__init__(inp, out, k, stride, padding, bias=False)
        self.bits = bits
        self.clips = nn.ParameterList([nn.Parameter(torch.tensor(clip_init)) for _ in bits.bit_set])

    def forward(self, x):
        b = self.bits.active
        xq = pact(x, self.clips[self.bits.bit_set.index(b)], b)
        return F.conv2d(xq, dorefa_weight(self.weight, b), None, self.stride, self.padding)


class MultiBN(nn.Module):
    """One BatchNorm2d per bit-width; the active one is used (switchable BN)."""

    def __init__(self, bits, c):
        super().__init__()
        self.bits = bits
        self.bn = nn.ModuleList([nn.BatchNorm2d(c) for _ in bits.bit_set])

    def forward(self, x):
        return self.bn[self.bits.bit_set.index(self.bits.active)](x)


def QResNet20(bit_set, num_classes=10):
    """ResNet-20 with FP stem conv and classifier, every other conv quantized, switchable BN:
    check_checkpoint's ResNet20 built from quantized layers. `model.bits` sets the bit-width."""
    bits = Bits(bit_set)
    model = ResNet20(num_classes, conv=functools.partial(QConv2d, bits), norm=functools.partial(MultiBN, bits))
    model.bits = bits
    return model


# ---- workloads: (batch, step function) ------------------------------------------------------------


DEV = torch.device("cpu")  # --device: where models and batches live (cuda: cuDNN, as PyTorch eager)


# ---- MobileNetV2 (nn/models.cpp: torchvision's, with anybit's small_input option) --------------------


def make_divisible(v, divisor=8):
    """torchvision's _make_divisible: round to a multiple of 8, never down by more than 10%."""
    nv = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return nv + divisor if nv < 0.9 * v else nv


def conv_bn_relu6(inp, out, k, stride, groups=1):
    return nn.Sequential(nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expand):
        super().__init__()
        hidden = inp * expand
        layers = [conv_bn_relu6(inp, hidden, 1, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, hidden),  # depthwise
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, small_input=False):
        super().__init__()
        inp, last = 32, 1280
        features = [conv_bn_relu6(3, inp, 3, 1 if small_input else 2)]
        # t (expansion), c (channels), n (blocks), s (stride of the first block)
        for i, (t, c, n, s) in enumerate([(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]):
            s = 1 if small_input and i == 1 else s
            for b in range(n):
                features.append(InvertedResidual(inp, make_divisible(c), s if b == 0 else 1, t))
                inp = make_divisible(c)
        features.append(conv_bn_relu6(inp, last, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def data(batch, sample, g):
    x = torch.randn((batch,) + sample, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return x.to(DEV), y.to(DEV)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def fp_train(model, batch, sample):
    g = torch.Generator().manual_seed(7)
    x, y = data(batch, sample, g)
    model.to(DEV)
    opt = sgd(model)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return batch, step


def fp_infer(model, batch, sample):
    g = torch.Generator().manual_seed(7)
    x, _ = data(batch, sample, g)
    model.to(DEV)
    model.eval()

    def step():
        with torch.no_grad():
            model(x)
    return batch, step


def quant_train(bit_set, batch):
    g = torch.Generator().manual_seed(7)
    x, y = data(batch, (3, 32, 32), g)
    model = QResNet20(bit_set).to(DEV)
    opt = sgd(model)
    model.train()
    order = sorted(bit_set, reverse=True)

    def step():
        opt.zero_grad(set_to_none=True)
        for b in order:  # gradients of every bit-width accumulate into the shared weights
            model.bits.active = b
            F.cross_entropy(model(x), y).backward()
        opt.step()
    return batch, step


def make(name):
    torch.manual_seed(1)
    if name == "resnet20_train":
        return fp_train(ResNet20(10), 128, (3, 32, 32))
    if name == "resnet20_infer":
        return fp_infer(ResNet20(10), 128, (3, 32, 32))
    if name == "resnet20_infer_1":
        return fp_infer(ResNet20(10), 1, (3, 32, 32))
    if name == "lenet5_train":
        return fp_train(LeNet5(10), 256, (1, 28, 28))
    if name == "lenet5_infer":
        return fp_infer(LeNet5(10), 256, (1, 28, 28))
    if name == "joint_ce":
        return quant_train([8, 6, 4, 2], 128)
    if name == "quant4_train":
        return quant_train([4], 128)
    if name == "mobilenetv2_train":
        return fp_train(MobileNetV2(10), 128, (3, 224, 224))
    if name == "mobilenetv2_cifar_train":
        return fp_train(MobileNetV2(10, small_input=True), 128, (3, 32, 32))
    raise SystemExit(f"bench_pytorch: unknown workload {name!r} (valid: {', '.join(WORKLOADS)})")


def finish():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def measure(batch, step, steps, repeats, warmup):
    for _ in range(warmup):
        step()
    finish()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        finish()
        times.append(time.perf_counter() - t0)
    return batch * steps / sorted(times)[len(times) // 2]  # as bench_train: the upper median for even counts


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuDNN, default settings)")
    p.add_argument("--tf32", default="default", choices=["default", "0", "1"],
                   help="with cuda: TF32 for convolutions and matmuls: 0 off for both (plain float32, as anybit's "
                        "default), 1 on for both (as anybit's --cuda-tf32 1), default PyTorch's own (on for cuDNN "
                        "convolutions, off for matmul)")
    a = p.parse_args()
    global DEV
    DEV = torch.device(a.device)
    if a.tf32 != "default":
        torch.backends.cudnn.allow_tf32 = a.tf32 == "1"
        torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "1"
    names = [n for n in a.only.split(",") if n] or WORKLOADS
    for n in names:
        if n not in WORKLOADS + EXTRA + ANYBIT_ONLY:
            raise SystemExit(f"bench_pytorch: unknown workload {n!r} (valid: {', '.join(WORKLOADS + EXTRA)})")
    skipped = [n for n in names if n in ANYBIT_ONLY]
    names = [n for n in names if n not in ANYBIT_ONLY]
    if skipped:
        print(f"# bench_pytorch: not run here (anybit only): {', '.join(skipped)}")
    torch.set_num_threads(a.threads)
    print(f"# bench_pytorch: torch {torch.__version__}, {torch.get_num_threads()} threads, warm-up {a.warmup} "
          f"steps, median of {a.repeats} runs of {a.steps} steps; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}" +
          (f"; device cuda, TF32 for cuDNN convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, "
           f"for matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}" if DEV.type == "cuda" else ""),
          flush=True)
    ips = {}
    for n in names:
        batch, step = make(n)
        ips[n] = measure(batch, step, a.steps, a.repeats, a.warmup)
        print(f"{n} {ips[n]:.1f}", flush=True)
    print("#")
    print(f"# {'workload':<24} {'batch':>8} {'images/s':>12} {'ms/step':>10}")
    for n in names:
        batch = 256 if n.startswith("lenet5") else (1 if n.endswith("_1") else 128)
        print(f"# {n:<24} {batch:>8} {ips[n]:>12.1f} {1e3 * batch / ips[n]:>10.2f}")
    if "resnet20_train" in ips:
        for q in ("quant4_train", "joint_ce"):
            if q in ips:
                print(f"# {q} / resnet20_train step time: {ips['resnet20_train'] / ips[q]:.2f}x")


if __name__ == "__main__":
    main()
