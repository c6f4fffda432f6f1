"""The paper's evaluation of one model on one split: UA, RA, TA, MIA (+ the other features).

docs/evaluation.md says exactly what is computed on which subset.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from salun.data import DataBundle, Split
from salun.errors import SalunError
from salun.metrics.accuracy import accuracy, predict_logits
from salun.metrics.mia import FEATURES, balanced_shadow_sets, mia_efficacy


def evaluate_unlearning(
    model: nn.Module,
    bundle: DataBundle,
    split: Split,
    *,
    device: torch.device | str = "cpu",
    mia_features: tuple[str, ...] = FEATURES,
) -> dict[str, Any]:
    """Evaluate ``model`` in eval mode with the test transform (docs/evaluation.md).

    Returns:
        ``UA`` (100 − accuracy on D_f), ``RA`` (accuracy on D_r), ``TA`` (accuracy on the
        test set without the forgotten classes), ``MIA`` (confidence feature) and
        ``MIA_<feature>`` for the other features, all in %; and how the attack was fitted:
        ``mia_members`` and ``mia_nonmembers`` (equal sizes), ``mia_seed`` (the split's
        seed, which drew the subsample of the larger side), ``mia_subsampled`` (which side
        was cut) and ``mia_blind`` (the features whose SVC predicted one class for every
        shadow sample; each also raises a :class:`~salun.metrics.mia.BlindAttackWarning`).
        Models with extra outputs (BE's shadow class kept) are evaluated over all logits.
    """
    forget = bundle.train.subset(split.forget)
    retain = bundle.train.subset(split.retain)
    test = bundle.test.subset(split.test_indices(bundle))
    return evaluate_sets(
        model, forget, retain, test, split.seed, device=device, mia_features=mia_features
    )


def evaluate_sets(
    model: nn.Module,
    forget,
    retain,
    test,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    mia_features: tuple[str, ...] = FEATURES,
) -> dict[str, Any]:
    """:func:`evaluate_unlearning` on three given sets (anything ``iterate_batches`` reads,
    with ``.labels``); ``seed`` draws the MIA's balanced shadow subsample; ``test`` is used
    as it is (no classes removed)."""
    lf, lr_, lt = (predict_logits(model, d, device) for d in (forget, retain, test))
    for name, logits in (("D_f", lf), ("D_r", lr_), ("the test set", lt)):
        check_finite_logits(logits, name)
    out: dict[str, Any] = {
        "UA": 100.0 - accuracy(lf, forget.labels),
        "RA": accuracy(lr_, retain.labels),
        "TA": accuracy(lt, test.labels),
    }
    shadow = balanced_shadow_sets(len(retain), len(test), seed)
    m = torch.as_tensor(shadow.members)
    nm = torch.as_tensor(shadow.nonmembers)
    blind: list[str] = []
    out.update(
        mia_efficacy(
            lr_[m].softmax(1),
            retain.labels[m],
            lt[nm].softmax(1),
            test.labels[nm],
            lf.softmax(1),
            forget.labels,
            features=mia_features,
            blind=blind,
        )
    )
    out.update(
        mia_members=len(shadow.members),
        mia_nonmembers=len(shadow.nonmembers),
        mia_seed=shadow.seed,
        mia_subsampled=shadow.subsampled,
        mia_blind=blind,
    )
    return out


def check_finite_logits(logits: torch.Tensor, where: str) -> None:
    """A model whose outputs hold NaN or inf has diverged: no metric of it means anything
    (the MIA's SVC would fail on them), so it is refused with one message."""
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise SalunError(
            f"the model's outputs are NaN or infinite on {bad} of {len(logits)} samples of "
            f"{where}: it diverged (a learning rate or loss weight too large?); nothing to "
            "evaluate"
        )
