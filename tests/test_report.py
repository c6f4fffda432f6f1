"""The report from hand-made records (no training): exact table cells, lr table, failures."""

from __future__ import annotations

import pytest
import yaml

from salun.bench import ResultStore, parse_config
from salun.bench.presets import preset_path
from salun.bench.session import Session
from salun.errors import SalunError
from salun.report import write_report


def record(key, kind, method, seed, metrics, rte, **kw):
    return {
        "key": key,
        "kind": kind,
        "phase": kw.pop("phase", None if kind != "unlearn" else "final"),
        "status": kw.pop("status", "ok"),
        "scenario": kw.pop("scenario", "random10"),
        "method": method,
        "seed": seed,
        "order": kw.pop("order", -1),
        "metrics": metrics,
        "rte_s": rte,
        "device": "cpu (1 threads)",
        **kw,
    }


@pytest.fixture()
def folder(tmp_path):
    # a folder of before the protocols: lr searched on seed 0, which is also reported
    raw = yaml.safe_load(preset_path("ci").read_text())
    for k in ("protocol", "tune_seeds"):
        raw.pop(k, None)
    cfg = parse_config({**raw, "seeds": [0, 1], "tune_lr": True, "tune_seed": 0}, "ci")
    session = Session(tmp_path, cfg, {"command": "salun bench --preset ci --out X"})
    store = ResultStore(tmp_path)
    m = lambda ua, ra, ta, mia: {"UA": ua, "RA": ra, "TA": ta, "MIA": mia}  # noqa: E731
    choice = {
        "value": 0.003,
        "field": "lr",
        "source": "searched",
        "search_seed": 0,
        "avg_gap_by_value": {"0.003": 1.5, "0.01": None},
    }
    acc = lambda tr, te: {"train_acc": tr, "test_acc": te}  # noqa: E731
    for rec in [
        record("original.s0", "original", "original", 0, acc(100.0, 97.5), 3.0),
        record("original.s1", "original", "original", 1, acc(99.0, 96.5), 3.0),
        record("retrain.random10.s0", "retrain", "retrain", 0, m(4, 100, 94, 12), 60.0),
        record("retrain.random10.s1", "retrain", "retrain", 1, m(6, 100, 94, 14), 40.0),
        record("final.random10.s0.salun", "unlearn", "salun", 0, m(2, 99, 93, 14), 2.0,
               order=7, avg_gap=1.5, hparam={"name": "lr", "value": 0.003}, lr_choice=choice),
        record("final.random10.s1.salun", "unlearn", "salun", 1, m(4, 99.5, 94, 16), 4.0,
               order=7, avg_gap=1.0, hparam={"name": "lr", "value": 0.003}, lr_choice=choice),
        record("tune.random10.s0.salun.lr0.01", "unlearn", "salun", 0, {}, None, phase="tune",
               status="failed", error="the loss became nan during forget pass; lower the lr"),
    ]:  # fmt: skip
        store.add(rec)
    session.end("finished")
    return tmp_path


def test_report_table_cells_and_facts(folder):
    paths = write_report(folder)
    md = paths["md"].read_text()
    # SalUn: UA 3±1.41 (gap 2), RA 99.25±0.35 (0.75), TA 93.5±0.71 (0.5), MIA 15±1.41 (2);
    # per-seed Avg. Gap 1.5, 1.0: mean 1.25, CI 1.25 ± 12.706·0.3536/√2 = [-1.93, 4.43]
    assert (
        "| salun | 3.00±1.41 (2.00) | 99.25±0.35 (0.75) | 93.50±0.71 (0.50) | "
        "15.00±1.41 (2.00) | 1.31 | 1.25 [-1.93, 4.43] | best | 1 | 3.00±1.41 | "
        "0.003 (searched) | 2 |"
    ) in md
    assert "| Retrain | 5.00±1.41 (0.00) | 100.00±0.00 (0.00)" in md
    assert "train accuracy 99.50±0.71 %" in md and "test accuracy 97.00±0.71 %" in md
    assert "salun bench --preset ci --out X" in md
    lr_row = "| tuned | random10 | salun | lr = 0.003 | search on seed 0 |  | 0.003: 1.50, 0.01: — "
    assert lr_row in md
    assert "**The tuning seed [0] is also a reported seed**" in md  # a legacy folder
    assert "tune.random10.s0.salun.lr0.01" in md and "lower the lr" in md  # failed runs listed
    html = paths["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<td>3.00±1.41 (2.00)</td>" in html
    assert "plots/metrics_random10_tuned.png" in html
    assert (folder / "plots/gap_vs_rte_tuned.png").is_file()


def test_report_of_a_non_benchmark_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SalunError, match="not a benchmark folder"):
        write_report(tmp_path)
