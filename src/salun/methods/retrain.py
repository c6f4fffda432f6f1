"""Retrain: exact unlearning, the gold standard every gap is measured against (docs/method.md).

A fresh random init (the original weights are never loaded) trained on D_r only, with the
same recipe as the original model: ``ctx.original_train`` holds that recipe as a dict of
:class:`~salun.train.TrainConfig` fields. ``RetrainConfig()`` changes nothing; its fields
are optional overrides for a cheaper or differently seeded Retrain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from salun.errors import SalunError
from salun.methods.registry import register
from salun.models import build_from_kwargs
from salun.train import TrainConfig, train_supervised
from salun.utils import seed_everything
from salun.validate import check_each, check_fields, check_int, check_positive, check_seed


@dataclass(frozen=True)
class RetrainConfig:
    """Overrides of the original model's training recipe; ``None`` keeps the original value.

    Without an original recipe in the context, the base is :class:`TrainConfig`'s defaults
    (SGD, cosine schedule from lr 0.1: the paper's Retrain recipe, docs/method.md).

    Attributes:
        epochs: training epochs (paper: 182, as the original; None = the original's).
        lr: initial learning rate (paper: 0.1; None = the original's).
        seed: seeds the fresh init, shuffling and augmentation (None = the original's, so
            Retrain differs from the original only in the data it sees).
        lr_grid: empty: Retrain is the reference, not searched.
    """

    epochs: int | None = None
    lr: float | None = None
    seed: int | None = None
    lr_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_fields(self)
        if self.epochs is not None:
            check_int("epochs", self.epochs, 1)
        if self.lr is not None:
            check_positive("lr", self.lr)
        if self.seed is not None:
            check_seed("seed", self.seed)
        check_each("lr_grid", self.lr_grid, check_positive)


def retrain_recipe(original: Mapping[str, Any], cfg: RetrainConfig) -> TrainConfig:
    """The :class:`TrainConfig` Retrain uses: ``original`` (or the defaults) plus overrides.

    ``val_best`` is switched off: methods receive no validation set, and choosing the epoch
    on held-out data is not part of what Retrain has to reproduce.
    """
    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(original) - known)
    if bad:
        raise SalunError(
            f"the original training recipe has unknown setting {bad[0]!r}; "
            f"TrainConfig has: {', '.join(sorted(known))}"
        )
    base = {k: tuple(v) if isinstance(v, list) else v for k, v in original.items()}
    recipe = TrainConfig(**base)
    overrides = {
        k: getattr(cfg, k) for k in ("epochs", "lr", "seed") if getattr(cfg, k) is not None
    }
    return replace(recipe, val_best=False, **overrides)


@register(
    "retrain",
    RetrainConfig,
    "fresh init trained on D_r only with the original recipe (exact unlearning)",
    uses_mask=False,
)
def retrain(model, forget, retain, cfg: RetrainConfig, ctx, mask=None):
    if mask is not None:
        raise SalunError("retrain trains a fresh model from scratch: a mask means nothing here")
    if not ctx.model_kwargs:
        raise SalunError(
            "retrain needs the architecture (ctx.model_kwargs, see salun.models.model_kwargs_for)"
        )
    if len(retain) == 0:
        raise SalunError("retrain needs a non-empty retain set D_r")
    recipe = retrain_recipe(ctx.original_train, cfg)
    seed_everything(recipe.seed)  # the fresh init is reproducible from the recipe's seed
    fresh = build_from_kwargs(dict(ctx.model_kwargs))
    # D_r only: the forget set is never passed on (the whole point of exact unlearning)
    train_supervised(
        fresh,
        retain,
        recipe,
        device=ctx.device,
        flip_allowed=ctx.flip,
        quiet=ctx.quiet,
        desc="retrain",
    )
    return fresh
