"""PNG plots of a benchmark (matplotlib, Agg backend: no display needed).

Every figure is drawn at the size it is shown at (DPI 100, at most ~1100 px wide, the HTML
page's width), has labelled axes, zooms its value axes to the data (a 9-point RA gap must
be visible), and draws error bars only when there are at least two seeds (95 % Student-t
intervals, as in the tables). Files are written atomically.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on headless machines

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from salun.bench.aggregate import Row, n_seeds  # noqa: E402
from salun.metrics import GAP_METRICS  # noqa: E402

try:  # the crash-safe writer of salun.io (temp sibling + rename)
    from salun.io import atomic_savefig
except ImportError:  # pragma: no cover - older salun.io
    from salun.io import atomic_write

    def atomic_savefig(fig, path, **kwargs):
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", **kwargs))


DPI = 100
MARKERS = "osD^vP*Xhp<>"
REF_COLOR = "0.35"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # tagged, so that salun report can tell its PNGs from a user's (salun.outputs)
    atomic_savefig(fig, path, dpi=DPI, bbox_inches="tight", metadata={"Software": "salun report"})
    plt.close(fig)
    return path


def _name(label: str) -> str:
    return "Retrain" if label == "retrain" else label


# Every method keeps one colour and marker in every figure of every report: the style
# comes from the name, never from the method's position in a table (which differs between
# protocols and scenarios when a run fails).
KNOWN = ("salun", "salun_soft", "rl", "ft", "ga", "iu", "l1_sparse", "bs", "be",
         "neggrad_plus", "scrub", "ssd")  # fmt: skip
DIRECTION = "closer to the Retrain line is better"


def style(i: int) -> dict:
    """Colour and marker number ``i`` (the first 12 are distinct in both)."""
    return {"color": plt.get_cmap("tab10")(i % 10), "marker": MARKERS[i % len(MARKERS)]}


def method_style(label: str) -> dict:
    """The colour and marker of method ``label``: fixed for the registered methods, from a
    hash of the name for other labels (ablation variants), the same in every figure."""
    if label in KNOWN:
        return style(KNOWN.index(label))
    return style(len(KNOWN) + zlib.crc32(label.encode()) % 97)


def zoom(values: Sequence[float], errs: Sequence[float] = (), *, floor: float = 1.0):
    """Axis limits around ``values ± errs`` with 8 % padding, at least ``floor`` wide, so
    that small differences between methods are visible (points, not bars from 0)."""
    errs = list(errs) or [0.0] * len(values)
    pairs = [(v, 0.0 if math.isnan(e) else e) for v, e in zip(values, errs) if not math.isnan(v)]
    if not pairs:
        return (0.0, 1.0)
    lo = min(v - e for v, e in pairs)
    hi = max(v + e for v, e in pairs)
    if hi - lo < floor:
        mid = (hi + lo) / 2
        lo, hi = mid - floor / 2, mid + floor / 2
    pad = 0.08 * (hi - lo)
    return (lo - pad, hi + pad)


def metric_title(scenario: str, protocol: str | None, n: int) -> str:
    where = scenario + (f", protocol {protocol}" if protocol else "")
    if n < 2:
        return f"{where}: one seed (no error bars)"
    return f"{where}: mean over {n} seeds, bars = 95 % CI (Student t)"


def metric_panels(
    rows: Sequence[Row], title: str, path: Path, missing: Mapping[str, str] | None = None
) -> Path:
    """One panel per metric: each method's mean (a point in its own colour and marker;
    95 % interval bars with >= 2 seeds), Retrain's mean as a dashed line; value axes zoomed
    to the data, so each panel says which way is better. ``missing`` methods (no result)
    keep a place on the axis, marked "(failed)" or "(no run)"."""
    metrics = list(GAP_METRICS)
    many = n_seeds(rows) >= 2
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 8.0), squeeze=False, layout="constrained")
    gone = list(missing or {})
    names = [_name(r.method) for r in rows]
    names += [f"{m} ({'no run' if missing[m].startswith('no run') else 'failed'})" for m in gone]
    xs = list(range(len(rows)))
    for ax, m in zip(axes.flat, metrics):
        means = [r.metrics[m].mean for r in rows]
        errs = [r.metrics[m].half_width if many else math.nan for r in rows]
        ref = next((r for r in rows if r.method == "retrain"), None)
        if ref is not None:
            ax.axhline(ref.metrics[m].mean, color=REF_COLOR, ls="--", lw=1.0, label="Retrain")
        for x, r, y, e in zip(xs, rows, means, errs):
            is_ref = r.method == "retrain"
            ax.errorbar(
                x,
                y,
                yerr=None if math.isnan(e) else e,
                capsize=3,
                ms=6,
                ls="none",
                **({"marker": "s", "color": REF_COLOR} if is_ref else method_style(r.method)),
            )
        ax.set_ylim(*zoom(means, errs))
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
        for i in range(len(rows), len(names)):
            ax.get_xticklabels()[i].set_color("firebrick")
        ax.set_ylabel(f"{m} (%)")
        ax.set_title(f"{m}: {DIRECTION}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def ua_stability(values: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path) -> Path:
    """UA of every seed per method (dots) and the mean (a bar-shaped marker): the
    trial-to-trial spread. Meant for two or more seeds (one seed repeats the UA panel)."""
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.62 * len(labels) + 2.0), 4.2), layout="constrained")
    ys_all: list[float] = []
    for i, label in enumerate(labels):
        ys = [v for _, v in values[label]]
        ys_all += ys
        is_ref = label == "retrain"
        look = {"color": "C3", "marker": "s"} if is_ref else method_style(label)
        ax.scatter(
            [i] * len(ys),
            ys,
            s=22,
            zorder=3,
            label=("Retrain, one seed" if is_ref else "method, one seed"),
            **look,
        )
        ax.scatter(i, sum(ys) / len(ys), color="k", marker="_", s=400, zorder=4,
                   label="mean over seeds")  # fmt: skip
    handles, names = ax.get_legend_handles_labels()
    uniq = dict(zip(names, handles))  # one legend entry per kind
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="best")
    ax.set_xticks(range(len(labels)), [_name(x) for x in labels], rotation=45, ha="right",
                  fontsize=9)  # fmt: skip
    ax.set_ylim(*zoom(ys_all))
    ax.set_ylabel("UA (%), one point per seed")
    ax.set_xlabel(f"UA: {DIRECTION} (Retrain's points)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def dodge(points: Sequence[tuple[float, float]], *, near: float = 0.04) -> list[float]:
    """A factor per point for its x (log axis) that spreads markers which would overlap.

    Points are compared on the axes' scale (log10 x over the decades shown, y over its
    range); each group of points closer than ``near`` of that scale gets factors spaced
    by 10^0.05 around 1 (the first group member keeps 1 when alone), in input order."""
    if not points:
        return []
    lx = [math.log10(x) if x > 0 else 0.0 for x, _ in points]
    ys = [y for _, y in points]
    wx = max(max(lx) - min(lx), 1.0)
    wy = max(max(ys) - min(ys), 1e-9)
    groups: list[list[int]] = []
    for i in range(len(points)):
        for g in groups:
            j = g[0]
            if abs(lx[i] - lx[j]) / wx < near and abs(ys[i] - ys[j]) / wy < near:
                g.append(i)
                break
        else:
            groups.append([i])
    factor = [1.0] * len(points)
    for g in groups:
        for k, i in enumerate(g):
            factor[i] = 10 ** (0.05 * (k - (len(g) - 1) / 2))
    return factor


def gap_vs_rte(
    by_scenario: Mapping[str, Sequence[Row]],
    path: Path,
    title: str = "",
    missing: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Avg. Gap (mean per-seed) against run time, one panel per scenario; each method has its
    own colour and marker (:func:`method_style`), named once in the legend beside the panels.
    Markers that would overlap are nudged sideways (:func:`dodge`; RTE is on a log axis, so
    a nudge of 10^0.05 is a 12 % shift in time). Retrain's RTE: dotted line. Methods without
    a result in a scenario (``missing``) are named in that panel."""
    n = max(1, len(by_scenario))
    fig, axes = plt.subplots(1, n, figsize=(min(2.9 * n + 0.6, 9.4), 3.9), squeeze=False)
    for ax, (scenario, rows) in zip(axes[0], by_scenario.items()):
        many = n_seeds(rows) >= 2
        shown = [r for r in rows if r.method != "retrain" and r.rte.n]
        spread = dodge([(r.rte.mean, r.avg_gap_trials.mean) for r in shown])
        factors = dict(zip((r.method for r in shown), spread))
        for r in rows:
            if r.method == "retrain":
                if r.rte.n:
                    ax.axvline(r.rte.mean, color=REF_COLOR, ls=":", lw=1.2, label="Retrain RTE")
                continue
            err = r.avg_gap_trials.half_width if many else math.nan
            ax.errorbar(
                r.rte.mean * factors.get(r.method, 1.0),
                r.avg_gap_trials.mean,
                yerr=None if math.isnan(err) else err,
                ls="none",
                ms=7,
                alpha=0.85,
                capsize=2,
                label=r.method,
                **method_style(r.method),
            )
        gone = (missing or {}).get(scenario) or {}
        if gone:
            ax.text(0.02, 0.98, "no result: " + ", ".join(gone), transform=ax.transAxes,
                    va="top", fontsize=7, color="firebrick")  # fmt: skip
        ax.set_xscale("log")
        # plain numbers on the decades only: minor-tick labels collide on narrow panels
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("RTE (s, log scale)")
        ax.set_ylabel("Avg. Gap to Retrain (lower is better)")
        ax.set_title(scenario, fontsize=10)
        ax.grid(alpha=0.3)
    _method_legend(fig, axes[0])
    fig.suptitle(title or "Avg. Gap vs run time (lower left is better)")
    fig.tight_layout()
    return _save(fig, path)


def _method_legend(fig, axes) -> None:
    """One legend for the whole figure, right of the panels: each method once."""
    handles, names = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in names:
                handles.append(h)
                names.append(lab)
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9,
               title="method")  # fmt: skip


def rank_stability(
    ranks_by_scenario: Mapping[str, Mapping[str, Mapping[int, int]]], path: Path, title: str
) -> Path:
    """Each method's rank (1 = smallest Avg. Gap) on every seed, one panel per scenario: a
    ranking that holds shows flat lines; crossing lines mean the order is noise."""
    labels: list[str] = []
    for ranks in ranks_by_scenario.values():
        labels += [m for m in ranks if m not in labels]
    styles = {label: method_style(label) for label in labels}
    n = max(1, len(ranks_by_scenario))
    fig, axes = plt.subplots(1, n, figsize=(min(2.9 * n + 0.6, 9.4), 4.2), squeeze=False)
    for ax, (scenario, ranks) in zip(axes[0], ranks_by_scenario.items()):
        seeds = sorted({s for d in ranks.values() for s in d})
        pos = {s: i for i, s in enumerate(seeds)}
        for m, d in ranks.items():
            ss = [s for s in seeds if s in d]
            ax.plot([pos[s] for s in ss], [d[s] for s in ss], lw=1.4, ms=6, label=m, **styles[m])
        k = max((r for d in ranks.values() for r in d.values()), default=1)
        ax.set_ylim(k + 0.5, 0.5)
        ax.set_yticks(range(1, k + 1))
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set_xlabel("seed")
        ax.set_ylabel("rank by Avg. Gap (1 = best)")
        ax.set_title(scenario, fontsize=10)
        ax.grid(alpha=0.3)
    _method_legend(fig, axes[0])
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def mask_layers(
    shares: Mapping[str, Mapping[str, float]], path: Path, keep: float | None = 0.5
) -> Path:
    """Share of salient weights per parameter tensor, one bar group per scenario, with the
    mask's overall share ``keep`` as a dashed line (a layer right of it is over-selected)."""
    layers = list(next(iter(shares.values())))
    fig, ax = plt.subplots(figsize=(8.0, 1.4 + 0.3 * len(layers)), layout="constrained")
    n = len(shares)
    h = 0.8 / n
    for i, (scenario, share) in enumerate(shares.items()):
        ys = [j + i * h for j in range(len(layers))]
        ax.barh(ys, [100 * share.get(layer, 0.0) for layer in layers], height=h, label=scenario)
    ax.set_yticks([j + 0.4 - h / 2 for j in range(len(layers))], layers, fontsize=8)
    ax.invert_yaxis()
    if keep is not None:
        ax.axvline(100 * keep, color=REF_COLOR, ls="--", lw=1.0,
                   label=f"{100 * keep:g} %: the share kept over all weights")  # fmt: skip
    ax.set_xlabel("salient weights in the tensor (%)")
    ax.set_ylabel("parameter tensor")
    ax.set_title("SalUn mask: layer-wise share of salient weights")
    ax.legend(fontsize=8)
    return _save(fig, path)
