"""benchmarks/gpu/check.sh cannot rot: its --smoke mode runs the whole pipeline on CPU."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import t as t_dist

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "check.sh"


def run_check(tmp_path, *args, timeout=300, **limits):
    env = {
        **os.environ,
        **limits,
        "OUT": str(tmp_path / "out"),
        "SALUN_CHECK_WORK": str(tmp_path / "work"),
        "SALUN_PYTHON": sys.executable,
    }
    env.pop("SALUN_PRECISION", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


GAP_METRICS = ("UA", "RA", "TA", "MIA")
SMOKE_METHODS = ("salun", "rl", "ft", "salun_random_mask")


def load_module(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def seed_gap(recs, seed, method):
    """A seed's Avg. Gap, from the metrics: the mean |metric − that seed's Retrain's|."""
    ref = next(r for r in recs if r["kind"] == "retrain" and r["seed"] == seed)["metrics"]
    run = next(
        r for r in recs if r["kind"] == "unlearn" and r["seed"] == seed and r["method"] == method
    )["metrics"]
    return sum(abs(run[m] - ref[m]) for m in GAP_METRICS) / len(GAP_METRICS)


def paired_numbers(report, title):
    """(mean, low, high) printed on the report's paired-difference line ``title``."""
    line = next(x for x in report.splitlines() if x.startswith(f"- {title} in Avg. Gap:"))
    m = re.search(
        r": ([-+]\d+\.\d+) over (\d+) seeds, 95 % t interval \[([-+][\d.]+), ([-+][\d.]+)\]", line
    )
    assert m, line
    return float(m[1]), int(m[2]), float(m[3]), float(m[4])


@pytest.mark.slow
def test_smoke_mode_runs_the_seed_loop_and_summarises_two_seeds(tmp_path):
    # limits far above the smoke's ~25 s of CPU: a busy machine must not stop the second
    # seed (the stop rule has its own test below)
    limits = {"SALUN_CHECK_T_PYTEST": "600", "SALUN_CHECK_T_BENCH": "1200"}
    res = run_check(tmp_path, "--smoke", timeout=2400, SALUN_CHECK_T_TPUT="300", **limits)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    report = (out / "RESULTS.md").read_text()
    assert report in res.stdout  # the table is printed, not only written
    for step in ("pytest-cuda", "bench", "throughput"):
        assert f"| {step} | 0 |" in report
    if not torch.cuda.is_available():  # the CUDA subset is skipped, and counted so
        assert "0 passed, 0 failed, 0 errors," in report and "skipped" in report

    # one bench per seed, each in its own folder, both seeds' records collected
    recs = [json.loads(x) for x in (out / "bench-results.jsonl").read_text().splitlines()]
    assert {r["status"] for r in recs} == {"ok"}
    for seed in (0, 1):
        assert (tmp_path / "work" / f"bench-seed{seed}" / "results.jsonl").is_file()
        mine = [r for r in recs if r["seed"] == seed]
        assert sorted(r["kind"] for r in mine if r["kind"] != "unlearn") == [
            "original",
            "retrain",
        ]
        assert sorted(r["method"] for r in mine if r["kind"] == "unlearn") == sorted(SMOKE_METHODS)
    assert "- seed 0: finished (exit 0)" in report and "- seed 1: finished (exit 0)" in report

    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in report.splitlines()
        if line.startswith("| ")
    }
    for method in ("retrain",) + SMOKE_METHODS:
        assert rows[method][2].strip() == "2", rows[method]  # two seeds in every row
    assert "Original (2 seeds): train accuracy" in report

    # the paired differences, computed here from the records' metrics
    for other, title in (("rl", "SalUn − RL"), ("salun_random_mask", "SalUn − random mask")):
        d = [seed_gap(recs, s, "salun") - seed_gap(recs, s, other) for s in (0, 1)]
        mean = (d[0] + d[1]) / 2
        half = t_dist.ppf(0.975, 1) * abs(d[0] - d[1]) / math.sqrt(2) / math.sqrt(2)
        got_mean, n, lo, hi = paired_numbers(report, title)
        assert n == 2
        assert got_mean == pytest.approx(mean, abs=0.006), title
        assert lo == pytest.approx(mean - half, abs=0.006) and hi == pytest.approx(
            mean + half, abs=0.006
        )

    rte_retrain = sum(r["rte_s"] for r in recs if r["kind"] == "retrain") / 2
    rte_salun = sum(r["rte_s"] for r in recs if r.get("method") == "salun") / 2
    ratio = float(re.search(r"SalUn's RTE ÷ Retrain's RTE: ([\d.]+)", report)[1])
    assert ratio == pytest.approx(rte_salun / rte_retrain, abs=6e-4)
    assert "Not fitted:" in report and "paper's 10 seeds are not attempted" in report

    tput = json.loads((out / "throughput.json").read_text())
    assert tput["train_ratio"] > 0 and tput["salun_step_ratio"] > 0
    # what comes back from a device machine: at most 8 plain files, none in sub-folders
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files), files
    assert not (out / "bench").exists()  # the working folders (models, masks) stay outside


@pytest.mark.parametrize(
    "left, last, fits",
    [
        (100, 50, True),  # 100 > 50 · 1.15 + 10 = 67.5
        (67.5, 50, False),  # exactly the margin: not more
        (67.6, 50, True),
        (60, 50, False),  # more than the last seed's time, but within the margin
        (9, 0, False),  # a seed of 0 s (cached) still needs the 10 s pad
        (10.5, 0, True),
    ],
)
def test_another_seed_starts_only_if_the_time_left_exceeds_the_last_seed_plus_a_margin(
    left, last, fits
):
    seeds = load_module("seeds")
    assert seeds.next_seed_fits(left, last) is fits
    # check.sh asks through the command line: exit 0 starts the seed
    rc = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "seeds.py"), "fits", str(left), str(last)]
    )
    assert rc.returncode == (0 if fits else 1)


def test_seed_copies_keep_the_config_but_the_seeds(tmp_path):
    seeds = load_module("seeds")
    base = tmp_path / "check.yaml"
    assert (
        seeds.main(["base", str(REPO / "configs" / "paper-gpu.yaml"), str(base), "--epochs", "3"])
        == 0
    )
    full = yaml.safe_load(base.read_text())
    assert full["original"]["epochs"] == 3 and full["seeds"] == [0, 1, 2, 3, 4]
    one = tmp_path / "seed3.yaml"
    assert seeds.main(["config", str(base), "3", str(one)]) == 0
    copy = yaml.safe_load(one.read_text())
    assert copy.pop("seeds") == [3]
    full.pop("seeds")
    assert copy == full
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.yaml", "seed3.yaml"]


def record(kind, seed, method, metrics, rte):
    r = {"kind": kind, "seed": seed, "scenario": "random10", "status": "ok", "rte_s": rte}
    r["metrics"] = metrics
    if kind == "unlearn":
        r |= {"method": method, "phase": "final", "protocol": "paper", "key": f"{method}.s{seed}"}
        r["avg_gap"] = None  # filled below
    return r


def test_summary_of_one_finished_seed_says_no_interval_and_what_did_not_fit(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    recs = []
    for seed, shift in ((0, 0.0), (1, 50.0)):  # seed 1 was cut: its records stay out
        ref = {"UA": 5.0 + shift, "RA": 99.0, "TA": 90.0, "MIA": 10.0}
        recs.append(record("original", seed, None, {"train_acc": 100.0, "test_acc": 90.0}, 9.0))
        recs.append(record("retrain", seed, None, ref, 40.0))
        for method, ua in (("salun", 7.0), ("rl", 13.0), ("salun_random_mask", 2.0)):
            r = record("unlearn", seed, method, {**ref, "UA": ua + shift}, 4.0)
            r["avg_gap"] = seed_gap([*recs, r], seed, method)
            recs.append(r)
    (out / "bench-results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "summarize.py"), "--out", str(out), "--mode", "smoke"]
        + ["--status", "bench=124:300", "--seeds-planned", "0", "1", "2", "3", "4"]
        + ["--seeds", "0=0:200", "1=124:100"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert res.returncode == 1  # a step timed out
    report = (out / "RESULTS.md").read_text()
    # seed 0 alone: gaps (UA only differs) 2/4 for SalUn, 8/4 for RL, 3/4 for the random mask
    assert "- SalUn − RL in Avg. Gap: -1.50 over 1 seed (n < 2: no interval)" in report
    assert "- SalUn − random mask in Avg. Gap: -0.25 over 1 seed (n < 2: no interval)" in report
    assert "- SalUn's RTE ÷ Retrain's RTE: 0.100" in report
    rows = {
        x.split("|")[1].strip(): x.split("|") for x in report.splitlines() if x.startswith("| ")
    }
    assert rows["salun"][2].strip() == "1" and rows["salun"][3].strip() == "7.00"
    assert "- seed 1: timed out (exit 124) after 100 s" in report
    assert "seed(s) 1 did not finish" in report and "seed(s) 2, 3, 4 not run" in report
    assert "| bench | 124 (timed out) | 300 |" in report


def test_paper_gpu_config_is_the_full_scale_comparison():
    from salun.bench.config import load_config

    cfg = load_config(str(REPO / "configs" / "paper-gpu.yaml"))
    assert cfg.dataset == "fashion-mnist" and cfg.arch == "resnet18" and cfg.width == 1.0
    assert cfg.seeds == (0, 1, 2, 3, 4) and cfg.protocols == ("paper",)
    o = cfg.original
    assert (o.epochs, o.batch_size, o.lr, o.momentum, o.weight_decay) == (10, 256, 0.1, 0.9, 5e-4)
    assert o.schedule == "cosine" and not o.augment
    got = {m.label: (m.method, m.overrides) for m in cfg.methods}
    assert set(got) == {"salun", "rl", "ft", "salun_random_mask"}
    assert got["salun_random_mask"][0] == "salun"
    assert got["salun_random_mask"][1].pop("mask_source") == "random"
    assert got["salun_random_mask"][1] == got["salun"][1]  # the same settings but the mask
    assert got["salun"][1]["lr"] == got["rl"][1]["lr"] == 0.013 and got["ft"][1]["lr"] == 0.01
    assert all(ov["epochs"] == 10 and ov["batch_size"] == 256 for _, ov in got.values())


def test_full_mode_without_a_gpu_stops_with_a_message(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: full mode would run")
    res = run_check(tmp_path, timeout=600)  # a busy machine imports torch slowly
    assert res.returncode == 2
    assert "no CUDA GPU" in res.stderr and "--smoke" in res.stderr


def test_a_time_limit_of_zero_skips_the_step(tmp_path):
    zero = {f"SALUN_CHECK_T_{k}": "0" for k in ("PYTEST", "BENCH", "TPUT")}
    res = run_check(tmp_path, "--smoke", timeout=600, **zero)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = (tmp_path / "out" / "RESULTS.md").read_text()
    for step in ("pytest-cuda", "bench", "throughput"):
        assert f"| {step} | skipped (time limit 0) | 0 |" in report
    assert not (tmp_path / "work" / "bench-seed0").exists()
    assert "seed(s) 0, 1 not run" in report


def test_unknown_argument_is_refused(tmp_path):
    res = run_check(tmp_path, "--fast", timeout=60)
    assert res.returncode == 2 and "unknown argument --fast" in res.stderr
