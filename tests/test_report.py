"""The report from hand-made records (no training): exact table cells, lr table, failures."""

from __future__ import annotations

import re

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


# ---- a report that explains itself ---------------------------------------------------


def _rl_failed(folder, error="the loss became nan during unlearning epoch 1; lower the lr"):
    store = ResultStore(folder)
    for seed in (0, 1):
        store.add(record(f"final.random10.s{seed}.rl", "unlearn", "rl", seed, {}, None,
                         order=2, status="failed", protocol="tuned",
                         error=f"{error}\nTraceback ..."))  # fmt: skip


def test_the_report_defines_every_metric_and_says_the_target_is_retrain(folder):
    paths = write_report(folder)
    md = paths["md"].read_text()
    for term in ("**UA** (unlearning accuracy) = 100 − accuracy on the forget set",
                 "**RA** (remaining accuracy)", "**TA** (testing accuracy)",
                 "**MIA** (MIA-efficacy)", "**Avg. Gap** = the mean of |metric − Retrain's|",
                 "**RTE** (run-time efficiency)",
                 "**the target is Retrain's value, not the highest value**"):  # fmt: skip
        assert term in md, term
    html = paths["html"].read_text()
    # links that work, no Markdown left over in the HTML
    hrefs = re.findall(r"<a href='([^']+)'>", html)
    assert any(h.endswith("docs/evaluation.md") for h in hrefs)
    for h in hrefs:
        assert (folder / h).resolve().is_file(), h
    assert "*tied*" not in html and "**" not in html and "](" not in html


def test_a_failed_method_is_marked_with_its_reason_and_counted(folder):
    _rl_failed(folder)
    md = write_report(folder)["md"].read_text()
    # 7 records of the fixture and 2 failed rl runs: 3 failed in all
    assert "Runs: 9, **3 failed**" in md
    table = md.split("### random10 — protocol tuned")[1].split("###")[0]
    assert "| rl | — | — | — | — | — | — | — | failed | — | — | 0 |" in table
    assert (
        "**rl** — 2 of 2 run(s) failed: the loss became nan during unlearning epoch 1; lower "
        "the lr" in table
    )
    # a configured method that never ran is marked too, not dropped
    assert "| ga | — | — | — | — | — | — | — | no run | — | — | 0 |" in table
    assert "**ga** — no run recorded" in table
    assert "Traceback" not in table
    says = md.split("## What this run says")[1].split("\n## ")[0]
    assert "Without a result: " in says and "rl" in says


def _one_seed(tmp_path):
    raw = yaml.safe_load(preset_path("ci").read_text())
    raw.pop("tune_seeds", None)
    cfg = parse_config({**raw, "methods": {"salun": {}, "rl": {}, "ft": {}},
                        "protocol": ["paper"], "seeds": [0]}, "ci")  # fmt: skip
    session = Session(tmp_path, cfg, {"command": "salun bench"})
    store = ResultStore(tmp_path)
    m = lambda ua, ra, ta, mia: {"UA": ua, "RA": ra, "TA": ta, "MIA": mia}  # noqa: E731
    acc = {"train_acc": 100.0, "test_acc": 90.0}
    for rec in [
        record("original.s0", "original", "original", 0, acc, 3.0),
        record("retrain.random10.s0", "retrain", "retrain", 0, m(10, 100, 90, 20), 50.0),
        record("final.paper.random10.s0.salun", "unlearn", "salun", 0, m(8, 99, 89, 22), 5.0,
               order=0, protocol="paper", avg_gap=1.5),
        record("final.paper.random10.s0.rl", "unlearn", "rl", 0, m(6, 100, 90, 30), 4.0,
               order=1, protocol="paper", avg_gap=3.5),
        record("final.paper.random10.s0.ft", "unlearn", "ft", 0, m(0, 100, 91, 2), 3.0,
               order=2, protocol="paper", avg_gap=7.25),
    ]:  # fmt: skip
        store.add(rec)
    session.end("finished")
    return tmp_path


def test_at_one_seed_the_table_keeps_only_columns_that_carry_information(tmp_path):
    md = write_report(_one_seed(tmp_path))["md"].read_text()
    table = md.split("### random10 — protocol paper")[1]
    header = next(x for x in table.splitlines() if x.startswith("| Method"))
    assert header == "| Method | UA | RA | TA | MIA | Avg. Gap | rank | RTE (s) | lr |"
    # salun: gaps 2, 1, 1, 2 -> 1.50
    assert "| salun | 8.00 (2.00) | 99.00 (1.00) | 89.00 (1.00) | 22.00 (2.00) | 1.50 | 1 |" in md
    says = md.split("## What this run says")[1].split("\n## ")[0]
    assert "Closest to Retrain on this one seed: **salun** (Avg. Gap 1.50), then rl, ft." in says
    assert "no method is shown to be better than another" in says


def test_the_verdict_never_claims_more_than_the_intervals():
    from salun.bench.aggregate import summarize
    from salun.report.explain import verdict

    m = lambda g: {"UA": g, "RA": 100.0, "TA": 90.0, "MIA": 20.0}  # noqa: E731
    recs = [record(f"retrain.random10.s{s}", "retrain", "retrain", s, m(0.0), 50.0)
            for s in (0, 1, 2)]  # fmt: skip
    # a: per-seed gaps 1, 2, 3; b: 1.5, 1.6, 4.5 (paired differences 0.5, -0.4, 1.5: the
    # 95 % interval holds 0, tied); c: 9, 10, 11 (always 8 worse: distinguishable)
    for label, gaps, order in (("a", (1, 2, 3), 0), ("b", (1.5, 1.6, 4.5), 1),
                               ("c", (9, 10, 11), 2)):  # fmt: skip
        for s, g in zip((0, 1, 2), gaps):
            recs.append(record(f"final.random10.s{s}.{label}", "unlearn", label, s, m(4.0 * g),
                               1.0, order=order, avg_gap=float(g)))  # fmt: skip
    rows = summarize(recs)["random10"]
    text = verdict(rows, {})
    # a's mean 2.00, interval 2 ± 4.303·1/√3 = [-0.48, 4.48]
    assert text.startswith(
        "Closest to Retrain: **a** (mean Avg. Gap 2.00, 95 % interval [-0.48, 4.48] over 3 "
        "seeds), but not distinguishable at 95 % from b"
    )
    assert "does not single out a best method among these 2" in text
    assert "c" not in text.split("Furthest")[0].split("from")[1]
    assert "Furthest: c (Avg. Gap 10.00)." in text
