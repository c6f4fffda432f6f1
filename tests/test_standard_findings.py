"""benchmarks/standard/findings.py: paired verdicts, the MIA check, the RTE ratio and the
paper's orderings, on records whose values are worked out here."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "standard" / "findings.py"
METRICS = ("UA", "RA", "TA", "MIA")


def _load():
    spec = importlib.util.spec_from_file_location("standard_findings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rec(kind, method, seed, mia, avg_gap=None, rte=10.0, protocol="tuned"):
    key = (f"retrain.random10.s{seed}" if kind == "retrain"
           else f"final.{protocol}.random10.s{seed}.{method}")  # fmt: skip
    r = {
        "key": key,  # the bench's key: the report's record check needs one
        "kind": kind,
        "method": method,
        "method_name": method,
        "scenario": "random10",
        "seed": seed,
        "status": "ok",
        "metrics": {"UA": 10.0, "RA": 100.0, "TA": 85.0, "MIA": mia},
        "rte_s": rte,
        "order": {"retrain": 0, "salun": 1, "rl": 2, "ft": 3, "salun_random_mask": 4}[method],
    }
    if kind == "unlearn":
        r.update(phase="final", protocol=protocol, avg_gap=avg_gap)
    return r


def _write(folder: Path, records) -> Path:
    folder.mkdir()
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _records():
    out = []
    for s in range(3):
        out.append(_rec("retrain", "retrain", s, mia=30.0, rte=200.0))
        # per-seed gaps: SalUn 1, 2, 3; RL 5, 6, 7 (always +4: SalUn better);
        # FT 0, 3, 3 (differences -1, +1, 0: the interval holds 0)
        out.append(_rec("unlearn", "salun", s, mia=32.0, avg_gap=1.0 + s, rte=16.0))
        out.append(_rec("unlearn", "rl", s, mia=46.0, avg_gap=5.0 + s))
        out.append(_rec("unlearn", "ft", s, mia=10.0, avg_gap=[0.0, 3.0, 3.0][s]))
    return out


def test_salun_against_each_method_paired_over_seeds(tmp_path):
    mod = _load()
    text = "\n".join(mod.salun_vs_each(mod.tables(_records())))
    rl = next(line for line in text.splitlines() if line.startswith("| rl |"))
    ft = next(line for line in text.splitlines() if line.startswith("| ft |"))
    assert "| 4.00 [4.00, 4.00] |" in rl and rl.endswith("SalUn better |")  # no spread
    assert ft.endswith("not distinguishable |") and "0.00 [" in ft


def test_verdict_signs():
    mod = _load()
    stat = mod.Stat
    assert mod.verdict(stat(2.0, 0.1, 3)) == "SalUn better"
    assert mod.verdict(stat(-2.0, 0.1, 3)) == "SalUn worse"
    assert mod.verdict(stat(0.1, 1.0, 3)) == "not distinguishable"
    assert mod.verdict(stat(5.0, 0.0, 1)).startswith("one seed")


def test_mia_rows_and_rte_ratio():
    mod = _load()
    t = mod.tables(_records())
    mia = "\n".join(mod.mia_check(t))
    cells = "30.00 [30.00, 30.00] | 46.00 [46.00, 46.00] | 32.00 [32.00, 32.00]"
    assert f"| random10 | tuned | {cells} | +16.00 | +2.00 |" in mia
    rte = "\n".join(mod.rte_ratio(t))
    assert "| random10 | tuned | 16.0 | 200.0 | 0.080 |" in rte


def test_paper_orderings_counted_over_common_methods():
    mod = _load()
    text = "\n".join(mod.paper_side_by_side(mod.tables(_records())))
    # the gaps of the means (UA, RA, TA equal Retrain's; only MIA differs): salun |32-30|/4
    # = 0.5, rl 16/4 = 4, ft 20/4 = 5. Paper: salun 1.15 < ft 3.78 < rl 7.15; here
    # salun < rl < ft: (salun, rl) and (salun, ft) kept, (ft, rl) not.
    assert "orderings kept 2 of 3" in text
    assert "the paper's best (salun) is here also the best" in text


def test_ablation_verdict_from_its_own_folder(tmp_path):
    mod = _load()
    recs = [_rec("retrain", "retrain", s, mia=99.0) for s in range(3)]  # not the one used
    for s in range(3):
        recs.append(_rec("unlearn", "salun_random_mask", s, mia=40.0, avg_gap=1.0 + s + 0.5 * s))
    merged = mod.ablation_records(_records(), recs)
    assert sorted({r["method"] for r in merged}) == ["retrain", "salun", "salun_random_mask"]
    assert all(r["metrics"]["MIA"] == 30.0 for r in merged if r["kind"] == "retrain")
    text = "\n".join(mod.ablation(merged))
    row = next(line for line in text.splitlines() if line.startswith("| random10 | tuned"))
    # random − saliency per seed: 0, 0.5, 1.0 → mean 0.5, t interval holds 0
    assert "| 0.50 [" in row and row.endswith("not distinguishable |")
    assert main_exit(mod, tmp_path, recs) == 0


def main_exit(mod, tmp_path, recs) -> int:
    folder = _write(tmp_path / "bench", _records())
    ablation = _write(tmp_path / "ablation", recs)
    return mod.main([str(folder), str(ablation)])


def test_a_run_with_its_own_random_mask_rows_needs_no_second_folder(tmp_path, capsys):
    """paper-steps runs salun_random_mask beside salun: one folder gives the ablation, and
    the title names the run's preset from its bench.json."""
    mod = _load()
    recs = _records()
    for s in range(3):  # random − saliency per seed: +2 each time (saliency always better)
        recs.append(_rec("unlearn", "salun_random_mask", s, mia=40.0, avg_gap=3.0 + s))
    folder = _write(tmp_path / "run", recs)
    (folder / "bench.json").write_text(json.dumps({"config": {"name": "paper-steps"}}))
    assert mod.main([str(folder)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Findings of the `paper-steps` run")
    section = text.split("## Saliency mask against a random mask")[1]
    row = next(line for line in section.splitlines() if line.startswith("| random10 | tuned"))
    assert "| 2.00 [2.00, 2.00] |" in row and row.endswith("saliency mask better |")
