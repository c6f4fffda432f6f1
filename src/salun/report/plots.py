"""PNG plots of a benchmark (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on headless machines

import matplotlib.pyplot as plt  # noqa: E402

from salun.bench.aggregate import Row  # noqa: E402
from salun.metrics import GAP_METRICS  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _name(label: str) -> str:
    return "Retrain" if label == "retrain" else label


def metric_bars(rows: Sequence[Row], title: str, path: Path) -> Path:
    """One panel per metric: mean per method with std error bars; Retrain as a dashed line."""
    metrics = list(GAP_METRICS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    names = [_name(r.method) for r in rows]
    for ax, m in zip(axes[0], metrics):
        means = [r.metrics[m].mean for r in rows]
        stds = [r.metrics[m].std for r in rows]
        colors = ["0.55" if r.method == "retrain" else "C0" for r in rows]
        ax.bar(range(len(rows)), means, yerr=stds, color=colors, capsize=3)
        ax.axhline(rows[0].metrics[m].mean, color="k", ls="--", lw=0.8)
        ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(m)
    fig.suptitle(title)
    return _save(fig, path)


def gap_vs_rte(by_scenario: Mapping[str, Sequence[Row]], path: Path) -> Path:
    """Avg. Gap against run time per method (Retrain excluded: its gap is 0 by definition)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (scenario, rows) in enumerate(by_scenario.items()):
        pts = [r for r in rows if r.method != "retrain"]
        ax.scatter(
            [r.rte.mean for r in pts], [r.avg_gap for r in pts], color=f"C{i}", label=scenario
        )
        for r in pts:
            ax.annotate(r.method, (r.rte.mean, r.avg_gap), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("RTE (s, mean over seeds)")
    ax.set_ylabel("Avg. Gap to Retrain")
    ax.set_title("Avg. Gap vs run time (lower left is better)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def mask_layers(shares: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Share of salient weights per parameter tensor, one bar group per scenario."""
    layers = list(next(iter(shares.values())))
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.28 * len(layers)))
    n = len(shares)
    h = 0.8 / n
    for i, (scenario, share) in enumerate(shares.items()):
        ys = [j + i * h for j in range(len(layers))]
        ax.barh(ys, [100 * share[layer] for layer in layers], height=h, label=scenario)
    ax.set_yticks([j + 0.4 - h / 2 for j in range(len(layers))], layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("salient weights in the tensor (%)")
    ax.set_title("SalUn mask: layer-wise share of salient weights")
    ax.legend(fontsize=8)
    return _save(fig, path)


def ua_stability(values: Mapping[str, Sequence[tuple[int, float]]], title: str, path: Path) -> Path:
    """UA of every seed per method (dots) with the mean (bar), to show trial-to-trial spread."""
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 1.5), 3.8))
    for i, label in enumerate(labels):
        ys = [v for _, v in values[label]]
        ax.bar(i, sum(ys) / len(ys), color="0.85")
        ax.scatter([i] * len(ys), ys, color="C3" if label == "retrain" else "C0", s=14, zorder=3)
    ax.set_xticks(range(len(labels)), [_name(x) for x in labels], rotation=60, ha="right",
                  fontsize=8)  # fmt: skip
    ax.set_ylabel("UA (%) per seed")
    ax.set_title(title)
    return _save(fig, path)
