"""Strict masked updates: weights outside the mask never move (docs/method.md).

Masking the gradient alone is not enough: SGD adds ``weight_decay·θ`` *after* the mask
and momentum carries old updates, so "frozen" weights drift (reference issue #32). In
``strict`` mode, after every optimizer step the mask-0 coordinates are restored to their
starting values and their optimizer state (momentum, Adam moments) is reset to zero, so
they stay bit-identical for any elementwise optimizer (SGD, Adam, AdamW...). ``legacy``
masks the gradient only, as the paper-era reference did (for comparison with Table 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from salun.errors import SalunError
from salun.saliency import check_mask_fits

MODES = ("strict", "legacy")


class MaskedUpdate:
    """Applies a saliency mask around ``optimizer.step()``.

    Example:
        >>> masked = MaskedUpdate(model, mask, mode="strict")
        >>> loss.backward(); masked.step(optimizer)   # instead of optimizer.step()

    Args:
        model: the model being unlearned (its current weights are the frozen values).
        mask: ``{param name: bool tensor}`` (True = salient = may move); None = no mask.
        mode: ``"strict"`` (default) or ``"legacy"``.
    """

    def __init__(
        self, model: nn.Module, mask: Mapping[str, torch.Tensor] | None, mode: str = "strict"
    ) -> None:
        if mode not in MODES:
            raise SalunError(f"mask mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        # (parameter, float mask, frozen values p0·(1 − m)): float arithmetic is several times
        # faster than boolean indexing on CPU, and p·m + p0·(1 − m) is exactly p on salient
        # and exactly p0 on frozen coordinates for finite weights (x·1 = x, x·0 = ±0, ±0 + y = y)
        self.entries: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        if mask is None:
            return
        check_mask_fits(mask, model)
        for name, p in model.named_parameters():
            m = mask[name].to(p.device, torch.bool)
            if bool(m.all()):
                continue  # fully salient: nothing to do, and keep=1.0 stays exactly RL
            mf = m.to(p.dtype)
            self.entries.append((p, mf, p.detach() * (1 - mf)))

    @property
    def active(self) -> bool:
        return bool(self.entries)

    def extra_bytes(self) -> int:
        """Memory held for the mask (float mask + frozen values), in bytes."""
        return sum(mf.nbytes + frozen.nbytes for _, mf, frozen in self.entries)

    def mask_grads(self) -> None:
        """Zero the gradients of non-salient coordinates (both modes)."""
        for p, mf, _ in self.entries:
            if p.grad is not None:
                p.grad.mul_(mf)

    @torch.no_grad()
    def restore(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Put mask-0 coordinates back to their starting values and zero their optimizer
        state (strict mode only)."""
        for p, mf, frozen in self.entries:
            p.mul_(mf).add_(frozen)
            if optimizer is not None:
                for v in optimizer.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        v.mul_(mf)

    def step(
        self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
    ) -> None:
        """``mask_grads``, ``optimizer.step()`` (through ``scaler`` for fp16: it unscales,
        and skips steps with inf/NaN gradients), then (strict) ``restore``."""
        self.mask_grads()
        if scaler is not None and scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self.mode == "strict":
            self.restore(optimizer)


def apply_mask_to_delta(
    model: nn.Module, start: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]
) -> None:
    """θ ← m ⊙ θ + (1 − m) ⊙ θ_start, for one-shot methods (e.g. IU) that move all weights."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in mask:
                p.copy_(torch.where(mask[n].to(p.device), p, start[n].to(p.device)))
