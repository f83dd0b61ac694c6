#!/usr/bin/env python3
"""Trains the second built-in model: a MobileNetV2-style network for 32x32 Fashion-MNIST.

    .deps/torch-venv/bin/python scripts/train_mobilenetv2.py [--epochs 10] [--seed 0]

writes models/fmnist-mobilenetv2.onnx (one file, weights inside, dynamic batch) and its training
record models/fmnist-mobilenetv2.json (command, seed, hyper-parameters, per-epoch test accuracy,
onnxruntime's test top-1 on the exported file).

PyTorch is needed here only, once: `make demo` and `make test` use the committed ONNX file. A
venv: `python3 -m venv .deps/torch-venv && .deps/torch-venv/bin/pip install torch onnx
onnxscript onnxruntime`.

The network: inverted residual blocks (1x1 expansion, depthwise 3x3, 1x1 linear projection,
identity shortcut where shapes allow), ReLU6, BatchNorm after every convolution (folded into the
convolutions by the exporter). Widths and strides for 32x32 inputs (stem at stride 1, three
stride-2 stages: 32 -> 16 -> 8 -> 4), 29 quantizable layers (27 convolutions in the stem and the
blocks, 9 of them depthwise; the head's 1x1 convolution; the classifier), 215,648 weights.

Inputs are prepared exactly as the tools prepare `fashion:` data: x/255, (x-0.2860)/0.3530, then
zero-padded from 28x28 to 32x32 (centred). Training adds the built-in ResNet-20's augmentation
(random shift of up to 2 pixels, horizontal flip).
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper's table.
SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1)]
STEM, HEAD = 16, 256


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else [conv_bn(cin, hidden, 1)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        layers = [conv_bn(in_channels, STEM, 3)]
        cin = STEM
        for t, c, n, s in SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, HEAD, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(HEAD, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.mean(dim=(2, 3)))


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(prefix):
    def find(name):
        for p in (os.path.join(FASHION_DIR, name + ".gz"), os.path.join(FASHION_DIR, name)):
            if os.path.exists(p):
                return p
        sys.exit(f"train_mobilenetv2: no {name}(.gz) in {FASHION_DIR} (`make setup-data` installs it)")
    images = read_idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.float32)
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    x = (images / 255.0 - MEAN) / STD
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None]  # zero in normalised units, as the tools pad
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(labels)


def augment(x, gen, max_shift=2):
    """Random shift (zero fill) by up to max_shift pixels and horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def evaluate(model, x, y, batch=1000):
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x), loss / len(x)


def export(model, path, x):
    import onnx
    tmp = path + ".tmp"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model.eval(), (x[:2],), tmp, dynamo=True, opset_version=18, external_data=False,
                      input_names=["input"], output_names=["logits"], dynamic_shapes={"x": {0: batch}})
    m = onnx.load(tmp)
    for node in m.graph.node:  # drop per-node stack traces (this machine's paths)
        keep = [p for p in node.metadata_props if p.key not in ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node")]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(m, tmp)
    os.replace(tmp, path)


def ort_top1(path, x, y):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(x), 1000):
        logits = sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1000].numpy()})[0]
        correct += int((logits.argmax(1) == y[i:i + 1000].numpy()).sum())
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=4e-5)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit-steps", type=int, default=0, help="stop each epoch after this many steps (timing runs)")
    ap.add_argument("-o", "--output", default="models/fmnist-mobilenetv2.onnx")
    ap.add_argument("--report", default="models/fmnist-mobilenetv2.json")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = load_split("train")
    xte, yte = load_split("t10k")
    model = MobileNetV2()
    # No weight decay on BatchNorm parameters and biases.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = (len(xtr) + args.batch_size - 1) // args.batch_size
    if args.limit_steps:
        steps_per_epoch = min(steps_per_epoch, args.limit_steps)
    total = args.epochs * steps_per_epoch

    def lr_at(step):  # linear warm-up, then cosine to zero
        if step < args.warmup_steps:
            return args.lr * (step + 1) / args.warmup_steps
        p = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
        return args.lr * 0.5 * (1 + np.cos(np.pi * p))

    log, step, start = [], 0, time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        seen, loss_sum, correct = 0, 0.0, 0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            x, y = augment(xtr[idx], gen), ytr[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            if b % 50 == 0:
                print(f"epoch {epoch} step {b}/{steps_per_epoch} loss {loss.item():.4f} "
                      f"{(time.time() - t0) / (b + 1):.3f} s/step", file=sys.stderr, flush=True)
        top1, test_loss = evaluate(model, xte, yte)
        log.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_top1": correct / seen,
                    "test_top1": top1, "test_loss": test_loss, "seconds": time.time() - t0})
        print(json.dumps(log[-1]), file=sys.stderr, flush=True)

    export(model, args.output, xte)
    onnx_top1 = ort_top1(args.output, xte, yte)
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    report = {
        "arch": "mobilenetv2",
        "format": "onnx",
        "in_channels": 1,
        "num_classes": 10,
        "layers": n_layers,
        "setting": {"stem": STEM, "blocks (t, c, n, s)": SETTING, "head": HEAD},
        "dataset": "fashion-mnist",
        "preprocessing": "x/255, (x-0.2860)/0.3530, zero-pad 28x28 -> 32x32 (centred)",
        "seed": args.seed,
        "command": " ".join([".deps/torch-venv/bin/python", "scripts/train_mobilenetv2.py"] + sys.argv[1:]),
        "epochs": args.epochs,
        "hyper": {k: v for k, v in vars(args).items() if k not in ("output", "report")},
        "torch": torch.__version__,
        "train_samples": len(xtr),
        "test_samples": len(xte),
        "test_top1": log[-1]["test_top1"],
        "test_loss": log[-1]["test_loss"],
        "onnxruntime_test_top1": onnx_top1,
        "train_seconds": time.time() - start,
        "epoch_log": log,
    }
    tmp = args.report + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.report)
    print(f"test top-1 {log[-1]['test_top1']:.4f} (torch), {onnx_top1:.4f} (onnxruntime on {args.output})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
