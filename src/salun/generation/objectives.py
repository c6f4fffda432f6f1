"""The generative unlearning objectives, written once for the DDPM and Stable Diffusion.

Both sides build their noisy inputs their own way (pixel-space DDPM, latent SD) and then
call these, so a change to SalUn's forget term, ESD's target, GA or the α-weighting is made
in one place (docs/generation.md):

- :func:`forget_to_other_condition`: SalUn/RL's ‖ε_θ(x_t, c) − sg[ε_θ(x_t, c′)]‖²;
- :func:`negative_guidance`: ESD's target ε*(∅) − η·(ε*(c) − ε*(∅));
- :func:`ascent`: GA's negated loss;
- :func:`with_retain`: forget + α · retain;
- :func:`squared_error`: the ``mean`` / per-image ``sum`` reductions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from salun.errors import SalunError

Predict = Callable[[Any], torch.Tensor]


def squared_error(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"):
    """``mean``: over every element; ``sum``: over each image's elements, then the mean
    over the batch (the reference DDPM's scaling, C·H·W times larger)."""
    err = (pred - target).square()
    if reduction == "mean":
        return err.mean()
    if reduction == "sum":
        return err.flatten(1).sum(1).mean()
    raise SalunError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def forget_to_other_condition(predict: Predict, cond: Any, other: Any) -> torch.Tensor:
    """SalUn's forget term MSE(ε_θ(x_t, c), sg[ε_θ(x_t, c′)]), mean over elements.

    ``predict(condition)`` must close over ONE x_t and t, so both branches see the same
    noisy input by construction. The prediction for c is made first (the reference's order);
    the target branch runs without a graph: no gradient reaches θ through it.
    """
    output = predict(cond)
    with torch.no_grad():
        target = predict(other)
    return squared_error(output, target, "mean")


def negative_guidance(e_cond: torch.Tensor, e_null: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's target ε*(∅) − η·(ε*(c) − ε*(∅)) from a frozen model's two predictions."""
    return e_null - eta * (e_cond - e_null)


def ascent(loss: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: minimising the negated loss."""
    return -loss


def with_retain(forget_term: torch.Tensor, retain_term: torch.Tensor | None, alpha: float):
    """forget + α · retain (the forget term alone when there is no retain term)."""
    if retain_term is None:
        return forget_term
    return forget_term + alpha * retain_term
