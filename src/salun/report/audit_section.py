"""The benchmark report's audit section: one table per audited scenario, read from the
audit folders' ``summary.json`` (``<bench>/audit/<scenario>/``, see bench/audit_stage.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from salun.audit.report import TITLES, ci_cell, mean_sd_cell
from salun.errors import SalunError
from salun.report.tables import Table, fmt_lr

HEADER = [
    "Method",
    "Protocol",
    "lr",
    "Attack AUC [95 % CI]",
    "TPR@1%FPR (%) [95 % CI]",
    "TPR@0.1%FPR (%)",
    "SVC MIA-efficacy",
    "|MIA − Retrain|",
]

WHAT = (
    "The two evaluations measure different things. The **SVC MIA-efficacy** (the paper's) "
    "is a population attack: one SVC, fitted on a model's own retain and test confidences, "
    "says what share of D_f it calls non-members; a method matches Retrain when the share "
    "matches. The **attack AUC** (U-LiRA style, docs/audit.md) asks per forget example "
    "whether a model was unlearned or retrained without it: Gaussians of the logit-scaled "
    "confidence under each answer are fitted on the other shadow pairs, and the AUC / TPR at "
    "low FPR of telling each pair's unlearned model from its Retrain is reported. AUC 0.5 "
    "and TPR ≈ FPR mean indistinguishable from Retrain; higher is worse for privacy."
)


def _setup(summary: Mapping[str, Any]) -> str:
    cfg = summary["config"]
    return (
        f"K = {cfg['shadows']} shadow pairs, shared by every row: shadow k's original trains "
        f"on D_f and a random half of the rest, its Retrain on that half alone (the original "
        f"recipe; seed {cfg['seed']}, the first reported seed); |D_f| = "
        f"{summary['forget_examples']}; every method unlearns each shadow original at the "
        "value its protocol ran with in the tables above. σ fitted "
        f"{cfg['variance'].replace('_', '-')}, {cfg['bootstrap']} bootstrap resamples (pairs "
        "and examples). The MIA columns are the SVC MIA-efficacy of the same shadow models "
        "(mean ± sd over shadows), next to that of the reference Retrain R_k — not the "
        "benchmark runs of the tables above."
    )


def _row_cells(label: str, row: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    if label in TITLES:
        head = [TITLES[label], "—", "—"]
    else:
        value = info.get("value")
        setting = f"{info.get('field', 'lr')} = {fmt_lr(value)}" if value is not None else "—"
        head = [info.get("method", label), ", ".join(info.get("protocols", [])), setting]
    if row["status"] != "ok":
        return head + [row["status"]] + [""] * (len(HEADER) - 4)
    m = row["metrics"]
    return head + [
        ci_cell(row["auc"], row["auc_ci"]),
        ci_cell(row["tpr"]["0.01"], row["tpr_ci"]["0.01"], pct=True),
        f"{100 * row['tpr']['0.001']:.2f}",
        mean_sd_cell(m["MIA"]),
        f"{row['mia_gap']:.2f}",
    ]


def audit_table(summary: Mapping[str, Any]) -> Table:
    """The audit's rows in config order, the reference Retrain R_k first (MIA only)."""
    rows_info = (summary.get("bench") or {}).get("rows", {})
    ref = summary["retrain"]["metrics"]["MIA"]
    body = [["Retrain (reference R_k)", "—", "—", "—", "—", "—", mean_sd_cell(ref), "0.00"]]
    for label, _, _ in summary["config"]["methods"]:
        body.append(_row_cells(label, summary["methods"][label], rows_info.get(label, {})))
    return HEADER, body


def _warnings(summary: Mapping[str, Any]) -> list[str]:
    shared = list(summary.get("warnings", []))
    out = list(shared)
    for label, row in summary["methods"].items():
        title = TITLES.get(label, label)
        if row.get("status") == "failed":
            out.append(f"{title} failed: {row.get('error')}")
        out += [f"{title}: {w}" for w in row.get("warnings", []) if w not in shared]
    return out


def read_audit_summaries(root: Path, cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{scenario: summary}`` of the audited scenarios that have a summary yet."""
    out = {}
    for scenario in (cfg.get("audit") or {}).get("scenarios", []):
        f = root / "audit" / scenario / "summary.json"
        if f.is_file():
            try:
                out[scenario] = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                msg = f"{f} is corrupted ({e}); rerun salun bench to rewrite it"
                raise SalunError(msg) from None
    return out


def audit_blocks(root: Path, cfg: Mapping[str, Any]) -> list[tuple]:
    """The report blocks of the audit column (none when the benchmark has no audit)."""
    summaries = read_audit_summaries(root, cfg)
    if not summaries:
        return []
    out: list[tuple] = [("h", 2, "Per-example audit"), ("p", WHAT)]
    for scenario, summary in summaries.items():
        out.append(("h", 3, f"Per-example audit: {scenario}"))
        out.append(("p", _setup(summary)))
        out.append(("table", audit_table(summary)))
        warns = _warnings(summary)
        if warns:
            out.append(("p", "Low-power warnings: " + "; ".join(warns) + "."))
        out.append(("p", f"Files: `audit/{scenario}/` (summary.json, report.md, records/)."))
    return out
