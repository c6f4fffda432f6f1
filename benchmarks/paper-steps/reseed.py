"""Continue the committed `paper-steps` run on a machine that lost its bench folder.

The bench folder holds model weights that are not committed (originals, Retrains); this
folder holds every record. `reseed.py` rebuilds a bench folder from the records: the
unlearning runs' records go back into ``runs/``, the originals and Retrains are left out so
the bench trains them again (same seeds, same code path: bit-identical weights), and
everything after them is skipped if recorded or run if not.

    python benchmarks/paper-steps/reseed.py runs/paper-steps       # then the usual command:
    salun bench --preset paper-steps --out runs/paper-steps --executor ray --threads 1
    python benchmarks/paper-steps/reseed.py runs/paper-steps --check   # once it has run

``--check`` compares every retrained original and Retrain with the committed record of the
same key (metrics and per-epoch history, exactly): a difference means the weights the
reseeded records were measured against are not the ones rebuilt, and the run must start
over from an empty folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REBUILT = ("original", "retrain")  # kinds whose weights are not committed


def committed_records() -> list[dict]:
    return [json.loads(line) for line in (HERE / "results.jsonl").read_text().splitlines()]


def reseed(out: Path) -> None:
    if out.exists():
        sys.exit(f"reseed.py: {out} exists; give a new folder (nothing was changed)")
    tmp = out.with_name(f".{out.name}.reseed-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "runs").mkdir(parents=True)
    shutil.copy(HERE / "bench.json", tmp / "bench.json")
    shutil.copytree(HERE / "splits", tmp / "splits")
    kept = 0
    for rec in committed_records():
        if rec["kind"] in REBUILT:
            continue
        (tmp / "runs" / f"{rec['key']}.json").write_text(json.dumps(rec))
        kept += 1
    tmp.rename(out)  # the folder appears complete or not at all
    print(f"{out}: {kept} records restored; originals and Retrains will be trained again")


def check(out: Path) -> int:
    bad = 0
    for rec in committed_records():
        if rec["kind"] not in REBUILT:
            continue
        f = out / "runs" / f"{rec['key']}.json"
        if not f.exists():
            print(f"{rec['key']}: not rebuilt yet")
            bad += 1
            continue
        new = json.loads(f.read_text())
        same = new["metrics"] == rec["metrics"] and new.get("history") == rec.get("history")
        print(f"{rec['key']}: {'identical' if same else 'DIFFERENT'}")
        bad += not same
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the bench folder to create (or to check)")
    p.add_argument("--check", action="store_true", help="compare rebuilt originals/Retrains")
    a = p.parse_args()
    if a.check:
        return check(a.out)
    reseed(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
