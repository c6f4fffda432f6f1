"""SSD: Selective Synaptic Dampening (Foster et al., AAAI 2024, "Fast Machine Unlearning
Without Retraining through Selective Synaptic Dampening"; docs/methods-extra.md).

No training loop. From the original model (eval mode, nothing updated):

1. importances I_f on D_f and I_r on the reference set (D_r ∪ D_f by default, as the
   authors' ``ssd_tuning`` in if-loops/selective-synaptic-dampening @cdfdc0e,
   ``src/forget_random_strategies.py``, over ``full_train_dl``; batch 128): the diagonal
   of the empirical Fisher, taken as the published code does: the mean over batches of
   the squared batch-mean CE gradient (``batch_size=1`` gives the per-sample Fisher);
2. every parameter with I_f > α·I_r is multiplied by β = min(λ·I_r / I_f, 1); all
   others stay bit-identical. A mask, if given, further restricts which parameters may
   be dampened (mask False = never touched).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from salun.data import ImageDataset, iterate_batches
from salun.errors import SalunError
from salun.methods.registry import register
from salun.saliency import check_mask_fits
from salun.validate import check_choice, check_each, check_fields, check_int, check_positive

REFERENCE_SETS = ("retain", "full")


@dataclass(frozen=True)
class SSDConfig:
    """Selective Synaptic Dampening.

    Attributes:
        alpha: α, the selection threshold: dampen where I_f > α·I_r (published: 10).
        lam: λ, the dampening constant: β = min(λ·I_r / I_f, 1) (published: 1).
        lr_grid: candidate values of ``alpha`` (SSD has no learning rate; ``grid_field``
            names the field the benchmark's search sets): from 1 to the published 10 (our
            choice). Below α = λ nothing more is dampened (β clamps to 1), and on the
            Fashion-MNIST MLP the published 10 changed nothing (docs/methods-extra.md).
        batch_size: batch size of both importance passes; the importance squares
            batch-mean gradients, so it depends on it (reference: 128, the loaders of
            ``src/forget_random_main.py``).
        reference: the set I_r is computed on: ``full`` (D_r then D_f, unshuffled, as the
            reference's ``ConcatDataset`` of retain and forget) or ``retain`` (D_r only).
    """

    grid_field: ClassVar[str] = "alpha"

    alpha: float = 10.0  # published
    lam: float = 1.0  # published
    lr_grid: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0)  # our choice
    batch_size: int = 128  # reference
    reference: str = "full"  # reference

    def __post_init__(self) -> None:
        check_fields(self)  # types and finiteness of every field
        check_positive("alpha", self.alpha)
        check_positive("lam", self.lam)
        check_each("lr_grid", self.lr_grid, check_positive)  # values of alpha
        check_int("batch_size", self.batch_size, 1)
        check_choice("reference", self.reference, REFERENCE_SETS)


def chained_batches(parts: Sequence, batch_size: int, device) -> Iterator:
    """Unshuffled batches over the concatenation of ``parts``, in order, as a DataLoader
    over a ``ConcatDataset`` cuts them (a batch may span two parts). Each part is read
    through :func:`iterate_batches`, so streamed sets work without being concatenated."""
    sizes = [len(part) for part in parts]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    for start in range(0, offsets[-1], batch_size):
        stop = min(start + batch_size, offsets[-1])
        xs, ys = [], []
        for part, lo, hi in zip(parts, offsets, offsets[1:]):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                order = torch.arange(a - lo, b - lo)
                x, y = next(iterate_batches(part, b - a, device=device, order=order))
                xs.append(x)
                ys.append(y)
        yield torch.cat(xs), torch.cat(ys)


def fisher_importance(
    model: nn.Module, data: ImageDataset | Sequence[ImageDataset], batch_size: int, device
) -> dict[str, torch.Tensor]:
    """{name: mean over batches of (∇ mean-CE of the batch)²}, model in eval mode.

    ``data`` is one set or a list of sets taken one after the other (D_r then D_f).
    The model's mode is restored and no ``.grad`` is left behind.
    """
    parts = list(data) if isinstance(data, (list, tuple)) else [data]
    if sum(len(part) for part in parts) == 0:
        raise SalunError("SSD needs non-empty forget and reference sets for its importances")
    was_training = model.training
    model.eval()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in named}
    batches = 0
    for x, y in chained_batches(parts, batch_size, device):
        grads = torch.autograd.grad(
            F.cross_entropy(model(x), y), [p for _, p in named], allow_unused=True
        )
        for (n, _), g in zip(named, grads):
            if g is not None:
                total[n] += g.detach() ** 2
        batches += 1
    model.train(was_training)
    return {n: t / batches for n, t in total.items()}


def dampening_factors(
    i_forget: torch.Tensor, i_ref: torch.Tensor, alpha: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(selected, β): selected = I_f > α·I_r; β = min(λ·I_r / I_f, 1) where selected."""
    selected = i_forget > alpha * i_ref
    # I_f > α·I_r ≥ 0 on selected coordinates, so the division is safe there
    beta = torch.where(selected, (lam * i_ref / i_forget.where(selected, 1.0)).clamp(max=1.0), 1.0)
    return selected, beta


@torch.no_grad()
def dampen(
    model: nn.Module,
    i_forget: Mapping[str, torch.Tensor],
    i_ref: Mapping[str, torch.Tensor],
    alpha: float,
    lam: float,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, int]:
    """Multiply the selected parameters by β in place; returns {name: dampened count}."""
    counts = {}
    for n, p in model.named_parameters():
        if n not in i_forget:
            continue
        selected, beta = dampening_factors(i_forget[n], i_ref[n], alpha, lam)
        if mask is not None:
            selected = selected & mask[n].to(p.device, torch.bool)
        # torch.where leaves unselected coordinates exactly as they were (no ×1.0 rounding)
        p.copy_(torch.where(selected, p * beta, p))
        counts[n] = int(selected.sum())
    return counts


@register("ssd", SSDConfig, "selective synaptic dampening of forget-specific weights (no training)")
def ssd(model, forget, retain, cfg: SSDConfig, ctx, mask=None):
    if mask is not None:
        check_mask_fits(mask, model)
    # the reference's full_train_dl: ConcatDataset((retain, forget)), unshuffled
    ref = [retain, forget] if cfg.reference == "full" else [retain]
    i_forget = fisher_importance(model, forget, cfg.batch_size, ctx.device)
    i_ref = fisher_importance(model, ref, cfg.batch_size, ctx.device)
    dampen(model, i_forget, i_ref, cfg.alpha, cfg.lam, mask)
    model.eval()
    return model
