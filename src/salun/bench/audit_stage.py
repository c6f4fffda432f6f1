"""The benchmark's audit column: after the final runs, one audit per audited scenario.

Each audited scenario gets ONE audit folder, ``<out>/audit/<scenario>/``, whose K shadow
pairs are shared by every row: the original, an independent Retrain, and each benchmark
method at the value each reported protocol ran it with (``salun.paper``, ``salun.tuned``;
one row ``salun.paper+tuned`` when both ran the same config). The audit's data, recipe and
seed come from the benchmark (its dataset spec, architecture, width, original recipe, the
scenario's forget fraction or count, its first reported seed).

The shadows run through the benchmark's executor, one ``audit`` task per shadow k, so Ray
runs them in parallel. Each task writes the audit's own per-shadow files (never another
shadow's); the driver writes ``audit.json`` before and ``summary.json`` / ``report.md``
after. A shadow whose records all exist is not run again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from salun.audit.config import ORIGINAL, RETRAIN, AuditConfig
from salun.bench.config import BenchConfig
from salun.bench.plan import AUDIT, TUNED, Task, audit_key, grid_field, method_overrides
from salun.errors import SalunError

AUDIT_DIR = "audit"
Row = tuple[str, str, dict]


def audit_dir(scenario: str) -> str:
    return f"{AUDIT_DIR}/{scenario}"


def audit_rows(
    cfg: BenchConfig, scenario: str, choices: Mapping[tuple[str, str], dict] | None = None
) -> tuple[tuple[Row, ...], dict[str, dict[str, Any]]]:
    """The audit's rows for ``scenario`` and what each is in the benchmark.

    Args:
        cfg: the benchmark.
        scenario: an audited scenario.
        choices: the tuned protocol's choices (``{(scenario, label): lr_choice}``, as the
            runner's search returns them); None: not known yet (the pre-check), the paper
            configs stand in for the tuned ones.

    Returns:
        ``(rows, info)``: rows ``(label, method, overrides)`` for ``AuditConfig.methods``,
        and per label ``{method, method_name, protocols, field, value}``.
    """
    from salun.methods import get_method, make_config

    rows: list[Row] = [(ORIGINAL, ORIGINAL, {}), (RETRAIN, RETRAIN, {})]
    info: dict[str, dict[str, Any]] = {
        ORIGINAL: {"method": ORIGINAL, "protocols": []},
        RETRAIN: {"method": RETRAIN, "protocols": []},
    }
    for m in cfg.methods:
        config_cls = get_method(m.method).config
        names = {f.name for f in fields(config_cls)} - {"seed"}  # the seed is the shadow's
        field = grid_field(config_cls)
        variants: list[tuple[list[str], dict, dict]] = []
        for protocol in cfg.protocols:
            value = None
            if protocol == TUNED and choices is not None:
                choice = choices.get((scenario, m.label))
                if choice is not None:
                    if choice["value"] is None:  # every searched value failed: no final run
                        continue
                    value = choice["value"]
            over = method_overrides(m.overrides, names, 0, field, value)
            conf = asdict(make_config(m.method, over))
            same = next((v for v in variants if v[2] == conf), None)
            if same is not None:  # the two protocols ran the same config: one row
                same[0].append(protocol)
            else:
                variants.append(([protocol], over, conf))
        for protocols, over, conf in variants:
            label = f"{m.label}.{'+'.join(protocols)}"
            rows.append((label, m.method, over))
            info[label] = {
                "method": m.label,
                "method_name": m.method,
                "protocols": protocols,
                "field": field,
                "value": conf.get(field),
            }
    return tuple(rows), info


def audit_config(cfg: BenchConfig, scenario: str, rows: tuple[Row, ...]) -> AuditConfig:
    """The audit of ``scenario``, built from the benchmark (see module docstring)."""
    col = cfg.audit
    sc = cfg.scenario(scenario)
    if cfg.original.val_best:
        raise SalunError(
            "audit: the original recipe keeps its best validation epoch (val_best: true); the "
            "audit's shadows have no validation set: set val_best: false or drop audit"
        )
    return AuditConfig(
        name=f"{cfg.name}.{scenario}",
        dataset=cfg.dataset,
        arch=cfg.arch,
        original=cfg.original,
        methods=rows,
        width=cfg.width,
        data_root=cfg.data_root,
        forget_fraction=sc.fraction,
        forget_count=sc.count,
        shadows=col.shadows,
        seed=cfg.seeds[0],
        variance=col.variance,
        location=col.location,
        queries=col.queries,
        bootstrap=col.bootstrap,
        description=f"The audit column of benchmark {cfg.name!r}, scenario {scenario}.",
    )


def check_audits(cfg: BenchConfig, bundle) -> None:
    """Before anything is written: every audit's config builds and its D_f fits the data."""
    from salun.audit.workflow import check_queries, forget_indices

    if cfg.audit is None:
        return
    for scenario in cfg.audit.scenarios:
        acfg = audit_config(cfg, scenario, audit_rows(cfg, scenario)[0])
        forget_indices(acfg, len(bundle.train))
        check_queries(acfg, bundle.flip)


def audit_task_count(cfg: BenchConfig) -> int:
    return 0 if cfg.audit is None else cfg.audit.shadows * len(cfg.audit.scenarios)


def run_audits(
    cfg: BenchConfig,
    out: Path,
    choices: Mapping[tuple[str, str], dict],
    executor,
    log,
    task_fields: dict[str, Any],
    command: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run (or resume) every audited scenario's shadows through ``executor`` and write
    each audit's summary; returns ``{scenario: summary}``.

    Args:
        cfg: the benchmark (``cfg.audit`` set).
        out: the benchmark folder.
        choices: the tuned protocol's choices (see :func:`audit_rows`).
        executor: the benchmark's executor (``run(tasks, on_done)``).
        log: the benchmark's ``RunLog``.
        task_fields: ``Task`` fields shared by every task (device, quiet, threads, out).
        command: the benchmark's command line, recorded in the summaries.
    """
    import torch

    from salun.audit import AuditStore
    from salun.audit.workflow import shadow_done, write_summary
    from salun.utils import versions

    plans = []
    for scenario in cfg.audit.scenarios:
        rows, info = audit_rows(cfg, scenario, choices)
        acfg = audit_config(cfg, scenario, rows)
        store = AuditStore(out / audit_dir(scenario), acfg)  # the driver writes audit.json
        plans.append((scenario, acfg, store, info))
    tasks, finished = [], 0
    for scenario, acfg, store, _ in plans:
        for k in range(acfg.shadows):
            if shadow_done(acfg, store, k):
                finished += 1
                continue
            tasks.append(
                Task(
                    **task_fields,
                    kind=AUDIT,
                    key=audit_key(scenario, k),
                    bench=cfg,
                    seed=cfg.seeds[0],
                    scenario=scenario,
                    audit=acfg,
                    audit_dir=audit_dir(scenario),
                    shadow=k,
                )
            )
    log.done += finished  # finished shadows count as done runs (they are not records)
    if finished:
        log.say(f"audit: {finished} finished shadow pair(s) skipped, {len(tasks)} to do")
    t0 = time.perf_counter()
    if tasks:
        log.start_stage(AUDIT, len(tasks))
        executor.run(
            tasks, lambda t, r: log.finished(t.key, r.get("status", "ok"), cached=r["cached"])
        )
    run = {
        "seconds_this_session": time.perf_counter() - t0,
        "torch_threads": task_fields.get("threads") or torch.get_num_threads(),
        "versions": versions(),
        "command": command,
    }
    out_summaries = {}
    for scenario, acfg, store, info in plans:
        extra = {"bench": {"name": cfg.name, "scenario": scenario, "rows": info}}
        out_summaries[scenario] = write_summary(acfg, store, run, extra)
    return out_summaries
