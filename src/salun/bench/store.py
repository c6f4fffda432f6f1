"""The result store: one small JSON file per finished run, plus ``results.jsonl``.

Why two forms: each run's file is written atomically under a name derived from its unique
key, so a run is either recorded completely or not at all, and a rerun sees exactly which
runs are done. ``results.jsonl`` (one record per line, in completion order) is rebuilt
atomically from those files after every addition and on opening, so it never holds a
half line or a duplicate, whatever moment the process was killed at.
"""

from __future__ import annotations

import json
from pathlib import Path

from salun.errors import SalunError
from salun.io import atomic_write_json, atomic_write_text, to_jsonable

RUNS = "runs"
JSONL = "results.jsonl"
RECORD_FORMAT = "salun-bench-record-1"


def key_to_filename(key: str) -> str:
    # keys are built from checked names (letters, digits, _ -) joined by '.', see plan.py
    return f"{key}.json"


class ResultStore:
    """Records of one benchmark folder, keyed by run key.

    Example:
        >>> store = ResultStore("results/ci")
        >>> if not store.has(key): store.add({"key": key, ...})
    """

    def __init__(self, root: str | Path, *, rebuild: bool = True) -> None:
        self.root = Path(root)
        self.runs = self.root / RUNS
        if rebuild:
            self.runs.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, dict] = {}
        for f in sorted(self.runs.glob("*.json")):
            rec = self._read(f)
            self._records[rec["key"]] = rec
        if rebuild:  # repairs a results.jsonl cut short by a kill
            self._write_jsonl()

    @staticmethod
    def _read(f: Path) -> dict:
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError as e:  # atomic writes make this a foreign/edited file
            raise SalunError(f"{f} is corrupted ({e}); delete it to rerun that run") from None
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or "key" not in rec:
            raise SalunError(f"{f} is not a salun benchmark record; delete it to rerun that run")
        if key_to_filename(rec["key"]) != f.name:
            raise SalunError(f"{f} holds the record of {rec['key']!r}; its file name is wrong")
        return rec

    def has(self, key: str) -> bool:
        return key in self._records

    def get(self, key: str) -> dict | None:
        return self._records.get(key)

    def add(self, record: dict) -> None:
        """Store a finished run. A key is stored once: adding it again is an error."""
        key = record["key"]
        if key in self._records:
            raise SalunError(f"run {key!r} is already recorded")
        record = {"format": RECORD_FORMAT, **record}
        # round-trip through JSON so the in-memory copy equals what a reader will load
        record = json.loads(json.dumps(record, default=to_jsonable))
        atomic_write_json(self.runs / key_to_filename(key), record)
        self._records[key] = record
        self._write_jsonl()

    def records(self) -> list[dict]:
        """All records in completion order (ties by key)."""
        return sorted(self._records.values(), key=lambda r: (r.get("seq", 0), r["key"]))

    def __len__(self) -> int:
        return len(self._records)

    def next_seq(self) -> int:
        return 1 + max((r.get("seq", 0) for r in self._records.values()), default=0)

    def _write_jsonl(self) -> None:
        lines = (json.dumps(r, sort_keys=True, default=to_jsonable) for r in self.records())
        atomic_write_text(self.root / JSONL, "".join(line + "\n" for line in lines))


def read_records(root: str | Path) -> list[dict]:
    """The records of a benchmark folder (from the per-run files, the source of truth)."""
    root = Path(root)
    if not (root / RUNS).is_dir():
        raise SalunError(f"{root} holds no benchmark results (no {RUNS}/ folder)")
    return ResultStore(root, rebuild=False).records()
