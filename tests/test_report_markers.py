"""Reports are outputs like any other (issue #27): a report.md salun wrote carries its last
line and is rewritten by a rerun; one the user wrote is refused before any training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from salun.audit.report import REPORT_MARK as AUDIT_MARK
from salun.cli import main

AUDIT = {
    "name": "tiny",
    "dataset": "synthetic:64",
    "arch": "mlp",
    "width": 0.25,
    "forget_count": 8,
    "original": {"epochs": 1, "batch_size": 32, "lr": 0.05, "weight_decay": 0.0},
    "shadows": 3,
    "bootstrap": 20,
    "methods": {"original": {}},
}


def _audit(tmp_path: Path, out: Path) -> int:
    cfg = tmp_path / "a.yaml"
    cfg.write_text(json.dumps(AUDIT))  # JSON is YAML
    return main(["audit", "--config", str(cfg), "--out", str(out), "--quiet"])


def test_audit_report_carries_the_mark_and_a_rerun_rewrites_it(tmp_path):
    out = tmp_path / "o"
    assert _audit(tmp_path, out) == 0
    text = (out / "report.md").read_text()
    assert text.rstrip("\n").splitlines()[-1] == AUDIT_MARK
    # an older version's report (no mark, its heading) is salun's too: a rerun replaces it
    (out / "report.md").write_text("# salun audit: tiny\n\nold table\n")
    assert _audit(tmp_path, out) == 0
    assert (out / "report.md").read_text() == text


def test_audit_refuses_a_users_report_before_training(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    mine = "# my notes on this audit\n"
    (out / "report.md").write_text(mine)
    assert _audit(tmp_path, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "salun did not write it" in err[0] and "report.md" in err[0]
    assert (out / "report.md").read_text() == mine
    assert not (out / "audit.json").exists() and not (out / "shadows").exists()  # no work


@pytest.mark.parametrize("name", ["report.md", "report.html", "plots/mine.png"])
def test_bench_refuses_a_users_report_before_any_training(tmp_path, name):
    """The real command: refused at once (not after the whole benchmark), nothing written."""
    out = tmp_path / "b"
    (out / "plots").mkdir(parents=True)
    mine = b"my notes\n" if not name.endswith(".png") else b"\x89PNG\r\n\x1a\n mine"
    (out / name).write_bytes(mine)
    proc = subprocess.run(
        [sys.executable, "-m", "salun", "bench", "--preset", "ci", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("salun: error: ") and Path(name).name in err[0]
    assert "--no-report" in err[0]
    assert (out / name).read_bytes() == mine
    for made in ("bench.json", "runs", "models", "splits", "results.jsonl"):
        assert not (out / made).exists(), made  # no training, no benchmark folder
