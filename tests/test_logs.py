"""The main job's log: plain lines when redirected, a per-stage ETA, one final line; and
``--threads`` on the computing verbs."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from salun.bench import load_preset
from salun.bench.plan import count_runs
from salun.bench.runlog import RunLog, format_eta, stage_plan
from salun.utils import LineProgress, progress, progress_lines

NOON = dt.datetime(2026, 12, 1, 12, 0, 0)
TASK_LINE = re.compile(r"^\[(\d+)/(\d+)\] \S+ ")
# lines besides one per run: a line per stage (original, Retrain, search, two protocols),
# resume / stale-lock notes, and the final line
OVERHEAD = 10


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_log(total: int, done: int = 0, plan=None) -> tuple[RunLog, io.StringIO, FakeClock]:
    out, clock = io.StringIO(), FakeClock()
    log = RunLog(total, done, stream=out, clock=clock, wallclock=lambda: NOON, plan=plan)
    return log, out, clock


# ---- the ETA ---------------------------------------------------------------------------


def test_eta_is_unknown_until_a_run_of_the_stage_finishes_then_uses_the_stage_mean():
    log, out, clock = make_log(total=7)
    log.start_stage("original", 1)
    clock.t = 600.0  # an original model: 10 minutes
    log.finished("original.s0", "ok")
    log.start_stage("tune", 6)
    clock.t += 10.0
    log.finished("tune.a", "ok")
    clock.t += 20.0
    log.finished("tune.b", "ok")
    lines = out.getvalue().splitlines()
    assert lines[0] == "stage original models: 1 run to do, ETA unknown"
    assert lines[1] == "[1/7] original.s0 ok (600.0 s); original models 1/1, stage done"
    assert lines[2] == "stage lr search: 6 runs to do, ETA unknown"
    # the search's own mean (10 s, then (10 + 20) / 2 = 15 s) times the runs left (5, then
    # 4); the 600 s of the other stage do not count
    assert lines[3] == "[2/7] tune.a ok (10.0 s); lr search 1/6, stage ETA 12:00:50 (in 50 s)"
    assert lines[4] == "[3/7] tune.b ok (20.0 s); lr search 2/6, stage ETA 12:01:00 (in 1 min)"


def test_cached_runs_are_left_out_of_the_mean():
    log, out, clock = make_log(total=3)
    log.start_stage("retrain", 3)
    clock.t = 0.5
    log.finished("retrain.a", "ok", cached=True)  # a reused model: no time
    assert out.getvalue().splitlines()[-1].endswith("Retrain 1/3, ETA unknown")
    clock.t = 100.5
    log.finished("retrain.b", "ok")  # 100 s since the previous completion
    assert out.getvalue().splitlines()[-1].endswith("stage ETA 12:01:40 (in 2 min)")


def test_a_runs_own_time_is_shown_while_the_eta_uses_completion_intervals():
    """Under Ray two runs overlap: the line shows each run's own time, the ETA the rate at
    which runs complete."""
    log, out, clock = make_log(total=4)
    log.start_stage("final", 4)
    clock.t = 30.0
    log.finished("final.a", "ok", run_s=55.5)  # ran 55.5 s, completed 30 s after the start
    clock.t = 40.0
    log.finished("final.b", "ok", run_s=58.0)
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("[1/4] final.a ok (55.5 s); ")
    # mean completion interval (30 + 10) / 2 = 20 s, 2 runs left: 40 s
    assert lines[2] == "[2/4] final.b ok (58.0 s); final runs 2/4, stage ETA 12:00:40 (in 40 s)"


def test_a_failed_runs_line_carries_its_reason():
    log, out, clock = make_log(total=2)
    log.start_stage("tune", 2)
    clock.t = 0.4
    error = "the loss became nan during unlearning epoch 1; lower the learning rate\nTraceback..."
    log.finished("tune.class0.s100.ga.lr0.003", "failed", run_s=0.4, error=error)
    assert out.getvalue().splitlines()[-1] == (
        "[1/2] tune.class0.s100.ga.lr0.003 failed: the loss became nan during unlearning "
        "epoch 1; lower the learning rate (0.4 s); lr search 1/2, stage ETA 12:00:00 (in 0 s)"
    )


def test_the_job_eta_appears_once_every_stage_to_come_has_a_time_per_run():
    plan = {"original": 1, "retrain": 2, "tune": 4, "final paper": 4, "final tuned": 4}
    log, out, clock = make_log(total=15, plan=plan)
    log.start_stage("original", 1)
    clock.t = 600.0
    log.finished("original.s0", "ok")
    # Retrain would borrow the original's 600 s, but nothing has unlearned yet: no job ETA
    assert "job" not in out.getvalue()
    log.start_stage("retrain", 2)
    clock.t += 500.0
    log.finished("retrain.a", "ok")
    assert "job" not in out.getvalue().splitlines()[-1]
    clock.t += 300.0
    log.finished("retrain.b", "ok")
    log.start_stage("tune", 4)
    clock.t += 10.0
    log.finished("tune.a", "ok")
    # 3 search runs left at 10 s, then 8 final runs borrowing the search's 10 s: 110 s
    assert (
        out.getvalue()
        .splitlines()[-1]
        .endswith("lr search 1/4, stage ETA 12:00:30 (in 30 s); job ETA 12:01:50 (in 2 min)")
    )
    clock.t += 30.0
    log.finished("tune.b", "ok")  # the search's mean is now (10 + 30) / 2 = 20 s
    assert out.getvalue().splitlines()[-1].endswith("; job ETA 12:03:20 (in 3 min)")  # 2·20 + 8·20
    for key in ("tune.c", "tune.d"):
        clock.t += 20.0
        log.finished(key, "ok")
    log.start_stage("final paper", 4)
    clock.t += 50.0
    log.finished("final.paper.a", "ok")
    # 3 paper runs and then 4 tuned ones at the paper runs' own 50 s: 350 s
    assert out.getvalue().splitlines()[-1].endswith("; job ETA 12:05:50 (in 6 min)")


def test_the_job_eta_counts_only_the_runs_a_resumed_job_has_left():
    plan = {"original": 1, "retrain": 1, "tune": 10, "final paper": 10}
    # a resumed folder: the originals, Retrain and 8 search runs are recorded, and so are 6
    # final runs (the search grew after them): 22 - 16 = 6 runs left in all
    log, out, clock = make_log(total=22, done=16, plan=plan)
    log.start_stage("tune", 2)
    clock.t = 5.0
    log.finished("tune.i", "ok")
    # 1 search run left and then the 4 final runs the job still has (not the plan's 10),
    # all at the search's 5 s: 25 s
    assert out.getvalue().splitlines()[-1].endswith("; job ETA 12:00:25 (in 25 s)")


def test_the_job_eta_holds_when_the_paper_runs_come_before_the_search():
    plan = {"original": 1, "retrain": 1, "tune": 6, "final paper": 2, "final tuned": 2}
    log, out, clock = make_log(total=12, plan=plan)
    for stage, key, took in (("original", "o", 100.0), ("retrain", "r", 100.0)):
        log.start_stage(stage, 1)
        clock.t += took
        log.finished(key, "ok")
    log.start_stage("final paper", 2)
    clock.t += 8.0
    log.finished("final.paper.a", "ok")
    # 1 paper run, then the search's 6 and the 2 tuned runs, all at the paper runs' 8 s
    assert out.getvalue().splitlines()[-1].endswith("; job ETA 12:01:12 (in 1 min)")


def test_stage_plan_adds_up_to_the_jobs_run_count():
    from salun.bench.audit_stage import audit_task_count

    for name in ("ci", "quick", "standard", "audit-bench-cpu"):
        cfg = load_preset(name)
        plan = stage_plan(cfg)
        assert sum(plan.values()) == count_runs(cfg) + audit_task_count(cfg), name
        assert list(plan)[:2] == ["original", "retrain"]
    cfg = load_preset("quick")
    assert [k for k in stage_plan(cfg) if k.startswith("final")] == [
        f"final {p}" for p in cfg.protocols
    ]


def test_eta_names_the_date_when_not_today():
    assert format_eta(3600 * 13, NOON) == "ETA 2026-12-02 01:00 (in 13 h 00 min)"
    assert format_eta(90, NOON) == "ETA 12:01:30 (in 2 min)"


def test_resume_says_how_many_runs_are_skipped_and_derived_runs_count():
    log, out, _ = make_log(total=5, done=3)
    log.skipped()
    log.derived("final.tuned.x", "ok, reuses final.paper.x")
    assert out.getvalue().splitlines() == [
        "resuming: 3 finished runs skipped, 2 to do",
        "[4/5] final.tuned.x ok, reuses final.paper.x (no run)",
    ]


def test_quiet_log_prints_nothing():
    out = io.StringIO()
    log = RunLog(2, 1, quiet=True, stream=out)
    log.skipped()
    log.start_stage("final", 1)
    log.finished("final.x", "ok")
    assert out.getvalue() == ""


def test_progress_bars_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("SALUN_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress(range(3), desc="x").disable  # redirected: no bar
    monkeypatch.setattr(sys, "stderr", Tty())
    assert not progress(range(3), desc="x").disable
    assert progress(range(3), desc="x", quiet=True).disable


def test_line_progress_writes_a_line_per_tenth_with_its_elapsed_and_remaining_time(capsys):
    clock = FakeClock()
    bar = LineProgress(total=20, desc="train", clock=clock)
    for step in range(1, 21):
        clock.t = 3.0 * step  # 3 s a step
        if step == 10:
            bar.set_postfix(loss=0.123456, acc=97.5)
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10  # 20 steps, a line every 2 (a tenth)
    assert lines[0] == "train: 2/20 (10 %), 6 s elapsed, about 54 s left"
    assert lines[4] == "train: 10/20 (50 %), 30 s elapsed, about 30 s left; loss=0.1235, acc=97.5"
    assert lines[-1] == "train: 20/20 (100 %), 60 s elapsed; loss=0.1235, acc=97.5"


def test_line_progress_over_an_iterable_and_a_slow_step_says_so_within_a_minute(capsys):
    clock = FakeClock()
    for _epoch in LineProgress(range(3), desc="unlearn", clock=clock):
        clock.t += 40.0
    assert capsys.readouterr().err.splitlines() == [
        "unlearn: 1/3 (33 %), 40 s elapsed, about 80 s left",
        "unlearn: 2/3 (67 %), 80 s elapsed, about 40 s left",
        "unlearn: 3/3 (100 %), 2.0 min elapsed",  # minutes from 120 s on
    ]
    bar = LineProgress(total=1000, desc="gen", clock=clock, every_s=60.0)
    clock.t += 61.0
    bar.update(1)  # far from a tenth, but a minute without a line
    assert capsys.readouterr().err.startswith("gen: 1/1000 (0 %), 61 s elapsed")


def test_progress_writes_lines_to_a_log_only_where_asked(monkeypatch):
    monkeypatch.delenv("SALUN_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    assert progress(range(3), desc="x").disable  # the bench's runs: silent, one line per run
    with progress_lines():
        assert isinstance(progress(range(3), desc="x"), LineProgress)
        assert progress(range(3), desc="x", quiet=True).disable
        monkeypatch.setenv("SALUN_QUIET", "1")
        assert progress(range(3), desc="x").disable
    assert progress(range(3), desc="x").disable


def test_train_and_unlearn_print_progress_lines_when_stderr_is_a_file(
    tmp_path, monkeypatch, capsys
):
    from salun.cli import main

    monkeypatch.delenv("SALUN_QUIET", raising=False)
    split, model = tmp_path / "s.json", tmp_path / "m"
    assert main(["split", "--data", "synthetic", "--scenario", "random", "--fraction", "0.1",
                 "--out", str(split)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "3",
                 "--split", str(split), "--out", str(model)]) == 0  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    ticks = [x for x in err if re.match(r"^\S.*: \d+/\d+ \(\d+ %\), \d+ s elapsed", x)]
    assert len(ticks) >= 3 and ticks[-1].split(":")[1].startswith(" ") and "(100 %)" in ticks[-1]
    assert main(["unlearn", "--model", str(model), "--forget", str(split), "--method", "ft",
                 "--epochs", "2", "--out", str(tmp_path / "u"), "--no-eval"]) == 0  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert [x for x in err if x.startswith("fine-tune: ")][-1].startswith("fine-tune: 2/2 (100 %)")


# ---- the redirected log of a real run --------------------------------------------------


def test_redirected_bench_log_has_one_line_per_run_and_one_final_report_line(tmp_path):
    config = tmp_path / "tiny.yaml"
    raw = {
        "name": "tiny", "dataset": "digits", "arch": "mlp", "width": 0.25,
        "original": {"epochs": 2, "batch_size": 64, "lr": 0.05},
        "scenarios": ["random10"], "seeds": [0], "mia_features": ["confidence"],
        "protocol": ["paper", "tuned"], "tune_seeds": [1],
        "methods": {"ft": {"epochs": 1, "lr": 0.01, "lr_grid": [0.01, 0.03]},
                    "ga": {"epochs": 1, "lr": 0.001, "lr_grid": []},
                    "ft_boom": {"method": "ft", "epochs": 1, "lr": 1e9, "lr_grid": []}},
    }  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "salun", "bench", "--config", str(config), "--out", str(out),
            "--threads", "1", "--device", "cpu"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SALUN_QUIET"}  # bars would be allowed
    log = tmp_path / "log.txt"
    with log.open("w") as f:  # stdout and stderr to one file, as scripts/main.sh > log does
        assert subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env).returncode == 0
    text = log.read_text()
    lines = text.splitlines()
    from salun.bench import load_config

    tasks = count_runs(load_config(config))
    assert tasks == 2 + 2 + 2 + 6  # originals, Retrains (seeds 0, 1), search, 2 protocols
    assert "\r" not in text and "it/s" not in text  # no progress bar redraws
    task_lines = [x for x in lines if TASK_LINE.match(x)]
    assert [TASK_LINE.match(x).groups() for x in task_lines] == [
        (str(i), str(tasks)) for i in range(1, tasks + 1)
    ]
    assert len(lines) <= tasks + OVERHEAD
    # a diverging run says why it failed; the whole job's ETA shows once it can be known
    boom = [x for x in task_lines if ".ft_boom" in x and " failed" in x]
    assert boom and all(re.search(r" failed: the loss became (nan|inf|-inf)", x) for x in boom)
    assert "; job ETA " in task_lines[-2]
    assert sum("report:" in x for x in lines) == 1
    assert lines[-1] == f"report: {out / 'report.md'} and {out / 'report.html'}"
    # resumed: nothing to run, one line says so (no report this time: faster)
    with log.open("w") as f:
        rerun = subprocess.run([*argv, "--no-report"], stdout=f, stderr=subprocess.STDOUT, env=env)
    lines = log.read_text().splitlines()
    assert rerun.returncode == 0, lines
    assert f"resuming: {tasks} finished runs skipped, 0 to do" in lines
    assert not [x for x in lines if TASK_LINE.match(x)]
    assert lines[-1] == f"results: {out / 'results.jsonl'} (no report: --no-report)"
    assert len(lines) <= OVERHEAD


def test_quick_preset_log_stays_under_2000_lines():
    # one line per run plus a bounded overhead (measured on a real run above)
    assert count_runs(load_preset("quick")) + OVERHEAD < 2000


def test_main_sh_prints_no_second_report_line():
    script = (Path(__file__).parents[1] / "scripts" / "main.sh").read_text()
    assert "report:" not in script.replace("# salun bench prints the report", "")


# ---- --threads -------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["train", "evaluate", "mask", "unlearn"])
def test_threads_flag_sets_torch_threads_for_the_command(verb, monkeypatch):
    import salun.cli

    seen = []
    monkeypatch.setattr(salun.cli, f"cmd_{verb}", lambda args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    argv = {
        "train": ["train", "--data", "digits", "--out", "x"],
        "evaluate": ["evaluate", "--model", "m", "--forget", "f"],
        "mask": ["mask", "--model", "m", "--forget", "f", "--out", "x"],
        "unlearn": ["unlearn", "--model", "m", "--forget", "f", "--out", "x"],
    }[verb]
    n = 1 if before != 1 else 2  # within the CPUs: more than the machine has is refused
    assert salun.cli.main([*argv, "--threads", str(n)]) == 0
    assert seen == [n] and torch.get_num_threads() == before  # restored for the caller


def test_threads_below_one_is_a_user_error(capsys):
    import salun.cli

    assert salun.cli.main(["evaluate", "--model", "m", "--forget", "f", "--threads", "0"]) == 2
    assert "--threads must be an integer in [1, " in capsys.readouterr().err


def test_gen_verbs_take_threads():
    from salun.cli import build_parser

    args = build_parser().parse_args(["gen", "train", "--out", "x", "--threads", "2"])
    assert args.threads == 2


def test_sd_verbs_take_threads():
    pytest.importorskip("diffusers")
    from salun.cli import build_parser

    parser = build_parser()
    for argv in (["sd", "tiny", "--out", "x"], ["sd", "mask", "--out", "x.safetensors"],
                 ["sd", "unlearn", "--out", "x"], ["sd", "generate", "--out", "x"],
                 ["sd", "evaluate", "nudity", "--images", "x"]):  # fmt: skip
        assert parser.parse_args([*argv, "--threads", "2"]).threads == 2, argv
