"""The parts of a benchmark report that explain it: what each metric means and which way
is better, which configured methods are missing from a table and why, how many runs
failed, and a short "what this run says" generated from the numbers (never more than
their intervals allow)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from salun.bench.aggregate import RETRAIN, Row, n_seeds, record_protocol

DOCS = Path(__file__).resolve().parents[3] / "docs"  # the checkout's docs/, if there is one


def doc_link(root: Path, name: str, label: str | None = None) -> str:
    """``[docs/NAME](relative path)`` from the report folder to the checkout's doc, so the
    link works in the HTML and on a code host; the plain name when salun runs from an
    installed package without its docs."""
    label = label or f"docs/{name}"
    target = DOCS / name
    if not target.is_file():
        return label
    rel = os.path.relpath(target, Path(root).resolve())
    return f"[{label}]({Path(rel).as_posix()})"


def metric_blocks(root: Path) -> list[tuple]:
    """The definitions of every column, with the direction that is better."""
    items = [
        "**UA** (unlearning accuracy) = 100 − accuracy on the forget set D_f.",
        "**RA** (remaining accuracy) = accuracy on the retain set D_r.",
        "**TA** (testing accuracy) = accuracy on the test set (without the forgotten classes "
        "in class-wise forgetting).",
        "**MIA** (MIA-efficacy) = the share of D_f that a membership-inference attack (an SVC "
        "on the model's confidence) calls *not* a training member.",
        "**Avg. Gap** = the mean of |metric − Retrain's| over UA, RA, TA and MIA: how far a "
        "method is from Retrain, the model trained without D_f. **Smaller is better.**",
        "**RTE** (run-time efficiency) = the unlearning run's wall-clock seconds (SalUn's "
        "includes its mask). Smaller is cheaper; Retrain's is the cost to beat.",
    ]
    direction = (
        "For UA, RA, TA and MIA **the target is Retrain's value, not the highest value**: an "
        "unlearned model should look as if it had never seen D_f, so a UA or MIA above "
        "Retrain's over-forgets as surely as one below it under-forgets. Each cell shows the "
        "mean and, in brackets, its distance to Retrain's mean. How each metric is computed: "
        f"{doc_link(root, 'evaluation.md')}; seeds, intervals and ties: "
        f"{doc_link(root, 'benchmarks.md')}."
    )
    return [("h", 2, "What the columns mean"), ("p", " ".join(items)), ("p", direction)]


def configured_labels(cfg: Mapping[str, Any]) -> list[str]:
    """The method labels of a ``bench.json`` config, in config order."""
    methods = cfg.get("methods") or []
    if isinstance(methods, Mapping):
        return list(methods)
    return [m["label"] if isinstance(m, Mapping) else str(m) for m in methods]


def missing_methods(
    cfg: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[Row],
    scenario: str,
    protocol: str,
) -> dict[str, str]:
    """``{label: reason}`` of the configured methods that have no row in a table."""
    shown = {r.method for r in rows}
    out = {}
    for label in configured_labels(cfg):
        if label not in shown:
            out[label] = _why_missing(records, label, scenario, protocol)
    return out


def _why_missing(records, label: str, scenario: str, protocol: str) -> str:
    mine = [r for r in records if r.get("method") == label and r.get("scenario") == scenario]
    finals = [r for r in mine if record_protocol(r) == protocol]
    failed = [r for r in finals if r.get("status") != "ok"]
    if failed:
        return f"{len(failed)} of {len(finals)} run(s) failed: {first_reason(failed[0])}"
    searched = [r for r in mine if r.get("phase") == "tune"]
    if protocol == "tuned" and searched and all(r.get("status") != "ok" for r in searched):
        return f"every searched value failed: {first_reason(searched[0])}"
    return "no run recorded (the benchmark did not reach it)"


def first_reason(r: Mapping[str, Any]) -> str:
    """The first line of a failed record's error (its reason, without a traceback)."""
    lines = [x.strip() for x in str(r.get("error") or "").splitlines() if x.strip()]
    return lines[0] if lines else "no reason recorded"


def failure_count(records: Sequence[Mapping[str, Any]]) -> str:
    """``N of M runs failed (...)`` for the setup section, or that none did."""
    bad = [r for r in records if r.get("status") != "ok"]
    if not bad:
        return f"Runs: {len(records)}, none failed."
    return (
        f"Runs: {len(records)}, **{len(bad)} failed** (each is listed with its reason under "
        "Failed runs; a method without a successful run is marked in every table and plot)."
    )


def missing_text(missing: Mapping[str, str]) -> str:
    return "Not in this table: " + "; ".join(f"**{m}** — {why}" for m, why in missing.items()) + "."


def verdict(rows: Sequence[Row], missing: Mapping[str, str]) -> str:
    """What one table says, in words, from its numbers: which methods come closest to
    Retrain and how sure that is. One seed: no method is called better than another."""
    methods = [
        r for r in rows if r.method != RETRAIN and r.rank is not None and _finite(r.avg_gap_trials)
    ]
    if not methods:
        return "No method has a result here."
    methods.sort(key=lambda r: r.avg_gap_trials.mean)
    best = methods[0]
    n = n_seeds(rows)
    gap = f"{best.avg_gap_trials.mean:.2f}"
    parts = []
    if len(methods) == 1:
        parts.append(f"One method, **{best.method}**, at an Avg. Gap of {gap}.")
    elif n < 2:
        close = [r.method for r in methods[1:3]]
        parts.append(
            f"Closest to Retrain on this one seed: **{best.method}** (Avg. Gap {gap}), then "
            f"{', '.join(close)}. With one seed there is no interval: this order may not "
            "hold on another seed, and no method is shown to be better than another."
        )
    else:
        tied = [r.method for r in methods if r.tie == "tied"]
        lo, hi = best.avg_gap_trials.ci
        head = (
            f"Closest to Retrain: **{best.method}** (mean Avg. Gap {gap}, 95 % interval "
            f"[{lo:.2f}, {hi:.2f}] over {n} seeds)"
        )
        if tied:
            parts.append(
                f"{head}, but not distinguishable at 95 % from {', '.join(tied)}: this table "
                f"does not single out a best method among these {len(tied) + 1}."
            )
        else:
            parts.append(f"{head}; every other method is distinguishably further (paired, 95 %).")
    far = methods[-1]
    if len(methods) > 2:
        parts.append(f"Furthest: {far.method} (Avg. Gap {far.avg_gap_trials.mean:.2f}).")
    if missing:
        parts.append(f"Without a result: {', '.join(missing)}.")
    return " ".join(parts)


def _finite(stat) -> bool:
    return stat.n > 0 and not math.isnan(stat.mean)
