"""U-LiRA's per-shadow forget sets (Hayes et al. 2024, arXiv 2403.01218; docs/audit.md).

With ``forget_sets: per_shadow`` shadow k trains its original O_k on a random half T_k of
the audit's subset, draws a fresh random forget set F_k ⊂ T_k (of the configured size),
unlearns F_k from O_k with D_r = T_k \\ F_k (giving U_k) and retrains R_k on T_k \\ F_k.
An example x of F_k is then a target of pair k, scored with two Gaussians fitted on the
*other* shadows j ≠ k:

* "unlearned" (in): φ of U_j on x for every j whose forget set F_j held x;
* "retrained" (out): φ of R_j on x for every j whose Retrain never trained on x
  (x ∉ T_j \\ F_j: x was outside the half, or was forgotten there).

Shadows where x was trained on and kept (x ∈ T_j \\ F_j) say nothing about either side and
are left out. How many fitting models a target gets is random (about (K − 1)·|F|/n on the
unlearned side, (K − 1)/2 + that on the retrained side), so a target with fewer than
:data:`MIN_FITS` on either side is not scored; the summary counts them.

Everything here is plain arrays: ``forget[k]`` and ``retain[k]`` are the sorted indices
(positions in the subset) that shadow k forgot and retained; ``phi_u[k]`` holds φ of
U_k on ``forget[k]`` (in that order); ``phi_r_all[k]`` holds φ of R_k on every example of
the subset. A trailing query axis (the image and its mirror) is allowed on both.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from salun.metrics.audit import DEFAULT_FPRS, MIN_STD, power_warnings, roc_auc, tpr_at_fpr

MIN_FITS = 2  # fitting models per side a target needs (a σ from one value is undefined)


def membership(
    forget: list[np.ndarray], retain: list[np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two K × n boolean tables: ``forgot[j, x]`` (x ∈ F_j) and ``kept[j, x]`` (x ∈ D_r of
    shadow j, i.e. R_j trained on x)."""
    k = len(forget)
    forgot = np.zeros((k, n), dtype=bool)
    kept = np.zeros((k, n), dtype=bool)
    for j in range(k):
        forgot[j, np.asarray(forget[j], dtype=np.int64)] = True
        kept[j, np.asarray(retain[j], dtype=np.int64)] = True
    return forgot, kept


def _as_3d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[..., None] if a.ndim == 1 else a


def fitting_values(
    k: int,
    phi_u: list[np.ndarray],
    phi_r_all: np.ndarray,
    forget: list[np.ndarray],
    retain: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The values each target of pair ``k`` is fitted on.

    Returns:
        ``(u_fit, r_fit)``, each K × m × A (m = |F_k|, A queries), NaN where shadow j does
        not belong to that side for that target (and always in row k): ``u_fit[j, i]`` is
        φ of U_j on x = F_k[i] when x ∈ F_j; ``r_fit[j, i]`` is φ of R_j on x when R_j never
        trained on x.
    """
    r_all = np.asarray(phi_r_all, dtype=np.float64)
    r_all = r_all[..., None] if r_all.ndim == 2 else r_all
    n = r_all.shape[1]
    forgot, kept = membership(forget, retain, n)
    kk = len(forget)
    a = r_all.shape[2]
    # U_j's φ spread over the whole subset (NaN outside F_j), to index by example
    u_all = np.full((kk, n, a), np.nan)
    for j in range(kk):
        u_all[j, np.asarray(forget[j], dtype=np.int64)] = _as_3d(phi_u[j])
    targets = np.asarray(forget[k], dtype=np.int64)
    others = np.arange(kk) != k
    in_mask = forgot[:, targets] & others[:, None]
    out_mask = ~kept[:, targets] & others[:, None]
    u_fit = np.where(in_mask[..., None], u_all[:, targets], np.nan)
    r_fit = np.where(out_mask[..., None], r_all[:, targets], np.nan)
    return u_fit, r_fit


def _gauss_logpdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def _centre_and_scale(
    vals: np.ndarray, ok: np.ndarray, location: str, variance: str
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and σ per (target, query) of K × m × A values with NaN gaps. ``ok`` (m)
    marks the scored targets, the only ones a pooled σ runs over. The arithmetic is the
    fixed mode's (``salun.metrics.audit.lira_scores``) with each target's own count of
    fitting models: σ per target with ddof 1, or pooled around each target's own mean
    with Σ (count − 1) degrees of freedom."""
    count = (~np.isnan(vals)).sum(0)  # m × A
    with warnings.catch_warnings():  # all-NaN columns belong to unscored targets
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(vals, 0)
        centre = np.nanmedian(vals, 0) if location == "median" else mean
    sq = np.nansum((vals - mean) ** 2, 0)  # m × A
    dof = np.maximum(count - 1, 1)
    if variance == "global":
        pooled = math.sqrt(float(sq[ok].sum()) / max(float((count[ok] - 1).sum()), 1.0))
        return centre, np.full(centre.shape, pooled)
    return centre, np.sqrt(sq / dof)


def per_shadow_scores(
    phi_u: list[np.ndarray],
    phi_r_all: np.ndarray,
    forget: list[np.ndarray],
    retain: list[np.ndarray],
    *,
    variance: str = "global",
    location: str = "mean",
    min_std: float = MIN_STD,
    min_fits: int = MIN_FITS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-pair-out log likelihood ratios with per-shadow forget sets.

    Args:
        phi_u: per shadow k, φ of the model under test (U_k) on ``forget[k]``: m (or m × A).
        phi_r_all: φ of each reference Retrain R_k on the whole subset: K × n (× A).
        forget, retain: per shadow, the sorted indices it forgot and kept.
        variance: ``global``, ``per_example`` or ``fixed`` (as in ``lira_scores``; ``fixed``
            is the population std of every unlearned-side fitting value of the scored
            targets, shared by both Gaussians).
        location: ``mean`` or ``median``.
        min_std: floor of a fitted σ.
        min_fits: fitting models a target needs on each side to be scored.

    Returns:
        ``(scores of U_k, scores of R_k, scored)``, each K × m; a target that is not
        scored holds NaN in both score tables and False in ``scored``.
    """
    kk = len(forget)
    m = len(forget[0])
    if any(len(f) != m for f in forget):
        raise ValueError("every shadow's forget set must have the same size")
    r_all = np.asarray(phi_r_all, dtype=np.float64)
    r_all = r_all[..., None] if r_all.ndim == 2 else r_all
    su, sr = np.full((kk, m), np.nan), np.full((kk, m), np.nan)
    scored = np.zeros((kk, m), dtype=bool)
    for k in range(kk):
        u_fit, r_fit = fitting_values(k, phi_u, r_all, forget, retain)
        n_in = (~np.isnan(u_fit[:, :, 0])).sum(0)
        n_out = (~np.isnan(r_fit[:, :, 0])).sum(0)
        ok = (n_in >= min_fits) & (n_out >= min_fits)
        scored[k] = ok
        if not ok.any():
            continue
        mu_u, sd_u = _centre_and_scale(u_fit, ok, location, variance)
        mu_r, sd_r = _centre_and_scale(r_fit, ok, location, variance)
        if variance == "fixed":  # LiRA's fix_variance: one σ from the unlearned side
            sd_u = sd_r = np.full(mu_u.shape, float(np.nanstd(u_fit[:, ok])))
        sd_u, sd_r = np.maximum(sd_u, min_std), np.maximum(sd_r, min_std)
        targets = np.asarray(forget[k], dtype=np.int64)
        for x, out in ((_as_3d(phi_u[k]), su), (r_all[k, targets], sr)):
            lr = _gauss_logpdf(x, mu_u, sd_u) - _gauss_logpdf(x, mu_r, sd_r)
            out[k, ok] = lr.mean(-1)[ok]  # LiRA: the ratios of the queries averaged
    return su, sr, scored


def _percentile_interval(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def per_shadow_summary(
    su: np.ndarray,
    sr: np.ndarray,
    scored: np.ndarray,
    *,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_interval: float = 0.1,
) -> dict:
    """AUC and TPR at each FPR over the scored targets, with bootstrap intervals.

    The same keys as ``salun.metrics.audit.audit_summary``. The examples differ from pair
    to pair here, so the bootstrap resamples pairs and, within each drawn pair, its scored
    targets (both with replacement). ``examples`` is |F_k|; ``scored`` the number of
    (pair, target) scores.
    """
    kk = su.shape[0]
    rows = [np.flatnonzero(scored[k]) for k in range(kk)]
    pos, neg = su[scored], sr[scored]
    out = {
        "auc": roc_auc(pos, neg),
        "tpr": {str(f): tpr_at_fpr(pos, neg, f) for f in fprs},
        "shadows": int(kk),
        "examples": int(su.shape[1]),
        "scored": int(scored.sum()),
    }
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    tprs = {f: np.empty(n_boot) for f in fprs}
    for b in range(n_boot):
        bu, br = [], []
        for k in rng.integers(0, kk, kk):
            if len(rows[k]):
                pick = rows[k][rng.integers(0, len(rows[k]), len(rows[k]))]
                bu.append(su[k, pick])
                br.append(sr[k, pick])
        bu = np.concatenate(bu) if bu else np.zeros(0)
        br = np.concatenate(br) if br else np.zeros(0)
        aucs[b] = roc_auc(bu, br)
        for f in fprs:
            tprs[f][b] = tpr_at_fpr(bu, br, f)
    out["auc_ci"] = _percentile_interval(aucs, level)
    out["tpr_ci"] = {str(f): _percentile_interval(tprs[f], level) for f in fprs}
    warn = power_warnings(kk, max(1, int(round(out["scored"] / kk))), fprs)
    width = out["auc_ci"][1] - out["auc_ci"][0]
    if width > max_interval:
        warn.append(f"the AUC interval is {width:.2f} wide: more shadows or forget examples")
    out["warnings"] = warn
    return out


def coverage(forget: list[np.ndarray], retain: list[np.ndarray], n: int) -> dict:
    """How many fitting models the targets get (the same for every method): the number of
    (pair, target) slots, how many have at least :data:`MIN_FITS` per side, and the
    smallest / median / largest count per side."""
    forgot, kept = membership(forget, retain, n)
    n_in, n_out = [], []
    for f in forget:
        f = np.asarray(f, dtype=np.int64)
        n_in.append(forgot[:, f].sum(0) - 1)  # the target's own shadow holds it too
        n_out.append((~kept[:, f]).sum(0) - 1)  # and R_k never trained on them either
    ins, outs = np.concatenate(n_in), np.concatenate(n_out)
    ok = (ins >= MIN_FITS) & (outs >= MIN_FITS)
    return {
        "targets": int(ins.size),
        "scored": int(ok.sum()),
        "in_fits": [int(ins.min()), float(np.median(ins)), int(ins.max())],
        "out_fits": [int(outs.min()), float(np.median(outs)), int(outs.max())],
    }
