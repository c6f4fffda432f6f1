"""Shared pieces of the DDPM tests (test_gen_semantics.py, test_generation_ddpm.py): the
tiny UNet's settings and a small class-template dataset."""

from __future__ import annotations

import torch

from salun.data import ImageDataset
from salun.generation.ddpm.model import DenoiserConfig

K = 3  # classes


def tiny_denoiser(dropout: float) -> DenoiserConfig:
    """An 8×8, one-channel, K-class UNet (two blocks, no attention): seconds on a CPU."""
    return DenoiserConfig(
        image_size=8,
        in_channels=1,
        num_classes=K,
        block_out_channels=(8, 16),
        attention_levels=(),
        norm_num_groups=4,
        dropout=dropout,
    )


def class_templates(n: int, seed: int) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(all, forget = class 0, retain = the others): ``n`` noisy copies of one random
    template per class, labels cycling 0..K-1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    templates = torch.rand(K, 1, 8, 8, generator=g) * 255
    x = (templates[labels] + 30 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 255)
    ds = ImageDataset(x.round().to(torch.uint8), labels)
    forget = ds.subset(torch.nonzero(labels == 0).flatten())
    retain = ds.subset(torch.nonzero(labels != 0).flatten())
    return ds, forget, retain
