"""``salun report DIR`` on a hand-edited or damaged benchmark folder (issue #27): a damaged
file is one ``salun: error:`` line naming the file and the key (exit 2, nothing written);
a successful record without a finite result is shown as a failed run, never ranked
(docs/benchmarks.md, "A damaged folder")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from salun.bench import ResultStore, parse_config
from salun.bench.presets import preset_path
from salun.bench.session import Session
from salun.cli import main
from test_report import record

M = {"UA": 2.0, "RA": 99.0, "TA": 93.0, "MIA": 14.0}
FT = "final.random10.s0.ft"
GA = "final.random10.s0.ga"


@pytest.fixture()
def bench(tmp_path):
    """A finished one-seed benchmark of hand-made records: Retrain, ft and ga."""
    raw = yaml.safe_load(preset_path("ci").read_text())
    cfg = parse_config({**raw, "seeds": [0]}, "ci")
    session = Session(tmp_path, cfg, {"command": "salun bench --preset ci --out X"})
    store = ResultStore(tmp_path)
    for rec in [
        record("original.s0", "original", "original", 0, {"train_acc": 100, "test_acc": 97}, 3),
        record("retrain.random10.s0", "retrain", "retrain", 0, {**M, "UA": 4.0}, 60.0),
        record(FT, "unlearn", "ft", 0, M, 2.0, order=0, avg_gap=0.5),
        record(GA, "unlearn", "ga", 0, {**M, "UA": 9.0}, 1.0, order=1, avg_gap=1.75),
    ]:
        store.add(rec)
    session.end("finished")
    return tmp_path


def _edit(path, change) -> None:
    """Rewrite the JSON file ``path`` with ``change(obj)`` (Python's json writes NaN and
    Infinity as a hand edit of a record would)."""
    obj = json.loads(path.read_text())
    path.write_text(json.dumps(change(obj)))


def _report(folder, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["report", str(folder)])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _nothing_written(folder) -> None:
    assert not (folder / "report.md").exists() and not (folder / "report.html").exists()
    assert not list((folder / "plots").glob("*.png")) if (folder / "plots").exists() else True


def _set_metric(name, value):
    def change(rec):
        rec["metrics"][name] = value
        return rec

    return change


def _drop(key):
    def change(rec):
        del rec[key]
        return rec

    return change


# --- a damaged file: one line naming the file and the key, exit 2, nothing written -------

DAMAGED = [
    ("metric 'high'", FT, _set_metric("UA", "high"), ["ft.json", "metrics.UA", '"high"']),
    ("metric true", FT, _set_metric("TA", True), ["ft.json", "metrics.TA"]),
    ("metrics a list", FT, lambda r: {**r, "metrics": [1, 2]}, ["ft.json", "metrics"]),
    ("no seed", FT, _drop("seed"), ["ft.json", "seed is missing"]),
    ("seed text", GA, lambda r: {**r, "seed": "0"}, ["ga.json", "seed", "whole number"]),
    ("no kind", GA, _drop("kind"), ["ga.json", "kind is missing"]),
    ("no scenario", GA, _drop("scenario"), ["ga.json", "scenario is missing"]),
    ("no status", FT, _drop("status"), ["ft.json", "status is missing"]),
    ("rte text", FT, lambda r: {**r, "rte_s": "fast"}, ["ft.json", "rte_s"]),
    ("order text", FT, lambda r: {**r, "order": "1"}, ["ft.json", "order"]),
    ("retrain metric text", "retrain.random10.s0", _set_metric("MIA", "x"), ["metrics.MIA"]),
]


@pytest.mark.parametrize(("case", "key", "change", "needles"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_record_is_one_error_naming_file_and_key(
    bench, capsys, case, key, change, needles
):
    _edit(bench / "runs" / f"{key}.json", change)
    code, err = _report(bench, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("salun: error: "), (case, err)
    for n in needles:
        assert n in err[0], (n, err)
    _nothing_written(bench)


BENCH_DAMAGE = [
    ("a list", lambda d: [1, 2, 3], ["bench.json", "JSON list"]),
    ("no config name", lambda d: {**d, "config": {**d["config"], "name": None}}, ["config.name"]),
    ("seeds text", lambda d: {**d, "config": {**d["config"], "seeds": "0"}}, ["config.seeds"]),
    ("no sessions", lambda d: {**d, "sessions": []}, ["sessions"]),
    ("session a number", lambda d: {**d, "sessions": [7]}, ["sessions[0]"]),
    ("no config", lambda d: {k: v for k, v in d.items() if k != "config"}, ["config is missing"]),
]


@pytest.mark.parametrize(
    ("case", "change", "needles"), BENCH_DAMAGE, ids=[d[0] for d in BENCH_DAMAGE]
)
def test_a_damaged_bench_json_is_one_error(bench, capsys, case, change, needles):
    _edit(bench / "bench.json", change)
    code, err = _report(bench, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("salun: error: "), (case, err)
    for n in needles:
        assert n in err[0], (n, err)
    _nothing_written(bench)


def test_a_results_line_that_is_not_an_object_names_its_line(bench, capsys):
    # a committed copy keeps results.jsonl only (runs/ left out of the repository)
    import shutil

    shutil.rmtree(bench / "runs")
    lines = (bench / "results.jsonl").read_text().splitlines()
    lines.insert(2, "[1,2,3]")
    (bench / "results.jsonl").write_text("\n".join(lines) + "\n")
    code, err = _report(bench, capsys)
    assert code == 2 and len(err) == 1, err
    assert "results.jsonl line 3" in err[0] and "not a benchmark record" in err[0]
    _nothing_written(bench)
    lines[2] = '{"key": "x", "kind": "unlearn"}'  # an object without the fields
    (bench / "results.jsonl").write_text("\n".join(lines) + "\n")
    code, err = _report(bench, capsys)
    assert code == 2 and len(err) == 1 and "results.jsonl line 3" in err[0], err
    assert "status is missing" in err[0]


# --- no finite result: the run is shown as failed, with the reason, and not ranked ------

# one damage per method, all in one report (each method's record is better than ga's)
NOT_FINITE = {
    "ft": ({"UA": float("inf")}, None, "metrics.UA is inf"),
    "rl": ({"MIA": float("nan")}, None, "metrics.MIA is nan"),
    "iu": ({"RA": float("-inf")}, None, "metrics.RA is -inf"),
    "l1_sparse": ("empty", None, "metrics.UA is missing"),
    "bs": ("no TA", None, "metrics.TA is missing"),
    "be": ({}, float("nan"), "avg_gap is nan"),
}


def test_records_without_a_finite_result_are_failed_runs(bench, capsys):
    store = ResultStore(bench)
    for order, label in enumerate(NOT_FINITE, start=2):
        if label == "ft":
            continue  # already there
        store.add(record(f"final.random10.s0.{label}", "unlearn", label, 0, M, 2.0,
                         order=order, avg_gap=0.5))  # fmt: skip
    for label, (metrics, gap, _) in NOT_FINITE.items():

        def change(rec, metrics=metrics, gap=gap):
            if metrics == "empty":
                rec["metrics"] = {}
            elif metrics == "no TA":
                del rec["metrics"]["TA"]
            else:
                rec["metrics"].update(metrics)
            if gap is not None:
                rec["avg_gap"] = gap
            return rec

        _edit(bench / "runs" / f"final.random10.s0.{label}.json", change)
    code, err = _report(bench, capsys)
    assert code == 0, err
    md = (bench / "report.md").read_text()
    failed = md[md.index("## Failed runs") :]
    table = md[md.index("### random10") :]
    table = table[: table.index("\n## ")]
    for label, (_, _, reason) in NOT_FINITE.items():
        key = f"final.random10.s0.{label}"
        assert f"| {key} | no finite result in the record: {reason}" in failed, (label, failed)
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert "| failed |" in row and "2.00" not in row, row  # a row of dashes, marked failed
    assert f"Runs: {4 + len(NOT_FINITE) - 1}, **{len(NOT_FINITE)} failed**" in md
    assert "One method: **ga**" in table  # ga, the only finite one, is all that is ranked
    cells = [line for line in table.splitlines() if line.startswith("|")]
    assert not any("inf" in line or "nan" in line for line in cells)  # no such value shown


def test_no_traceback_from_the_command_line(bench):
    """The real command, as a user runs it: one line on stderr, exit 2."""
    _edit(bench / "runs" / f"{FT}.json", _set_metric("UA", "high"))
    proc = subprocess.run(
        [sys.executable, "-m", "salun", "report", str(bench)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "metrics.UA" in err[0]
