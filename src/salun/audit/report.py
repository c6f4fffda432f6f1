"""The audit report: one Markdown table, the attack next to the paper's SVC MIA-efficacy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from salun.io import atomic_write_text

TITLES = {
    "original": "Original (no unlearning)",
    "retrain": "Retrain, independent seed (null check)",
}


def ci_cell(value: float, ci: list[float], pct: bool = False) -> str:
    """``value [lo, hi]``: AUC with 3 decimals, rates in % with 2."""
    if pct:
        return f"{100 * value:.2f} [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def mean_sd_cell(v: list[float]) -> str:
    return f"{v[0]:.2f}±{v[1]:.2f}"


def render(summary: dict[str, Any]) -> str:
    """The report as Markdown."""
    cfg = summary["config"]
    orig = cfg["original"]
    ref = summary["retrain"]["metrics"]
    lines = [
        f"# salun audit: {cfg['name']}",
        "",
        cfg.get("description") or "",
        "",
        "## Setup",
        "",
        f"Dataset **{cfg['dataset']}** (subset: {cfg['subset'] or 'all'} train, "
        f"{cfg['test_subset'] or 'all'} test), architecture **{cfg['arch']}** "
        f"(width {cfg['width']}); target forget set |D_f| = {summary['forget_examples']}; "
        f"**K = {cfg['shadows']}** shadow pairs, each on a random half of the rest; "
        f"{cfg['bootstrap']} bootstrap resamples (pairs and examples), 95 % intervals.",
        "",
        f"Attack settings (docs/audit.md): queries **{cfg.get('queries', 'single')}**, "
        f"location **{cfg.get('location', 'mean')}**, variance **{cfg['variance']}**, "
        "forget set fixed (leave one pair out).",
        "",
        f"Shadow recipe: {orig['epochs']} epochs, SGD lr {orig['lr']} ({orig['schedule']}), "
        f"batch {orig['batch_size']}, momentum {orig['momentum']}, weight decay "
        f"{orig['weight_decay']}; Retrain: the same on the half without D_f "
        f"(mean {summary['retrain']['seconds']:.1f} s).",
        "",
        "Attack: per forget example, Gaussians of φ = log(p_y/(1−p_y)) under 'unlearned' and "
        "'retrained', fitted on the other K − 1 pairs; AUC and TPR at low FPR of telling each "
        "pair's unlearned model from its Retrain. 0.5 / FPR = indistinguishable from Retrain. "
        "MIA: the paper's SVC MIA-efficacy (confidence feature) on the same models, "
        "mean ± sd over shadows; Retrain's is the target.",
        "",
    ]
    run = summary.get("run") or {}
    if run.get("command"):
        lines += ["Command:", "", "```", run["command"], "```", ""]
    lines += [
        "| Method | AUC [95 % CI] | TPR@1%FPR (%) | TPR@0.1%FPR (%) | MIA-efficacy | "
        "|MIA − Retrain| | UA | RA | TA | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| Retrain (reference) | — | — | — | {mean_sd_cell(ref['MIA'])} | 0.00 | "
        f"{mean_sd_cell(ref['UA'])} | {mean_sd_cell(ref['RA'])} | {mean_sd_cell(ref['TA'])} | "
        f"{summary['retrain']['seconds']:.1f} |",
    ]
    notes = []
    for label, row in summary["methods"].items():
        title = TITLES.get(label, label)
        if row["status"] != "ok":
            lines.append(f"| {title} | {row['status']} | | | | | | | | |")
            if row.get("error"):
                notes.append(f"- **{title}** failed: {row['error']}")
            continue
        m = row["metrics"]
        lines.append(
            f"| {title} | {ci_cell(row['auc'], row['auc_ci'])} | "
            f"{ci_cell(row['tpr']['0.01'], row['tpr_ci']['0.01'], pct=True)} | "
            f"{ci_cell(row['tpr']['0.001'], row['tpr_ci']['0.001'], pct=True)} | "
            f"{mean_sd_cell(m['MIA'])} | {row['mia_gap']:.2f} | {mean_sd_cell(m['UA'])} | "
            f"{mean_sd_cell(m['RA'])} | {mean_sd_cell(m['TA'])} | {row['seconds']:.1f} |"
        )
        for w in row.get("warnings", []):
            if w not in summary.get("warnings", []):  # the shared ones are listed once
                notes.append(f"- {title}: {w}")
    shared = [f"- {w}" for w in summary.get("warnings", [])]
    if shared or notes:
        lines += ["", "## Low-power warnings", "", *shared, *notes]
    return "\n".join(lines) + "\n"


def write_report(summary: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, render(summary))
