"""GA: gradient ascent on the forget set, i.e. SGD on −CE(θ; D_f) with the true labels
(docs/method.md). No retain term."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.utils import progress, seed_everything


@dataclass(frozen=True)
class GAConfig(SGDConfig):
    """Gradient ascent. Fields as :class:`SGDConfig`, with these defaults:

    Attributes:
        epochs: 5, the reference README's GA example.
        lr: 1e-4, the same example; the reference's maintainers advise 5e-4–1e-3 for
            random forgetting, hence the grid.
        lr_grid: log-spaced over [1e-5, 1e-3]: GA is very lr-sensitive and collapses the
            model above that (the authors' earlier Unlearn-Sparse code; our calibration).
    """

    epochs: int = 5  # reference README example, docs/method.md
    lr: float = 1e-4  # reference README example, docs/method.md
    lr_grid: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)


@register("ga", GAConfig, "gradient ascent (−cross-entropy) on the forget set D_f")
def ga(model, forget, retain, cfg: GAConfig, ctx, mask=None):
    gen = seed_everything(cfg.seed)
    stepper = Stepper(model, cfg, mask)
    model.train()
    for epoch in progress(range(cfg.epochs), desc="ga", quiet=ctx.quiet):
        for x, y in epoch_batches(forget, cfg, ctx, gen):
            stepper.step(-F.cross_entropy(model(x), y), f"gradient ascent, epoch {epoch + 1}")
    return model
