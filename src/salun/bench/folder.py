"""Which ``--out`` a benchmark may write into: a new folder, an empty one, or its own.

A benchmark folder is recognised by its ``bench.json``; resuming one is the normal use, so
no ``--overwrite`` is needed (results of another config are refused by ``session.py``).
Anything else (a file, a folder of the user's own files) is refused untouched.
"""

from __future__ import annotations

from pathlib import Path

from salun.bench.lock import LOCK_FILE, REPORT_LOCK_FILE
from salun.bench.session import BENCH_FILE
from salun.errors import SalunError

# present in a folder whose first run failed before its bench.json was written
_OWN_LEFTOVERS = {LOCK_FILE, REPORT_LOCK_FILE}


def check_bench_folder(out: str | Path) -> bool:
    """Raise unless ``out`` may hold a benchmark; returns whether it exists already."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return False
    if not out.is_dir():
        raise SalunError(f"--out {out} exists and is not a folder; choose a new --out folder")
    names = {p.name for p in out.iterdir()}
    if names - _OWN_LEFTOVERS and BENCH_FILE not in names:
        raise SalunError(
            f"--out {out} is a folder that is not a salun benchmark folder (no {BENCH_FILE}); "
            "choose a new or empty --out folder"
        )
    return True


def claim_bench_folder(out: str | Path) -> bool:
    """Check ``out`` and create it when missing; returns True when it was created here."""
    out = Path(out)
    if check_bench_folder(out):
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:  # created meanwhile by a concurrent run: check it again
        check_bench_folder(out)
        return False
    except OSError as e:
        raise SalunError(f"cannot create --out {out}: {e.strerror}") from None
    return True
