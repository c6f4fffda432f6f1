"""PNG image grids: one row per class, ``n_per_class`` samples per row (Pillow)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from salun.errors import SalunError
from salun.io import atomic_write_bytes, tag_png


def class_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[int],
    *,
    n_per_class: int = 8,
    names: Sequence[str] | None = None,
    scale: int = 2,
    pad: int = 2,
    label_width: int = 80,
) -> Image.Image:
    """Arrange uint8 N×C×H×W images as rows of the given classes.

    Args:
        images, labels: samples and the class each was generated for.
        classes: which classes to show, in row order (missing samples stay blank).
        n_per_class: columns.
        names: row captions (default: the class index).
        scale: nearest-neighbour upscaling, so 28×28 samples are visible.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise SalunError("class_grid needs uint8 images N×C×H×W")
    _, ch, h, w = images.shape
    cell_h, cell_w = h * scale + pad, w * scale + pad
    grid = Image.new(
        "RGB", (label_width + n_per_class * cell_w + pad, len(classes) * cell_h + pad), "white"
    )
    draw = ImageDraw.Draw(grid)
    for row, c in enumerate(classes):
        caption = names[c] if names is not None and c < len(names) else str(c)
        draw.text((4, row * cell_h + cell_h // 2 - 6), caption[:12], fill="black")
        rows = torch.nonzero(labels == c).flatten()[:n_per_class]
        for col, i in enumerate(rows.tolist()):
            arr = images[i].permute(1, 2, 0).numpy()
            tile = Image.fromarray(arr[:, :, 0] if ch == 1 else arr, "L" if ch == 1 else "RGB")
            tile = tile.convert("RGB").resize((w * scale, h * scale), Image.NEAREST)
            grid.paste(tile, (label_width + col * cell_w + pad, row * cell_h + pad))
    return grid


def save_class_grid(path: str | Path, images: torch.Tensor, labels: torch.Tensor, **kwargs) -> Path:
    """Write :func:`class_grid` of all classes present (or ``classes=``) as a PNG, atomically."""
    classes = kwargs.pop("classes", None)
    if classes is None:
        classes = sorted(set(labels.tolist()))
    buf = io.BytesIO()
    class_grid(images, labels, classes, **kwargs).save(buf, format="PNG")
    atomic_write_bytes(path, tag_png(buf.getvalue()))  # tagged: see salun.outputs
    return Path(path)
