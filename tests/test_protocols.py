"""The two benchmark protocols: ``paper`` (configured values) and ``tuned`` (a grid searched on
held-out tuning seeds), their config keys, the search's choice, and what Retrain trains on.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch

import salun.methods.retrain as retrain_module
from salun.bench import BenchOptions, parse_config, read_records, run_bench
from salun.bench.aggregate import summarize
from salun.bench.config import MethodEntry, config_from_dict
from salun.bench.plan import (
    DEFAULT_LR_GRID,
    choose_value,
    count_runs,
    grid_edge,
    search_grid,
)
from salun.data import load_dataset, load_split
from salun.errors import SalunError
from salun.methods import get_method

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def raw(**kw) -> dict:
    """A tiny digits benchmark (seconds to run), edited by ``kw``."""
    d = {
        "name": "proto",
        "dataset": "digits",
        "arch": "mlp",
        "width": 0.25,
        "original": {"epochs": 3, "batch_size": 64, "lr": 0.05, "schedule": "cosine"},
        "scenarios": ["random10"],
        "seeds": [0],
        "protocol": ["paper", "tuned"],
        "tune_seeds": [7],
        "mia_features": ["confidence"],
        "methods": {
            "ft": {"epochs": 1, "batch_size": 64, "lr": 0.01, "lr_grid": [0.001, 0.01, 0.1]},
            "ga": {"epochs": 1, "batch_size": 64, "lr": 0.001, "lr_grid": []},
        },
    }
    d.update(kw)
    return d


# ---- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "protocol, expected",
    [("paper", ("paper",)), ("tuned", ("tuned",)), (["tuned", "paper"], ("paper", "tuned"))],
)
def test_protocol_key_forms(protocol, expected):
    d = raw(protocol=protocol)
    if "tuned" not in expected:
        del d["tune_seeds"]
    cfg = parse_config(d, "t")
    assert cfg.protocols == expected
    assert cfg.search_seeds == ((7,) if "tuned" in expected else ())
    assert cfg.all_seeds == ((0, 7) if "tuned" in expected else (0,))
    assert not cfg.tuning_seed_reported


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"protocol": "best"}, "protocol must be paper, tuned"),
        ({"protocol": []}, "protocol must be paper, tuned"),
        ({"tune_seeds": [0]}, "must not be reported"),
        ({"seeds": [0, 1], "tune_seeds": [1, 5]}, r"share \[1\]"),
        ({"tune_seeds": [3, 3]}, "distinct"),
        ({"tune_seeds": "x"}, "list of integers"),
        ({"protocol": "paper"}, "tune_seeds needs protocol: tuned"),
        ({"tune_lr": True}, "legacy spelling"),
    ],
)
def test_bad_protocol_settings_are_clear_errors(edit, message):
    with pytest.raises(SalunError, match=message):
        parse_config(raw(**edit), "t")


def test_tuned_needs_tune_seeds():
    d = raw(protocol="tuned")
    del d["tune_seeds"]
    with pytest.raises(SalunError, match="needs tune_seeds"):
        parse_config(d, "t")


def test_legacy_keys_map_to_tuned_with_a_reported_tuning_seed():
    d = raw(seeds=[0, 1, 2])
    del d["protocol"], d["tune_seeds"]
    cfg = parse_config({**d, "tune_lr": True}, "t")
    assert cfg.protocols == ("tuned",) and cfg.search_seeds == (0,)  # default: first seed
    assert cfg.tuning_seed_reported and cfg.all_seeds == (0, 1, 2)
    assert parse_config({**d, "tune_lr": True, "tune_seed": 9}, "t").all_seeds == (0, 1, 2, 9)
    assert parse_config({**d, "tune_lr": False}, "t").protocols == ("paper",)
    assert parse_config(d, "t").protocols == ("paper",)  # no key: no search


def test_old_bench_json_config_reads_as_tuned_on_its_single_seed():
    cfg = parse_config(raw(), "t")
    old = asdict(cfg)
    del old["protocols"], old["tune_seeds"]
    old.update(tune_lr=True, tune_seed=None, seeds=[0, 1])
    back = config_from_dict(old)
    assert back.protocols == ("tuned",) and back.search_seeds == (0,)
    assert back.tuning_seed_reported
    # a new bench.json round-trips exactly (same hash: the folder resumes)
    assert config_from_dict(asdict(cfg)) == cfg and config_from_dict(asdict(cfg)).hash() == (
        cfg.hash()
    )


# ---- grids and the choice ---------------------------------------------------------------


def test_default_grids():
    # learning-rate methods: >= 6 log-spaced values spanning [1e-4, 1e-1]
    g = search_grid(MethodEntry("ft", "ft", {"epochs": 1}))
    assert g == DEFAULT_LR_GRID and len(g) >= 6
    assert min(g) == pytest.approx(1e-4) and max(g) == pytest.approx(1e-1)
    ratios = [b / a for a, b in zip(g, g[1:])]
    assert all(2.9 < r < 3.4 for r in ratios)  # half decades: 3.16 or 3.33 (1, 3, 10)
    assert search_grid(MethodEntry("salun", "salun", {})) == DEFAULT_LR_GRID
    # BS / BE: their own (much smaller) range; IU: its alpha grid
    for name in ("bs", "be", "iu"):
        own = tuple(float(v) for v in get_method(name).config().lr_grid)
        assert search_grid(MethodEntry(name, name, {})) == own and own != DEFAULT_LR_GRID
    assert max(search_grid(MethodEntry("bs", "bs", {}))) < 1e-1
    # the entry's own grid wins, repeated values once; an empty grid: no search
    assert search_grid(MethodEntry("rl", "rl", {"lr_grid": [0.1, 0.01, 0.1]})) == (0.1, 0.01)
    assert search_grid(MethodEntry("rl", "rl", {"lr_grid": []})) == ()


def test_choice_is_the_smallest_mean_gap_over_tuning_seeds():
    grid = (0.1, 0.01, 0.001)
    # per seed: seed 1 alone would pick 0.1, seed 2 alone 0.001; the mean picks 0.01
    gaps = {
        0.1: {1: 1.0, 2: 9.0},  # mean 5.0 (the largest)
        0.01: {1: 2.0, 2: 2.0},  # mean 2.0 (the smallest)
        0.001: {1: 6.0, 2: 1.5},  # mean 3.75
    }
    c = choose_value(grid, gaps, field="lr", tune_seeds=(1, 2))
    assert c["value"] == 0.01 and c["source"] == "searched"
    assert c["avg_gap_by_value"] == {"0.1": 5.0, "0.01": 2.0, "0.001": 3.75}
    assert c["tune_seeds"] == [1, 2] and c["at_edge"] is None
    # a failed run on any tuning seed makes the value ineligible
    c = choose_value(grid, {**gaps, 0.01: {1: 2.0, 2: None}}, tune_seeds=(1, 2))
    assert c["value"] == 0.001 and c["avg_gap_by_value"]["0.01"] is None
    assert c["at_edge"] == "lowest"
    # equal means: the first value of the grid
    assert choose_value((1.0, 2.0), {1.0: {1: 3.0}, 2.0: {1: 3.0}}, tune_seeds=(1,))["value"] == 1
    # every value failed: no choice
    assert choose_value((1.0,), {1.0: {1: math.inf}}, tune_seeds=(1,))["value"] is None


def test_grid_edge():
    assert grid_edge((0.01, 0.001, 0.1), 0.1) == "highest"
    assert grid_edge((0.01, 0.001, 0.1), 0.001) == "lowest"
    assert grid_edge((0.01, 0.001, 0.1), 0.01) is None
    assert grid_edge((0.01,), 0.01) is None


# ---- end to end ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proto_run(tmp_path_factory):
    """Both protocols on the tiny benchmark, with a spy on what Retrain trains on."""
    seen = []
    real = retrain_module.train_supervised

    def spy(model, train, *a, **k):
        seen.append(train)
        return real(model, train, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(retrain_module, "train_supervised", spy)
    cfg = parse_config(raw(), "proto")
    out = tmp_path_factory.mktemp("proto") / "b"
    try:
        run_bench(cfg, out, BenchOptions(quiet=True, device="cpu", threads=1))
    finally:
        mp.undo()
    return cfg, out, read_records(out), seen


def test_runs_of_both_protocols_and_no_reported_tuning_seed(proto_run):
    cfg, out, records, _ = proto_run
    keys = {r["key"] for r in records}
    assert len(records) == len(keys) == count_runs(cfg)
    assert {k for k in keys if k.startswith("final.")} == {
        f"final.{p}.random10.s0.{m}" for p in ("paper", "tuned") for m in ("ft", "ga")
    }
    # the search runs on the tuning seed only; nothing on seed 7 is reported
    tune = [r for r in records if r["phase"] == "tune"]
    assert {r["seed"] for r in tune} == {7} and len(tune) == 3
    assert all(r["seed"] == 0 for r in records if r["phase"] == "final")
    for p in ("paper", "tuned"):
        rows = summarize(records, protocol=p)["random10"]
        assert all(r.seeds == (0,) for r in rows), p  # Retrain of seed 7 left out
        assert [r.protocol for r in rows] == [None, p, p]


def test_paper_protocol_runs_the_configured_value(proto_run):
    _, _, records, _ = proto_run
    by_key = {r["key"]: r for r in records}
    paper = by_key["final.paper.random10.s0.ft"]
    assert paper["protocol"] == "paper" and paper["config"]["lr"] == 0.01
    assert paper["lr_choice"]["source"] == "config"
    assert paper.get("reused_from") is None
    # GA has no grid: its tuned run is its paper run, reused rather than rerun
    ga = by_key["final.tuned.random10.s0.ga"]
    assert ga["reused_from"] == "final.paper.random10.s0.ga" and ga["protocol"] == "tuned"
    assert ga["metrics"] == by_key["final.paper.random10.s0.ga"]["metrics"]


def test_tuned_choice_is_the_argmin_of_its_own_search_records(proto_run):
    _, _, records, _ = proto_run
    tune = {r["hparam"]["value"]: r["avg_gap"] for r in records if r["phase"] == "tune"}
    assert len(set(tune.values())) == 3  # a case where smallest and largest differ
    smallest = min(tune, key=tune.get)
    largest = max(tune, key=tune.get)
    assert smallest != largest
    final = next(r for r in records if r["key"] == "final.tuned.random10.s0.ft")
    assert final["lr_choice"]["value"] == smallest and final["config"]["lr"] == smallest
    assert final["lr_choice"]["tune_seeds"] == [7] and final["seed"] == 0
    assert final["lr_choice"]["avg_gap_by_value"] == {f"{v:g}": g for v, g in tune.items()}
    assert final["lr_choice"]["at_edge"] == grid_edge((0.001, 0.01, 0.1), smallest)


def test_retrain_trains_on_the_retain_set_only(proto_run):
    """The benchmark's Retrain sees exactly D_r of its split: never a forget index."""
    cfg, out, records, seen = proto_run
    bundle = load_dataset("digits")
    retrains = [r for r in records if r["kind"] == "retrain" and not r.get("cached")]
    assert len(seen) == len(retrains) == 2  # one per seed (0 and the tuning seed 7)
    for data, rec in zip(seen, sorted(retrains, key=lambda r: r["seq"])):
        split = load_split(out / rec["split_file"])
        assert len(split.forget) > 0 and len(data) == len(split.retain)
        assert len(data) < len(split.train)
        retain = bundle.train.subset(split.retain)
        assert torch.equal(data.images, retain.images) and torch.equal(data.labels, retain.labels)


def test_report_names_the_protocol_of_every_table(proto_run):
    from salun.report import write_report

    _, out, _, _ = proto_run
    md = write_report(out)["md"].read_text()
    assert "### random10 — protocol paper" in md and "### random10 — protocol tuned" in md
    assert "Protocol **paper**: each method at its configured value" in md
    assert "tuning seed(s) [7]" in md and "The tuning seeds are not reported." in md
    assert "| tuned | random10 | ft |" in md and "| paper | random10 | ft |" in md
    assert "not significant" in md  # one reported seed
