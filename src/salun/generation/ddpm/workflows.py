"""DDPM steps on folders and files, shared by ``salun gen`` and scripts.

Each step loads what it needs, checks that the pieces fit (dataset vs model, mask vs
model weights), does its work and writes its artifact atomically with provenance.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from salun.data import DataBundle, load_dataset
from salun.data.registry import canonical_spec
from salun.errors import SalunError
from salun.generation.ddpm.checkpoint import STATE_FILE, resume_train_state, save_checkpoint
from salun.generation.ddpm.data import class_split
from salun.generation.ddpm.evaluate import GenEvalConfig, generate_eval_set, score_samples
from salun.generation.ddpm.mask import DDPMMaskConfig, ddpm_saliency_mask
from salun.generation.ddpm.model import (
    EMA_WEIGHTS,
    WEIGHTS,
    DenoiserConfig,
    build_denoiser,
    load_denoiser,
    read_denoiser_meta,
    save_denoiser,
)
from salun.generation.ddpm.sampler import SamplerConfig
from salun.generation.ddpm.train import DDPMTrainConfig, train_ddpm
from salun.generation.ddpm.unlearn import GenUnlearnConfig, resolve_schedule, unlearn_ddpm
from salun.generation.ddpm.unlearn_state import (
    UnlearnRun,
    matching_run,
    read_resume,
    save_unlearn_checkpoint,
)
from salun.generation.grids import save_class_grid
from salun.io import atomic_write_json, sha256_file
from salun.saliency import load_mask, model_fingerprint, random_mask, save_mask
from salun.utils import device_name, note_progress, resolve_device


def denoiser_config_for(bundle: DataBundle, arch: dict[str, Any]) -> DenoiserConfig:
    """The architecture settings completed with the dataset's shape and class count."""
    return DenoiserConfig.from_dict(
        {
            **arch,
            "image_size": bundle.image_size,
            "in_channels": bundle.in_channels,
            "num_classes": bundle.num_classes,
        }
    )


def train_to_folder(
    data_spec: str,
    arch: dict[str, Any],
    cfg: DDPMTrainConfig,
    out: str | Path,
    *,
    exclude_class: int | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    device: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    """Train the Original (all classes) or Retrain (``exclude_class`` left out) DDPM.

    A checkpoint folder is rewritten every ``checkpoint_every`` steps. With ``resume``, an
    existing ``out`` folder is continued up to ``cfg.steps`` (returned as is when it already
    has them) instead of starting over.
    """
    dev = resolve_device(device)
    bundle = load_dataset(data_spec)
    data = bundle.train
    if exclude_class is not None:
        _, data = class_split(bundle.train, exclude_class, bundle.num_classes)
    cfg = dataclasses.replace(cfg, flip=cfg.flip and bundle.flip)
    meta = {
        "kind": "original" if exclude_class is None else "retrain",
        "dataset": bundle.name,
        "data_spec": canonical_spec(data_spec),  # npz:/abs/path, not the file's stem
        "classes": list(bundle.classes),
        "excluded_class": exclude_class,
        "train": asdict(cfg),
        "seed": cfg.seed,
        "device": device_name(dev),
    }
    state = None
    if resume and (Path(out) / "model.json").is_file():
        done = read_denoiser_meta(out).get("steps_done", 0)
        if done >= cfg.steps:
            return read_denoiser_meta(out)  # finished work is skipped, not redone
        if not (Path(out) / STATE_FILE).is_file():
            # weights without their optimiser state (e.g. a folder shared without it):
            # starting over would overwrite a model that is not ours to lose
            raise SalunError(
                f"cannot resume {out}: it holds {done} of {cfg.steps} steps but no training "
                f"state ({STATE_FILE}); train into a new --out, or ask for {done} steps"
            )
        cfg = _resumed_config(out, read_denoiser_meta(out), cfg, arch)
        meta.update(train=asdict(cfg), seed=cfg.seed)
        state = resume_train_state(out, cfg, dev)
        model = state.model
    else:
        model = build_denoiser(denoiser_config_for(bundle, arch), seed=cfg.seed)
    t0 = time.perf_counter()
    state = train_ddpm(
        model,
        data,
        cfg,
        device=dev,
        state=state,
        checkpoint=lambda s: save_checkpoint(out, s, meta, complete=s.step >= cfg.steps),
        checkpoint_every=checkpoint_every,
        quiet=quiet,
        desc=f"ddpm {meta['kind']}",
    )
    meta["train_seconds_last_session"] = time.perf_counter() - t0
    save_checkpoint(out, state, meta, complete=True)
    return read_denoiser_meta(out)


def _resumed_config(out, meta: dict, cfg: DDPMTrainConfig, arch: dict) -> DDPMTrainConfig:
    """The training settings of a ``--resume``: the recorded run's, never silently others.

    A setting given with another value than the recorded one (an architecture flag, the
    lr, the batch size...) is refused: the architecture would be ignored, an lr or a batch
    size applied mid-run while model.json kept only the new values. A training setting
    left at its default takes the recorded value. Only ``steps`` may grow.
    """

    def plain(d: dict) -> dict:
        return json.loads(json.dumps(d))

    was_arch, was_train = plain(meta.get("denoiser") or {}), plain(meta.get("train") or {})
    conflicts = [(k, was_arch[k], v) for k, v in plain(arch).items() if was_arch.get(k, v) != v]
    default, now = plain(asdict(DDPMTrainConfig())), plain(asdict(cfg))
    inherit = {}
    for k, v in now.items():
        if k == "steps" or k not in was_train or was_train[k] == v:
            continue
        if v == default.get(k):  # not given: the run goes on with its own value
            inherit[k] = was_train[k]
        else:
            conflicts.append((k, was_train[k], v))
    if conflicts:
        k, before, after = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise SalunError(
            f"cannot resume {out} with other settings: {k} was {before!r}, now {after!r}{more}; "
            "resume with the settings it was started with (only --steps may grow), or train "
            "into a new --out"
        )
    return dataclasses.replace(cfg, **{k: _as_field(cfg, k, v) for k, v in inherit.items()})


def _as_field(cfg: Any, name: str, value: Any) -> Any:
    """A JSON value back in the field's type (lists were tuples)."""
    return tuple(value) if isinstance(getattr(cfg, name), tuple) else value


def _forget_retain(meta: dict, forget_class: int):
    bundle = load_dataset(meta.get("data_spec", meta["dataset"]))
    forget, retain = class_split(bundle.train, forget_class, bundle.num_classes)
    return bundle, forget, retain


def mask_to_file(
    model_dir: str | Path,
    forget_class: int,
    cfg: DDPMMaskConfig,
    out: str | Path,
    *,
    weights: str = "model",
    random: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Write the DDPM saliency mask (or, ``random``, the random-mask ablation)."""
    dev = resolve_device(device)
    model, meta = load_denoiser(model_dir, dev, weights=weights)
    _, forget, _ = _forget_retain(meta, forget_class)
    t0 = time.perf_counter()
    if random:
        mask = random_mask(model, cfg.keep, seed=cfg.seed)
    else:
        mask = ddpm_saliency_mask(model, forget, cfg, device=dev)
    record = {
        "model_fingerprint": model_fingerprint(model),
        "kind": "random" if random else "saliency",
        "keep": cfg.keep,
        "scope": "global",
        "forget_class": forget_class,
        "model_dir": str(model_dir),
        "weights": weights,
        "mask_config": asdict(cfg),
        "seconds": time.perf_counter() - t0,
    }
    save_mask(out, mask, **record)
    return record


def unlearn_record(
    model_dir: str | Path,
    forget_class: int,
    cfg: GenUnlearnConfig,
    *,
    mask_file: str | Path | None = None,
    weights: str = "model",
) -> dict[str, Any]:
    """What an unlearned folder records about its run before it starts (its identity for
    resuming: :data:`salun.generation.ddpm.unlearn_state.RUN_KEY`)."""
    meta = read_denoiser_meta(model_dir)
    source = Path(model_dir) / (EMA_WEIGHTS if weights == "ema" else WEIGHTS)
    return {
        "kind": "unlearned",
        "method": cfg.method,
        "dataset": meta["dataset"],
        "data_spec": meta.get("data_spec", meta["dataset"]),
        "classes": meta.get("classes"),
        "forget_class": forget_class,
        "source_model": str(model_dir),
        "source_weights": weights,
        "source_sha256": sha256_file(source),
        "unlearn": asdict(cfg),
        "mask_file": str(mask_file) if mask_file else None,
        "mask_sha256": sha256_file(mask_file) if mask_file else None,
    }


def unlearn_to_folder(
    model_dir: str | Path,
    forget_class: int,
    cfg: GenUnlearnConfig,
    out: str | Path,
    *,
    mask_file: str | Path | None = None,
    weights: str = "model",
    device: str = "auto",
    quiet: bool = False,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> dict[str, Any]:
    """Unlearn ``forget_class`` from a DDPM folder and write the unlearned folder.

    With ``checkpoint_every`` > 0 the folder is rewritten as an unfinished checkpoint every
    that many steps; with ``resume``, an ``out`` that holds this very run is continued from
    its checkpoint (or returned as is when finished) instead of started over.
    """
    dev = resolve_device(device)
    model, meta = load_denoiser(model_dir, dev, weights=weights)
    if meta.get("complete") is False:
        raise SalunError(f"{model_dir} is an unfinished training checkpoint; finish training first")
    _, forget, retain = _forget_retain(meta, forget_class)
    mask, mask_meta = (None, None)
    if mask_file is not None:
        mask, mask_meta = load_mask(mask_file, model)
        if mask_meta.get("forget_class", forget_class) != forget_class:
            raise SalunError(
                f"{mask_file} was computed for class {mask_meta['forget_class']}, "
                f"not {forget_class}; compute a mask for this class with `salun gen mask`"
            )
    record = unlearn_record(model_dir, forget_class, cfg, mask_file=mask_file, weights=weights)
    record.update(mask_kind=(mask_meta or {}).get("kind"), device=device_name(dev))
    record["iterations_used"] = resolve_schedule(cfg)[0]
    previous = matching_run(out, record) if resume else None
    if previous is not None and previous.get("complete") is not False:
        return previous  # finished work is skipped, not redone
    res = unlearn_ddpm(
        model,
        forget,
        retain,
        cfg,
        mask=mask,
        device=dev,
        quiet=quiet,
        resume=read_resume(out, previous) if previous is not None else None,
        checkpoint=lambda run: _checkpoint(out, run, record, quiet),
        checkpoint_every=checkpoint_every,
    )
    record.update(
        alpha_used=res.alpha,
        iterations_used=res.iterations,
        batch_size_used=res.batch_size,
        seconds=res.seconds,
        history=res.history,
        steps_done=res.iterations,
        complete=True,
    )
    if previous is not None:
        record["resumed_at_step"] = previous["steps_done"]
    save_denoiser(out, res.model, record)
    return record


def _checkpoint(out: str | Path, run: UnlearnRun, record: dict[str, Any], quiet: bool) -> None:
    save_unlearn_checkpoint(out, run, record)
    total = record["iterations_used"]
    note_progress(
        f"checkpoint {out}: step {run.step}/{total}, {run.seconds():.0f} s so far", quiet=quiet
    )


def weights_for(model_dir: str | Path, requested: str) -> str:
    """The weights to read from a folder: ``requested``, except that unlearned folders hold
    a single set of weights (unlearning keeps no EMA), which ``ema`` then means.

    So one preset setting (``weights: ema``) picks the EMA of the Original and Retrain and
    the weights of every unlearned model (which started from the Original's EMA).
    """
    if requested == "ema" and read_denoiser_meta(model_dir).get("kind") == "unlearned":
        return "model"
    return requested


def load_classifier(path: str | Path, device) -> torch.nn.Module:
    """A salun classifier folder (e.g. from ``salun train``) for the generation metrics."""
    from salun.artifacts import load_model

    model, _ = load_model(path, device)
    return model


def evaluate_folder(
    model_dir: str | Path,
    classifier_dir: str | Path,
    forget_class: int,
    cfg: GenEvalConfig,
    sampler: SamplerConfig,
    *,
    weights: str = "model",
    grid: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    quiet: bool = False,
    trust_code: bool = False,
) -> dict[str, Any]:
    """Generate, score, and optionally write a per-class grid PNG and a JSON record
    (``trust_code``: allow the TorchScript Inception network of ``cfg.inception``)."""
    trust = trust_code
    dev = resolve_device(device)
    weights = weights_for(model_dir, weights)
    model, meta = load_denoiser(model_dir, dev, weights=weights)
    bundle = load_dataset(meta.get("data_spec", meta["dataset"]))
    classifier = load_classifier(classifier_dir, dev)
    if classifier.num_classes != model.num_classes:
        raise SalunError(
            f"the classifier has {classifier.num_classes} classes, the DDPM {model.num_classes}"
        )
    t0 = time.perf_counter()
    images, labels = generate_eval_set(model, forget_class, cfg, sampler, device=dev, quiet=quiet)
    metrics = score_samples(
        images, labels, forget_class, classifier, bundle.train, cfg, device=dev, trust_code=trust
    )
    record = {
        "model": str(model_dir),
        "weights": weights,
        "method": meta.get("method", meta.get("kind")),
        "classifier": str(classifier_dir),
        "forget_class": forget_class,
        "metrics": metrics,
        "eval": asdict(cfg),
        "sampler": asdict(sampler),
        "seconds": time.perf_counter() - t0,
        "device": device_name(dev),
    }
    if grid is not None:
        save_class_grid(grid, images, labels, names=list(bundle.classes))
        record["grid"] = str(grid)
    if out is not None:
        atomic_write_json(out, {"format": "salun-gen-eval-1", **record})
    return record
