"""ResNet-20, the CIFAR-style residual network (He et al. 2016, §4.2): a 3×3 stem and three
stages of three BasicBlocks at 16/32/64 channels, global average pooling.

About 0.27 M parameters: a BatchNorm residual network small enough to train on a CPU,
kept for the CPU preset that needs the paper's regime (BatchNorm, residual blocks) at a
cost the 2-core build machines can pay. Shortcuts that change shape use a 1×1 convolution
with BatchNorm (option B), as the ResNet-18 body does.
"""

from __future__ import annotations

from torch import nn

from salun.models.common import scaled
from salun.models.resnet import BasicBlock


def resnet20_features(in_channels: int, width: float = 1.0) -> tuple[nn.Module, int]:
    """The ResNet-20 body (3 stages × 3 BasicBlocks) and its output width."""
    widths = [scaled(c, width) for c in (16, 32, 64)]
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    cin = widths[0]
    for i, cout in enumerate(widths):
        for j in range(3):
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
