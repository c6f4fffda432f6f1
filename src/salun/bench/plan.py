"""What to run: run keys, model-cache hashes, the protocols' grids and choices, and the
:class:`Task` handed to executors.

A run key names one run uniquely and readably, e.g. ``final.tuned.random10.s0.salun``; it
is also the record's file name. Models are cached under ``models/<hash>/`` where the hash
covers everything that determines the weights (data, indices, architecture, recipe, seed),
so a changed recipe never reuses a stale model.

Protocols (docs/benchmarks.md): ``paper`` runs each method at its configured value (the
reference's published hyper-parameter); ``tuned`` searches each method's grid on the
tuning seeds and runs the value with the smallest mean Avg. Gap on the reported seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

from salun.bench.config import BenchConfig, MethodEntry
from salun.data import Split
from salun.io import stable_hash
from salun.train import TrainConfig

ORIGINAL, RETRAIN, UNLEARN, AUDIT = "original", "retrain", "unlearn", "audit"
TUNE, FINAL = "tune", "final"
PAPER, TUNED = "paper", "tuned"

# The tuned protocol's default learning-rate grid: the paper's search range [1e-4, 1e-1],
# log-spaced in half decades (7 values). BS and BE step in a much smaller range (their
# configs' own grids); methods searched over another field (IU: alpha) use their config's.
DEFAULT_LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
OWN_RANGE_METHODS = frozenset({"bs", "be"})


@dataclass(frozen=True)
class Task:
    """One unit of work, self-contained so that a Ray worker can run it.

    Attributes:
        kind: ``original``, ``retrain``, ``unlearn`` or ``audit`` (one shadow pair).
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
        audit: the audit's config (``audit`` tasks; an ``AuditConfig``).
        audit_dir: the audit folder (relative to ``out``), for ``audit`` tasks.
        shadow: the shadow pair k this ``audit`` task runs.
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
    audit: Any = None
    audit_dir: str = ""
    shadow: int | None = None

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


def final_key(scenario: str, seed: int, label: str, protocol: str) -> str:
    return f"{FINAL}.{protocol}.{scenario}.s{seed}.{label}"


def audit_key(scenario: str, shadow: int) -> str:
    return f"{AUDIT}.{scenario}.s{shadow}"


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


# ---- the tuned protocol: grids and the choice ------------------------------------------


def search_grid(entry: MethodEntry) -> tuple[float, ...]:
    """The values the ``tuned`` protocol searches for ``entry`` (empty: not searched).

    The entry's own ``lr_grid`` override wins; otherwise a method stepping in ``lr``
    searches :data:`DEFAULT_LR_GRID`, except BS/BE (and any method searched over another
    field, e.g. IU's ``alpha``), which search their config's default ``lr_grid``.
    """
    from salun.methods import get_method, make_config

    config_cls = get_method(entry.method).config
    fname = grid_field(config_cls)
    if fname not in {f.name for f in dc_fields(config_cls)}:
        return ()
    if "lr_grid" in entry.overrides:
        grid = entry.overrides["lr_grid"] or ()
    elif fname == "lr" and entry.method not in OWN_RANGE_METHODS:
        grid = DEFAULT_LR_GRID
    else:
        grid = getattr(make_config(entry.method, entry.overrides), "lr_grid", ())
    return tuple(dict.fromkeys(float(v) for v in grid))  # a repeated value runs once


def grid_edge(grid: Sequence[float], value: float) -> str | None:
    """``lowest`` / ``highest`` when ``value`` is the grid's smallest / largest value (the
    best value may lie beyond the grid: widen it), else None; None for a 1-value grid."""
    if len(grid) < 2:
        return None
    if value == min(grid):
        return "lowest"
    if value == max(grid):
        return "highest"
    return None


def widened(grid: Sequence[float], edge: str) -> tuple[float, ...]:
    """``grid`` with one value added beyond its ``lowest`` / ``highest`` end: one more log
    step, the ratio between that end and its nearest neighbour (1e-3 after 3e-3, 1e-2)."""
    values = sorted(grid)
    if len(values) < 2:
        raise ValueError("a grid needs two values to be widened")
    if edge == "lowest":
        return (values[0] ** 2 / values[1], *grid)
    if edge == "highest":
        return (*grid, values[-1] ** 2 / values[-2])
    raise ValueError(f"edge must be 'lowest' or 'highest', got {edge!r}")


def choose_value(
    grid: Sequence[float],
    gaps_by_seed: Mapping[float, Mapping[int, float | None]],
    *,
    field: str = "lr",
    tune_seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """The search's choice: the value with the SMALLEST mean Avg. Gap over the tuning seeds.

    Args:
        grid: the values searched, in config order (ties go to the first).
        gaps_by_seed: ``{value: {seed: Avg. Gap or None}}``; None (a failed or missing
            run) makes that value ineligible.
        field: the searched config field (``lr``; IU: ``alpha``).
        tune_seeds: the seeds searched on.

    Returns:
        The ``lr_choice`` dict recorded with every final run of the ``tuned`` protocol:
        ``value`` (None if every value failed), ``field``, ``source: searched``, ``grid``,
        ``tune_seeds``, ``search_seed`` (the first, for older readers),
        ``avg_gap_by_value`` (mean over seeds), ``avg_gap_by_value_seed`` and ``at_edge``.
    """
    mean: dict[float, float] = {}
    for v in grid:
        per = gaps_by_seed.get(v, {})
        vals = [per.get(s) for s in tune_seeds] if tune_seeds else list(per.values())
        ok = bool(vals) and all(x is not None and math.isfinite(x) for x in vals)
        mean[v] = sum(vals) / len(vals) if ok else math.inf
    finite = [v for v in grid if math.isfinite(mean[v])]
    best = min(finite, key=lambda v: (mean[v], list(grid).index(v))) if finite else None
    return {
        "value": best,
        "field": field,
        "source": "searched",
        "grid": list(grid),
        "tune_seeds": list(tune_seeds),
        "search_seed": tune_seeds[0] if tune_seeds else None,
        "avg_gap_by_value": {f"{v:g}": (mean[v] if math.isfinite(mean[v]) else None) for v in grid},
        "avg_gap_by_value_seed": {
            f"{v:g}": {str(s): x for s, x in gaps_by_seed.get(v, {}).items()} for v in grid
        },
        "at_edge": None if best is None else grid_edge(grid, best),
    }


def count_runs(cfg: BenchConfig) -> int:
    """How many records a complete run of ``cfg`` holds (reused runs included)."""
    n_s = len(cfg.scenarios)
    total = len(cfg.all_seeds) * (1 + n_s)
    total += len(cfg.protocols) * len(cfg.seeds) * n_s * len(cfg.methods)
    if cfg.tune_lr:
        total += len(cfg.search_seeds) * n_s * sum(len(search_grid(m)) for m in cfg.methods)
    return total
