"""MIA-efficacy: the SVC population attack of the reference code (docs/evaluation.md).

Members ("shadow train") are retain samples, non-members test samples (forgotten classes
removed), in equal numbers (:func:`balanced_shadow_sets`); an
``SVC(C=3, kernel="rbf", gamma="auto")`` is fit per feature with no scaling, and the
efficacy is the % of D_f predicted non-member. Higher means "D_f looks more like unseen
data"; the target is Retrain's value, not 100. The reported number (``MIA``) uses the
``confidence`` feature, p_y.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.svm import SVC

from salun.errors import SalunError

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


class BlindAttackWarning(UserWarning):
    """The SVC predicts one class for every shadow sample: its efficacy says nothing."""


@dataclass(frozen=True)
class ShadowSets:
    """Which samples the attack fits on: positions into D_r (members) and into the test
    set (non-members), equally many of each.

    Attributes:
        members: positions into D_r, ascending.
        nonmembers: positions into the (class-filtered) test set, ascending.
        seed: the seed that drew the subsample of the larger side.
        subsampled: ``"members"``, ``"nonmembers"`` or ``"none"``: which side was cut.
    """

    members: np.ndarray
    nonmembers: np.ndarray
    seed: int
    subsampled: str = "none"


def balanced_shadow_sets(n_retain: int, n_test: int, seed: int) -> ShadowSets:
    """Equal-sized member and non-member sets for the attack (docs/evaluation.md).

    With n = min(n_retain, n_test): when D_r is the larger side, the members are the first
    n retain samples in index order (the reference's choice, kept so numbers match it);
    when the test set is larger, n of its samples are drawn without replacement with
    ``seed`` (the split's seed). An unbalanced attack is blind: with 4 500 members against
    10 000 non-members the SVC calls everything a non-member.

    Example:
        >>> s = balanced_shadow_sets(3, 5, seed=0)
        >>> len(s.members), len(s.nonmembers), s.subsampled
        (3, 3, 'nonmembers')
    """
    n = min(n_retain, n_test)
    members = np.arange(n, dtype=np.int64)
    if n_test > n:
        rng = np.random.default_rng(seed)
        nonmembers = np.sort(rng.choice(n_test, size=n, replace=False)).astype(np.int64)
        side = "nonmembers"
    else:
        nonmembers = np.arange(n_test, dtype=np.int64)
        side = "members" if n_retain > n else "none"
    return ShadowSets(members, nonmembers, int(seed), side)


def svc_attack(
    shadow_train: np.ndarray, shadow_test: np.ndarray, target: np.ndarray
) -> tuple[float, bool]:
    """Fit members (1) vs non-members (0).

    Returns:
        (the % of ``target`` predicted non-member, whether the SVC predicts one class for
        every shadow sample — a blind attack whose efficacy is 0 or 100 whatever the model).
    """
    if len(target) == 0:
        return float("nan"), False
    x = np.concatenate([shadow_train, shadow_test])
    for name, a in (("shadow", x), ("target", target)):
        if not np.isfinite(a).all():  # sklearn would stop with "Input X contains NaN"
            raise SalunError(
                f"MIA: the {name} features hold NaN or inf (a model that diverged?); "
                "the attack needs finite outputs"
            )
    y = np.concatenate([np.ones(len(shadow_train)), np.zeros(len(shadow_test))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    pred = clf.predict(np.concatenate([x, target]))
    blind = bool(np.unique(pred[: len(x)]).size == 1)
    return float(100.0 * (1.0 - pred[len(x) :].mean())), blind


def svc_mia_efficacy(
    shadow_train: np.ndarray, shadow_test: np.ndarray, target: np.ndarray
) -> float:
    """Fit members (1) vs non-members (0); return the % of ``target`` predicted non-member."""
    return svc_attack(shadow_train, shadow_test, target)[0]


def mia_efficacy(
    member_probs: torch.Tensor,
    member_labels: torch.Tensor,
    nonmember_probs: torch.Tensor,
    nonmember_labels: torch.Tensor,
    target_probs: torch.Tensor,
    target_labels: torch.Tensor,
    features: tuple[str, ...] = FEATURES,
    blind: list[str] | None = None,
) -> dict[str, float]:
    """MIA-efficacy for each feature; key ``MIA`` is the confidence one (the paper's number),
    the others are ``MIA_<feature>``.

    A feature whose SVC predicts one class for every shadow sample raises a
    :class:`BlindAttackWarning` and is appended to ``blind`` when a list is given.
    """
    out = {}
    for feat in features:
        eff, is_blind = svc_attack(
            mia_features(member_probs, member_labels, feat),
            mia_features(nonmember_probs, nonmember_labels, feat),
            mia_features(target_probs, target_labels, feat),
        )
        key = "MIA" if feat == "confidence" else f"MIA_{feat}"
        out[key] = eff
        if is_blind:
            warnings.warn(
                f"{key}: the attack's SVC predicts one class for every shadow sample "
                f"({len(member_labels)} members, {len(nonmember_labels)} non-members); "
                f"its efficacy {eff:.2f} does not measure membership",
                BlindAttackWarning,
                stacklevel=2,
            )
            if blind is not None:
                blind.append(key)
    return out
