#!/usr/bin/env python3
"""PyTorch CPU throughput of the CIFAR ResNets, for comparison with the engine's benchmark.

    python3 scripts/bench_torch.py                       # ResNet-20 and -56, batch 256, 2 threads
    python3 scripts/bench_torch.py --arch resnet20 --batch 256 --threads 2 --runs 9

Same network as `cargo bench -p clado --bench engine` (the pytorch-cifar-models layout, random
weights and BatchNorm statistics, 1-channel 32x32 inputs, 10 classes), eval mode under
`torch.inference_mode()`, median of --runs timed runs after one warm-up run. Prints img/s
(wall clock) and img per CPU-second times threads (what an idle machine would give; the wall
clock of a shared machine also counts other processes). Needs only `torch`; never run by the
tests.
"""

import argparse
import statistics
import time

import torch
from torch import nn

DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, blocks, in_channels, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        cin = 16
        for s, planes in enumerate([16, 32, 64]):
            layer = []
            for b in range(blocks):
                layer.append(BasicBlock(cin, planes, 2 if s > 0 and b == 0 else 1))
                cin = planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize(model, generator):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.3, 0.3, generator=generator)
                m.running_mean.uniform_(-0.3, 0.3, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)


def median_timing(runs, f):
    f()
    timings = []
    for _ in range(max(runs, 1)):
        wall, cpu = time.perf_counter(), time.process_time()
        f()
        timings.append((time.perf_counter() - wall, time.process_time() - cpu))
    timings.sort()
    return timings[len(timings) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet20,resnet56", help="comma-separated architectures")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--in-channels", type=int, default=1)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(1)
    for arch in args.arch.split(","):
        model = CifarResNet(DEPTHS[arch], args.in_channels, args.classes).eval()
        randomize(model, generator)
        x = torch.empty(args.batch, args.in_channels, 32, 32).uniform_(-2, 2, generator=generator)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def forward():
            with torch.inference_mode():
                model(x)

        wall, cpu = median_timing(args.runs, forward)
        print(
            f"torch {torch.__version__} {arch}: batch {args.batch}, {args.threads} thread(s), "
            f"median of {args.runs}: {args.batch / wall:.0f} img/s, {wall * 1e3:.1f} ms, "
            f"{args.batch / cpu * args.threads:.0f} img/CPU-s x threads"
        )


if __name__ == "__main__":
    main()
