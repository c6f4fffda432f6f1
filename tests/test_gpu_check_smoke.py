"""benchmarks/gpu/check.sh cannot rot: its --smoke mode runs the whole pipeline on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "check.sh"


def run_check(tmp_path, *args, timeout=300):
    env = {
        **os.environ,
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


@pytest.mark.slow
def test_smoke_mode_runs_every_step_and_writes_the_records(tmp_path):
    res = run_check(tmp_path, "--smoke")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    report = (out / "RESULTS.md").read_text()
    assert report in res.stdout  # the table is printed, not only written
    for step in ("pytest-cuda", "bench", "throughput"):
        assert f"| {step} | 0 |" in report
    if not torch.cuda.is_available():  # the CUDA subset is skipped, and counted so
        assert "0 passed, 0 failed, 0 errors," in report and "skipped" in report
    rows = {
        line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")
    }
    for method in ("retrain", "salun", "rl", "ft", "ga", "l1_sparse"):
        assert rows[method].rstrip().endswith("| ok |"), rows[method]
    assert "Original: train accuracy" in report
    tput = json.loads((out / "throughput.json").read_text())
    assert tput["train_ratio"] > 0 and tput["salun_step_ratio"] > 0
    # what comes back from a device machine: at most 8 plain files, none in sub-folders
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)
    assert not (out / "bench").exists()  # the working folder (models, masks) stays outside


def test_full_mode_without_a_gpu_stops_with_a_message(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: full mode would run")
    res = run_check(tmp_path, timeout=120)
    assert res.returncode == 2
    assert "no CUDA GPU" in res.stderr and "--smoke" in res.stderr


def test_unknown_argument_is_refused(tmp_path):
    res = run_check(tmp_path, "--fast", timeout=60)
    assert res.returncode == 2 and "unknown argument --fast" in res.stderr
