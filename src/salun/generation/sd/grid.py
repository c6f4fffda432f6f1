"""Image grids for qualitative figures (one row per prompt, as in the paper's figures)."""

from __future__ import annotations

from pathlib import Path

import torch

from salun.errors import SalunError
from salun.generation.sd.generate import png_bytes
from salun.io import atomic_write_bytes, tag_png


def image_grid(images: torch.Tensor, ncol: int = 8, pad: int = 2) -> torch.Tensor:
    """Tile uint8 images (N, 3, H, W) into one uint8 (3, H', W') image, row-major."""
    if images.ndim != 4 or images.dtype != torch.uint8 or len(images) == 0:
        raise SalunError("image_grid needs a non-empty uint8 tensor (N, 3, H, W)")
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, y : y + h, x : x + w] = img
    return grid


def save_grid(path: str | Path, images: torch.Tensor, ncol: int = 8) -> Path:
    """Write :func:`image_grid` as a PNG, atomically."""
    atomic_write_bytes(path, tag_png(png_bytes(image_grid(images, ncol))))  # see salun.outputs
    return Path(path)
