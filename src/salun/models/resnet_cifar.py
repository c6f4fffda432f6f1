"""ResNet-20, the CIFAR-style residual network (He et al. 2016, §4.2): a 3×3 stem and three
stages of three BasicBlocks at 16/32/64 channels, global average pooling.

About 0.27 M parameters: a BatchNorm residual network small enough to train on a CPU,
kept for the CPU preset that needs the paper's regime (BatchNorm, residual blocks) at a
cost the 2-core build machines can pay. Shortcuts that change shape use a 1×1 convolution
with BatchNorm (option B), as the ResNet-18 body does.
"""

from __future__ import annotations

from torch import nn

from salun.models.resnet import resnet_features


def resnet20_features(in_channels: int, width: float = 1.0) -> tuple[nn.Module, int]:
    """The ResNet-20 body (3 stages × 3 BasicBlocks) and its output width."""
    return resnet_features(in_channels, width, (3, 3, 3), channels=(16, 32, 64))
