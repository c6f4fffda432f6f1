"""The DDPM mask ablation over seeds: saliency mask vs random mask, with intervals.

Usage: ``python benchmarks/gen/ablation.py RUN_FOLDER SEED [SEED ...]`` after
``bash benchmarks/gen/run.sh --ablation "0 1 2" RUN_FOLDER``.

Per seed it reads ``salun-s{seed}.eval.json`` (saliency mask) and
``salun-random-mask-s{seed}.eval.json`` (random mask of the same density) and the Original's
``original-s{seed}.eval.json`` when there is one (a seed judged by another classifier
instance brings its own Original evaluation), else ``original.eval.json``; it prints UA,
retained accuracy and its drop from the Original as mean ± std with a 95 % Student-t
interval over seeds, and the paired difference (saliency −
random) of each, with its interval: an interval that contains 0 means the two masks are not
distinguishable at this number of seeds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from scipy import stats

KINDS = {"saliency mask": "salun-s{}", "random mask": "salun-random-mask-s{}"}
METRICS = {"ua": "UA %", "retain_acc": "retained acc %", "drop": "drop vs Original (pts)"}


def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, std, half-width of the 95 % t interval); std and width are nan for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)


def original_retain_acc(root: Path, seed: str) -> float:
    """The Original's retained accuracy by the classifier that judged this seed's models."""
    own = root / f"original-s{seed}.eval.json"
    path = own if own.is_file() else root / "original.eval.json"
    return json.loads(path.read_text())["metrics"]["retain_acc"]


def load(root: Path, seeds: list[str]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for kind, pattern in KINDS.items():
        rows: dict[str, list[float]] = {m: [] for m in METRICS}
        for s in seeds:
            m = json.loads((root / f"{pattern.format(s)}.eval.json").read_text())["metrics"]
            rows["ua"].append(m["ua"])
            rows["retain_acc"].append(m["retain_acc"])
            rows["drop"].append(m["retain_acc"] - original_retain_acc(root, s))
        out[kind] = rows
    return out


def fmt(mean: float, std: float, half: float) -> str:
    if math.isnan(std):
        return f"{mean:.2f} (one seed)"
    return f"{mean:.2f} ± {std:.2f} [{mean - half:.2f}, {mean + half:.2f}]"


def table(root: Path, seeds: list[str]) -> str:
    data = load(root, seeds)
    lines = [
        f"Mask ablation over seeds {', '.join(seeds)}: mean ± std [95 % t interval]",
        "",
        "| mask | " + " | ".join(METRICS.values()) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for kind, rows in data.items():
        lines.append(f"| {kind} | " + " | ".join(fmt(*interval(rows[m])) for m in METRICS) + " |")
    diffs = {
        m: [a - b for a, b in zip(data["saliency mask"][m], data["random mask"][m])]
        for m in METRICS
    }
    lines.append("| saliency − random (paired) | "
                 + " | ".join(fmt(*interval(diffs[m])) for m in METRICS) + " |")  # fmt: skip
    mean, _, half = interval(diffs["drop"])
    if math.isnan(half):
        verdict = "one seed: no interval, no verdict"
    elif mean - half > 0:
        verdict = "the saliency mask keeps the retained classes better (interval above 0)"
    elif mean + half < 0:
        verdict = "the random mask keeps the retained classes better (interval below 0)"
    else:
        verdict = "not distinguishable: the paired interval of the drop contains 0"
    lines += ["", f"Retained-accuracy drop, saliency vs random: {verdict}."]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    print(table(Path(sys.argv[1]), sys.argv[2:]))
