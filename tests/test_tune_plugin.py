"""``salun tune --plugin MODULE`` (issue #29): a method of the user's own module is tuned
like a built-in, as ``salun unlearn --plugin`` runs it. The module is docs/plugins.md's
example, executed as written."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from salun.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
METRICS = ("UA", "RA", "TA", "MIA")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def clean_registry(plugin_registry_restored):
    """Every test leaves the registry, the plugin records and sys.modules as found."""


def test_tune_runs_the_doc_example_plugin_and_records_it(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/plugins.md has one python block: the example method"
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "my_methods.py").write_text(textwrap.dedent(blocks[0]))
    monkeypatch.syspath_prepend(str(folder))

    model, split, out = tmp_path / "m", tmp_path / "s.json", tmp_path / "tune.json"
    assert main(["split", "--data", "synthetic", "--scenario", "random", "--fraction", "0.1",
                 "--out", str(split)]) == 0  # fmt: skip
    assert main(["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "2", "--quiet",
                 "--split", str(split), "--out", str(model)]) == 0  # fmt: skip
    argv = ["tune", "--model", str(model), "--forget", str(split), "--method", "ft_l2",
            "--grid", "0.003", "--grid", "0.03", "--set", "epochs=1", "--set", "l2=0.1",
            "--quiet", "--out", str(out)]  # fmt: skip

    # without --plugin the method is unknown: one line, nothing written
    assert main(argv) == 2
    assert "ft_l2" in capsys.readouterr().err and not out.exists()

    assert main([*argv, "--plugin", "my_methods"]) == 0
    report = json.loads(out.read_text())
    assert report["method"] == "ft_l2" and report["settings"] == {"epochs": 1, "l2": 0.1}
    assert report["plugin"] == {"module": "my_methods", "version": "0.1.0"}
    assert [row["lr"] for row in report["table"]] == [0.003, 0.03]
    # the pick, recomputed: the smallest Avg. Gap to the held-out proxy (ties: the first)
    ref = report["reference"]
    gaps = [sum(abs(row[m] - ref[m]) for m in METRICS) / 4 for row in report["table"]]
    assert report["value"] == [0.003, 0.03][gaps.index(min(gaps))]
    err = capsys.readouterr().err
    assert f"salun unlearn --plugin my_methods --model {model}" in err
    assert f"--method ft_l2 --lr {report['value']:g} --epochs 1 --l2 0.1" in err
