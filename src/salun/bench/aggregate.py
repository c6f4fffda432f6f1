"""Aggregation of benchmark records into the layout of the paper's Table 1 (pure functions),
with the uncertainty a reader needs to trust a ranking (docs/benchmarks.md).

Per protocol, scenario and method:

- mean ± sample std (ddof = 1; 0 for one trial) and a 95 % Student-t confidence interval
  over seeds of UA, RA, TA, MIA and RTE;
- the |gap| of each mean to Retrain's mean and their mean, the paper's Avg. Gap ("gaps use
  the means over trials");
- each seed's own Avg. Gap (to that seed's Retrain), its mean and 95 % interval; methods are
  ranked by that mean, and a method whose paired difference to the best (same seeds) has a
  95 % t-interval containing 0 is marked *tied* with it. With one seed nothing is marked:
  one trial cannot rank methods.

Only successful final runs of the protocol (and Retrain on the same seeds) enter a table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from salun.errors import SalunError
from salun.metrics import GAP_METRICS

RETRAIN = "retrain"
PROTOCOL_ORDER = ("paper", "tuned")
CONFIDENCE = 0.95

# two-sided 95 % Student-t quantiles t_{0.975, df}, df = 1..30: the fallback without scipy
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile ``t_{(1+confidence)/2, df}`` (nan for df < 1)."""
    if df < 1:
        return math.nan
    try:
        from scipy.stats import t

        return float(t.ppf((1 + confidence) / 2, df))
    except ImportError:  # scipy ships with scikit-learn; the table covers the usual case
        if confidence != CONFIDENCE:
            raise
        return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Stat:
    """Mean and sample std of ``n`` values, with a Student-t confidence interval."""

    mean: float
    std: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the 95 % interval: ``t_{0.975, n-1} · std / √n`` (nan for n < 2)."""
        if self.n < 2:
            return math.nan
        return t_quantile(self.n - 1) * self.std / math.sqrt(self.n)

    @property
    def ci(self) -> tuple[float, float]:
        """The 95 % confidence interval of the mean (nan bounds for n < 2)."""
        h = self.half_width
        return (self.mean - h, self.mean + h)


@dataclass(frozen=True)
class Row:
    """One row of a Table-1-style table.

    Attributes:
        scenario, method: where the row belongs (``method`` is the table label).
        seeds: the trials aggregated.
        metrics: ``Stat`` per metric (UA, RA, TA, MIA, ...).
        gaps: |mean − Retrain's mean| per gap metric.
        avg_gap: the mean of ``gaps`` (the paper's Avg. Gap).
        avg_gap_trials: mean ± std (and interval) of each trial's own Avg. Gap.
        rte: run time in seconds.
        lr: the value of the searched setting used (the learning rate; IU: its ``alpha``;
            None for Retrain), named by ``lr_field``.
        lr_source: ``searched`` (chosen by the search) or ``config``.
        protocol: ``paper`` or ``tuned`` (None for Retrain).
        method_name: the registered method (``salun`` for a label ``salun_legacy``).
        avg_gap_by_seed: each seed's own Avg. Gap.
        rank: 1 = smallest mean per-seed Avg. Gap among the methods (None for Retrain).
        tie: ``best``, ``tied`` (not distinguishable from the best at 95 %, paired over
            seeds), ``worse``, or None (Retrain, or fewer than two common seeds).
        vs_best: the paired per-seed differences of Avg. Gap to the best method.
        at_edge: the tuned choice lies at the ``lowest``/``highest`` end of its grid.
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
    protocol: str | None = None
    method_name: str | None = None
    avg_gap_by_seed: dict[int, float] = field(default_factory=dict)
    rank: int | None = None
    tie: str | None = None
    vs_best: Stat | None = None
    at_edge: str | None = None


def mean_std(values: Iterable[float]) -> Stat:
    """Mean and sample std (ddof = 1; 0 when there is a single value)."""
    v = [float(x) for x in values]
    if not v:
        return Stat(math.nan, math.nan, 0)
    m = sum(v) / len(v)
    if len(v) == 1:
        return Stat(m, 0.0, 1)
    return Stat(m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)), len(v))


def record_protocol(r: Mapping) -> str | None:
    """A final run's protocol; records of before the protocols were ``tuned`` when their
    benchmark searched (``switches.tune_lr``), else ``paper``."""
    if r.get("kind") != "unlearn" or r.get("phase") != "final":
        return None
    if r.get("protocol"):
        return r["protocol"]
    searched = (r.get("switches") or {}).get("tune_lr")
    if searched is None:
        searched = (r.get("lr_choice") or {}).get("source") == "searched"
    return "tuned" if searched else "paper"


def table_records(records: Iterable[Mapping], protocol: str | None = None) -> list[Mapping]:
    """Successful Retrain runs and final method runs (of ``protocol`` if given); search
    runs excluded. A run is counted once: a line repeated in ``results.jsonl`` (a copy
    pasted twice) is not another seed, and two different records of one run are an error."""
    return unique_records(
        r
        for r in records
        if r.get("status") == "ok"
        and (
            r["kind"] == "retrain"
            or (
                r["kind"] == "unlearn"
                and r.get("phase") == "final"
                and (protocol is None or record_protocol(r) == protocol)
            )
        )
    )


def unique_records(records: Iterable[Mapping]) -> list[Mapping]:
    """``records`` with exact repeats of a run key dropped (first kept, order kept).

    Raises:
        SalunError: two records share a key but differ: which one is the run is unknown.
    """
    seen: dict[Any, Mapping] = {}
    out = []
    for r in records:
        key = r.get("key")
        if key is None:  # records built by hand (tests, notebooks) carry no key
            out.append(r)
        elif key not in seen:
            seen[key] = r
            out.append(r)
        elif seen[key] != r:
            raise SalunError(
                f"two different records of run {key!r}; keep one (the per-run file in runs/ "
                "is the original)"
            )
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def protocols_of(records: Iterable[Mapping]) -> list[str]:
    """The protocols that have final runs, paper first."""
    found = {record_protocol(r) for r in records} - {None}
    return [p for p in PROTOCOL_ORDER if p in found] + sorted(found - set(PROTOCOL_ORDER))


def scenarios_of(records: Iterable[Mapping]) -> list[str]:
    """Scenario names in first-seen order."""
    out: list[str] = []
    for r in records:
        s = r.get("scenario")
        if s is not None and s not in out:
            out.append(s)
    return out


def _only_protocol(records: Sequence[Mapping], protocol: str | None) -> str | None:
    if protocol is not None:
        return protocol
    found = protocols_of(records)
    if len(found) > 1:
        raise ValueError(f"records of several protocols {found}: pass protocol=")
    return found[0] if found else None


def summarize(
    records: Iterable[Mapping],
    metrics: Sequence[str] = GAP_METRICS,
    protocol: str | None = None,
) -> dict[str, list[Row]]:
    """Rows per scenario: Retrain first, then methods in config order (``order`` field).

    Args:
        records: benchmark records (any order; search and failed runs are ignored).
        metrics: the metrics to aggregate; the gap is taken over those in ``GAP_METRICS``.
        protocol: the protocol whose final runs make the table (may be omitted when the
            records hold one protocol only).

    Retrain is aggregated over the seeds the methods were reported on (its runs on tuning
    seeds serve the search only). Ranks and ties are filled in (see module docstring).
    """
    records = list(records)
    protocol = _only_protocol(records, protocol)
    recs = table_records(records, protocol)
    out: dict[str, list[Row]] = {}
    for scenario in scenarios_of(recs):
        in_sc = [r for r in recs if r["scenario"] == scenario]
        finals = [r for r in in_sc if r["kind"] == "unlearn"]
        reported = {r["seed"] for r in finals}
        ref = [
            r for r in in_sc if r["kind"] == "retrain" and (not reported or r["seed"] in reported)
        ]
        if not ref:
            continue
        ref_mean = {m: mean_std(r["metrics"][m] for r in ref).mean for m in metrics}
        labels = sorted({(r.get("order", 0), r["method"]) for r in finals})
        groups = [(RETRAIN, ref)] + [
            (label, [r for r in finals if r["method"] == label]) for _, label in labels
        ]
        rows = [_row(scenario, label, rs, ref_mean, metrics, protocol) for label, rs in groups]
        out[scenario] = rank_and_tie(rows)
    return out


def _row(
    scenario: str,
    label: str,
    rs: list[Mapping],
    ref_mean: Mapping[str, float],
    metrics: Sequence[str],
    protocol: str | None,
) -> Row:
    rs = sorted(rs, key=lambda r: r["seed"])
    stats = {m: mean_std(r["metrics"][m] for r in rs) for m in metrics}
    gap_names = [m for m in metrics if m in GAP_METRICS]
    g = {m: abs(stats[m].mean - ref_mean[m]) for m in gap_names}
    hp = rs[0].get("hparam") or {}
    choice = rs[0].get("lr_choice") or {}
    by_seed = {r["seed"]: float(r["avg_gap"]) for r in rs if _finite(r.get("avg_gap"))}
    is_ref = label == RETRAIN
    return Row(
        scenario=scenario,
        method=label,
        seeds=tuple(r["seed"] for r in rs),
        metrics=stats,
        gaps=g,
        avg_gap=sum(g.values()) / len(g) if g else math.nan,
        avg_gap_trials=mean_std(by_seed.values()),
        rte=mean_std(r["rte_s"] for r in rs if r.get("rte_s") is not None),
        lr=hp.get("value"),
        lr_field=hp.get("name", "lr"),
        lr_source=None if is_ref else choice.get("source"),
        extra={"search": choice["avg_gap_by_value"]} if choice.get("avg_gap_by_value") else {},
        protocol=None if is_ref else protocol,
        method_name=RETRAIN if is_ref else rs[0].get("method_name", label),
        avg_gap_by_seed=by_seed,
        at_edge=None if is_ref else choice.get("at_edge"),
    )


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Stat:
    """Mean ± std (and interval) of ``a[s] − b[s]`` over the seeds both have."""
    return mean_std(a[s] - b[s] for s in sorted(set(a) & set(b)))


def rank_and_tie(rows: Sequence[Row]) -> list[Row]:
    """Rank the methods by mean per-seed Avg. Gap (1 = best; ties in value share a rank)
    and mark those not distinguishable from the best: a paired 95 % t-interval of the
    per-seed differences that contains 0. Fewer than two common seeds: no mark."""
    # a NaN gap (a hand-edited or diverged record) has no rank: NaN compares False with
    # everything, so sorting would put it anywhere, first included
    methods = [
        r
        for r in rows
        if r.method != RETRAIN and r.avg_gap_trials.n > 0 and math.isfinite(r.avg_gap_trials.mean)
    ]
    if not methods:
        return list(rows)
    order = sorted(methods, key=lambda r: r.avg_gap_trials.mean)
    best = order[0]
    means = [r.avg_gap_trials.mean for r in order]
    marks: dict[str, dict[str, Any]] = {}
    for r in order:
        rank = 1 + sum(m < r.avg_gap_trials.mean for m in means)
        if r is best:
            tie = "best" if best.avg_gap_trials.n >= 2 else None
            marks[r.method] = {"rank": rank, "tie": tie, "vs_best": None}
            continue
        d = paired_difference(r.avg_gap_by_seed, best.avg_gap_by_seed)
        if d.n < 2:
            tie = None
        elif d.std == 0.0:
            tie = "tied" if d.mean == 0.0 else "worse"
        else:
            lo, hi = d.ci
            tie = "tied" if lo <= 0.0 <= hi else "worse"
        marks[r.method] = {"rank": rank, "tie": tie, "vs_best": d}
    return [replace(r, **marks[r.method]) if r.method in marks else r for r in rows]


def seed_ranks(rows: Sequence[Row]) -> dict[str, dict[int, int]]:
    """``{method: {seed: rank}}``: each seed's ranking of the methods by that seed's Avg.
    Gap (1 = best; equal gaps share the smaller rank), for the rank-stability plot."""
    methods = [r for r in rows if r.method != RETRAIN]
    seeds = sorted({s for r in methods for s in r.avg_gap_by_seed})
    out: dict[str, dict[int, int]] = {r.method: {} for r in methods}
    for s in seeds:
        vals = {r.method: r.avg_gap_by_seed[s] for r in methods if s in r.avg_gap_by_seed}
        for m, v in vals.items():
            out[m][s] = 1 + sum(x < v for x in vals.values())
    return out


def n_seeds(rows: Sequence[Row]) -> int:
    """The most seeds any row of the table aggregates."""
    return max((len(r.seeds) for r in rows), default=0)


def rte_ratios(rows: Sequence[Row], method_name: str = "salun") -> list[tuple[str, float]]:
    """``(label, RTE ÷ Retrain's RTE)`` for every row of ``method_name`` (mean RTEs)."""
    ref = next((r for r in rows if r.method == RETRAIN), None)
    if ref is None or not ref.rte.n or not ref.rte.mean:
        return []
    return [
        (r.method, r.rte.mean / ref.rte.mean)
        for r in rows
        if r.method != RETRAIN and r.method_name == method_name and r.rte.n
    ]


def original_summary(
    records: Iterable[Mapping], seeds: Iterable[int] | None = None
) -> dict[str, Stat]:
    """The original models' train and test accuracy and training time over seeds (only
    ``seeds`` if given: the reported ones)."""
    keep = None if seeds is None else set(seeds)
    rs = [
        r
        for r in records
        if r["kind"] == "original"
        and r.get("status") == "ok"
        and (keep is None or r.get("seed") in keep)
    ]
    return {
        "train_acc": mean_std(r["metrics"]["train_acc"] for r in rs),
        "test_acc": mean_std(r["metrics"]["test_acc"] for r in rs),
        "seconds": mean_std(r["rte_s"] for r in rs),
    }


def lr_table(records: Iterable[Mapping]) -> list[dict[str, Any]]:
    """Which lr (IU: alpha) each method used per protocol and scenario, how it was chosen,
    the search's mean Avg. Gap per value and whether the choice is at the grid's edge; in
    protocol, scenario, then config order."""
    records = list(records)
    recs = table_records(records)
    scenarios = scenarios_of(recs)
    protocols = protocols_of(recs)
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in recs:
        if r["kind"] != "unlearn":
            continue
        p = record_protocol(r)
        k = (p, r["scenario"], r["method"])
        if k not in seen:
            choice = r.get("lr_choice") or {}
            hp = r.get("hparam") or {}
            tune_seeds = choice.get("tune_seeds")
            if tune_seeds is None and choice.get("search_seed") is not None:
                tune_seeds = [choice["search_seed"]]
            seen[k] = {
                "protocol": p,
                "scenario": r["scenario"],
                "method": r["method"],
                "order": r.get("order", 0),
                "field": hp.get("name", "lr"),
                "value": hp.get("value"),
                "source": choice.get("source", "config"),
                "search_seed": choice.get("search_seed"),
                "tune_seeds": tune_seeds or [],
                "grid": choice.get("grid") or [],
                "at_edge": choice.get("at_edge"),
                "avg_gap_by_value": choice.get("avg_gap_by_value") or {},
            }
    return sorted(
        seen.values(),
        key=lambda d: (protocols.index(d["protocol"]), scenarios.index(d["scenario"]), d["order"]),
    )


def per_seed(
    records: Iterable[Mapping], metric: str = "UA", protocol: str | None = None
) -> dict[str, dict[str, list]]:
    """``{scenario: {method: [(seed, value), ...]}}`` for stability plots (Retrain on the
    protocol's reported seeds included)."""
    records = list(records)
    protocol = _only_protocol(records, protocol)
    recs = table_records(records, protocol)
    reported = {(r["scenario"], r["seed"]) for r in recs if r["kind"] == "unlearn"}
    out: dict[str, dict[str, list]] = {}
    for r in sorted(recs, key=lambda r: (r.get("order", -1), r["seed"])):
        if r["kind"] == "retrain" and reported and (r["scenario"], r["seed"]) not in reported:
            continue
        out.setdefault(r["scenario"], {}).setdefault(r["method"], []).append(
            (r["seed"], r["metrics"][metric])
        )
    return out


def failures(records: Iterable[Mapping]) -> list[Mapping]:
    """Runs that failed (e.g. a diverging lr in the search), for the report."""
    return [r for r in records if r.get("status") != "ok"]
