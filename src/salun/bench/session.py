"""``bench.json``: which config a result folder belongs to, and each invocation's facts.

A folder holds the results of exactly one config (by hash): rerunning the same command
resumes, while another config is refused instead of mixing results. Each invocation
("session") records its command, hardware, executor, status and wall time; a heartbeat
after every record keeps the wall time of a killed session close to the truth.
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


def bench_config(root: str | Path) -> BenchConfig:
    return config_from_dict(read_bench(root)["config"])


class Session:
    """One invocation of the benchmark on a folder."""

    def __init__(self, root: str | Path, cfg: BenchConfig, info: dict[str, Any]) -> None:
        self.root = Path(root)
        self.file = self.root / BENCH_FILE
        if self.file.is_file():
            self.data = read_bench(self.root)
            if self.data["config_hash"] != cfg.hash():
                raise SalunError(
                    f"{self.root} holds results of another config (hash "
                    f"{self.data['config_hash']}, this one {cfg.hash()}); choose a new --out "
                    "folder, or delete that one to start over"
                )
        else:
            self.data = {
                "format": BENCH_FORMAT,
                "config": asdict(cfg),
                "config_hash": cfg.hash(),
                "created_at": now(),
                "sessions": [],
            }
        self.t0 = time.perf_counter()
        self.entry = {
            "started_at": now(),
            "status": "running",
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
