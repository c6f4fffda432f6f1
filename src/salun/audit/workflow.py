"""The audit workflow: shadow pairs, methods on them, one record per (method, shadow).

Layout of an audit folder::

    audit.json                    the config and the hash the shadows depend on
    shadows/s<k>/original/        the shadow original O_k (a model folder, safetensors)
    records/s<k>/<label>.json     φ on D_f (and on its mirror images with ``queries:
                                  mirror``) and the paper's metrics of one model
    summary.json, report.md       rebuilt from the records at the end

Shadow k draws a random half H_k of the subset without D_f (its own seed); O_k trains on
D_f ∪ H_k, the reference Retrain R_k on H_k with the same recipe and seed (it differs from
O_k only in the data), and each method unlearns D_f from O_k with D_r = H_k. Every record
is written atomically; a rerun skips finished records and finished originals, so a killed
audit resumes, and adding a method or raising K reuses all earlier shadows.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salun.artifacts import load_model, save_model
from salun.audit.config import ORIGINAL, RETRAIN, AuditConfig
from salun.data import DataBundle, ImageDataset, Split, load_dataset, make_bundle
from salun.errors import SalunError
from salun.io import atomic_write_json, to_jsonable
from salun.metrics import evaluate_unlearning, predict_logits
from salun.metrics.audit import (
    audit_summary,
    lira_scores,
    logit_confidence,
    power_warnings,
)
from salun.models import build_from_kwargs, model_kwargs_for
from salun.train import train_supervised
from salun.utils import seed_everything, versions

FORMAT = "salun-audit-1"
RECORD_FORMAT = "salun-audit-record-1"
REFERENCE = "_reference"  # the record name of R_k (not a method row)
INDEPENDENT_SEED_OFFSET = 7919  # the null row's Retrain: another init and batch order
# not a setting: a deliberate departure from U-LiRA's fresh forget set per shadow (docs/audit.md)
FORGET_PROTOCOL = "fixed D_f, leave one pair out"


def audit_bundle(cfg: AuditConfig, full: DataBundle | None = None) -> DataBundle:
    """The dataset cut to ``subset`` training and ``test_subset`` test examples (seeded)."""
    if full is None:
        full = load_dataset(cfg.dataset, cfg.data_root)
    rng = np.random.default_rng([cfg.seed, 0])

    def pick(n_all: int, n: int | None) -> np.ndarray:
        if n is None or n >= n_all:
            return np.arange(n_all)
        return np.sort(rng.choice(n_all, n, replace=False))

    train = full.train.subset(pick(len(full.train), cfg.subset))
    test = full.test.subset(pick(len(full.test), cfg.test_subset))
    name = f"{full.name}-audit"
    return make_bundle(
        name, train, test, full.classes, flip=full.flip, mean=full.mean, std=full.std
    )


def forget_indices(cfg: AuditConfig, n_train: int) -> np.ndarray:
    """The fixed target forget set D_f: positions into the subset's training set."""
    count = cfg.forget_count
    if count is None:
        count = int(round(cfg.forget_fraction * n_train))
    if not 0 < count < n_train - 1:
        raise SalunError(f"the forget set must hold 1..{n_train - 2} examples, got {count}")
    rng = np.random.default_rng([cfg.seed, 1])
    return np.sort(rng.choice(n_train, count, replace=False)).astype(np.int64)


def shadow_seed(cfg: AuditConfig, k: int) -> int:
    return cfg.seed * 100_003 + k


def shadow_split(cfg: AuditConfig, bundle: DataBundle, forget: np.ndarray, k: int) -> Split:
    """Shadow k's split: D_f and a random half H_k of the rest as D_r."""
    pool = np.setdiff1d(np.arange(len(bundle.train), dtype=np.int64), forget)
    rng = np.random.default_rng([cfg.seed, 2, k])
    half = np.sort(rng.choice(pool, len(pool) // 2, replace=False)).astype(np.int64)
    return Split(
        dataset=bundle.name,
        scenario="random",
        forget=forget,
        retain=half,
        val=np.zeros(0, np.int64),
        classes=(),
        seed=shadow_seed(cfg, k),
        n_train=len(bundle.train),
    )


class AuditStore:
    """The records of one audit folder (one JSON file per model, atomic writes)."""

    def __init__(self, root: str | Path, cfg: AuditConfig | None = None) -> None:
        self.root = Path(root)
        head = self.root / "audit.json"
        if cfg is not None:
            if head.is_file():
                old = json.loads(head.read_text())
                if old.get("shadow_hash") != cfg.shadow_hash():
                    raise SalunError(
                        f"{self.root} holds an audit with other shadows (dataset, subset, "
                        "forget set, recipe or seed differ); use another --out"
                    )
            atomic_write_json(
                head, {"format": FORMAT, "config": asdict(cfg), "shadow_hash": cfg.shadow_hash()}
            )
        elif not head.is_file():
            raise SalunError(f"{self.root} holds no audit (no audit.json)")

    def record_path(self, k: int, label: str) -> Path:
        return self.root / "records" / f"s{k}" / f"{label}.json"

    def get(self, k: int, label: str) -> dict | None:
        p = self.record_path(k, label)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SalunError(f"{p} is corrupted ({e}); delete it to rerun that model") from None
        if rec.get("format") != RECORD_FORMAT:
            raise SalunError(f"{p} is not a salun audit record; delete it")
        return rec

    def put(self, k: int, label: str, rec: dict) -> None:
        atomic_write_json(self.record_path(k, label), {"format": RECORD_FORMAT, **rec})

    def original_dir(self, k: int) -> Path:
        return self.root / "shadows" / f"s{k}" / "original"


def check_queries(cfg: AuditConfig, flip_allowed: bool) -> None:
    """Mirror queries only where a horizontal flip keeps an image valid (not digits)."""
    if cfg.queries == "mirror" and not flip_allowed:
        raise SalunError(
            f"queries: mirror flips each forget image, but {cfg.dataset!r} does not allow "
            "horizontal flips; use queries: single"
        )


def _evaluate(model, bundle, split, device, queries: str = "single") -> dict[str, Any]:
    """The record's measurements: ``phi`` on D_f (``phi_mirror`` on its mirror images with
    ``queries: mirror``, LiRA's second query) and UA / RA / TA / MIA."""
    forget = bundle.train.subset(split.forget)
    out: dict[str, Any] = {
        "phi": logit_confidence(predict_logits(model, forget, device), forget.labels).tolist()
    }
    if queries == "mirror":
        mirrored = ImageDataset(forget.images.flip(-1), forget.labels)  # flip the width axis
        logits = predict_logits(model, mirrored, device)
        out["phi_mirror"] = logit_confidence(logits, forget.labels).tolist()
    m = evaluate_unlearning(model, bundle, split, device=device, mia_features=("confidence",))
    out["metrics"] = {k: float(m[k]) for k in ("UA", "RA", "TA", "MIA")}
    return out


def _has_queries(rec: dict, queries: str) -> bool:
    return rec.get("status", "ok") != "ok" or queries != "mirror" or "phi_mirror" in rec


def _queries_match(rec: dict, queries: str) -> None:
    if not _has_queries(rec, queries):
        raise SalunError(
            f"record {rec.get('label')!r} of shadow {rec.get('shadow')} holds no mirrored "
            "queries (it was made with queries: single); delete records/s*/*.json to rerun "
            "the models, or use queries: single"
        )


def _train_fresh(kwargs, data, recipe, device, quiet, desc, flip=True):
    seed_everything(recipe.seed)  # the init depends on the recipe's seed only
    model = build_from_kwargs(kwargs)
    t0 = time.perf_counter()
    # flips only where the dataset allows them (digits: no), as the benchmark's originals
    train_supervised(model, data, recipe, device=device, quiet=quiet, desc=desc, flip_allowed=flip)
    return model, time.perf_counter() - t0


def _method_config(name: str, overrides: dict, seed: int):
    from salun.methods import get_method, make_config

    names = {f.name for f in fields(get_method(name).config)}
    return make_config(name, {**overrides, **({"seed": seed} if "seed" in names else {})})


def _config_matches(rec: dict, name: str, config: dict | None) -> None:
    # compare as stored: JSON turns the config's tuples (lr_grid) into lists
    config = json.loads(json.dumps(config, default=to_jsonable))
    if rec.get("method") != name or rec.get("config") != config:
        raise SalunError(
            f"record {rec.get('label')!r} of shadow {rec.get('shadow')} was made with other "
            "settings; delete its records/s*/<label>.json files to rerun it"
        )


def run_shadow(cfg, store: AuditStore, bundle, forget, k: int, device, quiet: bool) -> None:
    """Every missing record of shadow ``k`` (the original is trained at most once)."""
    from salun.methods import UnlearnContext, run_method

    split = shadow_split(cfg, bundle, forget, k)
    seed = shadow_seed(cfg, k)
    recipe = replace(cfg.original, seed=seed)
    kwargs = model_kwargs_for(bundle, cfg.arch, cfg.width)
    retain = bundle.train.subset(split.retain)
    forget_set = bundle.train.subset(split.forget)
    todo = [lab for lab in (REFERENCE, *cfg.labels) if store.get(k, lab) is None]
    ref = store.get(k, REFERENCE)
    if ref is not None:
        _queries_match(ref, cfg.queries)
    for lab, name, over in cfg.methods:  # settings changed since the record: stop, say so
        rec = store.get(k, lab)
        if rec is not None:
            conf = None if name in (ORIGINAL, RETRAIN) else asdict(_method_config(name, over, seed))
            _config_matches(rec, name, conf)
            _queries_match(rec, cfg.queries)
    if not todo:
        return
    base = {"shadow": k, "seed": seed, "split_hash": split.hash}
    if REFERENCE in todo:
        model, secs = _train_fresh(
            kwargs, retain, recipe, device, quiet, f"retrain s{k}", bundle.flip
        )
        measured = _evaluate(model, bundle, split, device, cfg.queries)
        store.put(
            k,
            REFERENCE,
            {
                **base,
                "label": REFERENCE,
                "method": "retrain",
                "config": None,
                **measured,
                "seconds": secs,
            },
        )
    todo = [lab for lab in todo if lab != REFERENCE]
    if not todo:
        return
    folder = store.original_dir(k)
    if (folder / "model.json").is_file():
        original, _ = load_model(folder, device)
    else:
        train = bundle.train.subset(split.train)
        original, secs = _train_fresh(
            kwargs, train, recipe, device, quiet, f"original s{k}", bundle.flip
        )
        meta = {
            "audit": {**base, "seconds": secs},
            "dataset": bundle.name,
            "train": asdict(recipe),
            "split_hash": split.hash,
            "seed": seed,
        }
        save_model(folder, original, kwargs, meta)
    ctx = UnlearnContext(
        num_classes=bundle.num_classes,
        device=device,
        flip=bundle.flip,
        model_kwargs=kwargs,
        original_train=asdict(recipe),
        quiet=quiet,
    )
    for lab in todo:
        name, over = cfg.method(lab)
        rec = {**base, "label": lab, "method": name, "config": None}
        if name == ORIGINAL:
            model, secs = original, 0.0
        elif name == RETRAIN:
            r2 = replace(recipe, seed=seed + INDEPENDENT_SEED_OFFSET)
            model, secs = _train_fresh(
                kwargs, retain, r2, device, quiet, f"retrain-2 s{k}", bundle.flip
            )
        else:
            mcfg = _method_config(name, over, seed)
            rec["config"] = asdict(mcfg)
            try:
                res = run_method(name, original, forget_set, retain, mcfg, ctx)
            except SalunError as e:  # e.g. a diverging loss: record it, go on
                store.put(k, lab, {**rec, "status": "failed", "error": str(e)})
                continue
            model, secs = res.model, res.seconds
        measured = _evaluate(model, bundle, split, device, cfg.queries)
        store.put(k, lab, {**rec, "status": "ok", **measured, "seconds": secs})


def run_audit(
    cfg: AuditConfig,
    out: str | Path,
    *,
    device="cpu",
    quiet: bool = False,
    command: str | None = None,
    bundle: DataBundle | None = None,
) -> dict[str, Any]:
    """Run (or resume) the audit into ``out`` and write ``summary.json`` and ``report.md``.

    Args:
        cfg: the audit.
        out: the audit folder (resumed if it holds the same shadows).
        device: where to train and evaluate.
        quiet: no progress bars or per-shadow lines.
        command: the command line, recorded in the report.
        bundle: use this dataset instead of loading ``cfg.dataset`` (tests, notebooks);
            ``subset`` and ``test_subset`` still apply.

    Returns:
        The summary (see :func:`summarise`).
    """
    from salun.utils import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    bundle, forget = audit_inputs(cfg, bundle)  # a bad forget set or query: nothing written
    store = AuditStore(out, cfg)
    t0 = time.perf_counter()
    for k in range(cfg.shadows):
        ts = time.perf_counter()
        run_shadow(cfg, store, bundle, forget, k, dev, quiet)
        if not quiet:
            print(
                f"audit: shadow {k + 1}/{cfg.shadows} done ({time.perf_counter() - ts:.0f} s)",
                file=sys.stderr,
            )
    run = {
        "seconds_this_session": time.perf_counter() - t0,
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "command": command,
    }
    return write_summary(cfg, store, run)


def audit_inputs(cfg: AuditConfig, full: DataBundle | None = None) -> tuple[DataBundle, np.ndarray]:
    """The audit's dataset (``subset`` / ``test_subset`` applied) and its target D_f."""
    bundle = audit_bundle(cfg, full)
    check_queries(cfg, bundle.flip)
    return bundle, forget_indices(cfg, len(bundle.train))


def shadow_done(cfg: AuditConfig, store: AuditStore, k: int) -> bool:
    """Whether shadow ``k`` holds every record ``cfg`` asks for (then nothing runs)."""
    return all(store.get(k, lab) is not None for lab in (REFERENCE, *cfg.labels))


def write_summary(
    cfg: AuditConfig, store: AuditStore, run: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Summarise the finished records into ``summary.json`` and ``report.md`` of the audit
    folder (``extra``: more top-level keys, e.g. the benchmark rows); returns the summary."""
    from salun.audit.report import write_report

    summary = {**summarise(cfg, store), **(extra or {}), "run": run}
    atomic_write_json(store.root / "summary.json", summary)
    write_report(summary, store.root / "report.md")
    return summary


def _stack(
    store: AuditStore, k_all: int, label: str, queries: str = "single"
) -> tuple[np.ndarray | None, list[dict]]:
    """φ of ``label`` over the shadows: K × n, or K × n × 2 (image, mirror) for ``mirror``."""
    recs = [store.get(k, label) for k in range(k_all)]
    if any(r is None for r in recs):
        return None, recs
    if any(r.get("status", "ok") != "ok" for r in recs):
        return None, recs
    for r in recs:
        _queries_match(r, queries)
    keys = ("phi", "phi_mirror") if queries == "mirror" else ("phi",)
    phi = np.asarray([[r[key] for key in keys] for r in recs], dtype=np.float64)
    return np.moveaxis(phi, 1, 2) if queries == "mirror" else phi[:, 0], recs


def _mean_sd(values: list[float]) -> list[float]:
    a = np.asarray(values, dtype=np.float64)
    return [float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0]


def _metric_stats(recs: list[dict]) -> dict[str, list[float]]:
    return {m: _mean_sd([r["metrics"][m] for r in recs]) for m in ("UA", "RA", "TA", "MIA")}


def attack_settings(cfg: AuditConfig) -> dict[str, str]:
    """The attack's choices as the summary records them, with the one that is not a setting:
    salun keeps one fixed D_f for every shadow (Hayes et al. draw a fresh one per shadow)."""
    return {
        "queries": cfg.queries,
        "location": cfg.location,
        "variance": cfg.variance,
        "forget_set": FORGET_PROTOCOL,
    }


def summarise(cfg: AuditConfig, store: AuditStore) -> dict[str, Any]:
    """Per method: the attack's AUC / TPR with intervals, and the mean ± sd over shadows
    of UA, RA, TA and the SVC MIA-efficacy (with Retrain's for comparison)."""
    k_all = cfg.shadows
    ref_phi, ref_recs = _stack(store, k_all, REFERENCE, cfg.queries)
    if ref_phi is None:
        raise SalunError("the reference Retrain records are incomplete; rerun the audit")
    ref_metrics = _metric_stats(ref_recs)
    rows = {}
    for lab, name, _ in cfg.methods:
        phi, recs = _stack(store, k_all, lab, cfg.queries)
        row: dict[str, Any] = {"method": name}
        if phi is None:
            failed = [r for r in recs if r is not None and r.get("status") == "failed"]
            row["status"] = "failed" if failed else "incomplete"
            if failed:
                row["error"] = failed[0].get("error")
            rows[lab] = row
            continue
        su, sr = lira_scores(phi, ref_phi, variance=cfg.variance, location=cfg.location)
        row.update(audit_summary(su, sr, n_boot=cfg.bootstrap, seed=cfg.seed))
        row["status"] = "ok"
        row["metrics"] = _metric_stats(recs)
        row["mia_gap"] = abs(row["metrics"]["MIA"][0] - ref_metrics["MIA"][0])
        row["seconds"] = float(np.mean([r["seconds"] for r in recs]))
        row["config"] = recs[0].get("config")
        rows[lab] = row
    return {
        "format": FORMAT,
        "config": asdict(cfg),
        "attack": attack_settings(cfg),
        "forget_examples": int(ref_phi.shape[1]),
        "warnings": power_warnings(k_all, int(ref_phi.shape[1])),
        "retrain": {
            "metrics": ref_metrics,
            "seconds": float(np.mean([r["seconds"] for r in ref_recs])),
        },
        "methods": rows,
    }
