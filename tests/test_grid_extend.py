"""The tuned search widens a grid whose best value sits at an end (``grid_extend``); the
stages run in the documented order."""

from __future__ import annotations

import json

import pytest
import yaml

from salun.bench.config import load_config
from salun.bench.plan import widened
from salun.bench.presets import preset_path
from salun.errors import SalunError


def test_widened_adds_one_log_step_beyond_the_end():
    assert widened((1e-3, 3e-3, 1e-2), "lowest") == pytest.approx((1e-3 / 3, 1e-3, 3e-3, 1e-2))
    assert widened((1e-3, 3e-3, 1e-2), "highest")[-1] == pytest.approx(1e-2 * 10 / 3)
    assert widened((5.0, 1.0, 2.0), "highest") == pytest.approx((5.0, 1.0, 2.0, 12.5))
    with pytest.raises(ValueError):
        widened((1.0,), "lowest")


def bench_yaml(tmp_path, extend):
    raw = yaml.safe_load(preset_path("ci").read_text())
    raw["scenarios"] = ["random10"]
    # GA at lrs this small leaves every prediction as it was: every value ties, the tie goes
    # to the grid's first (lowest) value, so the choice sits at the lowest end every time
    raw["methods"] = {"ga": {"epochs": 1, "batch_size": 64, "lr": 1e-9, "lr_grid": [1e-9, 2e-9]}}
    raw["grid_extend"] = extend
    raw["original"]["epochs"] = 3  # the original's quality does not matter here
    path = tmp_path / f"b{extend}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_grid_extend_is_validated_and_zero_keeps_old_hashes(tmp_path):
    plain = load_config(bench_yaml(tmp_path, 0))
    raw = yaml.safe_load(bench_yaml(tmp_path, 0).read_text())
    del raw["grid_extend"]
    (tmp_path / "none.yaml").write_text(yaml.safe_dump(raw))
    assert load_config(tmp_path / "none.yaml").hash() == plain.hash()
    assert load_config(bench_yaml(tmp_path, 2)).hash() != plain.hash()
    for bad in (-1, 1.5, "two", True):
        raw["grid_extend"] = bad
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(SalunError, match="grid_extend"):
            load_config(tmp_path / "bad.yaml")


def test_search_widens_twice_at_the_lowest_end_then_stops(tmp_path):
    from salun.cli import main

    out = tmp_path / "run"
    argv = ["bench", "--config", str(bench_yaml(tmp_path, 2)), "--out", str(out), "--quiet"]
    assert main([*argv, "--device", "cpu", "--threads", "1"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    searched = sorted(r["lr"] for r in records if r.get("phase") == "tune")
    # two widenings at the lowest end, each one log step (×1/2) below the last
    assert searched == pytest.approx([2.5e-10, 5e-10, 1e-9, 2e-9])
    tuned = [r for r in records if r.get("protocol") == "tuned" and r["method"] == "ga"]
    assert len(tuned) == 1
    choice = tuned[0]["lr_choice"]
    assert choice["value"] == pytest.approx(2.5e-10)
    assert sorted(choice["grid"]) == pytest.approx([2.5e-10, 5e-10, 1e-9, 2e-9])
    assert choice["at_edge"] == "lowest"  # still at the end: the extensions ran out
    # the paper protocol's runs come before the search's (they need no search)
    paper = [r["seq"] for r in records if r.get("protocol") == "paper"]
    search = [r["seq"] for r in records if r.get("phase") == "tune"]
    tuned_seq = [r["seq"] for r in tuned]
    assert paper and max(paper) < min(search) and max(search) < min(tuned_seq)
    # resuming runs nothing new (the widened values are found in the store)
    assert main([*argv, "--device", "cpu", "--threads", "1"]) == 0
    again = (out / "results.jsonl").read_text().splitlines()
    assert len(again) == len(records)
