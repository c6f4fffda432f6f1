"""Per-example likelihood-ratio audit of unlearning (U-LiRA style; docs/audit.md).

The attacker's question for one forget example x and one model: *was this model trained
on x and then unlearned, or retrained without x?* Given K shadow pairs (an unlearned
model U_k and a retrained model R_k, both from the same data half), each example gets,
per model, the logit-scaled confidence

    φ = log(p_y / (1 − p_y)),

which is close to Gaussian across models (Carlini et al. 2022, LiRA). For each pair k the
Gaussians of φ(x) under "unlearned" and under "retrained" are fitted on the *other* K − 1
pairs (leave one pair out), and the score of U_k and of R_k on x is the log likelihood
ratio log N(φ; μ_u, σ_u) − log N(φ; μ_r, σ_r). Every pair thus serves once as the target,
without ever being part of its own fit. The attack's power is summarised by its ROC over
all (pair, example) scores: AUC and TPR at low FPR (1 %, 0.1 %), with a two-way bootstrap
interval (pairs and examples resampled independently, since scores share both).

A method that unlearns like Retrain gives AUC ≈ 0.5; the untouched original gives AUC ≫ 0.5
when it memorises its training data. Hayes et al. (2024) introduced this evaluation for
unlearning (U-LiRA). The audit's default (``forget_sets: fixed``) keeps one forget set and
one pair per shadow half; ``per_shadow`` draws a fresh forget set per shadow as U-LiRA does
(salun/audit/ulira.py). Both score with the functions here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# a fitted σ below this is floored: φ of a confident model can be identical across models
MIN_STD = 1e-3
DEFAULT_FPRS = (0.01, 0.001)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """φ = log(p_y / (1 − p_y)) per sample, computed stably from the logits as
    z_y − logsumexp_{j≠y} z_j (no softmax, so no 0/1 saturation). float64 on the CPU."""
    z = logits.detach().double().cpu()
    y = labels.cpu().long()
    zy = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf"))
    return zy - torch.logsumexp(others, dim=1)


# The attack's named choices (docs/audit.md, "Settings against the references"): the first
# value of each is salun's default, the reference's value is named in the comment.
VARIANCES = ("global", "per_example", "fixed")  # LiRA: per_example, or fixed (fix_variance)
LOCATIONS = ("mean", "median")  # LiRA: median
QUERIES = ("single", "mirror")  # LiRA's inference.py: mirror (the image and its mirror)


def _gauss_logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def _location(rows: np.ndarray, location: str) -> np.ndarray:
    # LiRA (plot.py, generate_ours) centres each Gaussian on the median over shadows
    return np.median(rows, 0) if location == "median" else rows.mean(0)


def _scale(rows: np.ndarray, variance: str) -> np.ndarray:
    """σ of ``rows`` (models × examples × queries) per (example, query): per example
    (ddof 1), or pooled over examples and queries around each one's own mean (``global``).
    ``fixed`` is handled by the caller (it is shared by both sides)."""
    dev = rows - rows.mean(0)
    dof = max(rows.shape[0] - 1, 1)
    if variance == "global":
        pooled = math.sqrt(float((dev**2).sum()) / (dof * rows.shape[1] * rows.shape[2]))
        return np.full(rows.shape[1:], pooled)
    return np.sqrt((dev**2).sum(0) / dof)


def _as_3d(phi: np.ndarray) -> np.ndarray:
    a = np.asarray(phi, dtype=np.float64)
    return a[:, :, None] if a.ndim == 2 else a


def lira_scores(
    phi_unlearned: np.ndarray,
    phi_retrained: np.ndarray,
    *,
    variance: str = "global",
    location: str = "mean",
    min_std: float = MIN_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-pair-out log likelihood ratios.

    Args:
        phi_unlearned: K × n, φ of the n forget examples under each unlearned model U_k;
            or K × n × A with one φ per query (e.g. the image and its mirror): as LiRA
            (plot.py), each query gets its own Gaussians and the ratios are averaged.
        phi_retrained: φ under each retrained model R_k (same pairs, order and shape).
        variance: ``global`` (one σ per side, pooled over examples around each example's
            own location), ``per_example`` (ddof 1), or ``fixed`` (LiRA's ``fix_variance``:
            the population std, ddof 0, of every unlearned-side φ around their overall
            mean, shared by both Gaussians, as the reference uses ``np.std(dat_in)`` for both).
        location: ``mean`` or ``median`` (LiRA) of the K − 1 fitting pairs.
        min_std: floor of a fitted σ.

    Returns:
        (scores of U_k, scores of R_k), each K × n; higher means "looks unlearned".

    Example:
        >>> u = np.array([[2.0], [3.0], [2.5], [2.8]]); r = u - 2.0
        >>> su, sr = lira_scores(u, r, variance="fixed", location="median")
        >>> bool((su > sr).all())
        True
    """
    u, r = np.asarray(phi_unlearned), np.asarray(phi_retrained)
    if u.shape != r.shape or u.ndim not in (2, 3):
        raise ValueError(
            f"need two K×n (or K×n×queries) arrays of the same shape, got {u.shape} and {r.shape}"
        )
    u, r = _as_3d(u), _as_3d(r)
    k = u.shape[0]
    if k < 3:
        raise ValueError(f"need at least 3 shadow pairs (2 to fit each held-out one), got {k}")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if location not in LOCATIONS:
        raise ValueError(f"location must be one of {', '.join(LOCATIONS)}, got {location!r}")
    su, sr = np.empty(u.shape[:2]), np.empty(r.shape[:2])
    for i in range(k):
        rest = np.arange(k) != i
        mu_u, mu_r = _location(u[rest], location), _location(r[rest], location)
        if variance == "fixed":
            sd_u = sd_r = np.full(mu_u.shape, float(np.std(u[rest])))
        else:
            sd_u, sd_r = _scale(u[rest], variance), _scale(r[rest], variance)
        sd_u, sd_r = np.maximum(sd_u, min_std), np.maximum(sd_r, min_std)
        for target, out in ((u, su), (r, sr)):
            x = target[i]
            lr = _gauss_logpdf(x, mu_u, sd_u) - _gauss_logpdf(x, mu_r, sd_r)
            out[i] = lr.mean(-1)  # LiRA: the ratios of the queries averaged
    return su, sr


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½·P(tie) (Mann–Whitney)."""
    pos, neg = np.ravel(pos), np.ravel(neg)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> float:
    """The largest TPR of a rule "score > t" whose FPR is at most ``fpr``.

    With N negatives, at most m = ⌊fpr·N⌋ may lie above t: t is the (m+1)-th largest
    negative score, and TPR = #(positives > t) / #positives. With m = 0, t = the largest
    negative score.
    """
    pos, neg = np.ravel(pos), np.ravel(neg)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    m = int(math.floor(fpr * len(neg) + 1e-9))
    if m >= len(neg):
        return 1.0
    t = np.sort(neg)[::-1][m]
    return float((pos > t).mean())


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def power_warnings(
    shadows: int, examples: int, fprs: tuple[float, ...] = DEFAULT_FPRS, *, min_shadows: int = 8
) -> list[str]:
    """Plain-language reasons why the audit's figures may mean little."""
    out = []
    if shadows < min_shadows:
        out.append(
            f"only {shadows} shadow pairs: each example's Gaussians are fitted on "
            f"{shadows - 1} models; use at least {min_shadows}"
        )
    negatives = shadows * examples
    for f in fprs:
        if negatives * f < 10:
            out.append(
                f"TPR at {100 * f:g} % FPR rests on {negatives * f:.1f} false positives "
                f"({negatives} retrained scores); it needs ≥ {math.ceil(10 / f)} for 10"
            )
    return out


def audit_summary(
    scores_unlearned: np.ndarray,
    scores_retrained: np.ndarray,
    *,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_interval: float = 0.1,
) -> dict:
    """AUC and TPR at each FPR of telling U_k from R_k, with bootstrap intervals.

    Args:
        scores_unlearned, scores_retrained: K × n scores (:func:`lira_scores`).
        fprs: the false-positive rates at which TPR is reported.
        n_boot: bootstrap resamples; each draws K pairs and n examples with replacement.
        level: the interval's coverage.
        seed: the bootstrap's seed.
        max_interval: an AUC interval wider than this adds a low-power warning.

    Returns:
        ``{"auc", "auc_ci", "tpr": {fpr: value}, "tpr_ci": {fpr: [lo, hi]}, "shadows",
        "examples", "warnings"}`` (FPR keys as strings, e.g. ``"0.01"``).
    """
    su = np.asarray(scores_unlearned, dtype=np.float64)
    sr = np.asarray(scores_retrained, dtype=np.float64)
    k, n = su.shape
    out = {
        "auc": roc_auc(su, sr),
        "tpr": {str(f): tpr_at_fpr(su, sr, f) for f in fprs},
        "shadows": int(k),
        "examples": int(n),
    }
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    tprs = {f: np.empty(n_boot) for f in fprs}
    for b in range(n_boot):
        ip = rng.integers(0, k, k)
        ie = rng.integers(0, n, n)
        bu, br = su[ip][:, ie], sr[ip][:, ie]
        aucs[b] = roc_auc(bu, br)
        for f in fprs:
            tprs[f][b] = tpr_at_fpr(bu, br, f)
    out["auc_ci"] = list(_percentile_interval(aucs, level))
    out["tpr_ci"] = {str(f): list(_percentile_interval(tprs[f], level)) for f in fprs}
    warn = power_warnings(k, n, fprs)
    width = out["auc_ci"][1] - out["auc_ci"][0]
    if width > max_interval:
        warn.append(f"the AUC interval is {width:.2f} wide: more shadows or forget examples")
    out["warnings"] = warn
    return out
