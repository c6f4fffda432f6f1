"""ResNet-18 and ResNet-34 with the CIFAR stem (3×3 conv, stride 1, no max-pool).

ResNet-18 is the paper's classifier (docs/method.md); ResNet-34 ([3, 4, 6, 3] blocks) is the
architecture of the reference's DDPM evaluation classifier for CIFAR-10 (there an
ImageNet-pretrained torchvision model fine-tuned at 224×224; weights cannot be had offline,
so salun trains it from scratch at the native size, see docs/generation.md)."""

from __future__ import annotations

from torch import nn

from salun.models.common import scaled


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet18_features(in_channels: int, width: float = 1.0) -> tuple[nn.Module, int]:
    """The ResNet-18 body (BasicBlocks [2, 2, 2, 2]) and its output width."""
    return resnet_features(in_channels, width, (2, 2, 2, 2))


def resnet34_features(in_channels: int, width: float = 1.0) -> tuple[nn.Module, int]:
    """The ResNet-34 body (BasicBlocks [3, 4, 6, 3]) and its output width."""
    return resnet_features(in_channels, width, (3, 4, 6, 3))


def resnet_features(
    in_channels: int,
    width: float,
    blocks: tuple[int, ...],
    channels: tuple[int, ...] = (64, 128, 256, 512),
) -> tuple[nn.Module, int]:
    """A CIFAR-stem ResNet body of BasicBlocks: ``blocks[i]`` of them at stage i, with
    ``channels[i]`` × ``width`` channels; every stage after the first halves the side."""
    widths = [scaled(c, width) for c in channels]
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    cin = widths[0]
    for i, cout in enumerate(widths):
        for j in range(blocks[i]):
            layers.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    body = nn.Sequential(*layers)
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return body, cin
