"""Print a Markdown table from the ``*.eval.json`` records of ``salun gen evaluate --out``.

Usage: ``python benchmarks/gen/summarize.py runs/gen-fashion``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [
    "model",
    "UA % ↑",
    "P(forget class) ↓",
    "retained acc % ↑",
    "feature FD ↓",
    "Inception FID ↓",
]
ORDER = ["original", "retrain", "salun", "salun-random-mask", "rl", "ga", "esd"]


def main(folder: str) -> None:
    records = {p.name.removesuffix(".eval.json"): p for p in Path(folder).glob("*.eval.json")}
    if not records:
        raise SystemExit(f"no *.eval.json in {folder}; run `salun gen evaluate --out ...` first")
    names = [n for n in ORDER if n in records] + sorted(set(records) - set(ORDER))
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|---|---|")
    for name in names:
        m = json.loads(records[name].read_text())["metrics"]
        fid = m.get("inception_fid")
        fid_text = f"{fid:.2f}" if isinstance(fid, float) else "n/a"
        print(
            f"| {name} | {m['ua']:.1f} | {m['forget_prob']:.3f} | {m['retain_acc']:.1f} "
            f"| {m['feature_fd']:.3f} | {fid_text} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/gen-fashion")
