"""Why the SVC MIA and the per-example audit can disagree: split each method's gap to
Retrain in φ = log(p_y/(1−p_y)) into a population part and a per-example part.

For every forget example x, d(x) = mean over shadows of φ under the method − the same under
Retrain. The SVC MIA-efficacy only sees the *distribution* of confidences over D_f, so it
mostly reacts to the mean shift mean_x d(x); the per-example attack also exploits how d(x)
varies from example to example (sd_x d(x)), which a method can leave large while matching
the mean. Both are in units of the pooled across-shadow σ of φ under Retrain.

    python benchmarks/audit/shift.py benchmarks/audit/fashion-mnist-random10
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def load(root: Path, label: str, k_all: int) -> np.ndarray | None:
    rows = []
    for k in range(k_all):
        f = root / "records" / f"s{k}" / f"{label}.json"
        if not f.is_file():
            return None
        rec = json.loads(f.read_text())
        if rec.get("status", "ok") != "ok":
            return None
        rows.append(rec["phi"])
    return np.asarray(rows)


def main(root: Path) -> None:
    summary = json.loads((root / "summary.json").read_text())
    k_all = summary["config"]["shadows"]
    ref = load(root, "_reference", k_all)
    sigma = float(np.sqrt(((ref - ref.mean(0)) ** 2).sum() / ((k_all - 1) * ref.shape[1])))
    print(f"K = {k_all}, |D_f| = {ref.shape[1]}, pooled σ of φ under Retrain = {sigma:.2f}")
    print("| Method | mean shift (σ) | sd of shift over examples (σ) | AUC | |MIA − Retrain| |")
    print("|---|---|---|---|---|")
    for label, row in summary["methods"].items():
        phi = load(root, label, k_all)
        if phi is None or row.get("status") != "ok":
            continue
        d = (phi.mean(0) - ref.mean(0)) / sigma
        print(
            f"| {label} | {d.mean():+.2f} | {d.std(ddof=1):.2f} | {row['auc']:.3f} | "
            f"{row['mia_gap']:.2f} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
