"""End-to-end steps on model folders and split files, shared by the CLI and the benchmark.

Each step loads what it needs, checks that the pieces fit (split vs dataset, mask vs
model), does its work and writes its artifact atomically with full provenance.
"""

from __future__ import annotations

import glob
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from salun.artifacts import load_model, read_meta, save_model
from salun.data import DataBundle, Split, check_split_fits, load_dataset, load_split
from salun.data.registry import canonical_spec
from salun.data.splits import data_fingerprint
from salun.errors import ArtifactError, SalunError
from salun.io import sha256_file
from salun.metrics import evaluate_unlearning
from salun.models import build_model, model_kwargs_for
from salun.precision import current_policy
from salun.train import TrainConfig, quick_accuracy, train_supervised
from salun.utils import device_name, resolve_device


def train_original(
    bundle: DataBundle,
    arch: str,
    cfg: TrainConfig,
    out: str | Path,
    *,
    split: Split | None = None,
    split_file: str | Path | None = None,
    width: float = 1.0,
    device: str = "auto",
    quiet: bool = False,
    data_spec: str | None = None,
) -> dict[str, Any]:
    """Train a model from scratch on the split's D_f ∪ D_r (or the whole train set) and
    write its folder; returns the ``model.json`` record.

    ``data_spec`` is what later steps reload the data with (record the user's spec through
    :func:`salun.data.registry.canonical_spec`); the default is the bundle's name.
    """
    dev = resolve_device(device)
    train_idx = split.train if split is not None else None
    train = bundle.train.subset(train_idx) if train_idx is not None else bundle.train
    val = bundle.train.subset(split.val) if split is not None and len(split.val) else None
    kwargs = model_kwargs_for(bundle, arch, width)
    torch.manual_seed(cfg.seed)  # the init is part of the recipe
    model = build_model(**{**kwargs, "mean": tuple(kwargs["mean"]), "std": tuple(kwargs["std"])})
    t0 = time.perf_counter()
    result = train_supervised(
        model,
        train,
        cfg,
        device=dev,
        val=val,
        flip_allowed=bundle.flip,
        quiet=quiet,
        desc=f"train {arch}",
    )
    seconds = time.perf_counter() - t0
    metrics = {
        "train_acc": quick_accuracy(model, train, dev),
        "test_acc": quick_accuracy(model, bundle.test, dev),
    }
    meta = {
        "kind": "original",
        "dataset": bundle.name,
        "data_spec": data_spec or bundle.name,
        "data_fingerprint": data_fingerprint(bundle),
        "classes": list(bundle.classes),
        "train": asdict(cfg),
        "split_file": str(split_file) if split_file else None,
        "split_hash": split.hash if split is not None else None,
        "seed": cfg.seed,
        "metrics": metrics,
        "history": result.history,
        "device_policy": result.device_policy,  # precision etc. (docs/gpu.md)
        "best_epoch": result.best_epoch,
        "train_seconds": seconds,
        "images_per_second": cfg.epochs * len(train) / max(seconds, 1e-9),
        "device": device_name(dev),
    }
    save_model(out, model, kwargs, meta)
    return meta


def load_for_split(
    model_dir: str | Path, split_file: str | Path, device: str = "auto", data: str | None = None
):
    """Load a model folder, its dataset and a split, checking they belong together.

    Args:
        data: a data spec to use instead of the one the model records (data that moved);
            its content must be the model's (when recorded) and the split's.

    Returns:
        ``(model, meta, bundle, split, device, spec)`` where ``spec`` is the data spec used.
        A Hugging Face folder (``save_pretrained`` layout) needs ``data``; its ``meta`` has
        ``layout: "hf"`` (docs/your-model.md).
    """
    dev = resolve_device(device)
    from salun.models.hf import is_hf_folder

    if is_hf_folder(model_dir):
        from salun.hf_workflows import load_hf_for_split

        return load_hf_for_split(model_dir, split_file, dev, data)
    model, meta = load_model(model_dir, dev)
    spec = canonical_spec(data) if data else meta.get("data_spec", meta["dataset"])
    try:
        bundle = load_dataset(spec)
    except SalunError as e:
        if data:
            raise
        hint = f"{e}; if the data of {model_dir} moved, pass --data SPEC with its new place"
        raise type(e)(hint) from None
    recorded = meta.get("data_fingerprint")
    if recorded is not None and recorded != data_fingerprint(bundle):
        raise SalunError(
            f"{model_dir} was trained on other data than {spec} (content fingerprint "
            f"{recorded}, this data {data_fingerprint(bundle)}); pass --data with the "
            "model's dataset"
        )
    split = load_split(split_file)
    check_split_fits(split, bundle, spec)
    if meta.get("split_hash") not in (None, split.hash):
        raise SalunError(
            f"{model_dir} was trained on split {meta['split_hash']}, not on {split_file} "
            f"({split.hash}); use the split the model was trained with"
        )
    return model, meta, bundle, split, dev, spec


def evaluate_model_folder(
    model_dir, split_file, device: str = "auto", data: str | None = None
) -> dict[str, float]:
    """UA, RA, TA, MIA (and the other MIA features) of a model folder on a split."""
    model, _, bundle, split, dev, _ = load_for_split(model_dir, split_file, device, data)
    return evaluate_unlearning(model, bundle, split, device=dev)


def write_masks(
    model_dir,
    split_file,
    keeps: list[float],
    out: str | Path,
    *,
    scope: str = "global",
    batch_size: int = 256,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    data: str | None = None,
    augment: bool = False,
) -> list[Path]:
    """Saliency masks for several kept fractions from one gradient pass over D_f.

    ``seed`` is the run's seed, as ``salun unlearn --seed``: the batch order is drawn from
    ``seed + 1`` exactly as SalUn's own mask pass, so ``salun mask --seed S`` then
    ``salun unlearn --seed S --mask`` gives the weights ``salun unlearn --seed S`` gives.

    ``augment``: random crop (the original recipe's padding) + flip of the D_f batches, as
    the reference's mask pass (docs/method.md, "Augmentation").
    """
    from salun.data import Augment, iterate_batches
    from salun.saliency import (
        check_keeps_some,
        compute_saliency,
        model_fingerprint,
        saliency_mask,
        save_mask,
    )

    model, meta, bundle, split, dev, _ = load_for_split(model_dir, split_file, device, data)
    forget = bundle.train.subset(split.forget)
    pad = int((meta.get("train") or {}).get("pad", 4))
    aug = Augment(pad=pad, flip=bundle.flip) if augment else None
    batches = iterate_batches(
        forget,
        batch_size,
        shuffle=True,
        # seed + 1: the rule of the mask SalUn builds inside `salun unlearn --seed S`
        # (methods/rl.py), so the two-step workflow gives the one-step weights
        generator=torch.Generator().manual_seed(seed + 1),
        device=dev,
        augment=aug,
    )
    scores = compute_saliency(model, batches)
    for keep in keeps:  # every density before the first file is written
        check_keeps_some(scores, keep)
    fingerprint = model_fingerprint(model)
    paths = []
    for keep, path in zip(keeps, mask_paths(out, keeps)):
        save_mask(
            path,
            saliency_mask(scores, keep=keep, scope=scope),
            model_fingerprint=fingerprint,
            keep=keep,
            scope=scope,
            split_hash=split.hash,
            kind="saliency",
            augment=augment,
        )
        paths.append(path)
    return paths


def mask_paths(out: str | Path, keeps: list[float]) -> list[Path]:
    """The files :func:`write_masks` writes: ``out`` itself, or ``<stem>_keep<r><suffix>``."""
    out = Path(out)
    if len(keeps) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_keep{keep}{out.suffix}") for keep in keeps]


def check_mask_named(path: str | Path) -> None:
    """A missing ``--mask FILE`` whose per-value siblings exist (``salun mask --keep 0.5
    --keep 0.1 --out FILE`` writes ``FILE_keep0.5...``) gets an error naming them."""
    path = Path(path)
    if path.exists():
        return
    siblings = sorted(path.parent.glob(f"{glob.escape(path.stem)}_keep*{path.suffix}"))
    if siblings:
        names = ", ".join(str(s) for s in siblings)
        raise ArtifactError(
            f"mask file {path} does not exist; `salun mask` with several --keep values wrote "
            f"one file per value: pass one of {names}"
        )


def unlearn_model_folder(
    model_dir,
    split_file,
    method: str,
    overrides: dict,
    out,
    *,
    mask_file=None,
    device: str = "auto",
    quiet: bool = False,
    evaluate: bool = True,
    data: str | None = None,
) -> dict[str, Any]:
    """Run ``method`` on a model folder and write the unlearned model with its evaluation
    and run time (RTE, seconds) into ``out``."""
    from salun.methods import UnlearnContext, make_config, run_method
    from salun.saliency import load_mask

    model, meta, bundle, split, dev, spec = load_for_split(model_dir, split_file, device, data)
    hf = meta.get("layout") == "hf"
    if hf and method == "retrain":
        raise SalunError(
            f"{model_dir} is a Hugging Face folder: salun cannot rebuild its training; retrain "
            "it in Python with salun.unlearn(..., method='retrain', retrain_fn=...)"
        )
    cfg = make_config(method, overrides)
    mask, mask_meta = (None, None)
    if mask_file:
        check_mask_named(mask_file)
        mask, mask_meta = load_mask(mask_file, model)
        if mask_meta.get("split_hash") not in (None, split.hash):
            raise SalunError(
                f"{mask_file} was computed for another split ({mask_meta['split_hash']})"
            )
    ctx = UnlearnContext(
        num_classes=bundle.num_classes,
        device=dev,
        flip=bundle.flip,
        model_kwargs=meta["model"],
        original_train=meta.get("train", {}),
        quiet=quiet,
    )
    result = run_method(
        method,
        model,
        bundle.train.subset(split.forget),
        bundle.train.subset(split.retain),
        cfg,
        ctx,
        mask=mask,
    )
    record: dict[str, Any] = {
        "kind": "unlearned",
        "method": method,
        "config": asdict(cfg),
        "rte_seconds": result.seconds,
        "original": {"path": str(model_dir), "split_hash": meta.get("split_hash")},
        "dataset": bundle.name,
        "data_spec": spec,
        "data_fingerprint": data_fingerprint(bundle),
        "classes": list(bundle.classes),
        "train": meta.get("train"),
        "split_file": str(split_file),
        "split_hash": split.hash,
        "mask": {"file": str(mask_file), "sha256": sha256_file(mask_file), **mask_meta}
        if mask_file
        else None,
        "device": device_name(dev),
        "device_policy": current_policy().as_record(),
    }
    if evaluate:
        record["metrics"] = evaluate_unlearning(result.model, bundle, split, device=dev)
    if hf:  # written back in the layout it came in (docs/your-model.md)
        from salun.models.hf import save_hf_folder

        save_hf_folder(out, result.model, model_dir, {**record, "hf": meta["hf"]})
        return record
    model_kwargs = dict(meta["model"])
    head = getattr(result.model, "head", None)
    if head is not None and head.out_features != model_kwargs["num_classes"]:
        model_kwargs["num_classes"] = head.out_features  # BE with its shadow class kept
    save_model(out, result.model, model_kwargs, record)
    return record


__all__ = [
    "evaluate_model_folder",
    "load_for_split",
    "mask_paths",
    "read_meta",
    "train_original",
    "unlearn_model_folder",
    "write_masks",
]
