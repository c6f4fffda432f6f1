"""Print the Markdown report tables from the ``*.eval.json`` records of ``salun gen evaluate``.

Usage: ``python benchmarks/gen/summarize.py runs/gen-fashion``

The acceptance check of the issue is printed per unlearned model: UA >= 95 % on the
forgotten class while the retained-class accuracy drops by at most 5 points from the
Original's. Run times come from each model folder's ``model.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["original", "retrain", "salun", "salun-random-mask", "rl", "ga", "esd"]
UA_MIN, DROP_MAX = 95.0, 5.0


def _seconds(folder: Path) -> float | None:
    meta_file = folder / "model.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    return meta.get("seconds", meta.get("train_seconds_last_session"))


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def main(folder: str) -> None:
    root = Path(folder)
    records = {p.name.removesuffix(".eval.json"): p for p in root.glob("*.eval.json")}
    if not records:
        raise SystemExit(f"no *.eval.json in {folder}; run `salun gen evaluate --out ...` first")
    names = [n for n in ORDER if n in records] + sorted(set(records) - set(ORDER))
    metrics = {n: json.loads(records[n].read_text())["metrics"] for n in names}
    base = metrics.get("original", {}).get("retain_acc")

    print(
        "| model | UA % ↑ | P(forget class) ↓ | retained acc % ↑ | Δ vs Original (pts) "
        "| worst retained class % | feature FD ↓ | Inception FID ↓ | run time (s) "
        f"| UA ≥ {UA_MIN:g} and drop ≤ {DROP_MAX:g} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        m = metrics[name]
        drop = None if base is None else m["retain_acc"] - base
        verdict = "—"
        if name not in ("original", "retrain") and drop is not None:
            ok = m["ua"] >= UA_MIN and -drop <= DROP_MAX
            verdict = "yes" if ok else "**no**"
        print(
            f"| {name} | {m['ua']:.1f} | {m['forget_prob']:.3f} | {m['retain_acc']:.1f} "
            f"| {_fmt(drop, '+.1f')} | {min(m['retain_acc_per_class'].values()):.0f} "
            f"| {m['feature_fd']:.3f} | {_fmt(m.get('inception_fid'), '.2f')} "
            f"| {_fmt(_seconds(root / name), '.0f')} | {verdict} |"
        )

    classes = sorted({int(c) for m in metrics.values() for c in m["retain_acc_per_class"]})
    print("\nPer retained class: classifier accuracy (%) on that class's samples\n")
    print("| model | " + " | ".join(str(c) for c in classes) + " |")
    print("|---|" + "---|" * len(classes))
    for name in names:
        per = {int(c): v for c, v in metrics[name]["retain_acc_per_class"].items()}
        print(f"| {name} | " + " | ".join(_fmt(per.get(c), ".0f") for c in classes) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/gen-fashion")
