"""Gap to Retrain (docs/evaluation.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from salun.metrics.base import GAP_METRICS


def gaps(
    metrics: Mapping[str, float], retrain: Mapping[str, float], names: tuple[str, ...] = GAP_METRICS
) -> dict[str, float]:
    """|metric − Retrain| for each of ``names``."""
    return {n: abs(float(metrics[n]) - float(retrain[n])) for n in names}


def avg_gap(
    metrics: Mapping[str, float], retrain: Mapping[str, float], names: tuple[str, ...] = GAP_METRICS
) -> float:
    """Mean |metric − Retrain| over UA, RA, TA and MIA (the paper's Avg. Gap).

    Example: Table 1, SalUn at 10 %: (2.39 + 0.38 + 0.33 + 1.51) / 4 = 1.15.
    """
    g = gaps(metrics, retrain, names)
    vals = [v for v in g.values() if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")
