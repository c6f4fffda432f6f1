"""The README's API tour runs as written (on synthetic data, with fewer epochs)."""

import re
from pathlib import Path


def test_readme_api_tour_runs(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## API in 15 lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    code = (
        code.replace('"fashion-mnist"', '"synthetic"')
        .replace("epochs=60", "epochs=3")
        .replace('"epochs": 5', '"epochs": 1')
    )
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "'UA'" in out and "'MIA'" in out
