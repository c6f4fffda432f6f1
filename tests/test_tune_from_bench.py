"""benchmarks/tune/from_bench.py (issue #29): the Retrain-free pick (salun.tune.pick) and
the Retrain-tuned pick (the bench's choice) from search records. The records here are
made up; both picks are recomputed in the test with plain loops over the documented rules.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("UA", "RA", "TA", "MIA")
K = 10  # classes: chance is 10 %


def _script():
    spec = importlib.util.spec_from_file_location(
        "from_bench", ROOT / "benchmarks/tune/from_bench.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# (scenario, method, field) -> [(value, UA, RA, TA, MIA, Avg. Gap to the Retrain or None)]
SEARCH = {
    ("random10", "ft", "lr"): [
        (0.001, 1.0, 99.0, 84.0, 5.0, 9.0),
        (0.01, 12.0, 97.0, 83.0, 20.0, 2.0),  # the Retrain's pick
        (0.1, 15.0, 96.0, 82.5, 15.0, 3.0),  # the free pick (closest to the proxy)
    ],
    ("random10", "iu", "alpha"): [
        (1.0, 3.0, 99.0, 84.0, 5.0, 6.0),
        (5.0, 9.0, 95.0, 80.0, 14.0, 6.0),  # a tie in the Retrain's gap: the first wins
        (25.0, None, None, None, None, None),  # a failed run
    ],
    ("class0", "ft", "lr"): [
        (0.001, 40.0, 99.5, 90.0, 50.0, 20.0),  # not at chance
        (0.01, 95.0, 98.0, 88.0, 99.0, 1.5),  # at chance (5 % ≤ 10 %), RA+TA 186
        (0.1, 100.0, 97.0, 89.5, 100.0, 1.0),  # at chance, RA+TA 186.5: the free pick
        (0.3, 100.0, 90.0, 80.0, 100.0, 8.0),
    ],
    ("class0", "ga", "lr"): [  # none at chance: the lowest forget accuracy (highest UA)
        (0.001, 20.0, 99.0, 90.0, 30.0, 15.0),
        (0.01, 70.0, 95.0, 86.0, 80.0, 4.0),
        (0.1, 60.0, 96.0, 87.0, 70.0, 5.0),
    ],
}
REFERENCES = {
    "random10.s100": {"target": "held-out", "num_classes": K, "source": "test",
                      "reference": {"UA": 16.0, "RA": 100.0, "TA": 84.0, "MIA": 14.0}},
    "class0.s100": {"target": "chance", "num_classes": K, "source": "test",
                    "reference": {"RA": 100.0, "TA": 90.0}},
}  # fmt: skip


def _records() -> list[dict]:
    recs = [{"key": "original.s100", "kind": "original", "status": "ok", "seed": 100,
             "method": "original", "metrics": {"train_acc": 100.0, "test_acc": 84.0}}]  # fmt: skip
    for (scenario, method, field), rows in SEARCH.items():
        for v, ua, ra, ta, mia, gap in rows:
            ok = gap is not None
            recs.append({
                "key": f"tune.{scenario}.s100.{method}.{field}{v:g}", "kind": "unlearn",
                "phase": "tune", "protocol": None, "scenario": scenario, "seed": 100,
                "method": method, "hparam": {"name": field, "value": v},
                "status": "ok" if ok else "failed", "error": None if ok else "NaN loss",
                "metrics": {"UA": ua, "RA": ra, "TA": ta, "MIA": mia} if ok else {},
                "avg_gap": gap, "split_file": f"splits/{scenario}.s100.json",
                "original": {"key": "original.s100", "model": "models/0123"},
            })  # fmt: skip
    return recs


def _retrain_pick(rows):  # the smallest gap, the first on a tie; failed runs never
    best = None
    for v, *_, gap in rows:
        if gap is not None and (best is None or gap < best[1]):
            best = (v, gap)
    return best[0]


def _free_pick(rows, ref):
    ok = [r for r in rows if r[5] is not None]
    if ref["target"] == "held-out":
        gaps = [sum(abs(x - ref["reference"][m]) for x, m in zip(r[1:5], METRICS)) / 4 for r in ok]
        return ok[gaps.index(min(gaps))][0]
    eligible = [r for r in ok if 100.0 - r[1] <= 100.0 / K]
    if eligible:
        kept = [r[2] + r[3] for r in eligible]  # RA + TA: the least lost
        return eligible[kept.index(max(kept))][0]
    uas = [r[1] for r in ok]
    return ok[uas.index(max(uas))][0]


@pytest.fixture
def bench(tmp_path) -> Path:
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "results.jsonl").write_text("\n".join(json.dumps(r) for r in _records()) + "\n")
    (tmp_path / "ref.json").write_text(json.dumps(REFERENCES))
    return folder


def test_both_picks_and_their_gaps_match_the_rules_computed_here(bench, capsys):
    script = _script()
    assert script.main([str(bench), "--reference", str(bench.parent / "ref.json"), "--json"]) == 0
    got = {(r["scenario"], r["method"]): r for r in json.loads(capsys.readouterr().out)}
    assert set(got) == {(s, m) for s, m, _ in SEARCH}
    for (scenario, method, field), rows in SEARCH.items():
        r = got[(scenario, method)]
        ref = REFERENCES[f"{scenario}.s100"]
        tuned, free = _retrain_pick(rows), _free_pick(rows, ref)
        gap = {row[0]: row[5] for row in rows}
        assert r["field"] == field and r["seed"] == 100
        assert r["retrain_tuned"] == tuned and r["retrain_tuned_gap"] == gap[tuned]
        assert r["retrain_free"] == free and r["retrain_free_gap"] == gap[free]
        assert r["difference"] == pytest.approx(gap[free] - gap[tuned])
        assert r["failed"] == sum(row[5] is None for row in rows)
    # the made-up records do separate the two rules where they should
    assert got[("random10", "ft")]["retrain_free"] == 0.1
    assert got[("random10", "ft")]["retrain_tuned"] == 0.01
    assert got[("class0", "ga")]["retrain_free"] == 0.01


def test_the_markdown_table_and_the_bench_s_recorded_choice(bench, capsys):
    script = _script()
    recs = [json.loads(x) for x in (bench / "results.jsonl").read_text().splitlines()]
    final = {"key": "final.tuned.random10.s0.ft", "kind": "unlearn", "phase": "final",
             "protocol": "tuned", "scenario": "random10", "seed": 0, "method": "ft",
             "status": "ok", "metrics": {"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0},
             "lr_choice": {"value": 0.01, "grid": [0.1, 0.01, 0.001],
                           "tune_seeds": [100]}}  # fmt: skip
    (bench / "results.jsonl").write_text("\n".join(json.dumps(r) for r in [*recs, final]))
    ref = str(bench.parent / "ref.json")
    assert script.main([str(bench), "--reference", ref]) == 0
    out = capsys.readouterr().out
    assert "| random10 | ft | lr (3 values) | 2.00–9.00 | 0.01 | 2.00 | 0.1 | 3.00 | 1.00 |" in out
    assert (
        "| random10 | iu | alpha (3 values, 1 failed) | 6.00–6.00 | 1 | 6.00 | 5 | 6.00 | 0.00 |"
        in out
    )
    assert "Same pick in 2 of 4" in out
    # a recorded choice its own rule does not give on these records: the script says so
    final["lr_choice"]["value"] = 0.1
    (bench / "results.jsonl").write_text("\n".join(json.dumps(r) for r in [*recs, final]))
    assert script.main([str(bench), "--reference", ref]) == 1
    assert "the bench recorded lr 0.1 but its rule gives 0.01" in capsys.readouterr().err


def test_no_search_records_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text(json.dumps(_records()[0]) + "\n")
    assert _script().main([str(tmp_path), "--reference", str(tmp_path / "none.json")]) == 1
    assert "holds no search records" in capsys.readouterr().err
