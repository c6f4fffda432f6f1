"""benchmarks/gen/summarize.py: the report's acceptance verdict and deltas."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gen" / "summarize.py"


def _load():
    spec = importlib.util.spec_from_file_location("gen_summarize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(folder: Path, name: str, ua: float, retain: float, seconds: float) -> None:
    metrics = {
        "ua": ua,
        "forget_prob": 1 - ua / 100,
        "retain_acc": retain,
        "retain_acc_per_class": {"1": retain, "2": retain - 2},
        "feature_fd": 1.5,
    }
    (folder / f"{name}.eval.json").write_text(json.dumps({"metrics": metrics}))
    (folder / name).mkdir()
    (folder / name / "model.json").write_text(json.dumps({"seconds": seconds}))


def test_verdict_follows_the_issue_thresholds(tmp_path, capsys):
    _record(tmp_path, "original", 0.0, 99.0, 100)
    _record(tmp_path, "salun", 96.0, 94.5, 10)  # drop 4.5: passes
    _record(tmp_path, "ga", 99.0, 93.0, 5)  # drop 6.0: fails
    _record(tmp_path, "rl", 90.0, 99.0, 7)  # UA too low: fails
    _load().main(str(tmp_path))
    main_table = capsys.readouterr().out.split("\n\n")[0].splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in main_table}
    assert [name for name in rows][2:] == ["original", "salun", "rl", "ga"]
    assert rows["salun"].endswith("| yes |") and "| -4.5 |" in rows["salun"]
    assert rows["ga"].endswith("| **no** |") and "| -6.0 |" in rows["ga"]
    assert rows["rl"].endswith("| **no** |")
    assert rows["original"].endswith("| — |") and "| 100 |" in rows["original"]
