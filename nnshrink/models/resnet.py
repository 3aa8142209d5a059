"""CIFAR-style ResNets (He et al. 2016, section 4.2): ResNet-20/32/56.

Shortcuts: option ``"A"`` (default, as in the paper's CIFAR experiments and the published
0.27M/0.46M/0.85M parameter counts) uses parameter-free identity shortcuts with zero-padded extra
channels; option ``"B"`` uses 1x1 conv + BN projections where the shape changes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import register_model


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and append zero channels.

    Output channel ``i < in_channels`` is input channel ``i``; the rest are zeros. Kept as a
    module (not a lambda) so it can be traced, saved and handled by structured pruning.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # a Python int, not a traced size: ONNX export then writes a constant Pad instead of
        # Shape/Gather/Sub/Concat, which kept ONNX Runtime's int8 graph out of NHWC form
        extra = self.out_channels - int(x.shape[1])
        return F.pad(x, (0, 0, 0, 0, 0, extra)) if extra > 0 else x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR: 16-32-64 channels, global average pool, one linear layer."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


def _factory(depth: int):
    def build(
        num_classes: int = 10, in_channels: int = 3, input_size: int = 32, shortcut: str = "A"
    ) -> nn.Module:
        del input_size  # global average pooling makes the model size-agnostic
        return CifarResNet(depth, num_classes, in_channels, shortcut)

    build.__doc__ = f"CIFAR ResNet-{depth} (shortcut option 'A' by default, or 'B')."
    return build


resnet20 = register_model("resnet20")(_factory(20))
resnet32 = register_model("resnet32")(_factory(32))
resnet56 = register_model("resnet56")(_factory(56))
