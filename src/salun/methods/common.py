"""What iterative methods share: the SGD harness of the reference code (docs/method.md).

SGD (momentum 0.9, weight decay 5e-4), constant learning rate (the reference's
MultiStepLR milestones 91/136 are never reached in ≤ 10 epochs), batch 256, shuffled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from salun.data import Augment, ImageDataset, iterate_batches
from salun.masking import MODES, MaskedUpdate
from salun.precision import (
    autocast_train_forward,
    current_policy,
    grad_scaler,
    on_device,
    prepare_model,
)
from salun.train import check_finite
from salun.validate import (
    check_choice,
    check_each,
    check_fields,
    check_int,
    check_nonnegative,
    check_positive,
    check_range,
    check_seed,
)


@dataclass(frozen=True)
class SGDConfig:
    """Settings every iterative method shares.

    Attributes:
        epochs: unlearning epochs (paper: 10).
        lr: learning rate (searched per method; see ``lr_grid``).
        lr_grid: candidate learning rates for the benchmark's per-method search
            (docs/method.md: the authors picked the smallest Avg. Gap to Retrain).
        batch_size: samples per step (paper: 256).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD weight decay (paper: 5e-4).
        augment: random crop + flip of every unlearning batch, D_f and D_r alike (the
            reference unlearns on loaders that keep the training transform; see
            docs/method.md). Off by default; on in the paper preset.
        mask_mode: ``strict`` (masked weights never move) or ``legacy`` (gradient-only
            masking, as the paper-era code).
        seed: seeds shuffling, augmentation and random labels.
    """

    epochs: int = 10
    lr: float = 0.01
    lr_grid: tuple[float, ...] = ()
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False
    mask_mode: str = "strict"
    seed: int = 0

    def __post_init__(self) -> None:
        # types and finiteness of every field (subclass fields too), then ranges
        check_fields(self)
        check_int("epochs", self.epochs, 0)
        check_positive("lr", self.lr)
        check_each("lr_grid", self.lr_grid, check_positive)
        check_int("batch_size", self.batch_size, 1)
        check_range("momentum", self.momentum, 0, 1)
        check_nonnegative("weight_decay", self.weight_decay)
        check_choice("mask_mode", self.mask_mode, MODES)
        check_seed("seed", self.seed)


class Stepper:
    """One optimizer step with the mask applied the same way in every method."""

    def __init__(
        self, model: nn.Module, cfg: SGDConfig, mask: Mapping[str, torch.Tensor] | None, params=None
    ) -> None:
        self.model = model
        # the device policy (docs/gpu.md): memory format and deterministic pooling before
        # the optimizer and the mask see the parameters; train-mode forwards autocast
        device = next(model.parameters(), torch.empty(0)).device
        prepare_model(model, device, replace(current_policy(), compile=False))
        autocast_train_forward(model)
        self.scaler = grad_scaler(device)  # fp16 only; otherwise a pass-through
        self.optimizer = torch.optim.SGD(
            params if params is not None else model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        self.masked = MaskedUpdate(model, mask, cfg.mask_mode)

    def start_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (a hook for subclasses)."""

    def step(self, loss: torch.Tensor, where: str = "unlearning") -> None:
        check_finite(loss, where)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.masked.step(self.optimizer, self.scaler)
        self.after_step()

    def after_step(self) -> None:
        """Called after every optimizer step (a hook for subclasses)."""


def train_augment(enabled: bool, ctx) -> Augment | None:
    """The original model's training augmentation (random crop with its padding, flips
    where the dataset allows them), or None when ``enabled`` is off.

    The reference unlearns on loaders that keep the training transform (docs/method.md,
    "Augmentation"); the crop padding is the original recipe's ``pad`` (4 without one).
    """
    if not enabled:
        return None
    pad = int(dict(getattr(ctx, "original_train", {}) or {}).get("pad", 4))
    return Augment(pad=pad, flip=ctx.flip)


def epoch_batches(
    data: ImageDataset, cfg: SGDConfig, ctx, gen: torch.Generator, shuffle: bool = True
):
    """One shuffled pass over ``data`` with the method's augmentation setting."""
    aug = train_augment(cfg.augment, ctx)
    if isinstance(data, ImageDataset):  # a streamed set (docs/your-model.md) stays where it is
        data = on_device(data, ctx.device)  # one bulk copy per pass, not one per batch
    return iterate_batches(
        data, cfg.batch_size, shuffle=shuffle, generator=gen, device=ctx.device, augment=aug
    )


def random_labels(
    y: torch.Tensor, num_classes: int, gen: torch.Generator, exclude_true: bool
) -> torch.Tensor:
    """Uniform random labels; with ``exclude_true`` never the true label (y' ≠ y)."""
    if exclude_true:
        shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
        return (y + shift) % num_classes
    return torch.randint(0, num_classes, y.shape, generator=gen).to(y.device)
