"""ResNet-34 (the reference's DDPM evaluation classifier for CIFAR-10) beside ResNet-18."""

import torch
from torch import nn

from salun.models import build_model


def count_blocks(model):
    from salun.models.resnet import BasicBlock

    return sum(isinstance(m, BasicBlock) for m in model.modules())


def test_resnet34_has_3_4_6_3_blocks_and_the_cifar_parameter_count():
    kw = dict(in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    r18, r34 = build_model("resnet18", **kw), build_model("resnet34", **kw)
    assert (count_blocks(r18), count_blocks(r34)) == (8, 16)
    # the standard CIFAR-stem counts (no max-pool, 10-way head)
    assert sum(p.numel() for p in r18.parameters()) == 11_173_962
    assert sum(p.numel() for p in r34.parameters()) == 21_282_122
    assert r34(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert isinstance(r34.head, nn.Linear)
