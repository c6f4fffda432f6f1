"""Aggregation of benchmark records into the layout of the paper's Table 1 (pure functions).

Per method and scenario: mean ± std over seeds of UA, RA, TA, MIA; the |gap| of each mean
to Retrain's mean; Avg. Gap = the mean of those four gaps (SALUN_SPEC §4.3: "gaps use the
means over trials"); and RTE. The std is the sample standard deviation (ddof = 1; 0 for a
single trial). Only successful final runs (and Retrain) enter the table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from salun.metrics import GAP_METRICS

RETRAIN = "retrain"


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of ``n`` values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Row:
    """One row of a Table-1-style table.

    Attributes:
        scenario, method: where the row belongs (``method`` is the table label).
        seeds: the trials aggregated.
        metrics: ``Stat`` per metric (UA, RA, TA, MIA, ...).
        gaps: |mean − Retrain's mean| per gap metric.
        avg_gap: the mean of ``gaps`` (the paper's Avg. Gap).
        avg_gap_trials: mean ± std of each trial's own Avg. Gap (to its seed's Retrain).
        rte: run time in seconds.
        lr: the value of the searched setting used (the learning rate; IU: its ``alpha``;
            None for Retrain), named by ``lr_field``.
        lr_source: ``searched`` (chosen by the search) or ``config``.
    """

    scenario: str
    method: str
    seeds: tuple[int, ...]
    metrics: dict[str, Stat]
    gaps: dict[str, float]
    avg_gap: float
    avg_gap_trials: Stat
    rte: Stat
    lr: float | None = None
    lr_field: str = "lr"
    lr_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def mean_std(values: Iterable[float]) -> Stat:
    """Mean and sample std (ddof = 1; 0 when there is a single value)."""
    v = [float(x) for x in values]
    if not v:
        return Stat(math.nan, math.nan, 0)
    m = sum(v) / len(v)
    if len(v) == 1:
        return Stat(m, 0.0, 1)
    return Stat(m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)), len(v))


def table_records(records: Iterable[Mapping]) -> list[Mapping]:
    """Successful Retrain runs and final method runs (search runs excluded)."""
    return [
        r
        for r in records
        if r.get("status") == "ok"
        and (r["kind"] == "retrain" or (r["kind"] == "unlearn" and r.get("phase") == "final"))
    ]


def scenarios_of(records: Iterable[Mapping]) -> list[str]:
    """Scenario names in first-seen order."""
    out: list[str] = []
    for r in records:
        s = r.get("scenario")
        if s is not None and s not in out:
            out.append(s)
    return out


def summarize(
    records: Iterable[Mapping], metrics: Sequence[str] = GAP_METRICS
) -> dict[str, list[Row]]:
    """Rows per scenario: Retrain first, then methods in config order (``order`` field).

    Args:
        records: benchmark records (any order; search and failed runs are ignored).
        metrics: the metrics to aggregate; the gap is taken over those in ``GAP_METRICS``.
    """
    recs = table_records(records)
    out: dict[str, list[Row]] = {}
    for scenario in scenarios_of(recs):
        in_sc = [r for r in recs if r["scenario"] == scenario]
        ref = [r for r in in_sc if r["kind"] == "retrain"]
        if not ref:
            continue
        ref_mean = {m: mean_std(r["metrics"][m] for r in ref).mean for m in metrics}
        labels = sorted({(r.get("order", 0), r["method"]) for r in in_sc if r["kind"] == "unlearn"})
        groups = [(RETRAIN, ref)] + [
            (label, [r for r in in_sc if r["kind"] == "unlearn" and r["method"] == label])
            for _, label in labels
        ]
        out[scenario] = [_row(scenario, label, rs, ref_mean, metrics) for label, rs in groups]
    return out


def _row(
    scenario: str,
    label: str,
    rs: list[Mapping],
    ref_mean: Mapping[str, float],
    metrics: Sequence[str],
) -> Row:
    rs = sorted(rs, key=lambda r: r["seed"])
    stats = {m: mean_std(r["metrics"][m] for r in rs) for m in metrics}
    gap_names = [m for m in metrics if m in GAP_METRICS]
    g = {m: abs(stats[m].mean - ref_mean[m]) for m in gap_names}
    hp = rs[0].get("hparam") or {}
    choice = rs[0].get("lr_choice") or {}
    return Row(
        scenario=scenario,
        method=label,
        seeds=tuple(r["seed"] for r in rs),
        metrics=stats,
        gaps=g,
        avg_gap=sum(g.values()) / len(g) if g else math.nan,
        avg_gap_trials=mean_std(r["avg_gap"] for r in rs if r.get("avg_gap") is not None),
        rte=mean_std(r["rte_s"] for r in rs if r.get("rte_s") is not None),
        lr=hp.get("value"),
        lr_field=hp.get("name", "lr"),
        lr_source=choice.get("source") if label != RETRAIN else None,
        extra={"search": choice["avg_gap_by_value"]} if choice.get("avg_gap_by_value") else {},
    )


def original_summary(records: Iterable[Mapping]) -> dict[str, Stat]:
    """The original models' train and test accuracy and training time over seeds."""
    rs = [r for r in records if r["kind"] == "original" and r.get("status") == "ok"]
    return {
        "train_acc": mean_std(r["metrics"]["train_acc"] for r in rs),
        "test_acc": mean_std(r["metrics"]["test_acc"] for r in rs),
        "seconds": mean_std(r["rte_s"] for r in rs),
    }


def lr_table(records: Iterable[Mapping]) -> list[dict[str, Any]]:
    """Which lr (IU: alpha) each method used per scenario, and the search's Avg. Gap per
    value, in scenario then config order."""
    recs = table_records(records)
    scenarios = scenarios_of(recs)
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in recs:
        if r["kind"] != "unlearn":
            continue
        k = (r["scenario"], r["method"])
        if k not in seen:
            choice = r.get("lr_choice") or {}
            hp = r.get("hparam") or {}
            seen[k] = {
                "scenario": r["scenario"],
                "method": r["method"],
                "order": r.get("order", 0),
                "field": hp.get("name", "lr"),
                "value": hp.get("value"),
                "source": choice.get("source", "config"),
                "search_seed": choice.get("search_seed"),
                "avg_gap_by_value": choice.get("avg_gap_by_value") or {},
            }
    return sorted(seen.values(), key=lambda d: (scenarios.index(d["scenario"]), d["order"]))


def per_seed(records: Iterable[Mapping], metric: str = "UA") -> dict[str, dict[str, list]]:
    """``{scenario: {method: [(seed, value), ...]}}`` for stability plots."""
    out: dict[str, dict[str, list]] = {}
    for r in sorted(table_records(records), key=lambda r: (r.get("order", -1), r["seed"])):
        out.setdefault(r["scenario"], {}).setdefault(r["method"], []).append(
            (r["seed"], r["metrics"][metric])
        )
    return out


def failures(records: Iterable[Mapping]) -> list[Mapping]:
    """Runs that failed (e.g. a diverging lr in the search), for the report."""
    return [r for r in records if r.get("status") != "ok"]
