"""The paper's evaluation of one model on one split: UA, RA, TA, MIA (+ the other features)."""

from __future__ import annotations

import torch
from torch import nn

from salun.data import DataBundle, Split
from salun.metrics.accuracy import accuracy, predict_logits
from salun.metrics.mia import FEATURES, mia_efficacy


def evaluate_unlearning(
    model: nn.Module,
    bundle: DataBundle,
    split: Split,
    *,
    device: torch.device | str = "cpu",
    mia_features: tuple[str, ...] = FEATURES,
) -> dict[str, float]:
    """Evaluate ``model`` as SALUN_SPEC §4: eval mode, test transform.

    Returns a dict with ``UA``, ``RA``, ``TA``, ``MIA`` (confidence feature) and
    ``MIA_<feature>`` for the other features, all in %. Models with extra outputs
    (BE's shadow class kept) are evaluated over all their logits.
    """
    forget = bundle.train.subset(split.forget)
    retain = bundle.train.subset(split.retain)
    test = bundle.test.subset(split.test_indices(bundle))
    lf, lr_, lt = (predict_logits(model, d, device) for d in (forget, retain, test))
    out = {
        "UA": 100.0 - accuracy(lf, forget.labels),
        "RA": accuracy(lr_, retain.labels),
        "TA": accuracy(lt, test.labels),
    }
    # members: the first |test| samples of D_r in index order (split.retain is sorted)
    n_members = min(len(test), len(retain))
    out.update(
        mia_efficacy(
            lr_[:n_members].softmax(1),
            retain.labels[:n_members],
            lt.softmax(1),
            test.labels,
            lf.softmax(1),
            forget.labels,
            features=mia_features,
        )
    )
    return out
