"""benchmarks/gen/ablation.py: intervals over seeds and the paired verdict, by hand."""

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gen" / "ablation.py"


def _load():
    spec = importlib.util.spec_from_file_location("gen_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, name: str, ua: float, retain: float) -> None:
    (folder / f"{name}.eval.json").write_text(
        json.dumps({"metrics": {"ua": ua, "retain_acc": retain}})
    )


def test_interval_is_the_student_t_95_percent_interval():
    mod = _load()
    mean, std, half = mod.interval([1.0, 2.0, 6.0])
    assert mean == 3.0
    assert math.isclose(std, math.sqrt(7.0))  # ((4 + 1 + 9) / 2) ** 0.5
    assert math.isclose(half, 4.302652729911275 * math.sqrt(7.0) / math.sqrt(3))  # t(0.975, 2)
    assert math.isnan(mod.interval([5.0])[1])


def test_paired_difference_and_verdict(tmp_path):
    mod = _load()
    _write(tmp_path, "original", 0.0, 99.0)
    for s, (sal, rnd) in enumerate([(97.0, 95.0), (96.0, 95.0), (98.0, 95.5)]):
        _write(tmp_path, f"salun-s{s}", 100.0, sal)
        _write(tmp_path, f"salun-random-mask-s{s}", 100.0, rnd)
    data = mod.load(tmp_path, ["0", "1", "2"])
    assert data["saliency mask"]["drop"] == [-2.0, -3.0, -1.0]  # retained - Original's 99
    text = mod.table(tmp_path, ["0", "1", "2"])
    # paired differences 2.0, 1.0, 2.5: mean 1.833, std 0.764, t half-width 1.897 -> [-0.06, 3.73]
    assert "1.83 ± 0.76 [-0.06, 3.73]" in text
    assert "not distinguishable" in text
    _write(tmp_path, "salun-s1", 100.0, 97.5)  # now 2.0, 2.5, 2.5: interval above 0
    assert "saliency mask keeps the retained classes better" in mod.table(tmp_path, ["0", "1", "2"])


def test_a_seed_with_its_own_original_evaluation_is_measured_against_it(tmp_path):
    mod = _load()
    _write(tmp_path, "original", 0.0, 99.0)
    _write(tmp_path, "original-s0", 0.0, 98.0)  # seed 0 was judged by another classifier
    for s in range(2):
        _write(tmp_path, f"salun-s{s}", 100.0, 95.0)
        _write(tmp_path, f"salun-random-mask-s{s}", 100.0, 94.0)
    data = mod.load(tmp_path, ["0", "1"])
    assert data["saliency mask"]["drop"] == [-3.0, -4.0]
    assert data["random mask"]["drop"] == [-4.0, -5.0]
