#!/usr/bin/env python3
"""Write the checkpoint fixtures under tests/fixtures/ with PyTorch's own torch.save.

Generated once and committed; the Rust tests only read the files, so neither the tests nor CI
need PyTorch. Rerun only to change the fixtures (any PyTorch >= 1.6 on CPU):

    python3 scripts/make_fixtures.py            # writes into tests/fixtures/

The model is the CIFAR ResNet-20 of the public pytorch-cifar-models (chenyaofo) code, built
with 1 input channel and 10 classes (the layout of the built-in Fashion-MNIST model), randomly
initialised with a fixed seed. BatchNorm affine parameters and running statistics are set to
non-trivial values so that a loader that ignored or swapped them would give other logits.

Files:
  resnet20_c1k10.pth             plain state_dict (float32, with int64 num_batches_tracked)
  resnet20_c1k10_nested_f16.pth  {'state_dict': {'module.' + name: float16}, 'epoch': 7}, the
                                 shape of a DataParallel training checkpoint
  resnet20_c1k10_inputs.npy      float32 [4, 1, 32, 32] fixed inputs (NCHW)
  resnet20_c1k10_logits.npy      float32 [4, 10] the eval-mode logits of the plain checkpoint
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn

SEED = 20240601
IN_CHANNELS = 1
NUM_CLASSES = 10
SAMPLES = 4


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage, in_channels, num_classes):
        super().__init__()
        self.inplanes = 16
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, blocks_per_stage)
        self.layer2 = self._make_layer(32, blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(64, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)
    model = CifarResNet(3, IN_CHANNELS, NUM_CLASSES)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(123)
    model.eval()
    inputs = torch.randn(SAMPLES, IN_CHANNELS, 32, 32)
    with torch.no_grad():
        logits = model(inputs)

    state = model.state_dict()
    torch.save(state, os.path.join(out_dir, "resnet20_c1k10.pth"))
    nested = {
        "state_dict": {"module." + k: (v.half() if v.is_floating_point() else v) for k, v in state.items()},
        "epoch": 7,
    }
    torch.save(nested, os.path.join(out_dir, "resnet20_c1k10_nested_f16.pth"))
    np.save(os.path.join(out_dir, "resnet20_c1k10_inputs.npy"), inputs.numpy().astype(np.float32))
    np.save(os.path.join(out_dir, "resnet20_c1k10_logits.npy"), logits.numpy().astype(np.float32))
    print(f"wrote fixtures to {out_dir} with torch {torch.__version__}; logits[0] = {logits[0].tolist()}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
