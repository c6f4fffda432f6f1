"""Compare the Retrain-free pick with the Retrain-tuned pick, per scenario and method.

Both searches run the same grid with the same seed, so the Retrain-tuned report's table
holds every grid value's Avg. Gap to the Retrain: the Retrain-free pick's gap is read from
it, and the table says how much worse (in Avg. Gap points) picking without a Retrain was.

    python benchmarks/tune/compare.py runs/tune
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(root: Path) -> list[str]:
    out = [
        "| scenario | method | free pick | Retrain pick | gap of free pick | best gap | lost |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for free_file in sorted(root.glob("*/*.free.json")):
        ref_file = free_file.with_name(free_file.name.replace(".free.", ".retrain."))
        if not ref_file.is_file():
            continue
        free, ref = json.loads(free_file.read_text()), json.loads(ref_file.read_text())
        field = ref["field"]
        gap = {row[field]: row["score"] for row in ref["table"]}  # Avg. Gap to the Retrain
        g_free, g_best = gap[free["value"]], gap[ref["value"]]
        out.append(
            f"| {free_file.parent.name} | {free['method']} | {free['value']:g} | "
            f"{ref['value']:g} | {g_free:.2f} | {g_best:.2f} | {g_free - g_best:.2f} |"
        )
    return out


if __name__ == "__main__":
    print("\n".join(rows(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tune"))))
