"""The Retrain-free pick against the Retrain-tuned pick, from a benchmark's search records.

A ``salun bench`` run with the ``tuned`` protocol first searches every method's learning
rate (IU: ``alpha``) on the tuning seed: each grid value is one record holding UA/RA/TA/MIA
and the Avg. Gap to the Retrain. The bench keeps the value with the smallest gap: the
**Retrain-tuned pick** (``salun.bench.plan.choose_value``, the bench's own choice). This
script applies :func:`salun.tune.pick` — the rule ``salun tune`` uses when there is no
Retrain — to the same records: the **Retrain-free pick**. No model is trained; the table
gives, per method and scenario, both picks, the Avg. Gap to the Retrain each gives (read
from the records) and the difference (what not having a Retrain cost).

The Retrain-free rule needs its own reference, measured on the original model as
``salun tune`` measures it (:func:`salun.tune.reference`): class-wise, the original's RA and
TA (the pick needs only the chance level, 100/K %); random forgetting, the held-out proxy
(the original on half of the test set in the forget set's place). It is computed from the
original model of the tuning seed, found in ``BENCH/models`` or ``--models DIR`` (a bench
folder's model store: the committed copies of bench folders hold no weights), checked
against the original's record (same training history and accuracies); or read from
``--reference FILE`` (what ``--save-reference`` wrote). A class-wise scenario without the
model falls back on the original's record (train and test accuracy), which moves every
score alike and so leaves the pick as it is.

    python benchmarks/tune/from_bench.py benchmarks/standard --models runs/paper-steps/models

Works on any bench folder with search records: a live one (``runs/``) or a committed copy
(``results.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from salun.errors import SalunError

METRICS = ("UA", "RA", "TA", "MIA")


def search_groups(records: list[dict]) -> dict[tuple[str, str, int], list[dict]]:
    """``{(scenario, method label, tuning seed): [search record, ...]}``."""
    out: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "unlearn" and r.get("phase") == "tune" and r.get("hparam"):
            out[(r["scenario"], r["method"], int(r["seed"]))].append(r)
    return dict(out)


def bench_choices(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The ``lr_choice`` the bench recorded with its final ``tuned`` runs, per scenario and
    method (absent until the final stage has run)."""
    out = {}
    for r in records:
        if r.get("protocol") == "tuned" and isinstance(r.get("lr_choice"), dict):
            out.setdefault((r["scenario"], r["method"]), r["lr_choice"])
    return out


def rows_of(group: list[dict], grid: list[float] | None) -> tuple[str, list[dict]]:
    """``(field, rows)``: one row per grid value, in the bench's grid order (ties go to the
    first, as in the bench and in salun tune); a failed run has no metrics."""
    field = group[0]["hparam"]["name"]
    by_value = {float(r["hparam"]["value"]): r for r in group}
    order = [v for v in (grid or []) if v in by_value] or sorted(by_value)
    order += sorted(v for v in by_value if v not in order)
    rows = []
    for v in order:
        r = by_value[v]
        ok = r.get("status") == "ok"
        m = r.get("metrics") or {}
        gap = r.get("avg_gap")
        rows.append(
            {
                field: v,
                **{
                    k: (float(m[k]) if ok and isinstance(m.get(k), (int, float)) else None)
                    for k in METRICS
                },  # fmt: skip
                "avg_gap": float(gap) if ok and isinstance(gap, (int, float)) else None,
            }
        )
    return field, rows


def retrain_tuned(rows: list[dict], field: str, seed: int) -> float | None:
    """The bench's own choice (:func:`salun.bench.plan.choose_value`) on these rows."""
    from salun.bench.plan import choose_value

    grid = [row[field] for row in rows]
    gaps = {row[field]: {seed: row["avg_gap"]} for row in rows}
    return choose_value(grid, gaps, field=field, tune_seeds=[seed])["value"]


# ------------------------------------------------------------------ the free rule's reference


def _original_folder(bench: Path, models: Path | None, rel: str) -> Path | None:
    name = Path(rel).name
    for root in ([models] if models else []) + [bench / "models"]:
        if (root / name / "model.json").is_file():
            return root / name
    return None


def _check_same_original(folder: Path, rec: dict) -> None:
    meta = json.loads((folder / "model.json").read_text()).get("bench", {})
    same = meta.get("metrics") == rec.get("metrics") and meta.get("history") == rec.get("history")
    if not same:
        raise SalunError(
            f"{folder} is not the original of {rec['key']}: its training history or accuracy "
            "differ from the record's (give the models folder of the bench that made these "
            "records)"
        )


def measure_references(
    bench: Path, records: list[dict], keys, models: Path | None, device: str
) -> dict[str, dict[str, Any]]:
    """``{"<scenario>.s<seed>": {"target", "reference", "num_classes", "source"}}`` for the
    scenarios and tuning seeds in ``keys``; measured with :func:`salun.tune.reference` on
    the original model where it is at hand."""
    from salun.artifacts import load_model
    from salun.data import load_dataset, load_split
    from salun.report.inputs import read_bench_json
    from salun.tune import reference

    cfg = read_bench_json(bench)["config"]
    bundle = load_dataset(cfg["dataset"], cfg.get("data_root"))
    originals = {r["seed"]: r for r in records if r.get("kind") == "original"}
    out = {}
    for scenario, seed in sorted({(s, seed) for s, _, seed in keys}):
        rec = next(r for r in records if r.get("phase") == "tune" and r["scenario"] == scenario
                   and r["seed"] == seed)  # fmt: skip
        split = load_split(bench / rec["split_file"])
        kind = "class" if split.scenario == "class" else "random"
        orig = originals.get(seed)
        folder = _original_folder(bench, models, rec["original"]["model"]) if orig else None
        entry: dict[str, Any] = {"scenario": kind, "num_classes": bundle.num_classes}
        if folder is not None:
            _check_same_original(folder, orig)
            model = load_model(folder, device)[0]
            f, r = bundle.train.subset(split.forget), bundle.train.subset(split.retain)
            ref, target = reference(model, f, r, bundle.test, kind, seed=seed, device=device)
            entry.update(target=target, reference=ref,
                         source=f"measured on the original, models/{folder.name}")  # fmt: skip
        elif kind == "class" and orig:  # the pick does not depend on the reference here
            m = orig["metrics"]
            entry.update(target="chance", reference={"RA": m["train_acc"], "TA": m["test_acc"]},
                         source="the original's record (train/test accuracy)")  # fmt: skip
        else:
            entry.update(target=None, reference=None,
                         source="no original model at hand (--models DIR)")  # fmt: skip
        out[f"{scenario}.s{seed}"] = entry
    return out


# ------------------------------------------------------------------ the table


def compare(records: list[dict], references: dict[str, dict]) -> list[dict]:
    """One dict per (scenario, method, tuning seed): both picks and their gaps."""
    from salun.tune import pick

    choices = bench_choices(records)
    out = []
    for (scenario, label, seed), group in sorted(search_groups(records).items()):
        choice = choices.get((scenario, label))
        grid = [float(v) for v in choice["grid"]] if choice else None
        field, rows = rows_of(group, grid)
        gap = {row[field]: row["avg_gap"] for row in rows}
        tuned = retrain_tuned(rows, field, seed)
        if choice and choice.get("tune_seeds") == [seed] and choice.get("value") != tuned:
            raise SalunError(
                f"{scenario} {label}: the bench recorded {field} {choice['value']} but its rule "
                f"gives {tuned} on these records"
            )
        ref = references.get(f"{scenario}.s{seed}") or {}
        free, reason = None, ref.get("source", "no reference")
        if ref.get("reference") is not None:
            p = pick(rows, ref["reference"], ref["target"], ref["num_classes"], field=field)
            free, reason = p.value, p.reason
        g_t = gap.get(tuned) if tuned is not None else None
        g_f = gap.get(free) if free is not None else None
        out.append(
            {
                "scenario": scenario, "method": label, "seed": seed, "field": field,
                "retrain_tuned": tuned, "retrain_tuned_gap": g_t,
                "retrain_free": free, "retrain_free_gap": g_f,
                "difference": g_f - g_t if g_f is not None and g_t is not None else None,
                "values": len(rows), "failed": sum(row["avg_gap"] is None for row in rows),
                "gap_range": _range([row["avg_gap"] for row in rows]),
                "reason": reason,
            }
        )  # fmt: skip
    return out


def _range(gaps: list[float | None]) -> list[float] | None:
    ok = [g for g in gaps if g is not None]
    return [min(ok), max(ok)] if ok else None


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(rows: list[dict], references: dict[str, dict], records: list[dict] = ()) -> str:
    """The table; ``records`` (optional) add each scenario's Retrain beside the reference."""
    seeds = {r["seed"] for r in rows}
    head = ["scenario", "method"] + (["seed"] if len(seeds) > 1 else []) + [
        "searched", "gaps over the grid", "Retrain-tuned pick", "its gap",
        "Retrain-free pick", "its gap", "difference"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["scenario"], r["method"]] + ([str(r["seed"])] if len(seeds) > 1 else [])
        n = f"{r['field']} ({r['values']} values" + (
            f", {r['failed']} failed)" if r["failed"] else ")"
        )
        span = f"{r['gap_range'][0]:.2f}–{r['gap_range'][1]:.2f}" if r["gap_range"] else "—"
        cells += [n, span, _num(r["retrain_tuned"], "g"), _num(r["retrain_tuned_gap"]),
                  _num(r["retrain_free"], "g"), _num(r["retrain_free_gap"]),
                  _num(r["difference"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    done = [r for r in rows if r["difference"] is not None]
    if done:
        same = sum(r["retrain_free"] == r["retrain_tuned"] for r in done)
        mean = sum(r["difference"] for r in done) / len(done)
        lines += ["", f"Same pick in {same} of {len(done)}; mean difference {mean:.2f} Avg. Gap "
                  f"points (max {max(r['difference'] for r in done):.2f})."]  # fmt: skip
    missing = [r for r in rows if r["retrain_free"] is None]
    if missing:
        lines += [
            "",
            f"No Retrain-free pick for {len(missing)}: "
            + "; ".join(sorted({f"{r['scenario']}: {r['reason']}" for r in missing})),
        ]
    lines += ["", "References of the Retrain-free rule (salun.tune.reference):", ""]
    for key, ref in sorted(references.items()):
        vals = ref.get("reference")
        shown = ", ".join(f"{k} {vals[k]:.2f}" for k in METRICS if k in vals) if vals else "—"
        lines.append(f"- {key}: target {ref.get('target')}, {shown} ({ref.get('source')})")
        retrain = next((x for x in records if x.get("key") == f"retrain.{key}"), None)
        if retrain and retrain.get("status") == "ok":
            m = retrain["metrics"]
            lines.append(
                "  - the Retrain (not used by the rule): "
                + ", ".join(f"{k} {m[k]:.2f}" for k in METRICS if k in m)
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", type=Path, help="a bench folder with search records")
    p.add_argument("--models", type=Path, help="a bench model store holding the originals")
    p.add_argument("--reference", type=Path, help="read the references from this JSON file")
    p.add_argument("--save-reference", type=Path, help="write the references measured here")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from salun.report.inputs import read_checked_records

    try:
        records = read_checked_records(a.bench)
        keys = list(search_groups(records))
        if not keys:
            raise SalunError(f"{a.bench} holds no search records (phase 'tune'): nothing to do")
        if a.reference:
            references = json.loads(a.reference.read_text())
        else:
            references = measure_references(a.bench, records, keys, a.models, a.device)
        if a.save_reference:
            from salun.io import atomic_write_json

            atomic_write_json(a.save_reference, references)
        rows = compare(records, references)
    except SalunError as e:
        print(f"from_bench.py: {e}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if a.json else markdown(rows, references, records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
