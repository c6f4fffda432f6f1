"""The findings of a `standard` run, as numbers: SalUn against each method (paired over
seeds, with 95 % intervals), whether RL overshoots Retrain's MIA and whether SalUn's mask
brings it back, SalUn against the random-mask ablation, SalUn's run time against Retrain's,
and a side-by-side with the paper's Table 1 (Fan et al., ICLR 2024, CIFAR-10 / ResNet-18).

Usage::

    python benchmarks/standard/findings.py BENCH_FOLDER [ABLATION_FOLDER] > findings.md

``BENCH_FOLDER`` holds a run's ``results.jsonl`` (`standard`: benchmarks/standard/;
`paper-steps`: benchmarks/paper-steps/); ``ABLATION_FOLDER`` the run of
configs/ablation-standard.yaml (rows ``salun_random_mask`` on the same seeds, splits and
Retrain models), compared with the run's ``salun`` rows. A run whose own methods include
``salun_random_mask`` (`paper-steps`) needs no second folder.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

from salun.bench.aggregate import Row, Stat, paired_difference, protocols_of, summarize
from salun.report.build import load_records

# The paper's Table 1 (camera-ready): Avg. Gap to Retrain and MIA-efficacy, mean of 10 trials.
PAPER_AVG_GAP = {
    "random10": {
        "ft": 3.78, "rl": 7.15, "ga": 4.12, "iu": 4.06, "be": 2.76, "bs": 2.67,
        "l1_sparse": 2.26, "salun": 1.15, "salun_soft": 2.19,
    },
    "random50": {
        "ft": 6.79, "rl": 6.65, "ga": 7.15, "iu": 5.36, "be": 3.72, "bs": 8.13,
        "l1_sparse": 5.72, "salun": 2.65, "salun_soft": 4.30,
    },
}  # fmt: skip
PAPER_MIA = {
    "random10": {"retrain": 12.88, "rl": 37.36, "salun": 14.39},
    "random50": {"retrain": 19.29, "rl": 41.95, "salun": 16.99},
}
PAPER_RTE_RATIO = 2.66 / 43.29  # SalUn's RTE ÷ Retrain's, 10 % random forgetting


def fmt_ci(s: Stat, digits: int = 2) -> str:
    if s.n < 2 or math.isnan(s.half_width):
        return f"{s.mean:.{digits}f}"
    lo, hi = s.ci
    return f"{s.mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def verdict(d: Stat) -> str:
    """``d`` = other − SalUn per seed: above 0 means SalUn's gap is smaller."""
    if d.n < 2:
        return "one seed: no verdict"
    lo, hi = d.ci
    if lo > 0:
        return "SalUn better"
    if hi < 0:
        return "SalUn worse"
    return "not distinguishable"


def tables(records: list[dict]) -> dict[str, dict[str, list[Row]]]:
    return {p: summarize(records, protocol=p) for p in protocols_of(records)}


def by_label(rows: list[Row]) -> dict[str, Row]:
    return {r.method: r for r in rows}


def each_table(all_tables):
    """(protocol, scenario, rows, rows by label) of every table."""
    for protocol, per_scenario in all_tables.items():
        for scenario, rows in per_scenario.items():
            yield protocol, scenario, rows, by_label(rows)


def salun_vs_each(all_tables) -> list[str]:
    out = [
        "## SalUn against each method",
        "",
        "Per scenario and protocol: each method's Avg. Gap to Retrain (mean over seeds of each",
        "seed's own gap, 95 % interval) and the paired difference method − SalUn over the same",
        "seeds (> 0: SalUn is closer to Retrain). 'not distinguishable' = the interval holds 0.",
        "",
    ]
    for protocol, scenario, rows, rb in each_table(all_tables):
        sal = rb.get("salun")
        if sal is None:
            continue
        out += [
            f"### {scenario}, protocol {protocol}",
            "",
            f"SalUn: Avg. Gap {fmt_ci(sal.avg_gap_trials)} over seeds {list(sal.seeds)}.",
            "",
            "| method | Avg. Gap | method − SalUn | verdict |",
            "|---|---|---|---|",
        ]
        for r in rows:
            if r.method in ("retrain", "salun"):
                continue
            d = paired_difference(r.avg_gap_by_seed, sal.avg_gap_by_seed)
            out.append(f"| {r.method} | {fmt_ci(r.avg_gap_trials)} | {fmt_ci(d)} | {verdict(d)} |")
        out.append("")
    return out


def mia_check(all_tables) -> list[str]:
    out = [
        "## Does RL overshoot Retrain's MIA, and does the mask bring it back?",
        "",
        "MIA-efficacy (mean [95 % interval] over seeds). The paper (CIFAR-10, 10 % / 50 %):",
        "Retrain 12.88 / 19.29, RL 37.36 / 41.95, SalUn 14.39 / 16.99.",
        "",
        "| scenario | protocol | Retrain | RL | SalUn | RL − Retrain | SalUn − Retrain |",
        "|---|---|---|---|---|---|---|",
    ]
    for protocol, scenario, _, rb in each_table(all_tables):
        if not {"retrain", "rl", "salun"} <= rb.keys():
            continue
        ref = rb["retrain"].metrics["MIA"]
        rl, sal = rb["rl"].metrics["MIA"], rb["salun"].metrics["MIA"]
        out.append(
            f"| {scenario} | {protocol} | {fmt_ci(ref)} | {fmt_ci(rl)} | {fmt_ci(sal)} "
            f"| {rl.mean - ref.mean:+.2f} | {sal.mean - ref.mean:+.2f} |"
        )
    return out + [""]


def rte_ratio(all_tables) -> list[str]:
    out = [
        "## SalUn's run time against Retrain's",
        "",
        f"The paper: 2.66 / 43.29 min = {PAPER_RTE_RATIO:.3f} (10 % random forgetting).",
        "",
        "| scenario | protocol | SalUn RTE (s) | Retrain RTE (s) | ratio |",
        "|---|---|---|---|---|",
    ]
    for protocol, scenario, _, rb in each_table(all_tables):
        if {"retrain", "salun"} <= rb.keys():
            s, r = rb["salun"].rte.mean, rb["retrain"].rte.mean
            out.append(f"| {scenario} | {protocol} | {s:.1f} | {r:.1f} | {s / r:.3f} |")
    return out + [""]


def paper_side_by_side(all_tables) -> list[str]:
    out = [
        "## Side by side with the paper's Table 1",
        "",
        "Avg. Gap to Retrain of the paper's nine methods (the paper: CIFAR-10, ResNet-18, 10",
        "trials; here: the gap of the means, as the paper computes it). 'orderings kept' counts",
        "the method pairs the paper orders and this run orders the same way, over pairs whose",
        "paper gaps differ.",
        "",
    ]
    for scenario, paper in PAPER_AVG_GAP.items():
        cols = [p for p in all_tables if scenario in all_tables[p]]
        if not cols:
            continue
        ours = {p: by_label(all_tables[p][scenario]) for p in cols}
        head = "| method | paper | " + " | ".join(f"here, {p}" for p in cols) + " |"
        out += [f"### {scenario}", "", head, "|---" * (2 + len(cols)) + "|"]
        for m, g in sorted(paper.items(), key=lambda kv: kv[1]):
            cells = [f"{ours[p][m].avg_gap:.2f}" if m in ours[p] else "—" for p in cols]
            out.append(f"| {m} | {g:.2f} | " + " | ".join(cells) + " |")
        out.append("")
        for p in cols:
            common = [m for m in paper if m in ours[p]]
            pairs = [(a, b) for a, b in itertools.combinations(common, 2) if paper[a] != paper[b]]
            kept = [
                (a, b)
                for a, b in pairs
                if (paper[a] < paper[b]) == (ours[p][a].avg_gap < ours[p][b].avg_gap)
            ]
            best_paper = min(common, key=paper.get)
            best_here = min(common, key=lambda m: ours[p][m].avg_gap)
            here = "also the best" if best_here == best_paper else f"not the best: {best_here} is"
            out.append(
                f"- protocol {p}: orderings kept {len(kept)} of {len(pairs)}; the paper's best "
                f"({best_paper}) is here {here} (by the gap of the means)."
            )
        out.append("")
    return out


def ablation_records(main: list[dict], random_mask: list[dict]) -> list[dict]:
    """The standard run's Retrain and SalUn records with the ablation's random-mask ones."""
    keep = [r for r in main if r["kind"] == "retrain" or r["method"] == "salun"]
    return keep + [r for r in random_mask if r["method"] == "salun_random_mask"]


def ablation(records: list[dict]) -> list[str]:
    out = [
        "## Saliency mask against a random mask of the same density",
        "",
        "SalUn with its saliency mask and with a uniformly random mask (`mask_source: random`),",
        "everything else equal (configs/ablation-standard.yaml). Paired over seeds:",
        "random − saliency (> 0: the saliency mask is closer to Retrain).",
        "",
        "| scenario | protocol | saliency: Avg. Gap | random: Avg. Gap | random − saliency | "
        "saliency MIA | random MIA | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for protocol, scenario, _, rb in each_table(tables(records)):
        if not {"salun", "salun_random_mask"} <= rb.keys():
            continue
        s, r = rb["salun"], rb["salun_random_mask"]
        d = paired_difference(r.avg_gap_by_seed, s.avg_gap_by_seed)
        v = verdict(d).replace("SalUn", "saliency mask")
        out.append(
            f"| {scenario} | {protocol} | {fmt_ci(s.avg_gap_trials)} | "
            f"{fmt_ci(r.avg_gap_trials)} | {fmt_ci(d)} | {fmt_ci(s.metrics['MIA'])} | "
            f"{fmt_ci(r.metrics['MIA'])} | {v} |"
        )
    return out + [""]


def bench_name(folder: Path) -> str:
    """The run's preset name from its bench.json (``standard`` when there is none)."""
    try:
        return str(json.loads((folder / "bench.json").read_text())["config"]["name"])
    except (OSError, KeyError, TypeError, ValueError):
        return "standard"


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    records = load_records(Path(argv[0]))
    all_tables = tables(records)
    name = bench_name(Path(argv[0]))
    lines = [f"# Findings of the `{name}` run", ""]
    lines += salun_vs_each(all_tables) + mia_check(all_tables) + rte_ratio(all_tables)
    lines += paper_side_by_side(all_tables)
    if len(argv) == 2:
        lines += ablation(ablation_records(records, load_records(Path(argv[1]))))
    elif any(r.get("method") == "salun_random_mask" for r in records):
        lines += ablation(records)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
