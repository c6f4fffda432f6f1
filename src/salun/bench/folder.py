"""Which ``--out`` a benchmark may write into: a new folder, an empty one, or its own.

The rules are the output policy's (``salun.outputs``, kind ``bench``: recognised by its
``bench.json``; a user's folder or file is refused untouched, as is an output holding an
input or the working directory). Resuming is a benchmark's normal use, so its own folder
needs no ``--overwrite`` (results of another config are refused by ``session.py``). An
empty folder is accepted too, as is one holding only the lock files of a first start that
died before writing ``bench.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from salun.bench.lock import LOCK_FILE, REPORT_LOCK_FILE
from salun.errors import SalunError
from salun.outputs import claim_output

_OWN_LEFTOVERS = {LOCK_FILE, REPORT_LOCK_FILE}


def check_bench_folder(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> bool:
    """Raise unless ``out`` may hold a benchmark; returns whether it exists already."""
    out = Path(out)
    if out.is_dir() and not out.is_symlink():
        if not {p.name for p in out.iterdir()} - _OWN_LEFTOVERS:
            return True
    claim_output(out, "bench", overwrite=True, inputs=inputs)
    return out.exists()


def claim_bench_folder(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> bool:
    """Check ``out`` and create it when missing; returns True when it was created here.

    Args:
        out: the benchmark's ``--out``.
        inputs: what the benchmark reads (its data): ``out`` may not be or contain one.
    """
    out = Path(out)
    if check_bench_folder(out, inputs):
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:  # created meanwhile by a concurrent run: check it again
        check_bench_folder(out, inputs)
        return False
    except OSError as e:
        raise SalunError(f"cannot create --out {out}: {e.strerror}") from None
    return True
