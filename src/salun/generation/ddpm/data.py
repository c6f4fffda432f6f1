"""Data plumbing for the DDPM: class-wise forget/retain sets and endless batch streams.

Class-wise forgetting in generation takes **all** training images of the forgotten class as
D_f and the rest as D_r (docs/generation.md), so the split is a pure function of the label.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from salun.data import Augment, ImageDataset, iterate_batches
from salun.errors import SalunError
from salun.generation.ddpm.diffusion import to_model_range


def class_split(
    data: ImageDataset, forget_class: int, num_classes: int
) -> tuple[ImageDataset, ImageDataset]:
    """``(D_f, D_r)``: the images of ``forget_class`` and all the others (original order)."""
    if not 0 <= forget_class < num_classes:
        raise SalunError(f"forget class {forget_class} is out of range 0..{num_classes - 1}")
    is_f = data.labels == forget_class
    if not bool(is_f.any()):
        raise SalunError(f"the training set has no image of class {forget_class}")
    return data.subset(torch.nonzero(is_f).flatten()), data.subset(torch.nonzero(~is_f).flatten())


def endless_batches(
    data: ImageDataset,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    *,
    flip: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield shuffled ``(x in [−1, 1], labels)`` batches forever, reshuffling every pass.

    Full batches only (a short last batch would bias the antithetic timesteps), unless the
    set is smaller than one batch, in which case the whole set is one batch.
    """
    if len(data) == 0:
        raise SalunError("cannot draw batches from an empty set")
    bs = min(batch_size, len(data))
    aug = Augment(pad=0, flip=flip) if flip else None
    while True:
        for x, y in iterate_batches(
            data,
            bs,
            shuffle=True,
            generator=generator,
            device=device,
            augment=aug,
            drop_last=True,
        ):
            yield to_model_range(x), y
