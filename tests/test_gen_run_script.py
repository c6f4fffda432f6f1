"""benchmarks/gen/run.sh: which preset, judge and schedule each step gets, and resumption.

The script is run with SALUN pointing at a fake executable that logs its arguments and
writes the artifact each verb would write, so every step's flags are checked without
training anything.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "gen" / "run.sh"

FAKE = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_LOG"
out=""; prev=""
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
case "$1 $2" in
  "gen mask") : > "$out" ;;
  "gen evaluate") printf '%s' "$FAKE_METRICS" > "$out" ;;
  *) mkdir -p "$out"; echo '{"seconds": 1}' > "$out/model.json" ;;
esac
"""
METRICS = {
    "ua": 99.0,
    "forget_prob": 0.01,
    "retain_acc": 97.0,
    "retain_acc_per_class": {"1": 97.0},
    "feature_fd": 1.0,
}


@pytest.fixture
def fake(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "salun"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    # run.sh calls the python next to $SALUN for its summary scripts
    (bindir / "python").symlink_to(sys.executable)
    return exe, tmp_path / "calls.log"


def run(fake, *args: str) -> tuple[list[str], str]:
    exe, log = fake
    env = {
        **os.environ,
        "SALUN": str(exe),
        "FAKE_LOG": str(log),
        "FAKE_METRICS": json.dumps({"metrics": METRICS}),
    }
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls, done.stdout


def calls_of(calls: list[str], verb: str) -> list[str]:
    return [c for c in calls if c.startswith(verb)]


def flag(call: str, name: str) -> str:
    words = call.split()
    return words[words.index(name) + 1]


def test_fashion_report_steps_flags_and_resumption(fake, tmp_path):
    run_dir = tmp_path / "run"
    calls, out = run(fake, str(run_dir))
    (judge,) = calls_of(calls, "train ")
    assert flag(judge, "--data") == "fashion-mnist" and flag(judge, "--arch") == "cnn"
    assert flag(judge, "--pad") == "0"  # flips without crops: the DDPM's own augmentation
    assert all(flag(c, "--config") == "configs/gen-fashion-cpu.yaml" for c in calls[1:])

    unlearn = {flag(c, "--out").rsplit("/", 1)[1]: c for c in calls_of(calls, "gen unlearn")}
    assert set(unlearn) == {"salun", "salun-random-mask", "rl", "ga", "esd", "retrain"}
    assert flag(unlearn["salun"], "--mask").endswith("/mask.safetensors")
    assert flag(unlearn["salun-random-mask"], "--mask").endswith("/mask-random.safetensors")
    # ESD gets the reference's 10 000 x 1 schedule, not the preset's SalUn schedule
    assert (flag(unlearn["esd"], "--iterations"), flag(unlearn["esd"], "--batch-size")) == (
        "10000",
        "1",
    )
    assert "--iterations" not in unlearn["ga"] and "--mask" not in unlearn["rl"]
    masks = [flag(c, "--out") for c in calls_of(calls, "gen mask")]
    assert [m.rsplit("/", 1)[1] for m in masks] == ["mask.safetensors", "mask-random.safetensors"]
    assert "--random" in calls_of(calls, "gen mask")[1]
    assert len(calls_of(calls, "gen evaluate")) == 7
    assert "| salun | 99.0 |" in out  # summarize.py ran on the records

    assert all(
        flag(c, "--checkpoint-every") == "50" for c in unlearn.values() if "retrain" not in c
    )

    # a second run redoes nothing but the resumable trainings (Original, Retrain) and the
    # unlearning run left unfinished (a checkpoint), which the same command continues
    meta = run_dir / "rl" / "model.json"
    meta.write_text(json.dumps({"complete": False, "steps_done": 100}, indent=2))
    again, _ = run(fake, str(run_dir))
    assert [c.split()[:2] for c in again] == [["gen", "train"]] + [["gen", "unlearn"]] * 2
    assert flag(again[1], "--method") == "rl" and flag(again[2], "--method") == "retrain"


def test_cifar10_preset_uses_the_resnet34_judge(fake, tmp_path):
    calls, _ = run(fake, "--preset", "cifar10", str(tmp_path / "run"))
    (judge,) = calls_of(calls, "train ")
    assert flag(judge, "--data") == "cifar10" and flag(judge, "--arch") == "resnet34"
    assert flag(judge, "--pad") == "4"
    assert all(flag(c, "--config") == "configs/gen-paper-cifar10.yaml" for c in calls[1:])


def test_ablation_seeds_each_mask_and_run(fake, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a seed already judged elsewhere (its record copied in) is not rerun
    (run_dir / "salun-s2.eval.json").write_text(json.dumps({"metrics": METRICS}))
    calls, out = run(fake, "--ablation", "2 3 4", str(run_dir))
    masks = calls_of(calls, "gen mask")
    assert [(flag(c, "--seed"), "--random" in c) for c in masks] == [
        ("2", True),
        ("3", False),
        ("3", True),
        ("4", False),
        ("4", True),
    ]
    runs = calls_of(calls, "gen unlearn")
    assert [(flag(c, "--out").rsplit("/", 1)[1], flag(c, "--seed")) for c in runs] == [
        ("salun-random-mask-s2", "2"),
        ("salun-s3", "3"),
        ("salun-random-mask-s3", "3"),
        ("salun-s4", "4"),
        ("salun-random-mask-s4", "4"),
    ]
    assert flag(runs[2], "--mask").endswith("/mask-random-s3.safetensors")
    assert flag(runs[1], "--mask").endswith("/mask-s3.safetensors")
    assert not [c for c in runs if "retrain" in c]  # the ablation trains no Retrain
    judged = [flag(c, "--out").rsplit("/", 1)[1] for c in calls_of(calls, "gen evaluate")]
    assert "salun-s2.eval.json" not in judged and "salun-random-mask-s2.eval.json" in judged
    assert "Mask ablation over seeds 2, 3, 4" in out


def test_unknown_preset_is_refused(fake, tmp_path):
    exe, log = fake
    done = subprocess.run(
        ["bash", str(SCRIPT), "--preset", "mnist", str(tmp_path / "run")],
        env={**os.environ, "SALUN": str(exe), "FAKE_LOG": str(log)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--preset must be fashion or cifar10" in done.stderr
    assert not log.exists() and not (tmp_path / "run").exists()
