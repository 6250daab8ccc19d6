#!/usr/bin/python3
"""make_golden.py - writes the golden fixtures that tests/test_golden.cpp compares anybit against.

Run with Debian's interpreter, which has python3-torch:  /usr/bin/python3 scripts/make_golden.py
(all cases), or name the cases to rewrite:  /usr/bin/python3 scripts/make_golden.py qjoint_round qjoint_truncate

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
Three cases are one joint training step of the method (qjoint_round, qjoint_truncate, qjoint_collab3),
computed from docs/METHOD.md and compared by tests/test_golden_qjoint.cpp; see the comment above QJ_BITS.
Reruns write byte-identical files (seeded per case; the ResNet-20 and qjoint cases run on one thread).

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


# ---- one joint step of the method: a quantized pre-activation ResNet-20 over the bit set {8, 4} ----
# Written from docs/METHOD.md sections 2-4 alone (not from anybit's C++): the model, the DoReFa weight
# quantizer, PACT with the gradients the method fixes, the per-bit-width BN sets, the joint loss
# (CE at the highest bit-width; CE + lambda KD from the collab teacher for the students) and one SGD
# step, in float64. The architecture and the parameter names are anybit's preact_resnet20 (nn/models.h)
# at width 0.125 (channels 2, 4, 8: small fixtures, yet every kind of layer: the FP stem conv,
# quantized 3x3 convs, quantized 1x1 shortcut convs, identity shortcuts, multi-bit-width BN, the FP
# classifier). tests/test_golden_qjoint.cpp builds the same model with quant::QuantModel, loads
# init.*, runs quant::JointTrainer::accumulate_gradients and the optimizer step, and compares.
#
# Fixture golden_qjoint_<case>.safetensors (every float tensor float64):
#   config.<key>             the settings below as scalars (the test reads them)
#   init.<name>              the starting state dict (anybit's names: weight, clip_b8, bn.0.weight, ...)
#   input, labels            the batch: (8, 3, 8, 8) and (8) int64
#   config.bits              the bit set (int64), in the user's order: BN set i is bit-width bits[i]
#   loss.b<bits>             the loss of each bit-width (b8: CE; the students: CE + lambda KD)
#   teacher.b<bits>          (8) int64 per student, each sample's teacher chosen by the collab rule
#   grad.<name>              every parameter's gradient, summed over the bit-widths (absent where no
#                            forward used the parameter: with swapping, e.g. the blocks' clip_b4)
#   param.<name>             every parameter after the SGD step (clip values included)
#   buffer.<name>            every BN buffer after the step: running_mean / running_var of both BN
#                            sets (each set moved once, by its own bit-width's forward), and
#                            num_batches_tracked (int64)
QJ_BITS = [8, 4]           # the bit set, as the user gives it (BN set i belongs to QJ_BITS[i])
QJ_WIDTH = 0.125           # preact_resnet20 channels: 16w, 32w, 64w = 2, 4, 8
QJ_CLASSES = 10
QJ_LR = 0.1                # the default lr (apps/anybit/run.cpp); 0.01 would hide the update
QJ_MOMENTUM = 0.9          # configs/cifar10_ours.cfg: SGD, momentum 0.9, Nesterov, weight decay 5e-4
QJ_NESTEROV = True
QJ_WEIGHT_DECAY = 5e-4     # every weight, bias and BN parameter
QJ_CLIP_WEIGHT_DECAY = 0.0 # METHOD.md section 2: clip values get no weight decay at b >= 4
QJ_T = 1.0                 # the default KD temperature and weight (METHOD.md section 3)
QJ_LAMBDA = 1.0
QJ_BN_MOMENTUM, QJ_BN_EPS = 0.1, 1e-5


def round_ste(v):
    """round(v) with a straight-through (identity) gradient."""
    return v + (torch.round(v) - v).detach()


def floor_ste(v):
    return v + (torch.floor(v) - v).detach()


def dorefa_weight(w, b, store, B):
    """METHOD.md section 2, weights. w: the shared FP weights; b: the bit-width; store: "round" or
    "truncate"; B: the largest bit-width < 32 of the set. Straight-through round (and floor); tanh,
    max (the arg-max element) and the affine maps are differentiated by autograd."""
    t = torch.tanh(w)
    m = t.abs().flatten().max()  # no ties in random weights: the gradient goes to the arg-max element
    if b == 32:
        return t / m
    u = t / (2 * m) + 0.5
    if store == "truncate" and b < B:
        NB = 2.0 ** B - 1
        qB = round_ste(NB * u)                          # the stored B-bit codes
        step = 2.0 ** (B - b)
        qb = floor_ste(qB / step) * step                # drop the low B - b bits
        deq_b, deq_B = qb / NB, qB / NB
        uq = deq_b * (deq_B.mean() / deq_b.mean())     # rescaled: mean equals the B-bit tensor's mean
    else:
        n = 2.0 ** b - 1
        uq = round_ste(n * u) / n
    return 2 * uq - 1


class PACT(torch.autograd.Function):
    """METHOD.md section 2, activations: y = clamp(x, 0, a); x_q = round(y (2^b - 1) / a) a / (2^b - 1)
    (b = 32: y). Gradients as the method fixes them: dx = g where 0 <= x <= a, else 0;
    da = sum of g over the elements where x >= a."""

    @staticmethod
    def forward(ctx, x, a, b):
        ctx.save_for_backward(x, a)
        y = torch.minimum(torch.clamp(x, min=0), a)
        if b == 32:
            return y
        L = 2.0 ** b - 1
        return torch.round(y * L / a) * a / L

    @staticmethod
    def backward(ctx, g):
        x, a = ctx.saved_tensors
        gx = torch.where((x >= 0) & (x <= a), g, torch.zeros_like(g))
        ga = torch.where(x >= a, g, torch.zeros_like(g)).sum().reshape(a.shape)
        return gx, ga, None


class QState:
    """The active bit-width of the whole model, and the options every quantized layer reads."""

    def __init__(self, bit_set, store):
        self.bit_set, self.store = list(bit_set), store
        self.bits = max(bit_set)
        self.B = max(b for b in bit_set if b != 32)


class BlockBits:
    """The bit-width one residual block runs at (METHOD.md section 5): the model's, unless block swapping
    overrides it with the teacher's; `freeze`: the block's BN sets normalise with the batch statistics
    but leave their running statistics alone (a block at t inside a student pass)."""

    def __init__(self, state):
        self.model, self.override, self.freeze = state, None, False
        self.bit_set, self.store, self.B = state.bit_set, state.store, state.B

    @property
    def bits(self):
        return self.override if self.override is not None else self.model.bits


class QConv(torch.nn.Module):
    """A quantized conv: conv2d(PACT(x, clip_b<bits>), dorefa(weight, bits)), no bias."""

    def __init__(self, state, cin, cout, k, stride, pad):
        super().__init__()
        self.state, self.stride, self.pad = state, stride, pad
        self.weight = torch.nn.Parameter(torch.empty(cout, cin, k, k, dtype=torch.float64))
        for b in state.bit_set:
            self.register_parameter("clip_b%d" % b, torch.nn.Parameter(torch.ones(1, dtype=torch.float64)))

    def forward(self, x):
        b = self.state.bits
        xq = PACT.apply(x, getattr(self, "clip_b%d" % b), b)
        wq = dorefa_weight(self.weight, b, self.state.store, self.state.B)
        return F.conv2d(xq, wq, None, self.stride, self.pad)


class MultiBN(torch.nn.Module):
    """One BN set per bit-width (bn.0, bn.1, ... in bit-set order); the active bit-width's runs."""

    def __init__(self, state, c):
        super().__init__()
        self.state = state
        self.bn = torch.nn.ModuleList(
            [torch.nn.BatchNorm2d(c, eps=QJ_BN_EPS, momentum=QJ_BN_MOMENTUM).double() for _ in state.bit_set])

    def forward(self, x):
        bn = self.bn[self.state.bit_set.index(self.state.bits)]
        if self.training and getattr(self.state, "freeze", False):
            return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        return bn(x)


class QPreActBlock(torch.nn.Module):
    """o = relu(bn1(x)); out = conv2(relu(bn2(conv1(o)))) + (x, or the 1x1 conv shortcut.0(o) where the
    shape changes). Every conv here is quantized; each conv's input is post-ReLU."""

    def __init__(self, state, cin, planes, stride):
        super().__init__()
        self.block_bits = state = BlockBits(state)  # the block's layers follow it
        self.bn1 = MultiBN(state, cin)
        self.conv1 = QConv(state, cin, planes, 3, stride, 1)
        self.bn2 = MultiBN(state, planes)
        self.conv2 = QConv(state, planes, planes, 3, 1, 1)
        self.shortcut = None
        if stride != 1 or cin != planes:
            self.shortcut = torch.nn.Sequential(QConv(state, cin, planes, 1, stride, 0))

    def forward(self, x):
        o = F.relu(self.bn1(x))
        s = self.shortcut(o) if self.shortcut is not None else x
        return self.conv2(F.relu(self.bn2(self.conv1(o)))) + s


class QPreActResNet20(torch.nn.Module):
    """conv1 (FP stem, 3x3) -> layer1..3 (3 blocks each; stride 2 at layer2.0, layer3.0) -> relu(bn) ->
    global average pool -> fc (FP classifier)."""

    def __init__(self, state, num_classes, width):
        super().__init__()
        ws = [int(round(16 * width)), int(round(32 * width)), int(round(64 * width))]
        self.conv1 = torch.nn.Conv2d(3, ws[0], 3, 1, 1, bias=False).double()
        cin = ws[0]
        for s, w in enumerate(ws):
            blocks = []
            for b in range(3):
                blocks.append(QPreActBlock(state, cin, w, 2 if (s > 0 and b == 0) else 1))
                cin = w
            setattr(self, "layer%d" % (s + 1), torch.nn.Sequential(*blocks))
        self.bn = MultiBN(state, cin)
        self.fc = torch.nn.Linear(cin, num_classes).double()

    def forward(self, x):
        y = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        y = F.relu(self.bn(y))
        return self.fc(y.mean(dim=(2, 3)))


def kd_loss(student, teacher, T):
    """METHOD.md section 3: T^2 * mean over the batch of -sum_k p_t log softmax(z_s / T), p_t =
    softmax(z_t / T), the teacher detached."""
    pt = F.softmax(teacher.detach() / T, dim=1)
    return -(pt * F.log_softmax(student / T, dim=1)).sum(dim=1).mean() * T * T


def collab_teachers(higher, logits, labels):
    """METHOD.md section 4, collab: per sample, among the higher bit-widths, the one whose softmax gives
    the sample's label the highest probability; ties go to the lower bit-width. Returns the teacher
    logits (N, K) and the chosen bit-width per sample (N)."""
    N = labels.shape[0]
    chosen = []
    for i in range(N):
        best, bp = None, None
        for b in sorted(higher):  # lowest first, replaced only on a strictly higher probability
            p = F.softmax(logits[b][i], dim=0)[labels[i]].item()
            if bp is None or p > bp:
                best, bp = b, p
        chosen.append(best)
    zt = torch.stack([logits[chosen[i]][i] for i in range(N)])
    return zt, torch.tensor(chosen, dtype=torch.int64)


def qjoint_case(store, bits=QJ_BITS, T=QJ_T, lam=QJ_LAMBDA, swap_p=0.0):
    """swap_p: the block-swapping probability, 0 (off) or 1 (every block of a student runs at the
    batch-level teacher's bit-width: deterministic, so anybit's random draws need not be known)."""
    assert swap_p in (0.0, 1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order: reruns give byte-identical files
    try:
        state = QState(bits, store)
        model = QPreActResNet20(state, QJ_CLASSES, QJ_WIDTH).train()
        with torch.no_grad():  # a general position: nothing at 1 / 0, clip values that do clip
            for n, p in model.named_parameters():
                if n.endswith("weight") and p.dim() == 4:
                    torch.nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
                elif "clip_b" in n:
                    p.uniform_(1.2, 3.0)  # post-BN-ReLU inputs are ~half-normal: a few % exceed the clip
                elif n.startswith("fc."):
                    p.normal_(0, 1.0)     # spread logits: the bit-widths disagree, KD is far from 0
                elif "bn." in n and n.endswith("weight"):
                    p.uniform_(0.5, 1.5)
                elif "bn." in n and n.endswith("bias"):
                    p.normal_(0, 0.2)
            for n, b in model.named_buffers():
                if n.endswith("running_mean"):
                    b.normal_(0, 0.2)
                elif n.endswith("running_var"):
                    b.uniform_(0.5, 1.5)
                elif n.endswith("num_batches_tracked"):
                    b.fill_(3)
        config = {"lr": QJ_LR, "momentum": QJ_MOMENTUM, "nesterov": float(QJ_NESTEROV),
                  "weight_decay": QJ_WEIGHT_DECAY, "clip_weight_decay": QJ_CLIP_WEIGHT_DECAY,
                  "kd_temperature": T, "kd_weight": lam, "width": QJ_WIDTH,
                  "truncate": float(store == "truncate"), "swap_p": swap_p}
        res = {"config." + k: torch.tensor(v, dtype=torch.float64) for k, v in config.items()}
        res["config.bits"] = torch.tensor(bits, dtype=torch.int64)
        for n, t in model.state_dict().items():
            res["init." + n] = t.clone()
        x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
        labels = torch.randint(0, QJ_CLASSES, (8,), dtype=torch.int64)
        res["input"], res["labels"] = x, labels

        weights = [p for n, p in model.named_parameters() if "clip_b" not in n]
        clips = [p for n, p in model.named_parameters() if "clip_b" in n]
        opt = torch.optim.SGD([{"params": weights, "weight_decay": QJ_WEIGHT_DECAY},
                               {"params": clips, "weight_decay": QJ_CLIP_WEIGHT_DECAY}],
                              lr=QJ_LR, momentum=QJ_MOMENTUM, nesterov=QJ_NESTEROV)
        # METHOD.md section 3: zero the gradients; the bit-widths in descending order, each forward,
        # loss and backward (gradients accumulate); then one optimizer step.
        opt.zero_grad()
        logits, info = {}, []
        blocks = [m.block_bits for m in model.modules() if isinstance(m, QPreActBlock)]
        for k, b in enumerate(sorted(bits, reverse=True)):
            state.bits = b
            if k > 0:
                zt, chosen = collab_teachers([h for h in logits if h > b], logits, labels)
            if k > 0 and swap_p == 1.0:
                # METHOD.md section 5: the batch-level teacher is the one chosen for the most samples
                # (ties to the lower bit-width); with p = 1 every block runs at it, BN statistics frozen.
                counts = {t: int((chosen == t).sum()) for t in sorted(set(chosen.tolist()))}
                batch_teacher = max(sorted(counts), key=lambda t: (counts[t], -t))
                for blk in blocks:
                    blk.override, blk.freeze = batch_teacher, True
            z = model(x)
            for blk in blocks:
                blk.override, blk.freeze = None, False
            ce = F.cross_entropy(z, labels)
            if k == 0:
                loss = ce
            else:
                kd = kd_loss(z, zt, T)
                loss = ce + lam * kd
                res["teacher.b%d" % b] = chosen
                # how far KD is from trivial: its share of the gradient on the logits
                info.append("b%d: teachers %s, CE %.4f, KD %.4f (teacher entropy %.4f), |dKD/dz| / |dCE/dz| = %.3f" % (
                    b, chosen.tolist(),
                    ce.item(), kd.item(), -(F.softmax(zt, 1) * F.log_softmax(zt, 1)).sum(1).mean().item(),
                    lam * T * (F.softmax(z / T, 1) - F.softmax(zt / T, 1)).norm().item() /
                    (F.softmax(z, 1) - F.one_hot(labels, QJ_CLASSES)).norm().item()))
            loss.backward()
            logits[b] = z.detach()
            res["loss.b%d" % b] = loss.detach().clone()
        for n, p in model.named_parameters():
            if p.grad is not None:  # with swapping, a student's own block parameters may go unused
                res["grad." + n] = p.grad.clone()
        opt.step()
        for n, p in model.named_parameters():
            res["param." + n] = p.detach().clone()
            # METHOD.md needs a positive clip; anybit's training loop raises any clip below 1e-3 after
            # the step (QuantModel::clamp_clips), which the reference must never need
            assert "clip_b" not in n or p.item() > 0.1, (n, p.item())
        for n, b in model.named_buffers():
            res["buffer." + n] = b.clone()
        print("  qjoint %s %s: %s" % (store, bits, "; ".join(info)))
        return res
    finally:
        torch.set_num_threads(threads)


def case_qjoint_round():
    # the default weight store: each bit-width rounds u itself
    return qjoint_case("round")


def case_qjoint_truncate():
    # weight_store = truncate: one 8-bit code tensor; the 4-bit weights drop its low 4 bits
    return qjoint_case("truncate")


def case_qjoint_collab3():
    # bit set {8, 6, 4}: the collab rule really chooses (4 bits: per sample 8 or 6), and a KD with
    # T = 2 and lambda = 0.5 (the T^2 factor and the temperature at work); round store
    return qjoint_case("round", bits=[8, 6, 4], T=2.0, lam=0.5)


def case_qjoint_swap():
    # block swapping with p = 1: the 4-bit pass runs every residual block at 8 bits (clip_b8, BN set 8,
    # whose running statistics stay put); the stem, the final BN and the classifier stay at 4 bits
    return qjoint_case("round", swap_p=1.0)


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
    "qjoint_round": case_qjoint_round,
    "qjoint_truncate": case_qjoint_truncate,
    "qjoint_collab3": case_qjoint_collab3,
    "qjoint_swap": case_qjoint_swap,
}


def main(only):
    """only: case names to (re)write; empty: every case."""
    unknown = [n for n in only if n not in CASES]
    if unknown:
        raise SystemExit("make_golden.py: unknown case(s) %s; cases: %s" % (", ".join(unknown), ", ".join(CASES)))
    os.makedirs(OUT_DIR, exist_ok=True)
    total = 0
    for i, (name, fn) in enumerate(CASES.items()):
        if only and name not in only:
            continue
        torch.manual_seed(1000 + i)  # by the case's position, so a case's data does not depend on `only`
        tensors = fn()
        path = os.path.join(OUT_DIR, "golden_%s.safetensors" % name)
        write_safetensors(path, tensors)
        size = os.path.getsize(path)
        total += size
        print("%-28s %3d tensors %7d bytes" % (name, len(tensors), size))
    print("total %d bytes (torch %s)" % (total, torch.__version__))


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
