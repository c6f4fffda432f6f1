"""The table of benchmarks/gpu/check.sh: reads what its steps left under --out, prints a
Markdown report and writes it to <out>/RESULTS.md. Exit status 1 if any step failed.

Usage (check.sh calls it): python benchmarks/gpu/summarize.py --out DIR --mode full
    --status pytest-cuda=0:41 bench=0:250 throughput=0:30
    --seeds-planned 0 1 2 3 4 --seeds 0=0:120 1=0:118
(--seeds: each bench seed that ran, with its exit status and seconds; the table takes the
seeds that exited 0. A step's status `skipped` means check.sh gave it the time limit 0.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from salun.bench.aggregate import (
    RETRAIN,
    Row,
    Stat,
    original_summary,
    paired_difference,
    rte_ratios,
    summarize,
)
from salun.precision import policy_from_env

TIMED_OUT = (124, 130, 137)  # timeout's status, SIGINT's, SIGKILL's
SKIPPED = "skipped"  # a step given the time limit 0 (a trimmed rerun)


def hardware() -> str:
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return (
            f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"{os.cpu_count()} CPU cores"
        )
    return f"CPU only ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def pytest_line(out: Path) -> str:
    xml = out / "pytest-cuda.xml"
    if not xml.is_file():
        return "no junit file (the step did not run or was killed)"
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    get = lambda k: int(suite.get(k, 0))  # noqa: E731
    tests, skipped = get("tests"), get("skipped")
    failed, errors = get("failures"), get("errors")
    passed = tests - skipped - failed - errors
    line = f"{passed} passed, {failed} failed, {errors} errors, {skipped} skipped"
    bad = [
        f"{c.get('classname', '')}::{c.get('name')}"
        for c in suite.iter("testcase")
        if c.find("failure") is not None or c.find("error") is not None
    ]
    return line + (f" (failing: {', '.join(bad)})" if bad else "")


def read_records(out: Path) -> list[dict]:
    f = out / "bench-results.jsonl"
    if not f.is_file():
        return []
    recs = []
    for line in f.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
    return recs


def fmt(v, nd=2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def pm(stat: Stat, nd=2) -> str:
    """``mean ± std`` (the std over seeds; a single seed shows its value alone)."""
    if stat.n == 0:
        return "—"
    return fmt(stat.mean, nd) if stat.n == 1 else f"{fmt(stat.mean, nd)} ± {fmt(stat.std, nd)}"


def parse_seed_status(items: list[str]) -> dict[int, tuple[int, int]]:
    """``{seed: (exit status, seconds)}`` from check.sh's ``SEED=RC:SECONDS`` words."""
    out = {}
    for item in items:
        seed, rest = item.split("=", 1)
        rc, secs = rest.split(":", 1)
        out[int(seed)] = (int(rc), int(secs))
    return out


def paired_line(rows: dict[str, Row], a: str, b: str, title: str) -> str:
    """The paired difference ``a − b`` of the per-seed Avg. Gap (negative: ``a`` closer to
    Retrain), its mean and 95 % Student-t interval over the seeds both finished."""
    if a not in rows or b not in rows:
        return f"- {title} in Avg. Gap: not available ({a} or {b} has no finished seed)"
    d = paired_difference(rows[a].avg_gap_by_seed, rows[b].avg_gap_by_seed)
    if d.n == 0:
        return f"- {title} in Avg. Gap: not available (no seed both finished)"
    if d.n < 2:
        return f"- {title} in Avg. Gap: {d.mean:+.2f} over 1 seed (n < 2: no interval)"
    lo, hi = d.ci
    return (
        f"- {title} in Avg. Gap: {d.mean:+.2f} over {d.n} seeds, "
        f"95 % t interval [{lo:+.2f}, {hi:+.2f}]"
    )


def bench_section(recs: list[dict], planned: list[int], seeds: dict[int, tuple[int, int]]):
    """The comparison over the seeds whose bench finished (exit 0): a table per method
    with mean ± std over seeds, the paired differences, the RTE ratio and what did not fit."""
    finished = [s for s in planned if seeds.get(s, (None,))[0] == 0]
    lines = []
    for s in planned:
        if s in seeds:
            rc, secs = seeds[s]
            state = "finished" if rc == 0 else ("timed out" if rc in TIMED_OUT else "failed")
            lines.append(f"- seed {s}: {state} (exit {rc}) after {secs} s")
    lines.append("")
    ok = [r for r in recs if r.get("seed") in finished]
    orig = original_summary(ok, finished)
    if orig["train_acc"].n:
        lines.append(
            f"Original ({orig['train_acc'].n} seeds): train accuracy {pm(orig['train_acc'])} %, "
            f"test {pm(orig['test_acc'])} %, {pm(orig['seconds'], 1)} s."
        )
    else:
        lines.append("Original: not finished on any seed.")
    table = summarize(ok, protocol="paper") if ok else {}
    rows = {r.method: r for sc_rows in table.values() for r in sc_rows}
    lines += [
        "",
        f"Mean ± std over the {len(finished)} finished seeds ({', '.join(map(str, finished))}); "
        "Avg. Gap: of the means (the paper's), then mean ± std of each seed's own.",
        "",
        "| Method | seeds | UA | RA | TA | MIA | Avg. Gap | per-seed Avg. Gap | RTE (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        m = r.metrics
        per_seed = "" if name == RETRAIN else pm(r.avg_gap_trials)
        gap = "" if name == RETRAIN else fmt(r.avg_gap)
        lines.append(
            f"| {name} | {len(r.seeds)} | {pm(m['UA'])} | {pm(m['RA'])} | {pm(m['TA'])} | "
            f"{pm(m['MIA'])} | {gap} | {per_seed} | {pm(r.rte, 1)} |"
        )
    if not rows:
        lines.append("| (no finished seed) | | | | | | | | |")
    lines += [
        "",
        "Paired over seeds (each seed's Avg. Gap to its own Retrain; negative: SalUn closer):",
        "",
        paired_line(rows, "salun", "rl", "SalUn − RL"),
        paired_line(rows, "salun", "salun_random_mask", "SalUn − random mask"),
    ]
    ratio = dict(rte_ratios(list(rows.values()))).get("salun")
    lines.append(
        f"- SalUn's RTE ÷ Retrain's RTE: {fmt(ratio, 3)}"
        if ratio is not None
        else "- SalUn's RTE ÷ Retrain's RTE: not available"
    )
    bad = [r for r in recs if r.get("status") not in (None, "ok")]
    for r in bad:
        lines.append(
            f"- run {r.get('kind')} {r.get('method') or ''} seed {r.get('seed')}: "
            f"{r.get('status')}: {str(r.get('error') or '')[:120]}"
        )
    not_run = [s for s in planned if s not in seeds]
    cut = [s for s in planned if s in seeds and s not in finished]
    lines += ["", "Not fitted: " + not_fitted(not_run, cut)]
    return lines


def not_fitted(not_run: list[int], cut: list[int]) -> str:
    parts = []
    if cut:
        parts.append(f"seed(s) {', '.join(map(str, cut))} did not finish (not in the table)")
    if not_run:
        parts.append(
            f"seed(s) {', '.join(map(str, not_run))} not run (the step's time ran out, or an "
            "earlier seed failed)"
        )
    parts.append(
        "the tuned protocol (a learning-rate search per method) and the paper's 10 seeds are "
        "not attempted in one device call"
    )
    return "; ".join(parts) + "."


def throughput_lines(out: Path) -> list[str]:
    f = out / "throughput.json"
    if not f.is_file():
        return ["not run or not finished"]
    t = json.loads(f.read_text())
    return [
        f"{t['arch']} width {t['width']}, batch {t['batch']}, {t['device']}, "
        f"precision {t['policy']['precision']}:",
        "",
        "| loop | salun img/s | plain PyTorch img/s | salun ÷ plain |",
        "|---|---|---|---|",
        f"| training | {t['train_salun_img_s']:.0f} | {t['train_plain_img_s']:.0f} | "
        f"{t['train_ratio']:.3f} |",
        f"| SalUn epoch (strict mask) | {t['salun_step_img_s']:.0f} | "
        f"{t['salun_step_plain_img_s']:.0f} | {t['salun_step_ratio']:.3f} |",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--status", nargs="*", default=[], help="name=rc:seconds per step")
    ap.add_argument("--seeds-planned", nargs="*", type=int, default=[], help="the config's seeds")
    ap.add_argument("--seeds", nargs="*", default=[], help="seed=rc:seconds per bench run")
    args = ap.parse_args()
    out = Path(args.out)
    steps = []
    for s in args.status:
        name, rest = s.split("=", 1)
        rc, secs = rest.split(":", 1)
        steps.append((name, rc if rc == SKIPPED else int(rc), int(secs)))
    policy = policy_from_env()
    lines = [
        f"# benchmarks/gpu/check.sh ({args.mode})",
        "",
        f"Hardware: {hardware()}; torch {torch.__version__}; device policy "
        f"{json.dumps(policy.as_record())}.",
        "",
        "| step | exit | seconds |",
        "|---|---|---|",
    ]
    note = {rc: " (timed out)" for rc in TIMED_OUT} | {SKIPPED: " (time limit 0)"}
    lines += [f"| {n} | {rc}{note.get(rc, '')} | {s} |" for n, rc, s in steps]
    lines += [f"| total | | {sum(s for _, _, s in steps)} |", ""]
    lines += ["## 1. CUDA tests (`pytest -m cuda tests/test_cuda.py`)", "", pytest_line(out), ""]
    lines += ["## 2. Unlearning benchmark (`check.yaml`, one bench per seed)", ""]
    seeds = parse_seed_status(args.seeds)
    lines += bench_section(read_records(out), args.seeds_planned, seeds) + [""]
    lines += ["## 3. Throughput (`benchmarks/throughput.py`)", ""] + throughput_lines(out)
    text = "\n".join(lines) + "\n"
    tmp = out / ".RESULTS.md.tmp"  # atomic: a killed summary leaves no half report
    tmp.write_text(text)
    os.replace(tmp, out / "RESULTS.md")
    print(text)
    return 1 if any(rc not in (0, SKIPPED) for _, rc, _ in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
