#!/usr/bin/python3
"""make_golden.py - writes the golden fixtures that tests/test_golden.cpp compares anybit against.

Run with Debian's interpreter, which has python3-torch:  /usr/bin/python3 scripts/make_golden.py

For each case PyTorch (float64, seeded) computes the outputs and the gradients of every input and
parameter; the file tests/fixtures/golden_<case>.safetensors holds them by name:
  inputs and parameters   "input", "weight", "bias", "conv1.weight", ...
  outputs                 "out" (and "loss" for losses), updated buffers "running_mean", ...
  upstream gradient       "grad.out": backward is run as out.backward(grad.out)
  gradients               "grad.<name>" for every input and parameter that has one
Options of the computation (stride, padding, ...) are fixed per case in this script and in the
test, which mirror each other (see the comment above each case).
One case is a whole training run: resnet20_sgd, three SGD steps of ResNet-20, compared by
tests/test_golden_train.cpp; its layout (initial state dict, per-step summaries of gradients and
weights) is described above case_resnet20_sgd.
Reruns write byte-identical files (seeded per case; the ResNet-20 case runs on one thread).

The format is safetensors: an 8-byte little-endian header length, a JSON header
{name: {"dtype": "F64"|"F32"|"I64", "shape": [...], "data_offsets": [begin, end]}}, then the raw
little-endian data. It is written with numpy alone (no safetensors package needed); the test-side
reader is tests/safetensors_read.h.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "..", "tests", "fixtures")

DTYPES = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("int64"): "I64"}


def write_safetensors(path, tensors):
    """tensors: dict name -> torch.Tensor or numpy array (float64, float32 or int64)."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        a = np.array(a, order="C")  # (ascontiguousarray would turn a 0-d array into 1-d)
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # pad so that the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape, dtype=torch.float64) * scale).requires_grad_()


def grads(named):
    """named: dict name -> leaf tensor; returns {"grad.name": grad} for those that have one."""
    return {"grad." + n: t.grad for n, t in named.items() if t.grad is not None}


def case_linear():
    # x: (4, 5), weight: (3, 5), bias: (3) -> out (4, 3)
    x, w, b = leaf(4, 5), leaf(3, 5), leaf(3)
    out = F.linear(x, w, b)
    g = torch.randn_like(out)
    out.backward(g)
    named = {"input": x, "weight": w, "bias": b}
    return {**named, "out": out, "grad.out": g, **grads(named)}


def conv_case(x_shape, w_shape, stride, padding, groups):
    x, w, b = leaf(*x_shape), leaf(*w_shape, scale=0.5), leaf(w_shape[0])
    out = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    g = torch.randn_like(out)
    out.backward(g)
    named = {"input": x, "weight": w, "bias": b}
    return {**named, "out": out, "grad.out": g, **grads(named)}


def case_conv2d_plain():
    # x: (2, 3, 6, 6), weight: (4, 3, 3, 3), stride 1, padding 0, groups 1 -> (2, 4, 4, 4)
    return conv_case((2, 3, 6, 6), (4, 3, 3, 3), stride=1, padding=0, groups=1)


def case_conv2d_stride2_pad1():
    # x: (2, 3, 7, 7), weight: (4, 3, 3, 3), stride 2, padding 1, groups 1 -> (2, 4, 4, 4)
    return conv_case((2, 3, 7, 7), (4, 3, 3, 3), stride=2, padding=1, groups=1)


def case_conv2d_groups2():
    # x: (2, 4, 5, 5), weight: (6, 2, 3, 3), stride 1, padding 1, groups 2 -> (2, 6, 5, 5)
    return conv_case((2, 4, 5, 5), (6, 2, 3, 3), stride=1, padding=1, groups=2)


def bn_case(x_shape):
    # training mode, momentum 0.1, eps 1e-5; running statistics start from random values
    C = x_shape[1]
    x = leaf(*x_shape, scale=2.0)
    with torch.no_grad():
        x += 0.5  # a non-zero mean
    w, b = leaf(C), leaf(C)
    rm0 = torch.randn(C, dtype=torch.float64)
    rv0 = torch.rand(C, dtype=torch.float64) + 0.5
    rm, rv = rm0.clone(), rv0.clone()
    out = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    named = {"input": x, "weight": w, "bias": b}
    return {**named, "running_mean.before": rm0, "running_var.before": rv0, "running_mean": rm,
            "running_var": rv, "out": out, "grad.out": g, **grads(named)}


def case_batch_norm_train():
    # x: (4, 3, 5, 5)
    return bn_case((4, 3, 5, 5))


def case_batch_norm_train_2d():
    # x: (8, 3)
    return bn_case((8, 3))


def ce_case(label_smoothing):
    # logits: (6, 5), labels: (6) int64 -> mean loss
    z = leaf(6, 5, scale=2.0)
    labels = torch.tensor([0, 4, 2, 2, 1, 3], dtype=torch.int64)
    loss = F.cross_entropy(z, labels, label_smoothing=label_smoothing)
    loss.backward()
    return {"logits": z, "labels": labels, "loss": loss, "grad.logits": z.grad}


def case_cross_entropy():
    return ce_case(0.0)


def case_cross_entropy_smooth():
    # label smoothing 0.1
    return ce_case(0.1)


class BasicBlock(torch.nn.Module):
    """ResNet basic block with a projection shortcut:
    out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), shortcut = bn(conv1x1, stride 2)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                                            torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


def case_resnet_block():
    # x: (2, 4, 8, 8) -> (2, 8, 4, 4); block in training mode; BN affine parameters are
    # randomised (not 1 and 0) so that their gradients are tested in general position.
    block = BasicBlock(4, 8, 2).double().train()
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.2)
    x = leaf(2, 4, 8, 8)
    params = dict(block.named_parameters())
    before = {n + ".before": b.clone() for n, b in block.named_buffers() if "running" in n}
    named_in = {n: p.detach().clone() for n, p in params.items()}
    out = block(x)
    g = torch.randn_like(out)
    out.backward(g)
    res = {"input": x, "out": out, "grad.out": g, "grad.input": x.grad, **named_in, **before}
    for n, p in params.items():
        res["grad." + n] = p.grad
    for n, b in block.named_buffers():
        if "running" in n:
            res[n] = b
    return res


# ---- three SGD steps of ResNet-20 -------------------------------------------------------------------
# A whole training step, not one op: anybit's resnet20 (nn/models.h) and the PyTorch twin with the
# same names (scripts/check_checkpoint.py) start from the same weights and see the same batch.
# The weights and the batch are stored in float32 (the exact starting point of both sides); the
# reference then computes in float64. A full copy of the weights is 1.1 MB in float32, so instead of
# storing the gradients and the updated weights of every step in full, each named tensor T gets a
# summary that any error of its values changes, a float64 vector
#   [sum T, sum |T|, sum T^2, max |T|, T.flatten()[probe_index.<name>]...]
# (the last part: T's values at up to 16 fixed random positions), stored under step{k}.grad.<name>,
# step{k}.param.<name> and step{k}.buffer.<name>.
RESNET_PROBES = 16


def summary(key, t, index):
    f = t.detach().to(torch.float64).flatten()
    stats = torch.stack([f.sum(), f.abs().sum(), (f * f).sum(), f.abs().max()])
    return {key: torch.cat([stats, f[index]])}


def case_resnet20_sgd():
    # anybit: nn::make_model("resnet20", 10); batch x: (8, 3, 16, 16) (16x16 rather than CIFAR's 32x32
    # keeps the test fast; every layer runs as on 32x32, the last stage at 4x4), labels: (8) int64 in [0, 10);
    # training mode (BN uses batch statistics, momentum 0.1, eps 1e-5); cross_entropy (mean);
    # SGD lr 0.1, momentum 0.9, nesterov, weight_decay 5e-4 on every parameter; three steps of
    #   zero_grad, forward, loss, backward (-> step{k}.grad.*, step{k}.loss), step (-> step{k}.param.*,
    #   and the BN statistics the forward updated -> step{k}.buffer.*)
    from check_checkpoint import ResNet20  # the PyTorch twin, with anybit's names

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order: reruns give byte-identical files
    try:
        model = ResNet20(10)
        with torch.no_grad():  # anybit's initialisation (kaiming fan_out), BN in general position
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                    m.bias.copy_(torch.randn_like(m.bias) * 0.1)
                    m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                    m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
        res = {}
        for n, t in model.state_dict().items():
            res["init." + n] = t.clone() if t.dtype == torch.int64 else t.to(torch.float32)
        x = torch.randn(8, 3, 16, 16, dtype=torch.float32)
        labels = torch.randint(0, 10, (8,), dtype=torch.int64)
        res["input"], res["labels"] = x, labels

        # The float64 computation starts from the float32 values exactly.
        model = model.double().train()
        model.load_state_dict({n[len("init."):]: t for n, t in res.items() if n.startswith("init.")})
        probe = {}
        for n, t in model.state_dict().items():
            if t.dtype != torch.int64:
                probe[n] = torch.randperm(t.numel())[:RESNET_PROBES].sort().values
                res["probe_index." + n] = probe[n]
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        for k in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(model(x.double()), labels)
            loss.backward()
            res["step%d.loss" % k] = loss.detach().clone()
            for n, p in model.named_parameters():
                res.update(summary("step%d.grad.%s" % (k, n), p.grad, probe[n]))
            opt.step()
            for n, p in model.named_parameters():
                res.update(summary("step%d.param.%s" % (k, n), p, probe[n]))
            for n, b in model.named_buffers():
                if b.dtype == torch.int64:  # num_batches_tracked: the count itself
                    res["step%d.buffer.%s" % (k, n)] = b.clone()
                else:
                    res.update(summary("step%d.buffer.%s" % (k, n), b, probe[n]))
        return res
    finally:
        torch.set_num_threads(threads)


CASES = {
    "linear": case_linear,
    "conv2d_plain": case_conv2d_plain,
    "conv2d_stride2_pad1": case_conv2d_stride2_pad1,
    "conv2d_groups2": case_conv2d_groups2,
    "batch_norm_train": case_batch_norm_train,
    "batch_norm_train_2d": case_batch_norm_train_2d,
    "cross_entropy": case_cross_entropy,
    "cross_entropy_smooth": case_cross_entropy_smooth,
    "resnet_block": case_resnet_block,
    "resnet20_sgd": case_resnet20_sgd,
}


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for i, (name, fn) in enumerate(CASES.items()):
        torch.manual_seed(1000 + i)
        tensors = fn()
        path = os.path.join(OUT_DIR, "golden_%s.safetensors" % name)
        write_safetensors(path, tensors)
        size = os.path.getsize(path)
        total += size
        print("%-28s %3d tensors %7d bytes" % (name, len(tensors), size))
    print("total %d bytes (torch %s)" % (total, torch.__version__))


if __name__ == "__main__":
    main()
