"""The seed loop's helpers for benchmarks/gpu/check.sh (no torch, starts in a blink).

check.sh runs its benchmark one seed at a time, each in its own bench folder, so that a
time cut leaves whole seeds (one bench over all seeds would stage every seed's original,
then every Retrain, ...: a cut would leave no seed complete).

    python seeds.py list CONFIG                      # the config's seeds, one line
    python seeds.py config CONFIG SEED OUT           # a copy of CONFIG with seeds: [SEED]
    python seeds.py base CONFIG OUT [--epochs N]     # CONFIG with the original's epochs set
    python seeds.py fits LEFT LAST                   # exit 0: start another seed; 1: stop
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

# Another seed starts only if the time left exceeds the last seed's time by this much: a
# seed's wall time varies a little (start-up, cudnn autotuning in the first one), and a
# seed cut by the step's limit is wasted work.
MARGIN_FRACTION = 0.15
MARGIN_SECONDS = 10.0


def next_seed_fits(
    left_s: float,
    last_s: float,
    margin_fraction: float = MARGIN_FRACTION,
    margin_s: float = MARGIN_SECONDS,
) -> bool:
    """Whether another seed should start: the ``left_s`` seconds left in the step's budget
    exceed the last seed's ``last_s`` seconds by ``margin_fraction`` of it plus ``margin_s``.
    """
    return left_s > last_s * (1.0 + margin_fraction) + margin_s


def _load(path: str) -> dict:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or "seeds" not in data:
        raise SystemExit(f"seeds.py: {path} is not a bench config with seeds")
    return data


def _write_atomic(path: str, data: dict, header: str) -> None:
    out = Path(path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("config")
    p = sub.add_parser("config")
    p.add_argument("config")
    p.add_argument("seed", type=int)
    p.add_argument("out")
    p = sub.add_parser("base")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--epochs", type=int)
    p = sub.add_parser("fits")
    p.add_argument("left", type=float)
    p.add_argument("last", type=float)
    p.add_argument("--margin-fraction", type=float, default=MARGIN_FRACTION)
    p.add_argument("--margin-seconds", type=float, default=MARGIN_SECONDS)
    args = ap.parse_args(argv)

    if args.cmd == "fits":
        fits = next_seed_fits(args.left, args.last, args.margin_fraction, args.margin_seconds)
        return 0 if fits else 1
    data = _load(args.config)
    if args.cmd == "list":
        print(" ".join(str(int(s)) for s in data["seeds"]))
    elif args.cmd == "config":
        data["seeds"] = [args.seed]
        _write_atomic(args.out, data, f"# {args.config}, seed {args.seed} only (check.sh)\n")
    else:  # base
        header = f"# {args.config} as benchmarks/gpu/check.sh ran it"
        if args.epochs is not None:
            data.setdefault("original", {})["epochs"] = args.epochs
            header += f" (original and Retrain: {args.epochs} epochs)"
        _write_atomic(args.out, data, header + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
