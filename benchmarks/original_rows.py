"""UA, RA, TA and MIA of each benchmark's *original* model on every scenario's split.

The benchmark table compares methods with Retrain; this adds the starting point, so that
"TA within 2 points of the original" can be checked. Reads a `salun bench` folder.

Usage: python benchmarks/original_rows.py runs/standard
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from salun.artifacts import load_model
from salun.data import load_dataset, load_split
from salun.metrics import evaluate_unlearning


def main(folder: str) -> None:
    root = Path(folder)
    records = [json.loads(line) for line in (root / "results.jsonl").open()]
    dataset = json.loads((root / "bench.json").read_text())["config"]["dataset"]
    bundle = load_dataset(dataset)
    originals = {r["seed"]: r["original"]["model"] for r in records if r["kind"] == "original"}
    rows: dict[str, list[dict]] = {}
    for r in records:
        if r["kind"] != "retrain":
            continue
        model, _ = load_model(root / originals[r["seed"]])
        split = load_split(root / r["split_file"])
        m = evaluate_unlearning(model, bundle, split, mia_features=("confidence",))
        rows.setdefault(r["scenario"], []).append(m)
    print("| Scenario | UA | RA | TA | MIA | n |\n|---|---|---|---|---|---|")
    for scenario, ms in rows.items():
        cells = []
        for k in ("UA", "RA", "TA", "MIA"):
            vals = [m[k] for m in ms]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.2f}±{sd:.2f}")
        print(f"| {scenario} | {' | '.join(cells)} | {len(ms)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/standard")
