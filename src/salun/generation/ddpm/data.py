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


class BatchStream:
    """Shuffled ``(x in [−1, 1], labels)`` batches forever, reshuffling every pass, with a
    state that a checkpoint can save and restore mid-pass.

    Full batches only (a short last batch would bias the antithetic timesteps), unless the
    set is smaller than one batch, in which case the whole set is one batch. Together with
    the state of ``generator`` (which draws the permutations and the flips), the state
    (this pass's permutation and the batches already taken from it) continues a run exactly
    where it stopped.
    """

    def __init__(
        self,
        data: ImageDataset,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        *,
        flip: bool = True,
    ) -> None:
        if len(data) == 0:
            raise SalunError("cannot draw batches from an empty set")
        self.data, self.generator, self.device = data, generator, device
        self.batch_size = min(batch_size, len(data))
        self.per_pass = len(data) // self.batch_size
        self.augment = Augment(pad=0, flip=flip) if flip else None
        self.order: torch.Tensor | None = None  # this pass's permutation
        self.taken = 0  # batches of it already yielded
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order is None or self.taken == self.per_pass:
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.taken, self._batches = 0, None
        if self._batches is None:
            bs = self.batch_size
            self._batches = iterate_batches(
                self.data,
                bs,
                generator=self.generator,
                device=self.device,
                augment=self.augment,
                drop_last=True,
                order=self.order[self.taken * bs : self.per_pass * bs],
            )
        x, y = next(self._batches)
        self.taken += 1
        return to_model_range(x), y

    def state_dict(self) -> dict[str, torch.Tensor]:
        order = self.order if self.order is not None else torch.empty(0, dtype=torch.long)
        return {"order": order.clone(), "taken": torch.tensor(self.taken)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        order = state["order"]
        if order.numel() not in (0, len(self.data)):
            raise SalunError(
                f"the saved batch order covers {order.numel()} images, this set has "
                f"{len(self.data)}: the checkpoint belongs to other data"
            )
        self.order = order.clone() if order.numel() else None
        self.taken, self._batches = int(state["taken"]), None
