"""salun.tune / lr="auto" (issue #29): the pick is recomputed here from the recorded
candidates' metrics, by the documented rule, independently of salun.tune's own code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import salun
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError
from salun.tune import TuneResult, tune

METRICS = ("UA", "RA", "TA", "MIA")


def _train(model, x, y, epochs=40):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 50):
            idx = perm[i : i + 50]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def world():
    """A small MLP that memorises 240 noisy synthetic images (4 classes)."""
    torch.manual_seed(0)
    b = synthetic_bundle(n_train=240, n_test=200, noise=250.0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    _train(model, b.train.images.float() / 255, b.train.labels)
    return model, b


def _avg_gap(row, ref):
    return sum(abs(row[m] - ref[m]) for m in METRICS) / 4


def test_random_forgetting_picks_the_smallest_gap_to_the_held_out_proxy(world):
    model, b = world
    f, r = b.train.subset(range(24)), b.train.subset(range(24, 240))
    grid = [0.001, 0.01, 0.1]
    res = tune(model, f, r, b.test, "ga", grid=grid, epochs=2, seed=3, quiet=True)
    assert isinstance(res, TuneResult) and res.scenario == "random" and res.target == "held-out"
    assert [row["lr"] for row in res.table] == grid
    # the proxy, rebuilt here: the test set halved with the seed; half B in D_f's place
    order = np.random.default_rng(3).permutation(len(b.test))
    half_a, half_b = b.test.subset(np.sort(order[:100])), b.test.subset(np.sort(order[100:]))
    unseen = salun.evaluate(model, half_b, r, half_a, seed=3)
    orig = salun.evaluate(model, f, r, half_a, seed=3)
    ref = {"UA": unseen["UA"], "MIA": unseen["MIA"], "RA": orig["RA"], "TA": orig["TA"]}
    assert res.reference == pytest.approx(ref)
    scores = [_avg_gap(row, ref) for row in res.table]
    assert [row["score"] for row in res.table] == pytest.approx(scores)
    assert res.value == grid[int(np.argmin(scores))]
    # the returned model is the pick's: its metrics are the recorded row's
    again = salun.evaluate(res.best.model, f, r, half_a, seed=3)
    chosen = next(row for row in res.table if row["lr"] == res.value)
    assert {m: again[m] for m in METRICS} == pytest.approx({m: chosen[m] for m in METRICS})
    assert res.best.config["lr"] == res.value
    assert f"| {res.value:g} **(pick)** |" in res.markdown()
    assert "held-out proxy" in res.reason


def test_class_wise_picks_the_least_accuracy_lost_among_values_at_chance(world):
    model, b = world
    labels = b.train.labels
    f = b.train.subset(torch.nonzero(labels == 2).flatten())
    r = b.train.subset(torch.nonzero(labels != 2).flatten())
    grid = [0.003, 0.03, 0.3]
    res = tune(model, f, r, b.test, "rl", grid=grid, epochs=2, quiet=True)
    assert res.scenario == "class" and res.target == "chance"
    # the documented rule, from the table: forget accuracy (100 − UA) at or below 25 %,
    # then the largest RA + TA; none at chance: the lowest forget accuracy
    t = b.test.subset(torch.nonzero(b.test.labels != 2).flatten())  # class 2 left out
    orig = salun.evaluate(model, f, r, t)
    ok = [row for row in res.table if 100 - row["UA"] <= 25.0]
    if ok:
        want = max(ok, key=lambda row: row["RA"] + row["TA"])
    else:
        want = max(res.table, key=lambda row: row["UA"])
    assert res.value == want["lr"]
    for row in res.table:
        assert row["eligible"] == (100 - row["UA"] <= 25.0)
        lost = (orig["RA"] - row["RA"]) + (orig["TA"] - row["TA"])
        assert row["score"] == pytest.approx(lost)


def test_with_a_retrain_the_pick_is_the_smallest_avg_gap_to_it(world):
    model, b = world
    f, r = b.train.subset(range(24)), b.train.subset(range(24, 240))
    retrain = {"UA": 30.0, "RA": 100.0, "TA": 70.0, "MIA": 40.0}
    res = tune(model, f, r, b.test, "ga", grid=[0.001, 0.03], retrain=retrain, epochs=1, quiet=True)
    assert res.target == "retrain" and res.reference == retrain
    scores = [_avg_gap(row, retrain) for row in res.table]
    assert res.value == [0.001, 0.03][int(np.argmin(scores))]
    json.dumps(res.table)  # the table is plain data


def test_lr_auto_runs_the_tuned_value_and_says_how_it_was_found(world):
    model, b = world
    f, r = b.train.subset(range(24)), b.train.subset(range(24, 240))
    out = salun.unlearn(model, f, r, "ga", lr="auto", test=b.test, epochs=1, quiet=True)
    assert out.tuning is not None and out.config["lr"] == out.tuning.value
    assert out.tuning.field == "lr" and len(out.tuning.table) == len(out.tuning.table)
    with pytest.raises(SalunError, match='lr="auto" needs test='):
        salun.unlearn(model, f, r, "ga", lr="auto", epochs=1)


def test_the_rule_and_its_reference_are_public_functions_of_the_metrics(world):
    """salun.tune.pick / salun.tune.reference (used by benchmarks/tune/from_bench.py on
    bench records) give tune's own pick, reason and reference from the bare metrics."""
    from salun.tune import pick, reference

    model, b = world
    f, r = b.train.subset(range(24)), b.train.subset(range(24, 240))
    res = tune(model, f, r, b.test, "ga", grid=[0.001, 0.1], epochs=1, seed=3, quiet=True)
    ref, target = reference(model, f, r, b.test, "random", seed=3)
    assert (ref, target) == (res.reference, res.target)
    bare = [{k: row[k] for k in ("lr", *METRICS)} for row in res.table]
    p = pick(bare, ref, target, 4)
    assert (p.value, p.reason) == (res.value, res.reason)
    assert [row["score"] for row in p.rows] == [row["score"] for row in res.table]
    # a failed run (a metric missing or NaN) is never picked, whatever its other numbers
    perfect = {"lr": 9.0, **ref, "MIA": float("nan")}
    assert pick([perfect, *bare], ref, target, 4).index == 1 + bare.index(
        next(x for x in bare if x["lr"] == res.value)
    )
    assert pick([{"lr": 1.0, "UA": None}], ref, target, 4).index is None
    # class-wise: the chance level from K; ineligible rows lose to any eligible one
    rows = [{"lr": 1.0, "UA": 70.0, "RA": 99.0, "TA": 90.0, "MIA": 80.0},
            {"lr": 2.0, "UA": 75.0, "RA": 90.0, "TA": 80.0, "MIA": 90.0}]  # fmt: skip
    assert pick(rows, {"RA": 100.0, "TA": 90.0}, "chance", 4).value == 2.0  # 25 % ≤ 25 %
    assert pick(rows, {"RA": 100.0, "TA": 90.0}, "chance", 3).value == 1.0  # both at chance
    with pytest.raises(SalunError, match="target must be"):
        pick(rows, ref, "nope", 4)


@pytest.mark.parametrize(
    "kwargs, wanted",
    [
        ({"grid": []}, "grid is empty"),
        ({"grid": [0.01, 0.01]}, "grid repeats a value"),
        ({"grid": [0.01, -1.0]}, "grid values must be positive numbers, got -1.0"),
        ({"lr": 0.01}, "lr is what tune searches"),
        ({"scenario": "ids"}, "scenario must be 'random' or 'class'"),
    ],
)
def test_bad_tune_calls_are_one_clear_error(world, kwargs, wanted):
    model, b = world
    f, r = b.train.subset(range(24)), b.train.subset(range(24, 240))
    with pytest.raises(SalunError, match=wanted):
        tune(model, f, r, b.test, "ga", **kwargs)


def test_the_default_grid_is_the_methods_own_or_log_spaced_around_its_default():
    from salun.methods import get_method
    from salun.tune import default_grid

    assert default_grid("salun") == ("lr", get_method("salun").config().lr_grid)
    name, values = default_grid("ga")
    lr = get_method("ga").config().lr
    grid = get_method("ga").config().lr_grid
    assert name == "lr"
    if grid:
        assert values == grid
    else:
        assert values == pytest.approx([lr / 10, lr / 10**0.5, lr, lr * 10**0.5, lr * 10])


def test_salun_tune_writes_its_table_and_names_the_pick(tmp_path, capsys):
    from salun.cli import main

    model, split, out = tmp_path / "m", tmp_path / "s.json", tmp_path / "tune.json"
    assert main(["split", "--data", "synthetic", "--scenario", "random", "--fraction", "0.1",
                 "--out", str(split)]) == 0  # fmt: skip
    assert main(["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "2", "--quiet",
                 "--split", str(split), "--out", str(model)]) == 0  # fmt: skip
    argv = ["tune", "--model", str(model), "--forget", str(split), "--method", "ga",
            "--grid", "0.001", "--grid", "0.01", "--set", "epochs=1", "--quiet"]  # fmt: skip
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["format"] == "salun-tune-1" and report["target"] == "held-out"
    assert [row["lr"] for row in report["table"]] == [0.001, 0.01]
    scores = [_avg_gap(row, report["reference"]) for row in report["table"]]
    assert report["value"] == [0.001, 0.01][int(np.argmin(scores))]
    err = capsys.readouterr().err
    assert "**(pick)**" in err and f"--lr {report['value']:g} --epochs 1" in err
    bad = tmp_path / "bad.json"
    assert main([*argv[:-3], "--set", "epochs", "--out", str(bad)]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err and not bad.exists()
    assert main([*argv[:-3], "--set", "nope=1", "--out", str(bad)]) == 2
    assert not bad.exists()
