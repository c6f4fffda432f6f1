"""What to run: run keys, model-cache hashes and the :class:`Task` handed to executors.

A run key names one run uniquely and readably, e.g. ``final.random10.s0.salun``; it is
also the record's file name. Models are cached under ``models/<hash>/`` where the hash
covers everything that determines the weights (data, indices, architecture, recipe, seed),
so a changed recipe never reuses a stale model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from salun.bench.config import BenchConfig
from salun.data import Split
from salun.io import stable_hash
from salun.train import TrainConfig

ORIGINAL, RETRAIN, UNLEARN = "original", "retrain", "unlearn"
TUNE, FINAL = "tune", "final"


@dataclass(frozen=True)
class Task:
    """One unit of work, self-contained so that a Ray worker can run it.

    Attributes:
        kind: ``original``, ``retrain`` or ``unlearn``.
        key: the run key (see module docstring).
        bench: the benchmark config (dataset, architecture, recipe).
        out: the benchmark folder (shared by the driver and every worker).
        seed: the trial seed.
        device: ``auto``, ``cpu``, ``cuda``...
        quiet: silence the run's own progress bars.
        split_file: the split (relative to ``out``).
        original_dir: the original model's folder (relative to ``out``).
        retrain_dir: Retrain's model folder (relative to ``out``), for ``retrain`` tasks.
        scenario: the scenario name (not for ``original``).
        phase: ``tune`` or ``final`` (``unlearn`` only).
        label, method: the table row and the registered method (``unlearn`` only).
        overrides: the method config's overrides, seed and lr included.
        mask_file: where to save SalUn's mask (relative to ``out``), or None.
        threads: torch CPU threads for this run (None: leave the process's setting).
    """

    kind: str
    key: str
    bench: BenchConfig
    out: str
    seed: int
    device: str = "auto"
    quiet: bool = True
    split_file: str = ""
    original_dir: str = ""
    retrain_dir: str = ""
    scenario: str | None = None
    phase: str | None = None
    label: str | None = None
    method: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    mask_file: str | None = None
    threads: int | None = None

    def path(self, rel: str) -> Path:
        return Path(self.out) / rel


def recipe_for(bench: BenchConfig, seed: int) -> TrainConfig:
    """The original (and Retrain) recipe with the trial seed."""
    return replace(bench.original, seed=seed)


def original_key(seed: int) -> str:
    return f"{ORIGINAL}.s{seed}"


def retrain_key(scenario: str, seed: int) -> str:
    return f"{RETRAIN}.{scenario}.s{seed}"


def tune_key(scenario: str, seed: int, label: str, field: str, value: float) -> str:
    return f"{TUNE}.{scenario}.s{seed}.{label}.{field}{value:g}"


def final_key(scenario: str, seed: int, label: str) -> str:
    return f"{FINAL}.{scenario}.s{seed}.{label}"


def split_file(scenario: str, seed: int, split: Split) -> str:
    return f"splits/{scenario}.s{seed}.{split.hash}.json"


def original_hash(bench: BenchConfig, seed: int, split: Split) -> str:
    """Everything that determines the original model's weights."""
    return stable_hash(
        {
            "kind": ORIGINAL,
            "dataset": bench.dataset,
            "arch": bench.arch,
            "width": bench.width,
            "recipe": asdict(recipe_for(bench, seed)),
            "train": stable_hash(split.train.tolist()),
            "val": stable_hash(split.val.tolist()),
        }
    )


def retrain_hash(bench: BenchConfig, seed: int, split: Split, via: dict[str, Any]) -> str:
    """Everything that determines Retrain's weights (``via``: how Retrain is run)."""
    return stable_hash(
        {
            "kind": RETRAIN,
            "dataset": bench.dataset,
            "arch": bench.arch,
            "width": bench.width,
            "recipe": asdict(recipe_for(bench, seed)),
            "split": split.hash,
            "via": via,
        }
    )


def grid_field(config_cls: type) -> str:
    """The config field the search sets: ``lr``, unless the config names another in its
    ``grid_field`` class attribute (IU searches its step ``alpha``)."""
    return getattr(config_cls, "grid_field", "lr")


def method_overrides(
    entry_overrides: dict[str, Any],
    fields: set[str],
    seed: int,
    field: str,
    value: float | None,
) -> dict[str, Any]:
    """The entry's overrides with the trial seed and (when searched) the searched value
    filled in, each only where the method's config has that field."""
    out = dict(entry_overrides)
    if "seed" in fields:
        out["seed"] = seed
    if value is not None and field in fields:
        out[field] = value
    return out
