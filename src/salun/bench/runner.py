"""The benchmark driver: splits, then stage by stage original → Retrain → (lr search) → runs.

Every run has a unique key; a run whose record exists is skipped, so rerunning the same
command after a kill resumes where it stopped and ends with exactly one record per run.
Models (original, Retrain) are cached under ``models/<hash>/`` and reused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from salun.bench.config import BenchConfig, MethodEntry
from salun.bench.executors import Executor, make_executor
from salun.bench.plan import (
    FINAL,
    ORIGINAL,
    RETRAIN,
    TUNE,
    UNLEARN,
    Task,
    final_key,
    grid_field,
    original_hash,
    original_key,
    retrain_hash,
    retrain_key,
    split_file,
    tune_key,
)
from salun.bench.plan import method_overrides as with_seed_lr
from salun.bench.session import Session, now
from salun.bench.store import ResultStore
from salun.bench.tasks import retrain_via
from salun.data import Split, load_dataset, make_split, save_split
from salun.errors import SalunError
from salun.metrics import GAP_METRICS, avg_gap, gaps
from salun.utils import device_name, progress, resolve_device

OnRecord = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BenchOptions:
    """How to run (never changes results, so not part of the config hash).

    Attributes:
        executor: ``local`` or ``ray``.
        ray_address: an existing Ray cluster; None starts a local 2-CPU instance.
        device: ``auto``, ``cpu``, ``cuda``...
        quiet: no progress bars.
        cpus_per_run, gpus_per_run: Ray resource requests (gpus default: 1 on CUDA).
        threads: torch CPU threads per run (None: torch's default; Ray workers get
            ``cpus_per_run``). Small models on a busy machine run much faster with 1.
        command: the exact command line, recorded for the report.
    """

    executor: str = "local"
    ray_address: str | None = None
    device: str = "auto"
    quiet: bool = False
    cpus_per_run: float = 1
    gpus_per_run: float | None = None
    threads: int | None = None
    command: str | None = None


def run_bench(
    cfg: BenchConfig,
    out: str | Path,
    options: BenchOptions | None = None,
    *,
    on_record: OnRecord | None = None,
) -> Path:
    """Run (or resume) benchmark ``cfg`` into folder ``out``; returns ``out``.

    Args:
        cfg: the benchmark.
        out: the result folder (``bench.json``, ``results.jsonl``, ``runs/``, ``splits/``,
            ``models/``, ``masks/``).
        options: executor, device, progress.
        on_record: called with every new record (tests use it to simulate a kill).

    Example:
        >>> run_bench(load_preset("ci"), "results/ci")
    """
    return _Runner(cfg, Path(out), options or BenchOptions(), on_record).run()


class _Runner:
    def __init__(self, cfg: BenchConfig, out: Path, opt: BenchOptions, on_record) -> None:
        self.cfg, self.out, self.opt, self.on_record = cfg, out, opt, on_record
        self.device = resolve_device(opt.device)  # a bad --device fails before any work
        self.splits: dict[tuple[str, int], Split] = {}
        self.original_dirs: dict[int, str] = {}
        self.choices: dict[str, dict[str, Any]] = {}  # final run key -> its lr choice

    # ---- orchestration -------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        bundle = load_dataset(cfg.dataset, cfg.data_root)  # missing data: a clear error now
        self.out.mkdir(parents=True, exist_ok=True)
        self.session = Session(self.out, cfg, self._session_info())
        self.store = ResultStore(self.out)
        self.executor: Executor | None = None
        status = "failed"
        try:
            self._make_splits(bundle)
            self.bar = progress(total=self._total_runs(), desc="bench", quiet=self.opt.quiet)
            self.bar.update(len(self.store))
            self.executor = make_executor(
                self.opt.executor,
                address=self.opt.ray_address,
                cpus_per_run=self.opt.cpus_per_run,
                gpus_per_run=self._gpus_per_run(),
            )
            self.session.update(**self.executor.info())
            self._stage([self._original_task(s) for s in cfg.all_seeds])
            self._stage(
                [self._retrain_task(sc.name, s) for sc in cfg.scenarios for s in cfg.all_seeds]
            )
            choices = self._search_lrs()
            self._final_runs(choices)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if hasattr(self, "bar"):
                self.bar.close()
            if self.executor is not None:
                self.executor.close()
            self.session.end(status)
        return self.out

    def _session_info(self) -> dict[str, Any]:
        return {
            "command": self.opt.command,
            "executor": self.opt.executor,
            "device_requested": self.opt.device,
            "device_name": device_name(self.device),
            "threads": self.opt.threads,
        }

    def _gpus_per_run(self) -> float:
        if self.opt.gpus_per_run is not None:
            return self.opt.gpus_per_run
        return 1.0 if self.device.type == "cuda" else 0.0

    def _total_runs(self) -> int:
        cfg = self.cfg
        n_s = len(cfg.scenarios)
        total = len(cfg.all_seeds) * (1 + n_s) + len(cfg.seeds) * n_s * len(cfg.methods)
        if cfg.tune_lr:
            total += n_s * sum(len(self._grid(m)) for m in cfg.methods)
        return total

    def _stage(self, tasks: list[Task]) -> None:
        todo = [t for t in tasks if not self.store.has(t.key)]
        if todo:
            self.executor.run(todo, self._on_done)

    def _on_done(self, task: Task, result: dict[str, Any]) -> None:
        self._add(self._record(task, result))

    def _add(self, record: dict[str, Any]) -> None:
        record = {"seq": self.store.next_seq(), **record, "finished_at": now()}
        self.store.add(record)
        self.bar.update(1)
        self.bar.set_postfix_str(record["key"])
        self.session.save()
        if self.on_record is not None:
            self.on_record(record)

    # ---- splits and tasks ----------------------------------------------------------
    def _make_splits(self, bundle) -> None:
        cfg = self.cfg
        for seed in cfg.all_seeds:
            for sc in cfg.scenarios:
                split = make_split(
                    bundle,
                    sc.kind,
                    fraction=sc.fraction,
                    count=sc.count,
                    classes=sc.classes,
                    seed=seed,
                    val_fraction=cfg.val_fraction,
                )
                path = self.out / split_file(sc.name, seed, split)
                if not path.is_file():
                    save_split(split, path)
                self.splits[(sc.name, seed)] = split
            first = self.splits[(cfg.scenarios[0].name, seed)]
            for sc in cfg.scenarios:
                # the original model trains once per seed, so every scenario must share
                # its training and validation indices (val is drawn before D_f: they do)
                s = self.splits[(sc.name, seed)]
                if not (np.array_equal(s.train, first.train) and np.array_equal(s.val, first.val)):
                    raise SalunError(f"scenario {sc.name!r} splits the training set differently")
            self.original_dirs[seed] = f"models/{original_hash(cfg, seed, first)}"

    def _base(self, kind: str, key: str, seed: int, scenario: str | None) -> dict[str, Any]:
        cfg = self.cfg
        split = self.splits[(scenario or cfg.scenarios[0].name, seed)]
        return dict(
            kind=kind,
            key=key,
            bench=cfg,
            out=str(self.out.resolve()),
            seed=seed,
            device=self.opt.device,
            quiet=self.opt.quiet or self.opt.executor != "local",
            threads=self.opt.threads,
            split_file=split_file(scenario or cfg.scenarios[0].name, seed, split),
            original_dir=self.original_dirs[seed],
            scenario=scenario,
        )

    def _original_task(self, seed: int) -> Task:
        return Task(**self._base(ORIGINAL, original_key(seed), seed, None))

    def _retrain_task(self, scenario: str, seed: int) -> Task:
        split = self.splits[(scenario, seed)]
        folder = f"models/{retrain_hash(self.cfg, seed, split, retrain_via())}"
        return Task(
            **self._base(RETRAIN, retrain_key(scenario, seed), seed, scenario), retrain_dir=folder
        )

    def _method_fields(self, m: MethodEntry) -> set[str]:
        from salun.methods import get_method

        return {f.name for f in fields(get_method(m.method).config)}

    def _field(self, m: MethodEntry) -> str:
        from salun.methods import get_method

        return grid_field(get_method(m.method).config)

    def _grid(self, m: MethodEntry) -> tuple[float, ...]:
        """The values searched for ``m`` (its config's ``lr_grid``; empty: no search)."""
        from salun.methods import make_config

        if self._field(m) not in self._method_fields(m):
            return ()
        grid = getattr(make_config(m.method, m.overrides), "lr_grid", ())
        return tuple(dict.fromkeys(float(v) for v in grid))  # a repeated value runs once

    def _unlearn_task(
        self, m: MethodEntry, scenario: str, seed: int, phase: str, lr: float | None
    ) -> Task:
        field = self._field(m)
        key = (
            tune_key(scenario, seed, m.label, field, lr)
            if phase == TUNE
            else final_key(scenario, seed, m.label)
        )
        mask = None
        if m.method == "salun":  # search runs too: the final run may reuse one of them
            mask = f"masks/{scenario}.s{seed}.{m.label}.safetensors"
        return Task(
            **self._base(UNLEARN, key, seed, scenario),
            phase=phase,
            label=m.label,
            method=m.method,
            overrides=with_seed_lr(m.overrides, self._method_fields(m), seed, field, lr),
            mask_file=mask,
        )

    # ---- learning-rate search and final runs ---------------------------------------
    def _search_lrs(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Run every lr of every grid on the search seed; choose the smallest Avg. Gap."""
        cfg = self.cfg
        choices: dict[tuple[str, str], dict[str, Any]] = {}
        if not cfg.tune_lr:
            return choices
        seed = cfg.search_seed
        tasks = [
            self._unlearn_task(m, sc.name, seed, TUNE, lr)
            for m in cfg.methods
            for sc in cfg.scenarios
            for lr in self._grid(m)
        ]
        self._stage(tasks)
        for m in cfg.methods:
            grid = self._grid(m)
            for sc in cfg.scenarios:
                if not grid:
                    continue
                by_lr = {}
                for lr in grid:
                    rec = self.store.get(tune_key(sc.name, seed, m.label, self._field(m), lr))
                    ok = rec is not None and rec["status"] == "ok"
                    by_lr[lr] = rec["avg_gap"] if ok else math.inf
                best = min(grid, key=lambda lr: (by_lr[lr], grid.index(lr)))  # ties: first
                choices[(sc.name, m.label)] = {
                    "value": best if math.isfinite(by_lr[best]) else None,
                    "field": self._field(m),
                    "source": "searched",
                    "grid": list(grid),
                    "search_seed": seed,
                    "avg_gap_by_value": {f"{lr:g}": _finite(v) for lr, v in by_lr.items()},
                }
        return choices

    def _final_runs(self, choices: dict[tuple[str, str], dict[str, Any]]) -> None:
        cfg = self.cfg
        tasks = []
        for seed in cfg.seeds:
            for sc in cfg.scenarios:
                for m in cfg.methods:
                    key = final_key(sc.name, seed, m.label)
                    if self.store.has(key):
                        continue
                    choice = choices.get((sc.name, m.label))
                    if choice is None:  # no search: the config's own lr
                        tasks.append((self._unlearn_task(m, sc.name, seed, FINAL, None), None))
                    elif choice["value"] is None:
                        self._add(self._failed_final(m, sc.name, seed, choice))
                    elif seed == cfg.search_seed:
                        self._add(self._reuse_search_run(m, sc.name, seed, choice))
                    else:
                        task = self._unlearn_task(m, sc.name, seed, FINAL, choice["value"])
                        tasks.append((task, choice))
        self.choices.update({t.key: c for t, c in tasks if c is not None})
        self._stage([t for t, _ in tasks])

    def _reuse_search_run(self, m: MethodEntry, scenario: str, seed: int, choice) -> dict:
        """The search already ran this exact config on this seed: reuse its result."""
        src = self.store.get(tune_key(scenario, seed, m.label, choice["field"], choice["value"]))
        rec = {k: v for k, v in src.items() if k not in ("seq", "finished_at", "format")}
        return {
            **rec,
            "key": final_key(scenario, seed, m.label),
            "phase": FINAL,
            "lr_choice": choice,
            "reused_from": src["key"],
        }

    def _failed_final(self, m: MethodEntry, scenario: str, seed: int, choice) -> dict:
        task = self._unlearn_task(m, scenario, seed, FINAL, None)
        err = (
            f"every value of {choice['field']} in the grid {choice['grid']} failed in the "
            f"search on seed {choice['search_seed']}"
        )
        return self._record(task, {"status": "failed", "error": err}) | {"lr_choice": choice}

    # ---- records -------------------------------------------------------------------
    def _record(self, task: Task, result: dict[str, Any]) -> dict[str, Any]:
        """A complete record: the worker's result and everything needed to read it alone."""
        orig = self.store.get(original_key(task.seed))
        split = self.splits[(task.scenario or self.cfg.scenarios[0].name, task.seed)]
        rec: dict[str, Any] = {
            "key": task.key,
            "kind": task.kind,
            "phase": task.phase,
            "scenario": task.scenario,
            "seed": task.seed,
            "method": task.label or task.kind,
            "method_name": task.method or task.kind,
            "order": self._order(task),
            "status": result.get("status", "ok"),
            "error": result.get("error"),
            "metrics": result.get("metrics", {}),
            "rte_s": result.get("rte_s"),
            "config": result.get("config"),
            "lr": (result.get("config") or {}).get("lr") if task.kind == UNLEARN else None,
            "hparam": self._hparam(task, result),
            "switches": {
                "executor": self.opt.executor,
                "device": self.opt.device,
                "tune_lr": self.cfg.tune_lr,
            },
            "split_hash": split.hash if task.kind != ORIGINAL else None,
            "split_file": task.split_file,
            "dataset": self.cfg.dataset,
            "arch": self.cfg.arch,
            "config_hash": self.cfg.hash(),
            "original": {
                "key": original_key(task.seed),
                "model": task.original_dir,
                "train_acc": (orig or result)["metrics"].get("train_acc"),
                "test_acc": (orig or result)["metrics"].get("test_acc"),
            },
            **{k: result[k] for k in ("cached", "via", "history", "best_epoch") if k in result},
        }
        worker = result.get("worker", {})
        rec.update(
            device=worker.get("device"),
            versions=worker.get("versions"),
            git_commit=worker.get("git_commit"),
            worker=worker,
        )
        if task.kind == UNLEARN:
            rec["mask_file"] = task.mask_file
            if task.phase == FINAL:
                rec["lr_choice"] = self.choices.get(task.key) or {
                    "value": rec["hparam"]["value"],
                    "field": rec["hparam"]["name"],
                    "source": "config",
                }
        rec.update(self._gap_fields(task, rec))
        return rec

    def _gap_fields(self, task: Task, rec: dict[str, Any]) -> dict[str, Any]:
        if task.kind == ORIGINAL or rec["status"] != "ok":
            return {"avg_gap": None, "gaps": None}
        ref = self.store.get(retrain_key(task.scenario, task.seed))
        metrics = rec["metrics"] if task.kind == RETRAIN else ref["metrics"]
        return {
            "avg_gap": avg_gap(rec["metrics"], metrics),
            "gaps": gaps(rec["metrics"], metrics, GAP_METRICS),
            "retrain_key": retrain_key(task.scenario, task.seed),
        }

    def _hparam(self, task: Task, result: dict[str, Any]) -> dict[str, Any] | None:
        """The searched (or searchable) setting and its value: ``lr``, or IU's ``alpha``."""
        if task.kind != UNLEARN:
            return None
        field = self._field(self.cfg.method(task.label))
        return {"name": field, "value": (result.get("config") or {}).get(field)}

    def _order(self, task: Task) -> int:
        if task.kind != UNLEARN:
            return -1
        return [m.label for m in self.cfg.methods].index(task.label)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None
