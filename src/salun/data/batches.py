"""Batches straight from in-memory tensors, with batched augmentation on the model's device.

Images leave here as float tensors in [0, 1]; models normalise inside themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from salun.data.dataset import ImageDataset


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding and (optionally) horizontal flip, per sample.

    Attributes:
        pad: padding in pixels before the random crop back to the original size; 0 = no crop.
        flip: flip each image horizontally with probability 1/2.
    """

    pad: int = 4
    flip: bool = True

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Apply :class:`Augment` to a float batch B×C×H×W on its own device, with no Python loop.

    ``generator`` lives on the CPU so results do not depend on the device; the random
    offsets (a few bytes per image) are moved to the batch's device.
    """
    b, _, h, w = x.shape
    if aug.pad > 0:
        p = aug.pad
        xp = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)  # B×H
        cols = ox[:, None] + torch.arange(w, device=x.device)  # B×W
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if aug.flip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


def to_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 N×C×H×W → float32 in [0, 1] on ``device``; float32 images (already in
    [0, 1]) are copied as they are, so a caller may modify the batch in place."""
    if images.is_floating_point():
        return images.to(device=device, dtype=torch.float32, copy=True)
    return images.to(device, non_blocking=True).float().div_(255.0)


def iterate_batches(
    data: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    augment: Augment | None = None,
    drop_last: bool = False,
    order: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches: x float in [0, 1] on ``device``, y int64 on ``device``.

    Args:
        data: the images and labels.
        batch_size: samples per batch.
        shuffle: draw a new permutation (from ``generator``) for this pass.
        generator: a CPU generator; needed when shuffling or augmenting.
        device: where batches go.
        augment: training-time augmentation; None for evaluation (test transform).
        drop_last: drop a final incomplete batch.
        order: the sample indices to visit, in order, instead of a new permutation or
            ``0..n-1`` (a resumed stream passes the rest of its pass).
    """
    if (shuffle or (augment is not None and augment.active)) and generator is None:
        raise ValueError("shuffling or augmenting needs a torch.Generator for reproducibility")
    if order is None:
        n = len(data)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    chunks = [order[start : start + batch_size] for start in range(0, stop, batch_size)]
    # a streamed dataset (salun.data.streaming) reads the same index batches from its
    # source instead of from memory: same order, same samples, same batches
    stream = getattr(data, "stream", None)
    source = stream(chunks) if stream else ((data.images[i], data.labels[i]) for i in chunks)
    for images, labels in source:
        x = to_float(images, device)
        if augment is not None and augment.active:
            x = augment_batch(x, augment, generator)
        yield x, labels.to(device)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
