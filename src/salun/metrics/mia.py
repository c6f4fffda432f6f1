"""MIA-efficacy: the SVC population attack of the reference code (SALUN_SPEC §4.2).

Members ("shadow train") are the first |test| samples of D_r in index order, non-members
the test set (forgotten classes removed); an ``SVC(C=3, kernel="rbf", gamma="auto")`` is
fit per feature with no scaling, and the efficacy is the % of D_f predicted non-member.
Higher means "D_f looks more like unseen data"; the target is Retrain's value, not 100.
The reported number (``MIA``) uses the ``confidence`` feature, p_y.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.svm import SVC

FEATURES = ("correctness", "confidence", "entropy", "m_entropy", "prob")
_EPS = 1e-30


def mia_features(probs: torch.Tensor, labels: torch.Tensor, feature: str) -> np.ndarray:
    """One attack feature per sample, as a 2-D array for sklearn.

    ``m_entropy`` is Song & Mittal's modified entropy
    −(1−p_y)·log p_y − Σ_{i≠y} p_i·log(1−p_i), not the reference code's mis-indexed version.
    """
    p = probs.double()
    y = labels.cpu().long()
    py = p.gather(1, y[:, None]).squeeze(1)
    if feature == "correctness":
        f = (p.argmax(1) == y).double()
    elif feature == "confidence":
        f = py
    elif feature == "entropy":
        f = -(p * torch.log(p.clamp_min(_EPS))).sum(1)
    elif feature == "m_entropy":
        term_y = -(1 - py) * torch.log(py.clamp_min(_EPS))
        others = -(p * torch.log((1 - p).clamp_min(_EPS)))
        others = others.sum(1) - others.gather(1, y[:, None]).squeeze(1)
        f = term_y + others
    elif feature == "prob":
        return p.numpy()
    else:
        raise ValueError(f"unknown MIA feature {feature!r}; choose from {FEATURES}")
    return f.numpy()[:, None]


def svc_mia_efficacy(
    shadow_train: np.ndarray, shadow_test: np.ndarray, target: np.ndarray
) -> float:
    """Fit members (1) vs non-members (0); return the % of ``target`` predicted non-member."""
    if len(target) == 0:
        return float("nan")
    x = np.concatenate([shadow_train, shadow_test])
    y = np.concatenate([np.ones(len(shadow_train)), np.zeros(len(shadow_test))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(100.0 * (1.0 - clf.predict(target).mean()))


def mia_efficacy(
    member_probs: torch.Tensor,
    member_labels: torch.Tensor,
    nonmember_probs: torch.Tensor,
    nonmember_labels: torch.Tensor,
    target_probs: torch.Tensor,
    target_labels: torch.Tensor,
    features: tuple[str, ...] = FEATURES,
) -> dict[str, float]:
    """MIA-efficacy for each feature; key ``MIA`` is the confidence one (the paper's number),
    the others are ``MIA_<feature>``."""
    out = {}
    for feat in features:
        eff = svc_mia_efficacy(
            mia_features(member_probs, member_labels, feat),
            mia_features(nonmember_probs, nonmember_labels, feat),
            mia_features(target_probs, target_labels, feat),
        )
        out["MIA" if feat == "confidence" else f"MIA_{feat}"] = eff
    return out
