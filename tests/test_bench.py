"""Benchmark runner: config checks, aggregation math, resume after a kill, Ray = local, CLI.

The end-to-end tests run the ``ci`` preset (digits, tiny MLP) on CPU with one torch thread
per run (``threads=1``): the local process and Ray's workers then compute bit-identical
numbers, and a busy 2-core machine does not slow two-thread runs down tenfold.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import yaml

import salun.methods
from salun.bench import BenchOptions, load_preset, parse_config, read_records, run_bench
from salun.bench.aggregate import lr_table, mean_std, original_summary, summarize
from salun.bench.cli import add_bench_subcommands
from salun.bench.presets import preset_path
from salun.bench.session import read_bench
from salun.errors import SalunError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ci_raw() -> dict:
    return yaml.safe_load(preset_path("ci").read_text())


def expected_keys(cfg) -> set[str]:
    from salun.methods import get_method

    keys = {f"original.s{s}" for s in cfg.all_seeds}
    for sc in cfg.scenarios:
        for s in cfg.all_seeds:
            keys.add(f"retrain.{sc.name}.s{s}")
        for p in cfg.protocols:
            keys |= {f"final.{p}.{sc.name}.s{s}.{m.label}" for s in cfg.seeds for m in cfg.methods}
        for m in cfg.methods:
            field = getattr(get_method(m.method).config, "grid_field", "lr")
            for v in m.overrides.get("lr_grid", []):
                keys |= {f"tune.{sc.name}.s{t}.{m.label}.{field}{v:g}" for t in cfg.search_seeds}
    return keys


def table(records) -> dict:
    """Aggregated metrics per (protocol, scenario, method), RTE left out (wall-clock time
    varies)."""
    out = {}
    for p in ("paper", "tuned"):
        for sc, rows in summarize(records, protocol=p).items():
            for r in rows:
                out[(p, sc, r.method)] = (
                    {m: (s.mean, s.std) for m, s in r.metrics.items()},
                    r.gaps,
                    r.avg_gap,
                    r.lr,
                )
    return out


def cli(argv: list[str]) -> int:
    """The bench subcommands on a parser of their own; handlers raise SalunError."""
    parser = argparse.ArgumentParser(prog="salun")
    add_bench_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory) -> Path:
    """The ci preset, uninterrupted, through the main CLI ``salun bench`` (report included)."""
    from salun.cli import main

    out = tmp_path_factory.mktemp("bench") / "ci"
    argv = ["bench", "--preset", "ci", "--out", str(out), "--quiet", "--device", "cpu"]
    assert main([*argv, "--threads", "1"]) == 0
    return out


# ---- configuration ------------------------------------------------------------------


def test_ci_preset_parses_with_shorthand_scenarios():
    cfg = load_preset("ci")
    assert [s.name for s in cfg.scenarios] == ["random10", "class"]
    assert cfg.scenarios[0].fraction == pytest.approx(0.1)
    assert cfg.scenarios[1].classes == (3,)
    assert cfg.protocols == ("paper", "tuned") and cfg.search_seeds == (1,)
    assert not cfg.tuning_seed_reported and cfg.all_seeds == (0, 1)
    assert set(m.method for m in cfg.methods) <= set(salun.methods.list_methods())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(bogus=1), "unknown key 'bogus'"),
        (lambda d: d["original"].update(epochz=3), "unknown key 'epochz'"),
        (lambda d: d["original"].update(seed=3), "unknown key 'seed'"),
        (lambda d: d["methods"]["rl"].update(lr_gird=[1]), "no setting 'lr_gird'"),
        (lambda d: d["methods"].update(nope={}), "unknown method 'nope'"),
        (lambda d: d["methods"].update(retrain={}), "reserved"),
        (lambda d: d.update(scenarios=["random"]), "randomNN"),
        (lambda d: d.update(scenarios=[{"name": "c", "kind": "class"}]), "needs classes"),
        (lambda d: d.update(seeds=[0, 0]), "distinct"),
    ],
)
def test_bad_config_is_a_clear_error(edit, message):
    raw = ci_raw()
    edit(raw)
    with pytest.raises(SalunError, match=message):
        parse_config(raw, "ci")


def test_paper_preset_without_cifar10_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("SALUN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = load_preset("paper-cifar10")
    assert cfg.arch == "resnet18" and cfg.original.epochs == 182 and cfg.original.augment
    with pytest.raises(SalunError, match="cifar10"):
        run_bench(cfg, tmp_path / "out", BenchOptions(quiet=True))
    for name in ("quick", "standard"):
        assert load_preset(name).dataset.partition(":")[0] == "fashion-mnist"


# ---- aggregation --------------------------------------------------------------------


def rec(kind, method, seed, ua, ra, ta, mia, rte, **kw):
    return {
        "key": f"{kind}.{method}.{seed}",
        "kind": kind,
        "phase": None if kind == "retrain" else kw.pop("phase", "final"),
        "status": kw.pop("status", "ok"),
        "scenario": "random10",
        "method": method,
        "seed": seed,
        "order": kw.pop("order", -1),
        "metrics": {"UA": ua, "RA": ra, "TA": ta, "MIA": mia},
        "rte_s": rte,
        "avg_gap": kw.pop("avg_gap", 0.0),
        "hparam": {"name": "lr", "value": kw.pop("lr", None)},
        **kw,
    }


def test_mean_std_is_sample_std():
    s = mean_std([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert mean_std([5.0]) == type(s)(5.0, 0.0, 1)
    assert mean_std([]).n == 0


def test_summarize_by_hand():
    records = [
        rec("retrain", "retrain", 0, 4.0, 100.0, 94.0, 12.0, 60.0),
        rec("retrain", "retrain", 1, 6.0, 100.0, 94.0, 14.0, 40.0),
        rec("unlearn", "salun", 0, 2.0, 99.0, 93.0, 14.0, 2.0, order=1, lr=0.013),
        rec("unlearn", "salun", 1, 4.0, 99.5, 94.0, 16.0, 4.0, order=1, lr=0.013),
        rec("unlearn", "ft", 0, 0.0, 100.0, 94.0, 2.0, 1.0, order=0, lr=0.01),
        # ignored: a search run, a failed run, an original
        rec("unlearn", "ft", 0, 50.0, 50.0, 50.0, 50.0, 9.0, phase="tune"),
        rec("unlearn", "ga", 0, 0, 0, 0, 0, 0, status="failed", order=2),
        {
            "key": "original.s0",
            "kind": "original",
            "status": "ok",
            "seed": 0,
            "metrics": {"train_acc": 100.0, "test_acc": 94.5},
            "rte_s": 100.0,
        },  # fmt: skip
    ]
    rows = summarize(records)["random10"]
    assert [r.method for r in rows] == ["retrain", "ft", "salun"]  # Retrain, then config order
    retrain, ft, sal = rows
    assert retrain.avg_gap == 0.0 and retrain.metrics["UA"].mean == 5.0
    assert retrain.metrics["UA"].std == pytest.approx(math.sqrt(2))
    assert retrain.rte.mean == 50.0
    # SalUn: means UA 3, RA 99.25, TA 93.5, MIA 15 vs Retrain 5, 100, 94, 13
    assert sal.gaps == pytest.approx({"UA": 2.0, "RA": 0.75, "TA": 0.5, "MIA": 2.0})
    assert sal.avg_gap == pytest.approx((2.0 + 0.75 + 0.5 + 2.0) / 4)
    assert sal.metrics["MIA"].std == pytest.approx(math.sqrt(2))
    assert sal.seeds == (0, 1) and sal.lr == 0.013 and sal.rte.mean == 3.0
    assert ft.gaps == pytest.approx({"UA": 5.0, "RA": 0.0, "TA": 0.0, "MIA": 11.0})
    assert ft.avg_gap == pytest.approx(4.0) and ft.metrics["UA"].std == 0.0
    assert original_summary(records)["test_acc"].mean == 94.5


def test_paper_table1_avg_gap_example():
    # the paper's Table 1: SalUn at 10 % gives (2.39 + 0.38 + 0.33 + 1.51) / 4 = 1.15
    records = [
        rec("retrain", "retrain", 0, 5.24, 100.0, 94.26, 12.88, 1.0),
        rec("unlearn", "salun", 0, 2.85, 99.62, 93.93, 14.39, 1.0),
    ]
    assert summarize(records)["random10"][1].avg_gap == pytest.approx(1.1525, abs=1e-3)


# ---- end to end ---------------------------------------------------------------------


def test_ci_run_has_one_record_per_run_and_a_report(ci_run):
    cfg = load_preset("ci")
    records = read_records(ci_run)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    lines = (ci_run / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == sorted(keys)
    r = next(r for r in records if r["key"] == "final.tuned.random10.s0.salun")
    for field in ("metrics", "rte_s", "avg_gap", "config", "switches", "split_hash", "versions",
                  "device", "git_commit", "original", "lr_choice"):  # fmt: skip
        assert field in r, field
    assert set(r["metrics"]) >= {"UA", "RA", "TA", "MIA"}
    assert r["config"]["lr"] in (0.003, 0.01) and r["lr_choice"]["source"] == "searched"
    assert r["original"]["train_acc"] > 90
    assert (ci_run / r["split_file"]).is_file() and r["split_hash"] in r["split_file"]
    # every method of a (scenario, seed) used the same split
    for seed in cfg.all_seeds:
        same = {
            x["split_hash"] for x in records if (x.get("scenario"), x["seed"]) == ("random10", seed)
        }
        assert len(same) == 1, seed
    assert (ci_run / r["mask_file"]).is_file()
    # the report
    md = (ci_run / "report.md").read_text()
    html = (ci_run / "report.html").read_text()
    # one reported seed: no per-seed, "vs best" or n columns (they would carry nothing)
    assert "| Method | UA | RA | TA | MIA | Avg. Gap | rank | RTE (s) | lr |" in md
    assert "| vs best |" not in md
    assert "| salun |" in md and "| Retrain |" in md and "<table>" in html
    assert (
        "salun bench --preset ci --out" in md
        and "--threads 1" in md
        and "train accuracy" in md
        and "CPU cores" in md
    )
    for png in ("metrics_random10_paper", "metrics_class_tuned", "gap_vs_rte_tuned", "mask_layers"):
        assert (ci_run / "plots" / f"{png}.png").stat().st_size > 1000
        assert f"plots/{png}.png" in html
    assert {x["method"] for x in lr_table(records) if x["source"] == "searched"} >= {"rl", "salun"}


def test_resume_after_kills_gives_the_same_table(ci_run, tmp_path, monkeypatch):
    raw = ci_raw()
    raw["methods"] = {k: raw["methods"][k] for k in ("ft", "iu", "salun")}  # a faster subset
    cfg = parse_config(raw, "ci-subset")
    out = tmp_path / "resumed"
    opts = BenchOptions(quiet=True, device="cpu", threads=1)

    def kill_after(n):
        seen = []

        def hook(record):
            seen.append(record["key"])
            if len(seen) == n:
                raise KeyboardInterrupt

        return hook

    # 1: killed right after the 4th record (in the lr search)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cfg, out, opts, on_record=kill_after(4))
    assert len(read_records(out)) == 4
    # 2: killed inside a run, before its record exists
    calls = []
    real = salun.methods.run_method

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(salun.methods, "run_method", dying)
    with pytest.raises(KeyboardInterrupt):
        run_bench(cfg, out, opts)
    monkeypatch.setattr(salun.methods, "run_method", real)
    n_mid = len(read_records(out))
    assert 4 < n_mid < len(expected_keys(cfg))
    # 3: the same command again finishes the grid
    run_bench(cfg, out, opts)
    records = read_records(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(cfg)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(keys)
    assert [s["status"] for s in read_bench(out)["sessions"]] == [
        "interrupted",
        "interrupted",
        "finished",
    ]
    # same numbers as the uninterrupted run of the full preset (deterministic on CPU)
    full = table(read_records(ci_run))
    assert table(records) == {
        k: v for k, v in full.items() if k[2] in ("retrain", "ft", "iu", "salun")
    }
    # a folder belongs to one config: another one is refused
    raw["seeds"] = [2]
    with pytest.raises(SalunError, match="another config"):
        run_bench(parse_config(raw, "other"), out, opts)


def test_ray_executor_matches_local(ci_run, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    run_bench(
        load_preset("ci"), out, BenchOptions(executor="ray", quiet=True, device="cpu", threads=1)
    )
    local = {r["key"]: r for r in read_records(ci_run)}
    remote = {r["key"]: r for r in read_records(out)}
    assert remote.keys() == local.keys()
    for key, r in remote.items():
        assert r["metrics"] == local[key]["metrics"], key
        assert r["avg_gap"] == local[key]["avg_gap"], key
    assert read_bench(out)["sessions"][-1]["executor"] == "ray"


def test_report_cli_rewrites_report(ci_run, capsys):
    (ci_run / "report.md").unlink()
    assert cli(["report", str(ci_run)]) == 0
    assert (ci_run / "report.md").is_file()
    assert "report.md" in capsys.readouterr().out


def test_main_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    from salun.cli import main

    assert main(["bench", "--config", str(tmp_path / "no.yaml"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_cli_user_errors(tmp_path):
    with pytest.raises(SalunError, match="unknown preset"):
        cli(["bench", "--preset", "nope", "--out", str(tmp_path / "x")])
    with pytest.raises(SalunError, match="needs --executor ray"):
        cli(["bench", "--preset", "ci", "--out", str(tmp_path / "x"), "--ray-address", "auto"])
    with pytest.raises(SalunError, match="not a folder"):
        cli(["report", str(tmp_path / "missing")])


def test_cached_original_folder_works_with_evaluate_and_unlearn(ci_run, tmp_path, capsys):
    """A benchmark's cached original model and split are ordinary salun artifacts."""
    import json

    from salun.cli import main

    original = next(
        p.parent
        for p in (ci_run / "models").rglob("model.json")
        if json.loads(p.read_text())["bench"].get("history") is not None
    )
    split = json.loads((original / "model.json").read_text())["split_file"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(original), "--forget", split, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["RA"] > 90
    assert (
        main(
            [
                "unlearn",
                "--model",
                str(original),
                "--forget",
                split,
                "--method",
                "ft",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "ft"),
                "--quiet",
                "--no-eval",
            ]
        )
        == 0
    )
