"""How much the attack's settings move a finished audit: its AUC and TPR at 1 % FPR
recomputed from the stored records under each location × variance (docs/audit.md,
"Settings against the references"). Nothing is trained; the records hold every φ.

    python benchmarks/audit/settings.py benchmarks/audit/fashion-mnist-random10

``queries: mirror`` needs φ of the mirror images, which only a rerun records.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from salun.audit.config import config_from_dict
from salun.audit.workflow import AuditStore, summarise

SETTINGS = [  # (location, variance); the first is salun's default
    ("mean", "global"),
    ("median", "global"),
    ("mean", "per_example"),
    ("median", "per_example"),
    ("mean", "fixed"),
    ("median", "fixed"),
]


def main(root: Path) -> None:
    cfg = config_from_dict(json.loads((root / "audit.json").read_text())["config"])
    store = AuditStore(root)
    cols = []
    for location, variance in SETTINGS:
        # the figures below are point estimates: the bootstrap does not change them
        s = summarise(replace(cfg, location=location, variance=variance, bootstrap=10), store)
        cols.append(s["methods"])
    head = [f"{loc} / {var}" for loc, var in SETTINGS]
    print("AUC (TPR at 1 % FPR, %) per location / variance; queries single, fixed D_f\n")
    print("| Row | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for label in cols[0]:
        cells = [
            f"{c[label]['auc']:.3f} ({100 * c[label]['tpr']['0.01']:.1f})"
            if c[label]["status"] == "ok"
            else c[label]["status"]
            for c in cols
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/audit/fashion-mnist-random10"))
