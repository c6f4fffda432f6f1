"""The audit report: one Markdown table, the attack next to the paper's SVC MIA-efficacy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from salun.errors import SalunError
from salun.io import Claim, atomic_write_text, claim, read_ends

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
    per_shadow = cfg.get("forget_sets", "fixed") == "per_shadow"
    if per_shadow:  # U-LiRA (docs/audit.md): a fresh forget set per shadow
        fs = summary.get("forget_sets", {})
        design = (
            f"a fresh random forget set of {summary['forget_examples']} per shadow; "
            f"**K = {cfg['shadows']}** shadow pairs, each trained on a random half of the "
            "subset and forgetting its own set from that half"
        )
        protocol = (
            "forget set **per shadow** (U-LiRA: each forgotten example scored against the "
            "unlearned models that forgot it and the Retrains that never saw it, leave one "
            f"pair out; {fs.get('scored', '?')} of {fs.get('targets', '?')} targets scored)"
        )
    else:
        design = (
            f"target forget set |D_f| = {summary['forget_examples']}; "
            f"**K = {cfg['shadows']}** shadow pairs, each on a random half of the rest"
        )
        protocol = "forget set fixed (leave one pair out)"
    lines = [
        f"# salun audit: {cfg['name']}",
        "",
        cfg.get("description") or "",
        "",
        "## Setup",
        "",
        f"Dataset **{cfg['dataset']}** (subset: {cfg['subset'] or 'all'} train, "
        f"{cfg['test_subset'] or 'all'} test), architecture **{cfg['arch']}** "
        f"(width {cfg['width']}); {design}; "
        f"{cfg['bootstrap']} bootstrap resamples (pairs and examples), 95 % intervals.",
        "",
        f"Attack settings (docs/audit.md): queries **{cfg.get('queries', 'single')}**, "
        f"location **{cfg.get('location', 'mean')}**, variance **{cfg['variance']}**, "
        f"{protocol}.",
        "",
        f"Shadow recipe: {orig['epochs']} epochs, SGD lr {orig['lr']} ({orig['schedule']}), "
        f"batch {orig['batch_size']}, momentum {orig['momentum']}, weight decay "
        f"{orig['weight_decay']}; Retrain: the same on the half without "
        f"{'its forget set' if per_shadow else 'D_f'} "
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


# The last line of every audit report.md salun writes: what a rerun may replace (as the
# benchmark reports' mark, docs/safety.md); a report.md without it is the user's.
REPORT_MARK = "<!-- written by salun audit: rerunning salun audit replaces this file -->"
_REFUSAL = "move it away (or rename it) and rerun salun audit"


def is_our_report(path: str | Path, name: str) -> bool:
    """A regular file ending with :data:`REPORT_MARK`, or an audit report of older
    versions (no mark): its first line is ``# salun audit: NAME`` for this audit."""
    ends = read_ends(path)
    if ends is None:
        return False
    head, tail = ends
    return tail.rstrip().endswith(REPORT_MARK) or head.startswith(f"# salun audit: {name}\n")


def check_report(root: str | Path, name: str) -> None:
    """Refuse, before any work, an audit folder whose ``report.md`` salun did not write."""
    _check(Path(root) / "report.md", name)


def _check(p: Path, name: str) -> None:
    if (p.exists() or p.is_symlink()) and not is_our_report(p, name):
        raise SalunError(
            f"refusing to replace {p}: salun did not write it (it lacks salun's last line); "
            f"{_REFUSAL}"
        )


def write_report(summary: dict[str, Any], path: str | Path) -> None:
    name = str(summary["config"]["name"])
    _check(Path(path), name)
    # checked again, atomically, when the file is published (salun.io.publish)
    claim(path, Claim(lambda q: is_our_report(q, name), _REFUSAL))
    atomic_write_text(path, render(summary) + f"\n{REPORT_MARK}\n")
