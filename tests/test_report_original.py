"""The report's Original row (issue #30): the model before unlearning, on each scenario's
split, as the starting point of every table — its UA/RA/TA/MIA read from the records, its
gap to Retrain, never ranked."""

from __future__ import annotations

import statistics

import pytest
import yaml

from salun.bench import ResultStore, parse_config
from salun.bench.presets import preset_path
from salun.bench.session import Session
from salun.report import write_report
from test_report import record

LABEL = "Original (start, not ranked)"


def _m(ua, ra, ta, mia):
    return {"UA": ua, "RA": ra, "TA": ta, "MIA": mia}


# Retrain per seed, the original's evaluation on that seed's split, and one method
RETRAIN = {0: _m(4.0, 100.0, 94.0, 12.0), 1: _m(6.0, 100.0, 93.0, 16.0)}
ORIGINAL = {0: _m(0.5, 99.5, 95.0, 2.0), 1: _m(1.5, 100.0, 94.0, 4.0)}
FT = {0: _m(2.0, 99.0, 93.0, 14.0), 1: _m(4.0, 99.5, 94.0, 16.0)}


def _folder(tmp_path, seeds, originals):
    raw = yaml.safe_load(preset_path("ci").read_text())
    raw.pop("tune_seeds", None)
    cfg = parse_config({**raw, "seeds": seeds, "protocol": ["paper"]}, "ci")
    session = Session(tmp_path, cfg, {"command": "salun bench --preset ci --out X"})
    store = ResultStore(tmp_path)
    for s in seeds:
        store.add(record(f"original.s{s}", "original", "original", s,
                         {"train_acc": 100.0, "test_acc": 95.0}, 3.0))  # fmt: skip
        extra = {"original_metrics": originals[s]} if s in originals else {}
        store.add(record(f"retrain.random10.s{s}", "retrain", "retrain", s, RETRAIN[s], 60.0,
                         **extra))  # fmt: skip
        gap = statistics.mean(abs(FT[s][k] - RETRAIN[s][k]) for k in FT[s])
        store.add(record(f"final.paper.random10.s{s}.ft", "unlearn", "ft", s, FT[s], 2.0,
                         order=0, avg_gap=gap, protocol="paper"))  # fmt: skip
    session.end("finished")
    return tmp_path


def _row(md: str, label: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_original_row_is_read_from_the_records_two_seeds(tmp_path):
    md = write_report(_folder(tmp_path, [0, 1], ORIGINAL))["md"].read_text()
    cells = _row(md, LABEL)
    expected, gaps = [], []
    for k in ("UA", "RA", "TA", "MIA"):  # mean ± sample std over seeds, (|gap| to Retrain)
        vals = [ORIGINAL[s][k] for s in (0, 1)]
        ref = statistics.mean(RETRAIN[s][k] for s in (0, 1))
        gap = abs(statistics.mean(vals) - ref)
        gaps.append(gap)
        expected.append(f"{statistics.mean(vals):.2f}±{statistics.stdev(vals):.2f} ({gap:.2f})")
    assert cells[1:5] == expected
    assert cells[5] == f"{statistics.mean(gaps):.2f}"  # its Avg. Gap: how far unlearning must go
    assert cells[6:] == ["—", "—", "—", "—", "—", "2"]  # per-seed, vs best, rank, RTE, lr, n
    # the starting point comes right after Retrain, and the ranking is unchanged by it
    table = md[md.index("| Method |") :].splitlines()
    assert table[2].startswith("| Retrain |") and table[3].startswith(f"| {LABEL} |")
    assert _row(md, "ft")[8] == "1"
    assert "**Original (start, not ranked)**: the model before unlearning" in md


def test_original_row_one_seed_and_without_records(tmp_path):
    md = write_report(_folder(tmp_path / "a", [0], ORIGINAL))["md"].read_text()
    cells = _row(md, LABEL)
    # UA 0.5 vs Retrain 4 -> 3.5; RA 0.5; TA 1; MIA 10 -> Avg. Gap 3.75
    assert cells[1:6] == ["0.50 (3.50)", "99.50 (0.50)", "95.00 (1.00)", "2.00 (10.00)", "3.75"]
    assert cells[6:] == ["—", "—", "—"]
    # a benchmark of before the row (no original_metrics): no row, and the reason said
    md = write_report(_folder(tmp_path / "b", [0, 1], {0: ORIGINAL[0]}))["md"].read_text()
    assert f"| {LABEL} |" not in md
    assert "so the tables have no Original row" in md


@pytest.mark.filterwarnings("ignore")
def test_bench_records_the_original_on_each_split(tmp_path):
    """End to end: what salun bench records is the *original* model's evaluation on the
    Retrain run's split, and the report shows it."""
    import json

    from salun.artifacts import load_model
    from salun.bench import BenchOptions, run_bench
    from salun.data import load_dataset, load_split
    from salun.metrics import evaluate_unlearning

    raw = yaml.safe_load(preset_path("ci").read_text())
    raw.update(seeds=[0], protocol=["paper"], scenarios=["random10"])
    raw["original"] = {**raw["original"], "epochs": 5}
    raw["methods"] = {"ft": {"epochs": 1, "batch_size": 64, "lr": 0.01, "lr_grid": []}}
    raw.pop("tune_seeds", None)
    cfg = parse_config(raw, "tiny")
    out = tmp_path / "b"
    run_bench(cfg, out, BenchOptions(quiet=True, device="cpu", threads=1, report=True))
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    orig = next(r for r in recs if r["kind"] == "original")
    ret = next(r for r in recs if r["kind"] == "retrain")
    model, _ = load_model(out / orig["original"]["model"])
    bundle = load_dataset(cfg.dataset)
    split = load_split(out / ret["split_file"])
    mine = evaluate_unlearning(model, bundle, split, mia_features=cfg.mia_features)
    for k in ("UA", "RA", "TA", "MIA"):
        assert ret["original_metrics"][k] == pytest.approx(mine[k], abs=1e-9), k
    assert ret["original_metrics"]["TA"] == pytest.approx(orig["metrics"]["test_acc"], abs=1e-6)
    md = (out / "report.md").read_text()
    cells = _row(md, LABEL)
    assert cells[1].startswith(f"{ret['original_metrics']['UA']:.2f} (")
