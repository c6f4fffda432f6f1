"""A small learnable synthetic dataset for tests: class-dependent blobs plus noise."""

from __future__ import annotations

from pathlib import Path

import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle
from salun.data.registry import register_loader
from salun.errors import SalunError

MAX_N = 1_000_000  # a test dataset: 1 M images of 8x8 are 64 MB (uint8)


def synthetic_bundle(
    n_train: int = 600,
    n_test: int = 200,
    num_classes: int = 4,
    channels: int = 1,
    size: int = 8,
    seed: int = 0,
    noise: float = 60.0,
) -> DataBundle:
    """Images whose class decides a fixed random template; Gaussian noise on top.

    Learnable by a tiny model in a few epochs, yet noisy enough that a model can also
    memorise individual samples (so unlearning has something to remove).
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, size, size, generator=g) * 255

    def draw(n: int) -> ImageDataset:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        x = templates[y] + noise * torch.randn(n, channels, size, size, generator=g)
        return ImageDataset(x.clamp(0, 255).round().to(torch.uint8), y.to(torch.int64))

    classes = tuple(f"class{i}" for i in range(num_classes))
    return make_bundle("synthetic", draw(n_train), draw(n_test), classes, flip=False)


@register_loader("synthetic", "It is generated; no files are needed.")
def load_synthetic(root: Path | None, arg: str | None) -> DataBundle:
    """``synthetic`` or ``synthetic:N`` (N training images; a quarter as many test images)."""
    try:
        n = int(arg) if arg else 600
    except ValueError:
        raise SalunError(f"synthetic:N needs an integer N, got {arg!r}") from None
    if not 8 <= n <= MAX_N:  # 99999999999 asked for 800 GB before saying anything
        raise SalunError(f"synthetic:N needs N in 8..{MAX_N}, got {n}")
    return synthetic_bundle(n_train=n, n_test=max(n // 4, 8))
