"""docs/your-model.md's example runs as written, and does what the page says."""

import re
from pathlib import Path

import torch

import salun

DOC = Path(__file__).parents[1] / "docs" / "your-model.md"


def test_the_example_of_unlearn_your_own_model_runs_as_written(capsys):
    section = DOC.read_text().split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "salun.unlearn(" in code and "salun.evaluate(" in code
    torch.set_num_threads(1)
    ns: dict = {"__name__": "docs_example"}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 (our own docs)
    assert isinstance(ns["result"], salun.UnlearnResult)
    assert ns["result"].config["epochs"] == 2 and ns["result"].config["keep"] == 0.5
    assert isinstance(ns["result"].model, ns["MyNet"]) and ns["result"].model is not ns["model"]
    assert isinstance(ns["retrain2"].model, ns["MyNet"])
    m = ns["metrics"]
    assert set(m["gaps"]) == {"UA", "RA", "TA", "MIA"} and m["avg_gap"] >= 0
    assert "Avg. Gap" in capsys.readouterr().out


def test_the_deletion_request_example_runs_and_forgets_the_named_ids(capsys):
    section = DOC.read_text().split("## A deletion request", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "salun.split_by_ids(" in code and 'lr="auto"' in code and "salun.evaluate(" in code
    torch.set_num_threads(1)
    ns: dict = {"__name__": "docs_deletion_request"}
    exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102 (our own docs)
    forget, retain, request = ns["forget"], ns["retain"], ns["request"]
    assert forget.indices == sorted(request) and len(retain) == 400 - len(request)
    assert not set(forget.indices) & set(retain.indices)
    res = ns["result"]
    assert res.tuning is not None and res.config["lr"] == res.tuning.value
    assert res.warnings == []  # a trained model, its own inputs: no check complains
    out = capsys.readouterr().out
    assert "**(pick)**" in out and res.tuning.reason in out and "'UA'" in out
