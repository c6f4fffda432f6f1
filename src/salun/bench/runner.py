"""The benchmark driver: splits, then stage by stage original → Retrain → (lr search on the
tuning seeds) → final runs per protocol (``paper``, then ``tuned``; see docs/benchmarks.md).

Every run has a unique key; a run whose record exists is skipped, so rerunning the same
command after a kill resumes where it stopped and ends with exactly one record per run.
Models (original, Retrain) are cached under ``models/<hash>/`` and reused.

Before anything is written, the whole grid is checked: every method config the grid will
build (each searched value, each seed), the recipes, the architecture, the splits. Only
then is the folder claimed and locked (one writer per folder, see ``lock.py``): a bad
config leaves no folder, and no ``bench.json`` tying a folder to it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from salun.bench.audit_stage import audit_task_count, check_audits, run_audits
from salun.bench.config import BenchConfig, MethodEntry
from salun.bench.executors import EXECUTORS, RAY_FILES, Executor, make_executor
from salun.bench.folder import claim_bench_folder
from salun.bench.lock import BenchLock, describe_holder, report_lock
from salun.bench.plan import (
    FINAL,
    ORIGINAL,
    PAPER,
    RETRAIN,
    TUNE,
    TUNED,
    UNLEARN,
    Task,
    choose_value,
    count_runs,
    final_key,
    grid_field,
    original_hash,
    original_key,
    recipe_for,
    retrain_hash,
    retrain_key,
    search_grid,
    split_file,
    tune_key,
    widened,
)
from salun.bench.plan import method_overrides as with_seed_lr
from salun.bench.runlog import RunLog, stage_plan
from salun.bench.session import Session, check_same_config, now
from salun.bench.store import ResultStore
from salun.bench.tasks import retrain_via
from salun.config_cli import option
from salun.data import Split, load_dataset, make_split, save_split
from salun.errors import SalunError
from salun.methods.plugins import plugin_record
from salun.metrics import GAP_METRICS, avg_gap, gaps
from salun.utils import device_name, resolve_device
from salun.validate import check_threads

OnRecord = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class BenchOptions:
    """How to run (never changes results, so not part of the config hash). ``salun bench``
    takes its flags from these fields (the descriptions below are their help).

    Attributes:
        executor: local (default) or ray
        ray_address: an existing Ray cluster (default: a local 2-CPU one)
        ray_files: Ray: how workers get a run's files: object-store (through Ray; no
            shared folder needed), shared (the --out folder at the same path on every
            node) or auto (default: shared for a local Ray, object-store with
            --ray-address)
        device: auto (default), cpu or cuda[:N]
        quiet: no progress bars or per-run lines
        cpus_per_run: Ray: CPUs per run (default 1)
        gpus_per_run: Ray: GPUs per run (default: 1 on CUDA)
        threads: torch CPU threads per run (default: torch's; Ray workers get
            --cpus-per-run); 1 is much faster for small models on a busy machine
        command: the exact command line, recorded for the report.
        report: write ``report.md`` / ``report.html`` at the end of a finished run, while
            still holding the folder's lock.
    """

    executor: str = option("local", choices=EXECUTORS)
    ray_address: str | None = None
    ray_files: str = option("auto", choices=RAY_FILES)
    device: str = "auto"
    quiet: bool = False
    cpus_per_run: float = 1
    gpus_per_run: float | None = None
    threads: int | None = None
    command: str | None = None
    report: bool = False


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

    Raises:
        SalunError: a bad config (before anything is written), ``out`` not a benchmark
            folder, another process running a benchmark in ``out``, another config's
            results in ``out``.

    Example:
        >>> run_bench(load_preset("ci"), "results/ci")
    """
    return _Runner(cfg, Path(out), options or BenchOptions(), on_record).run()


class _Runner:
    def __init__(self, cfg: BenchConfig, out: Path, opt: BenchOptions, on_record) -> None:
        self.cfg, self.out, self.opt, self.on_record = cfg, out, opt, on_record
        self.device = resolve_device(opt.device)  # a bad --device fails before any work
        if opt.threads is not None:
            check_threads("threads", opt.threads)  # at most the CPUs: 100000 segfaulted
        self.splits: dict[tuple[str, int], Split] = {}
        self.original_dirs: dict[int, str] = {}
        self.choices: dict[str, dict[str, Any]] = {}  # final run key -> its lr choice

    # ---- orchestration -------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        self._check_grid()  # every config the grid builds: a bad one fails before any write
        bundle = load_dataset(cfg.dataset, cfg.data_root)  # missing data: a clear error now
        self._plan_splits(bundle)
        self._check_model(bundle)
        check_audits(cfg, bundle)  # the audit column's configs and forget sets, before writes
        check_same_config(self.out, cfg)  # early, read-only; checked again under the lock
        data = [cfg.data_root, cfg.dataset if ":" in cfg.dataset else None]  # npz:PATH...
        created = claim_bench_folder(self.out, inputs=data)
        lock = BenchLock(self.out, command=self.opt.command, started_at=now())
        lock.acquire()  # busy: exits naming the holder (a folder made here stays, empty)
        try:
            self._run_locked(created, lock)
        finally:
            lock.release()
        return self.out

    def _run_locked(self, created: bool, lock: BenchLock) -> None:
        cfg = self.cfg
        self.executor: Executor | None = None
        try:  # before the session: an unreachable Ray cluster leaves a new folder unmade
            self.executor = make_executor(
                self.opt.executor,
                address=self.opt.ray_address,
                cpus_per_run=self.opt.cpus_per_run,
                gpus_per_run=self._gpus_per_run(),
                files=self.opt.ray_files,
            )
            self.session = Session(self.out, cfg, self._session_info())
        except BaseException:
            if self.executor is not None:
                self.executor.close()
            _discard_new_folder(self.out, created, lock)
            raise
        self.store = ResultStore(self.out)
        self.log = RunLog(
            self._total_runs(), len(self.store), quiet=self.opt.quiet, plan=stage_plan(self.cfg)
        )
        if lock.stale:
            self.log.say(f"took over the lock of a run that died ({describe_holder(lock.stale)})")
        if self.session.died:
            self.log.say(f"{self.session.died} earlier session(s) marked died in bench.json")
        self.log.skipped()
        status = "failed"
        try:
            self._save_splits()
            self.session.update(**self.executor.info())
            self._stage([self._original_task(s) for s in cfg.all_seeds])
            self._stage(
                [self._retrain_task(sc.name, s) for sc in cfg.scenarios for s in cfg.all_seeds]
            )
            # the paper protocol needs no search: its runs come first, so a long bench
            # has every seed's published-setting results before the search's many runs
            if PAPER in cfg.protocols:
                self._protocol_runs(PAPER, {})
            choices = self._search_lrs()
            if TUNED in cfg.protocols:
                self._protocol_runs(TUNED, choices)
            if cfg.audit is not None:
                self._audit_runs(choices)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self.log.close()
            self.executor.close()
            self.session.end(status)
        if self.opt.report:
            from salun.report import write_report

            with report_lock(self.out):
                write_report(self.out)

    def _session_info(self) -> dict[str, Any]:
        return {
            "command": self.opt.command,
            "executor": self.opt.executor,
            "device_requested": self.opt.device,
            "device_name": device_name(self.device),
            "threads": self.opt.threads,
        }

    # ---- checks before anything is written ------------------------------------------
    def _check_grid(self) -> None:
        """Build every config the runs will build: recipes, Retrain's, and each method's
        for every seed and every searched value, so that a bad value (``lr_grid: [-1]``)
        stops the benchmark before anything trains or is written."""
        from salun.methods import make_config

        cfg = self.cfg
        for seed in cfg.all_seeds:
            _checked(f"original (seed {seed})", lambda seed=seed: recipe_for(cfg, seed))
        _checked("Retrain", retrain_via)
        for m in cfg.methods:
            field, names = self._field(m), self._method_fields(m)
            grid = _checked(f"method {m.label!r}", lambda m=m: self._grid(m))
            for value in grid:
                if not math.isfinite(value) or value <= 0:
                    raise SalunError(
                        f"method {m.label!r}: every {field} of its lr_grid must be a finite "
                        f"positive number, got {value}"
                    )
            values = (None, *grid) if cfg.tune_lr else (None,)
            for seed in cfg.all_seeds:
                for v in values:
                    overrides = with_seed_lr(m.overrides, names, seed, field, v)
                    where = f"method {m.label!r}" + (f" with {field}={v:g}" if v else "")
                    _checked(where, lambda m=m, o=overrides: make_config(m.method, o))

    def _check_model(self, bundle) -> None:
        """The architecture builds for this dataset (on the meta device: no memory)."""
        import torch

        from salun.models import build_from_kwargs, model_kwargs_for

        with torch.device("meta"):
            build_from_kwargs(model_kwargs_for(bundle, self.cfg.arch, self.cfg.width))

    def _threads(self) -> int:
        import torch

        return self.opt.threads or torch.get_num_threads()

    def _gpus_per_run(self) -> float:
        if self.opt.gpus_per_run is not None:
            return self.opt.gpus_per_run
        return 1.0 if self.device.type == "cuda" else 0.0

    def _total_runs(self) -> int:
        return count_runs(self.cfg) + audit_task_count(self.cfg)

    def _audit_runs(self, choices: dict[tuple[str, str], dict[str, Any]]) -> None:
        """The audit column: one shared set of shadows per audited scenario (audit_stage)."""
        fields_ = self._base(ORIGINAL, "", self.cfg.seeds[0], None)
        shared = {k: fields_[k] for k in ("out", "device", "quiet", "threads")}
        run_audits(self.cfg, self.out, choices, self.executor, self.log, shared, self.opt.command)

    def _stage(self, tasks: list[Task]) -> None:
        """Run the tasks not recorded yet (one stage: the log's ETA is per stage)."""
        todo = [t for t in tasks if not self.store.has(t.key)]
        if todo:
            self.log.start_stage(_stage_name(todo[0]), len(todo))
            self.executor.run(todo, self._on_done)

    def _on_done(self, task: Task, result: dict[str, Any]) -> None:
        self._add(self._record(task, result), ran=True, cached=bool(result.get("cached")))

    def _add(self, record: dict[str, Any], *, ran: bool = False, cached: bool = False) -> None:
        """Store a record; ``ran``: it comes from an executed task (else it was derived,
        e.g. reused from an identical run, and takes no time)."""
        record = {"seq": self.store.next_seq(), **record, "finished_at": now()}
        self.store.add(record)
        status = record["status"]
        if record.get("reused_from"):
            status += f", reuses {record['reused_from']}"
        if ran:
            self.log.finished(
                record["key"], status, cached=cached, run_s=record.get("rte_s"),
                error=record.get("error") if record["status"] != "ok" else None,
            )  # fmt: skip
        else:
            self.log.derived(record["key"], status)
        self.session.save()
        if self.on_record is not None:
            self.on_record(record)

    # ---- splits and tasks ----------------------------------------------------------
    def _plan_splits(self, bundle) -> None:
        """Every split, in memory (saved by :meth:`_save_splits` once the folder is ours)."""
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
                self.splits[(sc.name, seed)] = split
            first = self.splits[(cfg.scenarios[0].name, seed)]
            for sc in cfg.scenarios:
                # the original model trains once per seed, so every scenario must share
                # its training and validation indices (val is drawn before D_f: they do)
                s = self.splits[(sc.name, seed)]
                if not (np.array_equal(s.train, first.train) and np.array_equal(s.val, first.val)):
                    raise SalunError(f"scenario {sc.name!r} splits the training set differently")
            self.original_dirs[seed] = f"models/{original_hash(cfg, seed, first)}"

    def _save_splits(self) -> None:
        for (scenario, seed), split in self.splits.items():
            path = self.out / split_file(scenario, seed, split)
            if not path.is_file():
                save_split(split, path)

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
        """The values the tuned protocol searches for ``m`` (empty: no search)."""
        return search_grid(m)

    def _unlearn_task(
        self,
        m: MethodEntry,
        scenario: str,
        seed: int,
        phase: str,
        lr: float | None,
        protocol: str | None = None,
    ) -> Task:
        field = self._field(m)
        key = (
            tune_key(scenario, seed, m.label, field, lr)
            if phase == TUNE
            else final_key(scenario, seed, m.label, protocol)
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
        """Run every value of every grid on every tuning seed; per (scenario, method) choose
        the value with the smallest mean Avg. Gap over those seeds (``choose_value``).

        With ``grid_extend: K`` a choice at an end of its grid adds the next log step
        beyond that end (``widened``), runs it, and chooses again, up to K times per
        (scenario, method): the search brackets each method's best instead of stopping at
        the edge. Every added value is a search run like the others (resumable, recorded).
        """
        cfg = self.cfg
        if not cfg.tune_lr:
            return {}
        grids = {
            (sc.name, m.label): self._grid(m)
            for m in cfg.methods
            for sc in cfg.scenarios
            if self._grid(m)
        }
        todo = dict(grids)
        choices: dict[tuple[str, str], dict[str, Any]] = {}
        for widening in range(cfg.grid_extend + 1):
            # a stage skips the runs already recorded: only new values run after the first
            self._stage(
                [
                    self._unlearn_task(cfg.method(label), scenario, seed, TUNE, lr)
                    for (scenario, label), grid in todo.items()
                    for seed in cfg.search_seeds
                    for lr in grid
                ]
            )
            todo = {}
            for (scenario, label), grid in grids.items():
                choice = self._choose(scenario, cfg.method(label), grid)
                choices[(scenario, label)] = choice
                if choice["at_edge"] and widening < cfg.grid_extend:
                    grids[(scenario, label)] = widened(grid, choice["at_edge"])
                    todo[(scenario, label)] = grids[(scenario, label)]
            if not todo:
                break
        return choices

    def _choose(self, scenario: str, m: MethodEntry, grid: tuple[float, ...]) -> dict:
        """The search's choice over ``grid`` from the recorded search runs."""
        field = self._field(m)
        gaps: dict[float, dict[int, float | None]] = {}
        for lr in grid:
            for seed in self.cfg.search_seeds:
                rec = self.store.get(tune_key(scenario, seed, m.label, field, lr))
                ok = rec is not None and rec["status"] == "ok"
                gaps.setdefault(lr, {})[seed] = rec["avg_gap"] if ok else None
        return choose_value(grid, gaps, field=field, tune_seeds=self.cfg.search_seeds)

    def _protocol_runs(self, protocol: str, choices: dict[tuple[str, str], dict]) -> None:
        cfg = self.cfg
        tasks = []
        for seed in cfg.seeds:
            for sc in cfg.scenarios:
                for m in cfg.methods:
                    key = final_key(sc.name, seed, m.label, protocol)
                    if self.store.has(key):
                        continue
                    choice = choices.get((sc.name, m.label))
                    if choice is not None and choice["value"] is None:
                        self._add(self._failed_final(m, sc.name, seed, choice, protocol))
                        continue
                    value = None if choice is None else choice["value"]
                    task = self._unlearn_task(m, sc.name, seed, FINAL, value, protocol)
                    twin = self._identical_run(task, m, sc.name, seed, choice)
                    if twin is not None:
                        self._add(self._reuse(twin, task, choice))
                    else:
                        tasks.append((task, choice))
        self.choices.update({t.key: c for t, c in tasks if c is not None})
        self._stage([t for t, _ in tasks])

    def _identical_run(self, task: Task, m: MethodEntry, scenario: str, seed: int, choice):
        """A finished record of exactly ``task``'s config on its seed, or None."""
        if choice is not None and seed in self.cfg.search_seeds:  # legacy: reported seed
            field, value = choice["field"], choice["value"]
            return self.store.get(tune_key(scenario, seed, m.label, field, value))
        if task.key.startswith(f"{FINAL}.{TUNED}.") and PAPER in self.cfg.protocols:
            twin = self.store.get(final_key(scenario, seed, m.label, PAPER))
            if twin is not None and twin.get("status") == "ok":
                paper = self._unlearn_task(m, scenario, seed, FINAL, None, PAPER)
                if paper.overrides == task.overrides:
                    return twin
        return None

    def _reuse(self, src: dict, task: Task, choice) -> dict:
        """The same config already ran on this seed: reuse its result under ``task.key``."""
        rec = {k: v for k, v in src.items() if k not in ("seq", "finished_at", "format")}
        return {
            **rec,
            "key": task.key,
            "phase": FINAL,
            "protocol": task.key.split(".")[1],
            "lr_choice": choice or self._config_choice(rec),
            "reused_from": src["key"],
        }

    @staticmethod
    def _config_choice(rec: dict) -> dict:
        hp = rec.get("hparam") or {}
        return {"value": hp.get("value"), "field": hp.get("name", "lr"), "source": "config"}

    def _failed_final(self, m: MethodEntry, scenario: str, seed: int, choice, protocol) -> dict:
        task = self._unlearn_task(m, scenario, seed, FINAL, None, protocol)
        err = (
            f"every value of {choice['field']} in the grid {choice['grid']} failed in the "
            f"search on seeds {choice.get('tune_seeds') or choice.get('search_seed')}"
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
            "protocol": task.key.split(".")[1] if task.phase == FINAL else None,
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
                "threads": self.opt.threads,
                "tune_lr": self.cfg.tune_lr,
                "protocols": list(self.cfg.protocols),
                "tune_seeds": list(self.cfg.search_seeds),
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
            **{
                k: result[k]
                for k in ("cached", "via", "history", "best_epoch", "traceback", "original_metrics")
                if k in result
            },
        }
        worker = result.get("worker", {})
        rec.update(
            # where it ran: results depend on the thread count (float reduction order).
            # A record made without a worker (a failed search) gets the driver's values.
            device=worker.get("device") or device_name(self.device),
            torch_threads=worker.get("torch_threads") or self._threads(),
            versions=worker.get("versions"),
            git_commit=worker.get("git_commit"),
            worker=worker,
        )
        if task.kind == UNLEARN:
            rec["mask_file"] = task.mask_file
            if plugin := plugin_record(task.method):  # a method of the user's own module
                rec["plugin"] = plugin
            if task.phase == FINAL:
                rec["lr_choice"] = self.choices.get(task.key) or self._config_choice(rec)
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


def _stage_name(task: Task) -> str:
    """``original``, ``retrain``, ``tune``, or ``final`` (+ the protocol when named)."""
    if task.kind != UNLEARN:
        return task.kind
    if task.phase == FINAL and task.key.count(".") >= 4:  # final.<protocol>.<sc>.s<n>.<m>
        return f"{FINAL} {task.key.split('.')[1]}"
    return task.phase or UNLEARN


def _checked(where: str, build: Callable[[], Any]) -> Any:
    """``build()``, its config error prefixed with where it comes from."""
    try:
        return build()
    except (SalunError, TypeError, ValueError) as e:  # a dataclass's own type/value checks
        raise SalunError(f"{where}: {e}") from None


def _discard_new_folder(out: Path, created: bool, lock: BenchLock) -> None:
    """Undo a folder this run created, when it fails before writing anything into it
    (removed while still locked, so no other run can have started writing into it)."""
    if created and all(p.name == lock.path.name for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)
    lock.release()
