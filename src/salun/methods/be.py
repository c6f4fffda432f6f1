"""BE: Boundary Expanding (Chen et al., CVPR 2023; docs/method.md).

The head gets a K+1-th "shadow" output (old rows copied, the new row with PyTorch's
default init); every forget sample is trained toward the shadow class, so D_f's mass
moves out of the K real classes. With ``remove_shadow`` (default) the shadow row is pruned
before returning, as Chen et al. do, and the model keeps its K outputs. The SalUn reference
code keeps it (``remove_shadow: false``, the paper preset's value): evaluation then takes
argmax (and the MIA softmax) over K+1 logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from salun.errors import SalunError
from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.saliency import check_mask_fits
from salun.utils import progress, seed_everything


@dataclass(frozen=True)
class BEConfig(SGDConfig):
    """Boundary Expanding. Fields beyond :class:`SGDConfig`:

    Attributes:
        lr: 1e-5. The paper's value was not found; small, as BS.
        lr_grid: log-spaced over [1e-6, 1e-2].
        remove_shadow: drop the shadow output before returning (Chen et al.; default).
            False keeps K+1 outputs, as the SalUn reference code does.
    """

    lr: float = 1e-5  # [NOT FOUND]: as BS, docs/method.md
    lr_grid: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    remove_shadow: bool = True


def _linear_like(old: nn.Linear, out_features: int) -> nn.Linear:
    return nn.Linear(
        old.in_features,
        out_features,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )


@torch.no_grad()
def expand_head(head: nn.Linear) -> nn.Linear:
    """A K+1-output copy of ``head``: rows 0..K−1 copied, row K default-initialised."""
    new = _linear_like(head, head.out_features + 1)
    k = head.out_features
    new.weight[:k] = head.weight
    if head.bias is not None:
        new.bias[:k] = head.bias
    return new


@torch.no_grad()
def shrink_head(head: nn.Linear) -> nn.Linear:
    """``head`` without its last output row (the shadow class)."""
    new = _linear_like(head, head.out_features - 1)
    new.weight.copy_(head.weight[:-1])
    if head.bias is not None:
        new.bias.copy_(head.bias[:-1])
    return new


def expand_mask(mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``mask`` whose head entries gain a True row for the shadow output."""
    out = dict(mask)
    for name in ("head.weight", "head.bias"):
        if name in out:
            m = out[name]
            out[name] = torch.cat([m, torch.ones_like(m[:1])])
    return out


@register("be", BEConfig, "boundary expanding: train D_f into an extra shadow class (Chen et al.)")
def be(model, forget, retain, cfg: BEConfig, ctx, mask=None):
    if not isinstance(getattr(model, "head", None), nn.Linear):
        raise SalunError("be needs a model whose last layer is an nn.Linear named .head")
    if mask is not None:
        check_mask_fits(mask, model)  # against the K-output model the mask was made for
        mask = expand_mask(mask)
    gen = seed_everything(cfg.seed)  # seeds the shadow row's init too
    shadow = model.head.out_features
    model.head = expand_head(model.head)
    stepper = Stepper(model, cfg, mask)  # built after the expansion: it sees the new head
    model.train()
    for epoch in progress(range(cfg.epochs), desc="be", quiet=ctx.quiet):
        for x, _ in epoch_batches(forget, cfg, ctx, gen):
            target = torch.full((len(x),), shadow, dtype=torch.int64, device=x.device)
            stepper.step(
                F.cross_entropy(model(x), target), f"boundary expanding, epoch {epoch + 1}"
            )
    if cfg.remove_shadow:
        model.head = shrink_head(model.head)
    return model
