"""The audit workflow: shadow pairs, methods on them, one record per (method, shadow).

Layout of an audit folder::

    audit.json                    the config and the hash the shadows depend on
    shadows/s<k>/original/        the shadow original O_k (a model folder, safetensors)
    records/s<k>/<label>.json     φ on D_f (and on its mirror images with ``queries:
                                  mirror``) and the paper's metrics of one model
    summary.json, report.md       rebuilt from the records at the end

Shadow k draws a random half H_k of the subset without D_f (its own seed); O_k trains on
D_f ∪ H_k, the reference Retrain R_k on H_k with the same recipe and seed (it differs from
O_k only in the data), and each method unlearns D_f from O_k with D_r = H_k. With
``forget_sets: per_shadow`` (U-LiRA, ``salun.audit.ulira``) shadow k instead trains O_k on a
random half T_k of the whole subset and forgets a fresh random F_k ⊂ T_k of the same size;
R_k trains on T_k \\ F_k, and its record also holds F_k, T_k \\ F_k and φ on every
example of the subset (``phi_all``). Every record
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
from salun.audit.ulira import MIN_FITS, coverage, per_shadow_scores, per_shadow_summary
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
# ``attack.forget_set`` of summary.json for each value of ``forget_sets`` (docs/audit.md)
FORGET_PROTOCOL = "fixed D_f, leave one pair out"
PER_SHADOW_PROTOCOL = (
    "per_shadow: a fresh random forget set per shadow, drawn from its training half "
    "(U-LiRA), leave one pair out"
)


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


def shadow_sets(
    cfg: AuditConfig, n_train: int, count: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``forget_sets: per_shadow``: shadow k's forget set F_k and retain set T_k \\ F_k,
    where T_k is a random half of the whole subset and F_k a random ``count`` of T_k (both
    drawn from the audit's seed and k alone, so the same on every machine and rerun)."""
    rng = np.random.default_rng([cfg.seed, 3, k])
    half = rng.choice(n_train, n_train // 2, replace=False)
    forget = np.sort(rng.choice(half, count, replace=False)).astype(np.int64)
    return forget, np.setdiff1d(half, forget).astype(np.int64)


def check_forget_sets(cfg: AuditConfig, n_train: int, count: int) -> None:
    """``per_shadow`` forget sets must fit in a shadow's half with data left to retain, and
    some target must get enough fitting models on both sides; refused before any work."""
    if cfg.forget_sets != "per_shadow":
        return
    half = n_train // 2
    if count >= half:
        raise SalunError(
            f"forget_sets: per_shadow draws each shadow's forget set from its training half "
            f"({half} of {n_train} examples), so it must hold fewer than {half}, got {count}; "
            "lower forget_fraction / forget_count or raise subset"
        )
    from salun.audit.ulira import MIN_FITS, coverage

    sets = [shadow_sets(cfg, n_train, count, k) for k in range(cfg.shadows)]
    cov = coverage([f for f, _ in sets], [r for _, r in sets], n_train)
    if cov["scored"] == 0:
        raise SalunError(
            f"forget_sets: per_shadow with {cfg.shadows} shadows and forget sets of {count} "
            f"of {n_train}: no forgotten example is forgotten by {MIN_FITS} other shadows "
            "(each is about (shadows − 1)·forget/subset times); raise shadows or the forget "
            "set's size"
        )


def shadow_split(cfg: AuditConfig, bundle: DataBundle, forget: np.ndarray, k: int) -> Split:
    """Shadow k's split: D_f and a random half H_k of the rest as D_r; with ``forget_sets:
    per_shadow`` its own F_k (of ``len(forget)`` examples) and T_k \\ F_k
    (:func:`shadow_sets`)."""
    if cfg.forget_sets == "per_shadow":
        forget, half = shadow_sets(cfg, len(bundle.train), len(forget), k)
    else:
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


def _phi(model, data: ImageDataset, device, queries: str, suffix: str = "") -> dict[str, Any]:
    out = {f"phi{suffix}": logit_confidence(predict_logits(model, data, device), data.labels)}
    if queries == "mirror":
        mirrored = ImageDataset(data.images.flip(-1), data.labels)  # flip the width axis
        logits = predict_logits(model, mirrored, device)
        out[f"phi{suffix}_mirror"] = logit_confidence(logits, data.labels)
    return {k: v.tolist() for k, v in out.items()}


def _evaluate(
    model, bundle, split, device, queries: str = "single", everywhere: bool = False
) -> dict[str, Any]:
    """The record's measurements: ``phi`` on D_f (``phi_mirror`` on its mirror images with
    ``queries: mirror``, LiRA's second query), with ``everywhere`` also ``phi_all`` (and
    ``phi_all_mirror``) on every example of the subset, and UA / RA / TA / MIA."""
    out = _phi(model, bundle.train.subset(split.forget), device, queries)
    if everywhere:
        out.update(_phi(model, bundle.train, device, queries, "_all"))
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
        per_shadow = cfg.forget_sets == "per_shadow"
        measured = _evaluate(model, bundle, split, device, cfg.queries, everywhere=per_shadow)
        sets = {"forget": split.forget.tolist(), "retain": split.retain.tolist()}
        store.put(
            k,
            REFERENCE,
            {
                **base,
                "label": REFERENCE,
                "method": "retrain",
                "config": None,
                **(sets if per_shadow else {}),
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
    from salun.audit.report import check_report
    from salun.utils import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    bundle, forget = audit_inputs(cfg, bundle)  # a bad forget set or query: nothing written
    check_report(out, cfg.name)  # a report.md of the user's: refused before any training
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
    """The audit's dataset (``subset`` / ``test_subset`` applied) and its target D_f (with
    ``forget_sets: per_shadow``: a set of the size every shadow's own forget set has)."""
    bundle = audit_bundle(cfg, full)
    check_queries(cfg, bundle.flip)
    forget = forget_indices(cfg, len(bundle.train))
    check_forget_sets(cfg, len(bundle.train), len(forget))
    return bundle, forget


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
    """The attack's choices as the summary records them; ``forget_set`` names the protocol
    of ``forget_sets`` (salun's fixed D_f, or U-LiRA's fresh forget set per shadow)."""
    return {
        "queries": cfg.queries,
        "location": cfg.location,
        "variance": cfg.variance,
        "forget_set": PER_SHADOW_PROTOCOL if cfg.forget_sets == "per_shadow" else FORGET_PROTOCOL,
    }


def _shadow_sets(cfg: AuditConfig, ref_recs: list[dict]) -> dict[str, Any] | None:
    """``per_shadow``: each shadow's recorded F_k and T_k \\ F_k and φ of R_k on the whole
    subset (K × n, or K × n × 2 with mirror queries); None for ``fixed``."""
    if cfg.forget_sets != "per_shadow":
        return None
    if any("forget" not in r or "phi_all" not in r for r in ref_recs):
        raise SalunError(
            "the reference Retrain records hold no per-shadow forget sets; this folder was "
            "made with forget_sets: fixed (use another --out)"
        )
    # the mirror's φ was written with phi_mirror, which _stack has already checked
    keys = ("phi_all", "phi_all_mirror") if cfg.queries == "mirror" else ("phi_all",)
    phi = np.asarray([[r[key] for key in keys] for r in ref_recs], dtype=np.float64)
    return {
        "forget": [np.asarray(r["forget"], dtype=np.int64) for r in ref_recs],
        "retain": [np.asarray(r["retain"], dtype=np.int64) for r in ref_recs],
        "phi_all": np.moveaxis(phi, 1, 2) if cfg.queries == "mirror" else phi[:, 0],
    }


def summarise(cfg: AuditConfig, store: AuditStore) -> dict[str, Any]:
    """Per method: the attack's AUC / TPR with intervals, and the mean ± sd over shadows
    of UA, RA, TA and the SVC MIA-efficacy (with Retrain's for comparison)."""
    k_all = cfg.shadows
    ref_phi, ref_recs = _stack(store, k_all, REFERENCE, cfg.queries)
    if ref_phi is None:
        raise SalunError("the reference Retrain records are incomplete; rerun the audit")
    ref_metrics = _metric_stats(ref_recs)
    sets = _shadow_sets(cfg, ref_recs)
    warns = power_warnings(k_all, int(ref_phi.shape[1]))
    forget_sets: dict[str, Any] = {"mode": cfg.forget_sets}
    if sets is not None:
        cov = coverage(sets["forget"], sets["retain"], sets["phi_all"].shape[1])
        forget_sets.update(size=int(ref_phi.shape[1]), subset=int(sets["phi_all"].shape[1]))
        forget_sets.update(cov)
        if cov["scored"] < cov["targets"]:
            warns.append(
                f"{cov['targets'] - cov['scored']} of {cov['targets']} (pair, forgotten "
                f"example) targets have fewer than {MIN_FITS} fitting models on a side and "
                "are not scored; more shadows score more of them"
            )
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
        if sets is None:
            su, sr = lira_scores(phi, ref_phi, variance=cfg.variance, location=cfg.location)
            row.update(audit_summary(su, sr, n_boot=cfg.bootstrap, seed=cfg.seed))
        else:
            su, sr, scored = per_shadow_scores(
                list(phi), sets["phi_all"], sets["forget"], sets["retain"],
                variance=cfg.variance, location=cfg.location,
            )  # fmt: skip
            row.update(per_shadow_summary(su, sr, scored, n_boot=cfg.bootstrap, seed=cfg.seed))
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
        "forget_sets": forget_sets,
        "warnings": warns,
        "retrain": {
            "metrics": ref_metrics,
            "seconds": float(np.mean([r["seconds"] for r in ref_recs])),
        },
        "methods": rows,
    }
