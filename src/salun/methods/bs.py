"""BS: Boundary Shrink (Chen et al., CVPR 2023; docs/method.md).

Each forget sample is relabelled with its nearest "neighbour" class, found by one FGSM step
on a frozen copy of the original model, and the live model is trained on the clean image
with that label. D_f only, no retain term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.utils import clone_model, progress, seed_everything
from salun.validate import check_positive


@dataclass(frozen=True)
class BSConfig(SGDConfig):
    """Boundary Shrink. Fields beyond :class:`SGDConfig`:

    Attributes:
        lr: 1e-5. The paper's value was not found; its authors searched a small range
            (starting at 1e-8), so the default sits low.
        lr_grid: log-spaced over [1e-6, 1e-2].
        eps: the FGSM step on the [0, 1] pixel scale (paper: 0.1, fixed).
    """

    lr: float = 1e-5  # [NOT FOUND]: small, as the authors' search range, docs/method.md
    lr_grid: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    eps: float = 0.1  # FGSM step, docs/method.md

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("eps", self.eps)


def neighbour_labels(
    frozen_model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.1
) -> torch.Tensor:
    """argmax of ``frozen_model`` on the FGSM image clip(x + eps·sign ∇_x CE), quantised to
    1/255 steps. ``x`` in [0, 1]; the model is used in eval mode and left as it was (its
    mode is restored and no ``.grad`` is written)."""
    was_training = frozen_model.training
    frozen_model.eval()
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(frozen_model(xg), y)
            (gx,) = torch.autograd.grad(loss, xg)
        x_adv = (x + eps * gx.sign()).clamp(0.0, 1.0)
        x_adv = torch.round(x_adv * 255.0) / 255.0  # back onto the 8-bit pixel grid
        with torch.no_grad():
            return frozen_model(x_adv).argmax(1)
    finally:
        frozen_model.train(was_training)


@register("bs", BSConfig, "boundary shrink: train D_f on FGSM neighbour labels (Chen et al.)")
def bs(model, forget, retain, cfg: BSConfig, ctx, mask=None):
    gen = seed_everything(cfg.seed)
    frozen = clone_model(model).eval().requires_grad_(False)  # the original, never trained
    stepper = Stepper(model, cfg, mask)
    model.train()
    for epoch in progress(range(cfg.epochs), desc="bs", quiet=ctx.quiet):
        for x, y in epoch_batches(forget, cfg, ctx, gen):
            y_nb = neighbour_labels(frozen, x, y, cfg.eps)
            stepper.step(F.cross_entropy(model(x), y_nb), f"boundary shrink, epoch {epoch + 1}")
    return model
