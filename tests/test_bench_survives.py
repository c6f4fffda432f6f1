"""A benchmark that no single bad run can kill (issue #27).

A method whose model outputs NaN, or a method that crashes, becomes one ``failed`` record
with its reason, and the benchmark goes on and finishes; a resume does not rerun it.
Evaluation refuses non-finite outputs with one message; aggregation counts a repeated
results line once and never ranks a NaN gap. Ctrl-C exits 130 wherever it lands.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import salun.methods
from salun.bench import BenchOptions, read_records, run_bench
from salun.bench.aggregate import Row, Stat, rank_and_tie, summarize
from salun.bench.config import parse_config
from salun.cli import main
from salun.data.dataset import ImageDataset
from salun.errors import SalunError
from salun.metrics.evaluate import evaluate_sets
from salun.metrics.mia import svc_attack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RAW = {
    "dataset": "digits",
    "arch": "mlp",
    "width": 0.25,
    "original": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "scenarios": ["random10"],
    "seeds": [0],
    "methods": {"ft": {"epochs": 1}, "ga": {"epochs": 1}, "rl": {"epochs": 1}},
    "mia_features": ["confidence"],
}
ARGS = ["--quiet", "--device", "cpu", "--threads", "1", "--no-report"]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(RAW))
    return path


def _sabotage(monkeypatch, calls: list[str]) -> None:
    """GA's model comes back with NaN weights; RL raises as a buggy method would."""
    real = salun.methods.run_method

    def run_method(name, model, forget, retain, cfg=None, ctx=None, **kw):
        calls.append(name)
        if name == "rl":
            raise RuntimeError("a bug in one method")
        res = real(name, model, forget, retain, cfg, ctx, **kw)
        if name == "ga":
            with torch.no_grad():
                for p in res.model.parameters():
                    p.fill_(float("nan"))
        return res

    monkeypatch.setattr(salun.methods, "run_method", run_method)


def test_nan_outputs_and_a_crash_are_failed_records_and_the_bench_finishes(
    tmp_path, monkeypatch, capsys
):
    calls: list[str] = []
    _sabotage(monkeypatch, calls)
    out = tmp_path / "b"
    argv = ["bench", "--config", str(_config(tmp_path)), "--out", str(out), *ARGS]
    assert main(argv) == 0, capsys.readouterr().err
    recs = {r["key"]: r for r in read_records(out)}
    final = "final.paper.random10.s0."
    assert recs[final + "ft"]["status"] == "ok"
    ga, rl = recs[final + "ga"], recs[final + "rl"]
    (split_file,) = (out / "splits").glob("random10.s0*.json")
    n_forget = len(json.loads(split_file.read_text())["forget"])
    assert ga["status"] == "failed"
    assert ga["error"].startswith(
        f"the model's outputs are NaN or infinite on {n_forget} of {n_forget} samples of D_f"
    )
    assert ga["avg_gap"] is None and ga["metrics"] == {}
    assert rl["status"] == "failed" and rl["error"] == "RuntimeError: a bug in one method"
    assert "a bug in one method" in rl["traceback"]
    assert json.loads((out / "bench.json").read_text())["sessions"][-1]["status"] == "finished"
    # the table holds Retrain and FT only; the failed runs are neither rows nor ranked
    rows = summarize(read_records(out))["random10"]
    assert [r.method for r in rows] == ["retrain", "ft"]
    # a resume finds every run recorded: nothing is run again, nothing changes
    before = (out / "results.jsonl").read_text()
    calls.clear()
    assert main(argv) == 0
    assert calls == [] and (out / "results.jsonl").read_text() == before


def test_ctrl_c_inside_the_lock_exits_130_and_marks_the_session(tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(salun.methods, "run_method", interrupted)
    out = tmp_path / "b"
    code = main(["bench", "--config", str(_config(tmp_path)), "--out", str(out), *ARGS])
    err = capsys.readouterr().err
    assert code == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert json.loads((out / "bench.json").read_text())["sessions"][-1]["status"] == ("interrupted")


def test_ctrl_c_before_the_lock_exits_130_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    import salun.bench.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "load_dataset", interrupted)  # the first step of a run
    out = tmp_path / "b"
    code = main(["bench", "--config", str(_config(tmp_path)), "--out", str(out), *ARGS])
    assert code == 130, capsys.readouterr().err
    assert not out.exists()


def test_run_bench_refuses_more_threads_than_cpus(tmp_path):
    cfg = parse_config(RAW, "t")
    with pytest.raises(SalunError, match=r"threads must be an integer in \[1, \d+\], got 100000"):
        run_bench(cfg, tmp_path / "b", BenchOptions(threads=100_000, quiet=True))
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- evaluation


class _NaNOn(nn.Module):
    """Logits NaN for the images whose first pixel is odd, finite for the others."""

    def forward(self, x):
        first = x.flatten(1)[:, :1]
        logits = first.repeat(1, 3)
        odd = (x.flatten(1)[:, 0] * 255).round().remainder(2) == 1
        return torch.where(odd[:, None], torch.full_like(logits, float("nan")), logits)


def _dataset(pixels: list[int]) -> ImageDataset:
    images = torch.tensor(pixels, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 2, 2)
    return ImageDataset(images.contiguous(), torch.arange(len(pixels)) % 3)


def test_evaluation_refuses_non_finite_logits_naming_the_set_and_the_count():
    ok = _dataset([2, 4, 6, 8, 10, 12])
    forget = _dataset([1, 2, 3, 5, 8])  # 1, 3 and 5 are odd
    with pytest.raises(SalunError, match=r"NaN or infinite on 3 of 5 samples of D_f"):
        evaluate_sets(_NaNOn(), forget, ok, ok, seed=0, mia_features=("confidence",))
    test = _dataset([2, 4, 7, 8, 10, 12])
    with pytest.raises(SalunError, match=r"on 1 of 6 samples of the test set"):
        evaluate_sets(_NaNOn(), ok, ok, test, seed=0, mia_features=("confidence",))


def test_mia_attack_refuses_non_finite_features():
    finite = np.array([[0.1], [0.9], [0.2], [0.8]])
    nan = finite.copy()
    nan[1, 0] = np.nan
    with pytest.raises(SalunError, match="shadow features hold NaN or inf"):
        svc_attack(nan, finite, finite)
    with pytest.raises(SalunError, match="target features hold NaN or inf"):
        svc_attack(finite, finite, np.array([[np.inf]]))
    eff, _ = svc_attack(finite, finite[::-1], finite)  # finite: still computed
    assert 0.0 <= eff <= 100.0


# ---------------------------------------------------------------- aggregation


def _rec(kind: str, method: str, seed: int, ua: float, **kw) -> dict:
    final = kind == "unlearn"
    return {
        "key": f"final.paper.random10.s{seed}.{method}" if final else f"retrain.random10.s{seed}",
        "kind": kind,
        "phase": "final" if final else None,
        "protocol": "paper" if final else None,
        "status": "ok",
        "scenario": "random10",
        "method": method,
        "seed": seed,
        "order": 0 if final else -1,
        "metrics": {"UA": ua, "RA": 100.0, "TA": 90.0, "MIA": 10.0},
        "rte_s": 1.0,
        "avg_gap": kw.pop("avg_gap", None),
        **kw,
    }


def test_a_repeated_results_line_is_not_another_seed():
    records = [
        _rec("retrain", "retrain", 0, 10.0),
        _rec("retrain", "retrain", 1, 10.0),
        _rec("unlearn", "ft", 0, 2.0, avg_gap=2.0),
        _rec("unlearn", "ft", 1, 6.0, avg_gap=1.0),
    ]
    rows = summarize([*records, dict(records[3])])["random10"]  # seed 1 pasted twice
    ft = rows[1]
    assert ft.seeds == (0, 1) and ft.metrics["UA"].n == 2
    assert ft.metrics["UA"].mean == (2.0 + 6.0) / 2
    assert ft.metrics["UA"].std == pytest.approx(math.sqrt(((2 - 4) ** 2 + (6 - 4) ** 2) / 1))
    changed = {**records[3], "metrics": {**records[3]["metrics"], "UA": 7.0}}
    with pytest.raises(SalunError, match="two different records of run"):
        summarize([*records, changed])


def test_a_nan_gap_of_one_seed_is_left_out_of_that_method_s_trials():
    records = [
        _rec("retrain", "retrain", 0, 10.0),
        _rec("retrain", "retrain", 1, 10.0),
        _rec("unlearn", "ft", 0, 2.0, avg_gap=2.0),
        _rec("unlearn", "ft", 1, 6.0, avg_gap=float("nan")),
    ]
    ft = summarize(records)["random10"][1]
    assert ft.avg_gap_by_seed == {0: 2.0}
    assert ft.avg_gap_trials == Stat(2.0, 0.0, 1) and ft.rank == 1


def _row(method: str, gaps: dict[int, float]) -> Row:
    vals = list(gaps.values())
    mean = sum(vals) / len(vals)
    return Row(
        scenario="random10",
        method=method,
        seeds=tuple(gaps),
        metrics={},
        gaps={},
        avg_gap=mean,
        avg_gap_trials=Stat(mean, 0.0, len(vals)),
        rte=Stat(1.0, 0.0, 1),
        lr=None,
        avg_gap_by_seed=gaps,
    )


def test_a_nan_gap_is_never_ranked():
    rows = rank_and_tie([_row("nan_method", {0: math.nan}), _row("ft", {0: 3.0})])
    by = {r.method: r for r in rows}
    assert by["ft"].rank == 1 and by["nan_method"].rank is None
