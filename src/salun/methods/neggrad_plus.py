"""NegGrad+: fine-tuning on D_r and gradient ascent on D_f in one weighted loss
(Kurmanji et al., NeurIPS 2023, "Towards Unbounded Machine Unlearning"; docs/methods-extra.md).

Every step takes one retain batch and one forget batch ("paired batches") and minimises

    L = β·CE(θ; retain batch) − (1 − β)·CE(θ; forget batch).

The defaults are the authors' run (meghdadk/SCRUB @98ffb11, ``MIA_experiments.ipynb``
with ``train_negrad`` in ``thirdparty/repdistiller/helper/loops.py``): plain SGD (no
momentum, no weight decay), lr 0.01, β 0.9999, 5 epochs, retain batch 32, forget batch 16.
An epoch is one pass over D_r, zipped with ``itertools.cycle`` over the forget loader:
each epoch takes ONE fresh shuffled pass over D_f and, when D_f runs out before D_r,
replays that pass's batches in the same order (``cycle`` caches what it has yielded).
``forget_cycle="reshuffle"`` keeps one forget stream for the whole run and draws a new
shuffled pass whenever D_f runs out (salun's behaviour before the reference was traced).
D_f has its own random stream, so D_r's batch order is exactly fine-tuning's. With β = 1
the forget term is exactly zero and is not computed at all (no forward pass, so BatchNorm
statistics are untouched): NegGrad+ at β = 1 *is* FT with the same optimiser, bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.utils import progress, seed_everything
from salun.validate import check_choice, check_int, check_range

FORGET_CYCLES = ("replay", "reshuffle")


@dataclass(frozen=True)
class NegGradPlusConfig(SGDConfig):
    """NegGrad+. Defaults: the authors' run (``MIA_experiments.ipynb``, meghdadk/SCRUB
    @98ffb11). Fields beyond :class:`SGDConfig`:

    Attributes:
        epochs: passes over D_r (reference: ``ng_epochs = 5``).
        lr: learning rate (reference: ``ng_lr = 0.01``).
        lr_grid: log-spaced around the reference's lr (our choice).
        batch_size: retain batch size (reference: ``retain_bs = 32``).
        forget_batch_size: forget batch size (reference: ``forget_bs = 16``; None = the
            retain batch size).
        momentum: SGD momentum (reference: plain ``SGD(lr)``, 0).
        weight_decay: SGD weight decay (reference: ``weight_decay=0.0``).
        beta: β, the weight of the retain term; the forget term gets 1 − β (reference:
            ``ng_alpha = 0.9999``; the authors call it α).
        forget_cycle: ``replay`` (reference: ``itertools.cycle`` replays the epoch's first
            pass over D_f) or ``reshuffle`` (a new shuffled pass each time D_f runs out).
    """

    epochs: int = 5  # reference
    lr: float = 0.01  # reference
    lr_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # our choice
    batch_size: int = 32  # reference
    momentum: float = 0.0  # reference
    weight_decay: float = 0.0  # reference
    beta: float = 0.9999  # reference
    forget_batch_size: int | None = 16  # reference
    forget_cycle: str = "replay"  # reference

    def __post_init__(self) -> None:
        super().__post_init__()  # types and finiteness of every field, SGD ranges
        check_range("beta", self.beta, 0, 1, high_open=False)
        if self.forget_batch_size is not None:
            check_int("forget_batch_size", self.forget_batch_size, 1)
        check_choice("forget_cycle", self.forget_cycle, FORGET_CYCLES)


def _forget_batches(data: ImageDataset, cfg: NegGradPlusConfig, ctx, gen) -> Iterator:
    """Forget batches forever: a fresh shuffled pass each time D_f is used up."""
    fcfg = replace(cfg, batch_size=cfg.forget_batch_size or cfg.batch_size)
    while True:
        yield from epoch_batches(data, fcfg, ctx, gen)


def _replayed_pass(data: ImageDataset, cfg: NegGradPlusConfig, ctx, gen) -> Iterator:
    """One shuffled pass over D_f, then its batches again in the same order, endlessly:
    what ``itertools.cycle`` over a DataLoader gives (it caches what it has yielded)."""
    fcfg = replace(cfg, batch_size=cfg.forget_batch_size or cfg.batch_size)
    return itertools.cycle(epoch_batches(data, fcfg, ctx, gen))


@register("neggrad_plus", NegGradPlusConfig, "β·CE on D_r − (1−β)·CE on D_f, paired batches")
def neggrad_plus(model, forget, retain, cfg: NegGradPlusConfig, ctx, mask=None):
    if len(retain) == 0:
        raise SalunError("neggrad_plus needs a non-empty retain set D_r")
    gen = seed_everything(cfg.seed)  # D_r's stream: the same as FT's for the same seed
    # D_f has its own stream so that drawing forget batches leaves D_r's order untouched
    fgen = torch.Generator().manual_seed(cfg.seed + 1)
    w_forget = 1.0 - cfg.beta
    if cfg.forget_cycle == "reshuffle":
        forget_batches = _forget_batches(forget, cfg, ctx, fgen)  # one stream for the run
    stepper = Stepper(model, cfg, mask)
    model.train()
    for epoch in progress(range(cfg.epochs), desc="neggrad+", quiet=ctx.quiet):
        if cfg.forget_cycle == "replay":
            # the reference zips D_r with a new cycle(forget_loader) every epoch
            forget_batches = _replayed_pass(forget, cfg, ctx, fgen)
        for x, y in epoch_batches(retain, cfg, ctx, gen):
            loss = cfg.beta * F.cross_entropy(model(x), y)
            if w_forget > 0:
                xf, yf = next(forget_batches)
                loss = loss - w_forget * F.cross_entropy(model(xf), yf)
            stepper.step(loss, f"NegGrad+ epoch {epoch + 1}")
    return model
