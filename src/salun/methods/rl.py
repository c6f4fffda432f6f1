"""RL (random labelling) and SalUn = RL restricted to salient weights (docs/method.md).

Each epoch, ``sequential`` (reference HEAD, maintainer in issue #21): one pass over D_f
with fresh uniform random labels per batch, then one pass over D_r with true labels
weighted by α, every batch its own SGD step. ``joint`` (paper-era CIFAR-10 code): D_f
gets random labels once per epoch, is concatenated with D_r and shuffled into joint
batches (retain samples weighted by α).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from salun.data import ImageDataset
from salun.methods.common import (
    SGDConfig,
    Stepper,
    epoch_batches,
    random_labels,
    train_augment,
)
from salun.methods.registry import register
from salun.saliency import check_keeps_some, compute_saliency, random_mask, saliency_mask
from salun.utils import progress, seed_everything
from salun.validate import check_choice, check_int, check_nonnegative, check_range


@dataclass(frozen=True)
class RLConfig(SGDConfig):
    """Random labelling. Attributes beyond :class:`SGDConfig`:

    Attributes:
        alpha: weight α of the retain term (paper: 1; issue #21 allows [0, 1]).
        regime: ``sequential`` (forget pass, then retain pass; reference HEAD) or ``joint``.
        exclude_true_label: draw random labels y' ≠ y (the paper's formula); the reference
            draws uniformly, so y' may equal y (default False, as the reference).
    """

    lr: float = 0.013  # README of the reference, CIFAR-10 10 % random forgetting
    lr_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03)
    alpha: float = 1.0
    regime: str = "sequential"
    exclude_true_label: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("regime", self.regime, ("sequential", "joint"))
        check_nonnegative("alpha", self.alpha)


@dataclass(frozen=True)
class SalUnConfig(RLConfig):
    """SalUn: RL on the salient weights only. Attributes beyond :class:`RLConfig`:

    Attributes:
        keep: fraction of weights in the saliency mask (paper: 0.5, γ = median).
        scope: ``global`` thresholding (paper) or ``layer`` (ablation).
        mask_batch_size: batch size of the saliency pass over D_f (reference: 256).
        mask_augment: random crop + flip of the saliency pass's D_f batches (the reference
            computes its gradients on the training transform; docs/method.md). Off by
            default; on in the paper preset.
        mask_source: ``saliency`` (the paper's mask) or ``random``: a uniformly random mask
            of the same density, seeded by ``seed`` (the paper's random-masking ablation).
    """

    keep: float = 0.5
    scope: str = "global"
    mask_batch_size: int = 256
    mask_augment: bool = False
    mask_source: str = "saliency"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("keep", self.keep, 0, 1, low_open=True, high_open=False)
        check_choice("scope", self.scope, ("global", "layer"))
        check_int("mask_batch_size", self.mask_batch_size, 1)
        check_choice("mask_source", self.mask_source, ("saliency", "random"))


def random_label_unlearning(
    model,
    forget: ImageDataset,
    retain: ImageDataset,
    cfg: RLConfig,
    ctx,
    mask,
    stepper: Stepper | None = None,
):
    """The RL loop shared by ``rl``, ``salun`` and ``salun_soft``; ``mask`` restricts the
    update; a custom ``stepper`` adds per-step work (SalUn-soft's proximal step)."""
    gen = seed_everything(cfg.seed)
    stepper = stepper or Stepper(model, cfg, mask)
    model.train()
    k = ctx.num_classes
    for epoch in progress(range(cfg.epochs), desc="unlearn", quiet=ctx.quiet):
        stepper.start_epoch(epoch)
        if cfg.regime == "sequential":
            for x, y in epoch_batches(forget, cfg, ctx, gen):
                y_rand = random_labels(y, k, gen, cfg.exclude_true_label)
                stepper.step(F.cross_entropy(model(x), y_rand), f"forget pass, epoch {epoch + 1}")
            if cfg.alpha > 0:
                for x, y in epoch_batches(retain, cfg, ctx, gen):
                    stepper.step(
                        cfg.alpha * F.cross_entropy(model(x), y), f"retain pass, epoch {epoch + 1}"
                    )
        else:
            # random labels fixed for this epoch; D_f and D_r shuffled together. The batches
            # carry sample positions as "labels" so each sample's label and weight is looked up
            y_all = torch.cat(
                [random_labels(forget.labels, k, gen, cfg.exclude_true_label), retain.labels]
            )
            w_all = torch.cat([torch.ones(len(forget)), torch.full((len(retain),), cfg.alpha)])
            positions = ImageDataset(
                torch.cat([forget.images, retain.images]), torch.arange(len(y_all))
            )
            for x, pos in epoch_batches(positions, cfg, ctx, gen):
                pos = pos.cpu()
                per_sample = F.cross_entropy(model(x), y_all[pos].to(ctx.device), reduction="none")
                loss = (w_all[pos].to(ctx.device) * per_sample).mean()
                stepper.step(loss, f"joint pass, epoch {epoch + 1}")
    return model


def forget_saliency_mask(model, forget: ImageDataset, cfg: SalUnConfig, ctx):
    """The paper's mask: CE gradients on D_f at θ_o, global top-``keep`` (docs/method.md);
    with ``mask_source: random``, a random mask of the same density instead."""
    from salun.data import iterate_batches

    if cfg.mask_source == "random":  # same stream offset as the saliency pass's batches
        return random_mask(model, keep=cfg.keep, seed=cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # its own stream: RL's stays untouched
    aug = train_augment(cfg.mask_augment, ctx)
    batches = iterate_batches(
        forget, cfg.mask_batch_size, shuffle=True, generator=gen, device=ctx.device, augment=aug
    )
    scores = compute_saliency(model, batches)
    check_keeps_some(scores, cfg.keep)
    return saliency_mask(scores, keep=cfg.keep, scope=cfg.scope)


@register("rl", RLConfig, "random labels on D_f + fine-tuning on D_r (SalUn without the mask)")
def rl(model, forget, retain, cfg: RLConfig, ctx, mask=None):
    return random_label_unlearning(model, forget, retain, cfg, ctx, mask)


@register("salun", SalUnConfig, "RL restricted to the salient weights (Fan et al., ICLR 2024)")
def salun(model, forget, retain, cfg: SalUnConfig, ctx, mask=None):
    if mask is None:
        mask = forget_saliency_mask(model, forget, cfg, ctx)
    return random_label_unlearning(model, forget, retain, cfg, ctx, mask)
