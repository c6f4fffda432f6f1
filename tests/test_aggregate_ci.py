"""Uncertainty in the tables: Student-t intervals, per-seed Avg. Gap, paired ties, ranks per
seed, protocols kept apart, SalUn's RTE ratio. Every expected number is worked out by hand
in the comments (t quantiles from a printed t-table)."""

from __future__ import annotations

import math
import sys

import pytest

from salun.bench.aggregate import (
    Stat,
    mean_std,
    n_seeds,
    original_summary,
    paired_difference,
    per_seed,
    protocols_of,
    record_protocol,
    rte_ratios,
    seed_ranks,
    summarize,
    t_quantile,
)

T975 = {1: 12.7062, 2: 4.3027, 4: 2.7764, 9: 2.2622}  # printed t-table, two-sided 95 %


def rec(kind, method, seed, gap=None, metrics=None, rte=1.0, **kw):
    return {
        "key": f"{kind}.{method}.{seed}.{kw.get('protocol')}",
        "kind": kind,
        "phase": None if kind == "retrain" else "final",
        "status": "ok",
        "scenario": kw.pop("scenario", "random10"),
        "method": method,
        "method_name": kw.pop("method_name", method),
        "seed": seed,
        "order": kw.pop("order", 0),
        "metrics": metrics or {"UA": 5.0, "RA": 100.0, "TA": 94.0, "MIA": 12.0},
        "rte_s": rte,
        "avg_gap": gap,
        **kw,
    }


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_table(df):
    assert t_quantile(df) == pytest.approx(T975[df], abs=1e-4)


def test_t_quantile_without_scipy_uses_its_table(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `from scipy.stats import t` fails
    for df, v in T975.items():
        assert t_quantile(df) == pytest.approx(v, abs=1e-4)
    assert math.isnan(t_quantile(0))


def test_interval_by_hand():
    # values 1, 2, 4: mean 7/3, sample var ((4/3)² + (1/3)² + (5/3)²)/2 = 7/3, std 1.52753
    # half width t_{.975,2} · std / √3 = 4.3027 · 1.52753 / 1.73205 = 3.79460
    s = mean_std([1.0, 2.0, 4.0])
    assert s.std == pytest.approx(math.sqrt(7 / 3))
    assert s.half_width == pytest.approx(3.79460, abs=1e-4)
    lo, hi = s.ci
    assert lo == pytest.approx(7 / 3 - 3.79460, abs=1e-4)
    assert hi == pytest.approx(7 / 3 + 3.79460, abs=1e-4)
    # two values 10, 12: std √2, half width 12.7062 · √2 / √2 = 12.7062
    assert mean_std([10.0, 12.0]).ci == pytest.approx((11 - 12.7062, 11 + 12.7062), abs=1e-3)
    # one value: no interval
    one = mean_std([5.0])
    assert math.isnan(one.half_width) and all(math.isnan(x) for x in one.ci)
    assert Stat(5.0, 0.0, 1) == one


# Per-seed Avg. Gaps over seeds 0, 1, 2 (Retrain's own runs define the gaps):
#   A: 1.0, 2.0, 3.0  mean 2.0  (best)
#   B: 1.5, 2.4, 3.6  mean 2.5  paired diff to A: .5, .4, .6 -> mean .5, sd .1,
#        half width 4.3027 · .1 / √3 = 0.24842 -> [0.2516, 0.7484]: excludes 0 -> worse,
#        although B's and A's own intervals overlap widely (an unpaired look says "tied")
#   C: 0.5, 3.0, 3.1  mean 2.2  diff -.5, 1.0, .1 -> mean .2, sd √.57 = .75498,
#        half width 4.3027 · .75498 / √3 = 1.87549 -> [-1.6755, 2.0755]: contains 0 -> tied
GAPS = {"A": (1.0, 2.0, 3.0), "B": (1.5, 2.4, 3.6), "C": (0.5, 3.0, 3.1)}


def three_methods(protocol="tuned"):
    out = [rec("retrain", "retrain", s, rte=40.0) for s in (0, 1, 2)]
    out.append(rec("retrain", "retrain", 100, rte=1e6))  # the tuning seed's Retrain
    for order, (m, gaps) in enumerate(GAPS.items()):
        out += [rec("unlearn", m, s, g, order=order, protocol=protocol) for s, g in enumerate(gaps)]
    return out


def test_per_seed_avg_gap_mean_and_interval():
    rows = {r.method: r for r in summarize(three_methods())["random10"]}
    a = rows["A"].avg_gap_trials
    # A: mean 2, std 1, half width 4.3027 / √3 = 2.48417
    assert (a.mean, a.std, a.n) == (2.0, 1.0, 3)
    assert a.ci == pytest.approx((2 - 2.48417, 2 + 2.48417), abs=1e-4)
    assert rows["A"].avg_gap_by_seed == {0: 1.0, 1: 2.0, 2: 3.0}


def test_ties_are_paired_over_seeds():
    rows = {r.method: r for r in summarize(three_methods())["random10"]}
    assert rows["A"].tie == "best" and rows["A"].rank == 1
    assert rows["B"].tie == "worse" and rows["B"].rank == 3
    assert rows["C"].tie == "tied" and rows["C"].rank == 2
    b, c = rows["B"].vs_best, rows["C"].vs_best
    assert b.mean == pytest.approx(0.5) and b.std == pytest.approx(0.1)
    assert b.ci == pytest.approx((0.25158, 0.74842), abs=1e-4)
    assert c.mean == pytest.approx(0.2) and c.std == pytest.approx(math.sqrt(0.57))
    assert c.ci == pytest.approx((0.2 - 1.87549, 0.2 + 1.87549), abs=1e-4)
    # an unpaired look would overlap: B's own interval contains A's mean
    assert rows["B"].avg_gap_trials.ci[0] < rows["A"].avg_gap_trials.mean
    assert rows["retrain"].tie is None and rows["retrain"].rank is None


def test_paired_difference_uses_common_seeds_only():
    d = paired_difference({0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 2.0, 5: 0.0})
    assert (d.mean, d.n) == (2.5, 2)  # seeds 0 and 1: differences 2 and 3


def test_identical_per_seed_gaps_are_tied_and_constant_differences_are_not():
    recs = [rec("retrain", "retrain", s) for s in (0, 1)]
    recs += [rec("unlearn", "A", s, g, order=0, protocol="paper") for s, g in ((0, 1.0), (1, 2.0))]
    recs += [rec("unlearn", "B", s, g, order=1, protocol="paper") for s, g in ((0, 1.0), (1, 2.0))]
    recs += [rec("unlearn", "C", s, g, order=2, protocol="paper") for s, g in ((0, 1.5), (1, 2.5))]
    rows = {r.method: r for r in summarize(recs)["random10"]}
    assert rows["B"].tie == "tied"  # differences 0, 0
    assert rows["C"].tie == "worse"  # differences .5, .5: sd 0, always worse
    assert rows["A"].rank == rows["B"].rank == 1 and rows["C"].rank == 3


def test_retrain_is_aggregated_over_reported_seeds_only():
    recs = three_methods()
    recs[3]["metrics"] = {"UA": 1000.0, "RA": 0.0, "TA": 0.0, "MIA": 0.0}  # tuning seed 100
    retrain = summarize(recs)["random10"][0]
    assert retrain.seeds == (0, 1, 2) and retrain.metrics["UA"].mean == 5.0
    assert retrain.rte.mean == 40.0


def test_seed_ranks_by_hand():
    rows = summarize(three_methods())["random10"]
    # seed 0: C .5 < A 1 < B 1.5; seed 1: A 2 < B 2.4 < C 3; seed 2: A 3 < C 3.1 < B 3.6
    assert seed_ranks(rows) == {
        "A": {0: 2, 1: 1, 2: 1},
        "B": {0: 3, 1: 2, 2: 3},
        "C": {0: 1, 1: 3, 2: 2},
    }


def test_one_seed_marks_no_ties():
    recs = [rec("retrain", "retrain", 0)]
    recs += [rec("unlearn", m, 0, g, order=i, protocol="tuned") for i, (m, g) in
             enumerate((("A", 1.0), ("B", 1.1)))]  # fmt: skip
    rows = summarize(recs)["random10"]
    assert n_seeds(rows) == 1
    assert [r.tie for r in rows] == [None, None, None]
    assert [r.rank for r in rows] == [None, 1, 2]
    assert math.isnan(rows[1].avg_gap_trials.half_width)


def test_protocols_are_kept_apart_and_old_records_are_tuned():
    paper = three_methods("paper")
    tuned = [
        {**r, "key": r["key"] + "t", "avg_gap": r["avg_gap"] + 10}
        for r in three_methods("tuned")
        if r["kind"] == "unlearn"
    ]
    recs = paper + tuned
    assert protocols_of(recs) == ["paper", "tuned"]
    with pytest.raises(ValueError, match="several protocols"):
        summarize(recs)
    p = {r.method: r.avg_gap_trials.mean for r in summarize(recs, protocol="paper")["random10"]}
    t = {r.method: r.avg_gap_trials.mean for r in summarize(recs, protocol="tuned")["random10"]}
    assert p["A"] == 2.0 and t["A"] == 12.0
    assert len(per_seed(recs, protocol="tuned")["random10"]["A"]) == 3
    # records of before the protocols: the benchmark's tune_lr switch tells which
    old = {"kind": "unlearn", "phase": "final", "switches": {"tune_lr": True}}
    assert record_protocol(old) == "tuned"
    assert record_protocol({**old, "switches": {"tune_lr": False}}) == "paper"
    assert record_protocol({**old, "switches": {}, "lr_choice": {"source": "searched"}}) == "tuned"
    assert record_protocol({"kind": "retrain"}) is None


def test_rte_ratio_of_salun_to_retrain():
    # the paper's Table 1: SalUn 2.66 min, Retrain 43.29 min -> 0.0614
    recs = [rec("retrain", "retrain", 0, rte=43.29)]
    recs.append(rec("unlearn", "salun", 0, 1.0, rte=2.66, order=0, protocol="paper"))
    recs.append(rec("unlearn", "salun_strict", 0, 1.0, rte=4.329, order=1, protocol="paper",
                    method_name="salun"))  # fmt: skip
    recs.append(rec("unlearn", "rl", 0, 1.0, rte=1.0, order=2, protocol="paper"))
    ratios = dict(rte_ratios(summarize(recs)["random10"]))
    assert ratios == pytest.approx({"salun": 2.66 / 43.29, "salun_strict": 0.1})
    assert ratios["salun"] == pytest.approx(0.0614, abs=1e-4)


def test_original_summary_over_reported_seeds():
    recs = [
        {"kind": "original", "status": "ok", "seed": s, "rte_s": 1.0,
         "metrics": {"train_acc": acc, "test_acc": 90.0}}
        for s, acc in ((0, 100.0), (1, 98.0), (100, 50.0))
    ]  # fmt: skip
    assert original_summary(recs, seeds=[0, 1])["train_acc"].mean == 99.0
    assert original_summary(recs)["train_acc"].n == 3
