"""The work of one run, as executed by a worker (the local process or a Ray task).

Workers read inputs from the benchmark folder (split files, cached models) and return
plain dicts; only the driver writes records. Models are cached with ``save_model``
(atomic folders), so a killed run leaves either a complete model or none. On a cluster
without a shared folder the "benchmark folder" a task sees is a private scratch copy of
its inputs and the dataset comes from Ray's object store (``transfer.py``,
:func:`remote_context`); the task's code is the same.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from salun.artifacts import load_model, read_meta, save_model
from salun.bench.plan import AUDIT, ORIGINAL, RETRAIN, UNLEARN, Task, recipe_for
from salun.data import DataBundle, load_dataset, load_split
from salun.errors import SalunError
from salun.metrics import evaluate_unlearning
from salun.models import build_from_kwargs, model_kwargs_for
from salun.precision import current_policy
from salun.train import quick_accuracy, train_supervised
from salun.utils import device_name, git_commit, resolve_device, seed_everything, versions

RETRAIN_METHOD = "retrain"


# Set by remote_context while a task runs on a worker that cannot see the benchmark folder:
_SHIPPED: dict[str, Any] = {}


def bundle_for(dataset: str, root: str | None) -> DataBundle:
    """The dataset, loaded once per process (a worker runs many tasks), or the copy the
    driver shipped through Ray's object store."""
    shipped = _SHIPPED.get("bundle")
    if shipped is not None:
        return shipped
    return _loaded_bundle(dataset, root)


@functools.lru_cache(maxsize=2)
def _loaded_bundle(dataset: str, root: str | None) -> DataBundle:
    return load_dataset(dataset, root)


@contextlib.contextmanager
def remote_context(*, bench_out: str, scratch: str, bundle: DataBundle) -> Iterator[None]:
    """Run tasks whose ``out`` is ``scratch`` (a copy of their inputs) as if in
    ``bench_out``: paths recorded in model folders name the benchmark folder, and the
    dataset is ``bundle``, whatever ``dataset``/``data_root`` would load here."""
    _SHIPPED.update(bundle=bundle, alias=(scratch, bench_out))
    try:
        yield
    finally:
        _SHIPPED.clear()


def bench_path(task: Task, rel: str) -> str:
    """``rel`` inside the benchmark folder, as recorded (the driver's path, also when the
    task runs in a worker's scratch copy)."""
    scratch, bench_out = _SHIPPED.get("alias", (None, None))
    return str(Path(bench_out if task.out == scratch else task.out) / rel)


def retrain_via() -> dict[str, Any]:
    """How Retrain runs here: the registered ``retrain`` method and its config, or
    ``train_supervised`` on D_r when no such method is registered."""
    from salun.methods import list_methods, make_config

    if RETRAIN_METHOD in list_methods():
        return {"method": RETRAIN_METHOD, "config": asdict(make_config(RETRAIN_METHOD, {}))}
    return {"method": None, "trainer": "train_supervised"}


def worker_info(device: torch.device) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "host": platform.node(),
        "torch_threads": torch.get_num_threads(),
        "device_policy": current_policy().as_record(),
        "versions": versions(),
        "git_commit": git_commit(),
    }


def execute(task: Task) -> dict[str, Any]:
    """Run ``task`` and return its result (metrics, seconds, config, worker info)."""
    device = resolve_device(task.device)
    run = {
        ORIGINAL: run_original,
        RETRAIN: run_retrain,
        UNLEARN: run_unlearn,
        AUDIT: run_audit_shadow,
    }[task.kind]
    before = torch.get_num_threads()
    if task.threads:
        torch.set_num_threads(task.threads)
    try:
        out = run(task, device)
        out["worker"] = worker_info(device)
    finally:
        torch.set_num_threads(before)  # the local executor shares the caller's process
    return out


def _fresh_model(task: Task, bundle: DataBundle) -> torch.nn.Module:
    seed_everything(task.seed)  # the initialisation depends on the trial seed only
    return build_from_kwargs(_kwargs(task, bundle))


def _kwargs(task: Task, bundle: DataBundle) -> dict[str, Any]:
    return model_kwargs_for(bundle, task.bench.arch, task.bench.width)


def _cached(folder: Path) -> dict | None:
    """The bench section of a cached model's metadata, or None if not cached yet."""
    if (folder / "model.json").is_file():
        return read_meta(folder).get("bench")
    return None


def _folder_meta(task: Task, bundle, split, out: dict, recipe) -> dict[str, Any]:
    """What a cached model folder records, so `salun evaluate` / `salun unlearn` accept it."""
    return {
        "bench": out,
        "dataset": bundle.name,
        "data_spec": task.bench.dataset,
        "classes": list(bundle.classes),
        "train": asdict(recipe),
        "split_file": bench_path(task, task.split_file),
        "split_hash": split.hash,
        "seed": task.seed,
    }


def _inputs(task: Task):
    """The dataset, the split and the training recipe of a run's (scenario, seed)."""
    b = task.bench
    bundle = bundle_for(b.dataset, b.data_root)
    return bundle, load_split(task.path(task.split_file)), recipe_for(b, task.seed)


def run_original(task: Task, device: torch.device) -> dict[str, Any]:
    """Train the original model on D_f ∪ D_r (or reuse the cached one)."""
    folder = task.path(task.original_dir)
    cached = _cached(folder)
    if cached is not None:
        return {**cached, "cached": True}
    bundle, split, recipe = _inputs(task)
    train = bundle.train.subset(split.train)
    val = bundle.train.subset(split.val) if len(split.val) else None
    model = _fresh_model(task, bundle)
    t0 = time.perf_counter()
    result = train_supervised(
        model,
        train,
        recipe,
        device=device,
        val=val,
        flip_allowed=bundle.flip,
        quiet=task.quiet,
        desc=f"original s{task.seed}",
    )
    seconds = time.perf_counter() - t0
    out = {
        "metrics": {
            "train_acc": quick_accuracy(model, train, device),
            "test_acc": quick_accuracy(model, bundle.test, device),
        },
        "rte_s": seconds,
        "config": asdict(recipe),
        "history": result.history,
        "best_epoch": result.best_epoch,
    }
    save_model(folder, model, _kwargs(task, bundle), _folder_meta(task, bundle, split, out, recipe))
    return {**out, "cached": False}


def run_retrain(task: Task, device: torch.device) -> dict[str, Any]:
    """Retrain from scratch on D_r with the original recipe (or reuse the cached one)."""
    folder = task.path(task.retrain_dir)
    cached = _cached(folder)
    if cached is not None:
        return {**cached, "cached": True}
    from salun.methods import UnlearnContext, get_method, make_config, run_method

    bundle, split, recipe = _inputs(task)
    forget, retain = bundle.train.subset(split.forget), bundle.train.subset(split.retain)
    via = retrain_via()
    if via["method"]:
        spec = get_method(RETRAIN_METHOD)
        names = {f.name for f in fields(spec.config)}
        cfg = make_config(RETRAIN_METHOD, {"seed": task.seed} if "seed" in names else {})
        original, _ = load_model(task.path(task.original_dir), device)
        ctx = UnlearnContext(
            num_classes=bundle.num_classes,
            device=device,
            flip=bundle.flip,
            model_kwargs=_kwargs(task, bundle),
            original_train=asdict(recipe),
            quiet=task.quiet,
        )
        seed_everything(task.seed)
        res = run_method(RETRAIN_METHOD, original, forget, retain, cfg, ctx)
        model, seconds, config = res.model, res.seconds, asdict(cfg)
    else:
        model = _fresh_model(task, bundle)
        t0 = time.perf_counter()
        train_supervised(
            model,
            retain,
            recipe,
            device=device,
            flip_allowed=bundle.flip,
            quiet=task.quiet,
            desc=f"retrain {task.scenario} s{task.seed}",
        )
        seconds, config = time.perf_counter() - t0, asdict(recipe)
    out = {
        "metrics": evaluate_unlearning(
            model, bundle, split, device=device, mia_features=task.bench.mia_features
        ),
        "rte_s": seconds,
        "config": config,
        "via": via["method"] or via["trainer"],
    }
    # the starting point on the same split, evaluated the same way: the report's Original row
    start, _ = load_model(task.path(task.original_dir), device)
    out["original_metrics"] = evaluate_unlearning(
        start, bundle, split, device=device, mia_features=task.bench.mia_features
    )
    save_model(folder, model, _kwargs(task, bundle), _folder_meta(task, bundle, split, out, recipe))
    return {**out, "cached": False}


def run_unlearn(task: Task, device: torch.device) -> dict[str, Any]:
    """Run one unlearning method from the original model and evaluate it.

    Whatever goes wrong inside the run (the loss diverging at a large lr in the search,
    a model whose outputs turned NaN, a bug in one method) is returned as ``status:
    failed`` with its reason, instead of stopping the whole benchmark: one bad run costs
    one record, and a resumed bench does not die on it again. Only Ctrl-C stops it.
    """
    from salun.methods import make_config

    cfg = make_config(task.method, task.overrides)  # checked before the bench started
    try:
        return _unlearn_and_evaluate(task, cfg, device)
    except SalunError as e:
        return {"status": "failed", "error": str(e), "config": asdict(cfg)}
    except Exception as e:  # a bug in one method: recorded with its traceback, not fatal
        return {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(limit=-8),
            "config": asdict(cfg),
        }


def _unlearn_and_evaluate(task: Task, cfg: Any, device: torch.device) -> dict[str, Any]:
    from salun.methods import UnlearnContext, run_method

    b = task.bench
    bundle = bundle_for(b.dataset, b.data_root)
    split = load_split(task.path(task.split_file))
    forget, retain = bundle.train.subset(split.forget), bundle.train.subset(split.retain)
    original, _ = load_model(task.path(task.original_dir), device)
    ctx = UnlearnContext(
        num_classes=bundle.num_classes,
        device=device,
        flip=bundle.flip,
        model_kwargs=_kwargs(task, bundle),
        original_train=asdict(recipe_for(b, task.seed)),
        quiet=task.quiet,
    )
    res = run_method(task.method, original, forget, retain, cfg, ctx)
    # evaluation refuses NaN/inf outputs (check_finite_logits): a failed run, not a crash
    metrics = evaluate_unlearning(
        res.model, bundle, split, device=device, mia_features=b.mia_features
    )
    if task.mask_file and not task.path(task.mask_file).is_file():
        save_salun_mask(task, original, forget, cfg, ctx, split.hash)
    return {"status": "ok", "metrics": metrics, "rte_s": res.seconds, "config": asdict(cfg)}


def save_salun_mask(task: Task, original, forget, cfg, ctx, split_hash: str) -> None:
    """Save the mask SalUn used (same function, config and seed), for the report's
    layer-wise plot. SalUn computes its mask inside the timed run (RTE includes it, as in
    the paper); this copy is recomputed outside the timing, once per scenario and seed."""
    from salun.methods.rl import forget_saliency_mask
    from salun.saliency import model_fingerprint, save_mask

    mask = forget_saliency_mask(original, forget, cfg, ctx)
    save_mask(
        task.path(task.mask_file),
        mask,
        model_fingerprint=model_fingerprint(original),
        keep=cfg.keep,
        scope=cfg.scope,
        split_hash=split_hash,
        scenario=task.scenario,
        seed=task.seed,
    )


def run_audit_shadow(task: Task, device: torch.device) -> dict[str, Any]:
    """Every missing record of one audit shadow pair k (docs/audit.md).

    Unlike the other runs, this one writes its results itself: the audit's per-shadow
    files (``<audit_dir>/records/s<k>/*.json``, ``shadows/s<k>/original/``), atomically.
    Each k is one task, so no two tasks write the same file; the driver writes
    ``audit.json`` before and the summary after.
    """
    from salun.audit import AuditStore
    from salun.audit.workflow import audit_inputs, run_shadow, shadow_done

    cfg = task.audit
    store = AuditStore(task.path(task.audit_dir))  # no cfg: read-only, the driver owns audit.json
    t0 = time.perf_counter()
    if shadow_done(cfg, store, task.shadow):
        return {"status": "ok", "cached": True, "rte_s": 0.0}
    bundle, forget = audit_inputs(cfg, bundle_for(cfg.dataset, cfg.data_root))
    run_shadow(cfg, store, bundle, forget, task.shadow, device, task.quiet)
    return {"status": "ok", "cached": False, "rte_s": time.perf_counter() - t0}
