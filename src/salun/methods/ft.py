"""FT: fine-tune on the retain set D_r only, forgetting D_f by catastrophic forgetting
(docs/method.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from salun.errors import SalunError
from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.utils import progress, seed_everything


@dataclass(frozen=True)
class FTConfig(SGDConfig):
    """Fine-tuning. Fields as :class:`SGDConfig`, with these defaults:

    Attributes:
        lr: 0.01, the reference README's FT example (10 epochs, lr 0.01).
        lr_grid: log-spaced over the paper's range [1e-4, 1e-1] (the authors' statement).
    """

    lr: float = 0.01  # reference README (initial) and Unlearn-Sparse README, docs/method.md
    lr_grid: tuple[float, ...] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # paper: [1e-4, 1e-1]


def retain_finetune(model, retain, cfg: SGDConfig, ctx, stepper: Stepper, penalty=None):
    """CE on D_r for ``cfg.epochs`` epochs; ``penalty(model, epoch)`` adds a regulariser
    (ℓ1-sparse uses it). Train mode: BatchNorm statistics follow D_r, as the reference."""
    if len(retain) == 0:
        raise SalunError("fine-tuning needs a non-empty retain set D_r")
    gen = seed_everything(cfg.seed)
    model.train()
    for epoch in progress(range(cfg.epochs), desc="fine-tune", quiet=ctx.quiet):
        for x, y in epoch_batches(retain, cfg, ctx, gen):
            loss = F.cross_entropy(model(x), y)
            if penalty is not None:
                loss = loss + penalty(model, epoch)
            stepper.step(loss, f"fine-tuning on D_r, epoch {epoch + 1}")
    return model


@register("ft", FTConfig, "fine-tune on the retain set D_r only")
def ft(model, forget, retain, cfg: FTConfig, ctx, mask=None):
    return retain_finetune(model, retain, cfg, ctx, Stepper(model, cfg, mask))
