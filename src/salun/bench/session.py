"""``bench.json``: which config a result folder belongs to, and each invocation's facts.

A folder holds the results of exactly one config (by hash): rerunning the same command
resumes, while another config is refused instead of mixing results. Each invocation
("session") records its command, hardware, executor, status and wall time; a heartbeat
after every record keeps the wall time of a killed session close to the truth.

Sessions are only written under the folder's lock (see ``lock.py``), so each invocation
appends its own entry to the entries already there: ``bench.json`` keeps every session.
A session still marked ``running`` when the next one starts belongs to a process that
died (it no longer holds the lock): it is marked ``died``, ended at its last heartbeat.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from salun.bench.config import BenchConfig, config_from_dict
from salun.errors import SalunError
from salun.io import atomic_write_json

BENCH_FILE = "bench.json"
BENCH_FORMAT = "salun-bench-1"
RUNNING, DIED = "running", "died"


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_bench(root: str | Path) -> dict[str, Any]:
    """The ``bench.json`` of a result folder."""
    f = Path(root) / BENCH_FILE
    if not f.is_file():
        raise SalunError(f"{root} is not a benchmark folder ({BENCH_FILE} is missing)")
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise SalunError(f"{f} is corrupted: {e}") from None
    if d.get("format") != BENCH_FORMAT:
        raise SalunError(f"{f} is not a {BENCH_FORMAT} file")
    return d


def read_bench_live(root: str | Path) -> dict[str, Any]:
    """``bench.json`` as a reader should see it: a session still ``running`` while nobody
    holds the folder's lock belongs to a process that died, and is shown as ``died``
    (the file itself is corrected by the next ``salun bench``; this never writes)."""
    from salun.bench.lock import is_locked

    data = read_bench(root)
    if any(s.get("status") == RUNNING for s in data.get("sessions", [])) and not is_locked(root):
        mark_died(data)
    return data


def bench_config(root: str | Path) -> BenchConfig:
    return config_from_dict(read_bench(root)["config"])


def check_same_config(root: str | Path, cfg: BenchConfig) -> dict[str, Any] | None:
    """The folder's ``bench.json`` (None for a new folder); another config is an error."""
    root = Path(root)
    if not (root / BENCH_FILE).is_file():
        return None
    data = read_bench(root)
    if data.get("config_hash") != cfg.hash():
        raise SalunError(
            f"{root} holds results of another config (hash {data.get('config_hash')}, this "
            f"one {cfg.hash()}); choose a new --out folder, or delete that one to start over"
        )
    return data


def mark_died(data: dict[str, Any]) -> int:
    """Mark the ``running`` sessions of ``data`` as ``died``; returns how many.

    Only call this while holding the folder's lock: then no live process owns them."""
    n = 0
    for s in data.get("sessions", []):
        if s.get("status") == RUNNING:
            s["status"] = DIED
            s["ended_at"] = s.get("updated_at") or s.get("started_at")
            n += 1
    return n


class Session:
    """One invocation of the benchmark on a folder (create it while holding the lock).

    Attributes:
        died: how many earlier sessions were found ``running`` and marked ``died``.
    """

    def __init__(self, root: str | Path, cfg: BenchConfig, info: dict[str, Any]) -> None:
        self.root = Path(root)
        self.file = self.root / BENCH_FILE
        data = check_same_config(self.root, cfg)
        if data is not None:
            self.data = data
            self.data.setdefault("sessions", [])
        else:
            self.data = {
                "format": BENCH_FORMAT,
                "config": asdict(cfg),
                "config_hash": cfg.hash(),
                "created_at": now(),
                "sessions": [],
            }
        self.died = mark_died(self.data)
        self.t0 = time.perf_counter()
        self.entry = {
            "started_at": now(),
            "status": RUNNING,
            "pid": os.getpid(),
            "wall_s": 0.0,
            "host": platform.node(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            **info,
        }
        self.data["sessions"].append(self.entry)
        self.save()

    def save(self) -> None:
        self.entry["wall_s"] = time.perf_counter() - self.t0
        self.entry["updated_at"] = now()
        atomic_write_json(self.file, self.data)

    def update(self, **info: Any) -> None:
        self.entry.update(info)
        self.save()

    def end(self, status: str) -> None:
        self.entry["status"] = status
        self.entry["ended_at"] = now()
        self.save()
