"""NegGrad+: fine-tuning on D_r and gradient ascent on D_f in one weighted loss
(Kurmanji et al., NeurIPS 2023, "Towards Unbounded Machine Unlearning"; docs/methods-extra.md).

Every step takes one retain batch and one forget batch ("paired batches") and minimises

    L = β·CE(θ; retain batch) − (1 − β)·CE(θ; forget batch).

An epoch is one pass over D_r; forget batches are drawn from their own shuffled stream,
restarted whenever D_f runs out, so D_r's batch order is exactly fine-tuning's. With
β = 1 the forget term is exactly zero and is not computed at all (no forward pass, so
BatchNorm statistics are untouched): NegGrad+ at β = 1 *is* FT, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.utils import progress, seed_everything
from salun.validate import check_int, check_range


@dataclass(frozen=True)
class NegGradPlusConfig(SGDConfig):
    """NegGrad+. Fields beyond :class:`SGDConfig`:

    Attributes:
        beta: β, the weight of the retain term; the forget term gets 1 − β. Kurmanji et al.
            tune β per setting; 0.999 (our choice) keeps the ascent small enough not to
            wreck the model, since CE on D_f grows without bound while CE on D_r stays small.
        forget_batch_size: samples per forget batch (None = ``batch_size``, our choice).
        epochs: 5 (our choice: NegGrad+ starts from the trained model, as FT).
        lr: 0.01, FT's default (our choice: the retain term is FT's loss).
        lr_grid: FT's range around the default.
    """

    epochs: int = 5  # our choice
    lr: float = 0.01  # our choice (FT's default)
    lr_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    beta: float = 0.999  # our choice; Kurmanji et al. tune β
    forget_batch_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()  # types and finiteness of every field, SGD ranges
        check_range("beta", self.beta, 0, 1, high_open=False)
        if self.forget_batch_size is not None:
            check_int("forget_batch_size", self.forget_batch_size, 1)


def _cycle(data: ImageDataset, cfg: NegGradPlusConfig, ctx, gen) -> Iterator:
    """Forget batches forever: a fresh shuffled pass each time D_f is used up."""
    from dataclasses import replace

    fcfg = replace(cfg, batch_size=cfg.forget_batch_size or cfg.batch_size)
    while True:
        yield from epoch_batches(data, fcfg, ctx, gen)


@register("neggrad_plus", NegGradPlusConfig, "β·CE on D_r − (1−β)·CE on D_f, paired batches")
def neggrad_plus(model, forget, retain, cfg: NegGradPlusConfig, ctx, mask=None):
    if len(retain) == 0:
        raise SalunError("neggrad_plus needs a non-empty retain set D_r")
    gen = seed_everything(cfg.seed)  # D_r's stream: the same as FT's for the same seed
    # D_f has its own stream so that drawing forget batches leaves D_r's order untouched
    fgen = torch.Generator().manual_seed(cfg.seed + 1)
    forget_batches = _cycle(forget, cfg, ctx, fgen)
    w_forget = 1.0 - cfg.beta
    stepper = Stepper(model, cfg, mask)
    model.train()
    for epoch in progress(range(cfg.epochs), desc="neggrad+", quiet=ctx.quiet):
        for x, y in epoch_batches(retain, cfg, ctx, gen):
            loss = cfg.beta * F.cross_entropy(model(x), y)
            if w_forget > 0:
                xf, yf = next(forget_batches)
                loss = loss - w_forget * F.cross_entropy(model(xf), yf)
            stepper.step(loss, f"NegGrad+ epoch {epoch + 1}")
    return model
