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
