"""The table of benchmarks/gpu/check.sh: reads what its steps left under --out, prints a
Markdown report and writes it to <out>/RESULTS.md. Exit status 1 if any step failed.

Usage (check.sh calls it): python benchmarks/gpu/summarize.py --out DIR --mode full
    --status pytest-cuda=0:41 bench=0:250 throughput=0:30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from salun.precision import policy_from_env

METHOD_ORDER = ["retrain", "salun", "rl", "ft", "ga", "l1_sparse"]


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
    return "—" if v is None else f"{v:.{nd}f}"


def bench_table(recs: list[dict]) -> list[str]:
    lines = []
    orig = next((r for r in recs if r.get("kind") == "original" and r.get("status") == "ok"), None)
    if orig:
        m = orig.get("metrics") or {}
        lines.append(
            f"Original: train accuracy {fmt(m.get('train_acc'))} %, test "
            f"{fmt(m.get('test_acc'))} %, {fmt(orig.get('rte_s'), 1)} s."
        )
    else:
        lines.append("Original: not finished.")
    rows = {}
    for r in recs:
        if r.get("kind") in ("retrain", "unlearn") and r.get("phase") in (None, "final"):
            rows[r.get("method")] = r
    lines += [
        "",
        "| Method | UA | RA | TA | MIA | Avg. Gap | RTE (s) | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in METHOD_ORDER + sorted(set(rows) - set(METHOD_ORDER)):
        r = rows.get(name)
        if r is None:
            lines.append(f"| {name} | | | | | | | not run |")
            continue
        m = r.get("metrics") or {}
        lines.append(
            f"| {name} | {fmt(m.get('UA'))} | {fmt(m.get('RA'))} | {fmt(m.get('TA'))} | "
            f"{fmt(m.get('MIA'))} | {fmt(r.get('avg_gap'))} | {fmt(r.get('rte_s'), 1)} | "
            f"{r.get('status')}{': ' + str(r['error'])[:80] if r.get('error') else ''} |"
        )
    return lines


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
    args = ap.parse_args()
    out = Path(args.out)
    steps = []
    for s in args.status:
        name, rest = s.split("=", 1)
        rc, secs = rest.split(":", 1)
        steps.append((name, int(rc), int(secs)))
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
    lines += [
        f"| {n} | {rc}{' (timed out)' if rc in (124, 130, 137) else ''} | {s} |"
        for n, rc, s in steps
    ]
    lines += [f"| total | | {sum(s for _, _, s in steps)} |", ""]
    lines += ["## 1. CUDA tests (`pytest -m cuda tests/test_cuda.py`)", "", pytest_line(out), ""]
    lines += ["## 2. Unlearning benchmark (random 10 %, seed 0)", ""]
    lines += bench_table(read_records(out)) + [""]
    lines += ["## 3. Throughput (`benchmarks/throughput.py`)", ""] + throughput_lines(out)
    text = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(text)
    print(text)
    return 1 if any(rc != 0 for _, rc, _ in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
