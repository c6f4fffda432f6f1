"""The one-call API for your own model and data: :func:`unlearn` and :func:`evaluate`.

``model`` is any ``nn.Module`` mapping a float image batch B×C×H×W to logits B×K, or
returning an object with ``.logits`` (Hugging Face classifiers). ``forget`` / ``retain`` /
``test`` are salun :class:`~salun.data.ImageDataset` objects, torch ``Dataset`` objects of
``(image, label)``, or ``DataLoader`` objects; images in [0, 1] (docs/your-model.md).

Example:
    >>> result = salun.unlearn(my_model, forget_ds, retain_ds, "salun", epochs=5, lr=0.01)
    >>> metrics = salun.evaluate(result.model, forget_ds, retain_ds, test_ds)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from salun.data import ImageDataset
from salun.data.sources_torch import as_image_dataset, same_storage
from salun.errors import SalunError
from salun.metrics.gap import avg_gap, gaps
from salun.metrics.mia import FEATURES
from salun.models.adapter import adapt_model, infer_num_classes, strip_adapter
from salun.utils import _silenced, clone_model, model_device, resolve_device, seed_everything

Normalize = tuple[Sequence[float], Sequence[float]]


@dataclass
class UnlearnResult:
    """What :func:`unlearn` returns.

    Attributes:
        model: the unlearned model, a new object of the input model's class (the input
            model is never modified), in eval mode on ``device``.
        seconds: the method's wall-clock run time (RTE), data preparation excluded.
        method: the method name.
        config: the method's settings as a dict (for Retrain: the recipe, or the
            training function's name).
        num_classes: the classes K the method used.
        cost: the run's cost estimated before it ran (:mod:`salun.cost`):
            ``example_passes`` and ``train_epochs``, that cost in epochs of training on
            D_f ∪ D_r.
        warnings: the reasons of the checks that warned (docs/your-model.md, "What salun
            checks before it runs"); empty when none did.
        tuning: with ``lr="auto"``, the :class:`~salun.tune.TuneResult` that chose the
            learning rate (its ``table`` says what was tried and why this one).
    """

    model: nn.Module
    seconds: float
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    cost: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    tuning: Any = None


def unlearn(
    model: nn.Module,
    forget: Any,
    retain: Any,
    method: str = "salun",
    *,
    mask: Mapping[str, torch.Tensor] | str | Path | None = None,
    normalize: Normalize | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    flip: bool = True,
    quiet: bool = False,
    retrain_fn: Callable[[nn.Module, Any], nn.Module] | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
    recipe: Mapping[str, Any] | Any | None = None,
    stream: bool = False,
    num_workers: int | None = None,
    test: Any = None,
    **settings: Any,
) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` with ``method``; the input model is left untouched.

    Args:
        model: the original model (any classifier; see the module docstring).
        forget, retain: D_f and D_r (ImageDataset, torch Dataset or DataLoader).
        method: a registered method (``salun.methods.list_methods()``).
        mask: a saliency mask (``{parameter name: bool tensor}``) or a mask file; any
            method accepts one. SalUn computes its own when None.
        normalize: ``(mean, std)`` per channel: salun normalises the [0, 1] images before
            the model. None: the model takes [0, 1] images as they are.
        num_classes: K (default: the width of the model's output).
        device: ``cpu``, ``cuda[:N]`` or ``auto``.
        flip: whether horizontal flips are valid augmentation (used with ``augment=True``).
        quiet: no progress bars.
        retrain_fn: for ``method="retrain"``: ``retrain_fn(model, retain) -> model`` trains
            ``model`` (``model_factory()``, or a copy of the input model when no factory
            is given: re-initialise it yourself) on ``retain`` exactly as you passed it.
        model_factory: builds a freshly initialised model (Retrain with a ``recipe``).
        recipe: salun's training recipe for Retrain, a dict of
            :class:`~salun.train.TrainConfig` fields (epochs, lr, schedule, ...) or a
            ``TrainConfig``.
        stream: read ``forget``/``retain`` batch by batch from their source instead of
            holding them in memory (map-style Datasets; same result as in memory; the
            methods in :data:`STREAMING_METHODS` only).
        num_workers: ``DataLoader`` workers when streaming (default: a DataLoader's own,
            else 0).
        test: held-out data of the same classes (optional): checks that the model fits
            ``forget`` better than unseen data (a warning otherwise), and is what
            ``lr="auto"`` tunes against.
        **settings: the method's settings (``salun unlearn --method NAME --help`` lists
            them), e.g. ``epochs=5, lr=0.01``; for Retrain: ``epochs``/``lr``/``seed``
            overrides of the recipe. ``lr="auto"`` picks the learning rate with
            :func:`salun.tune` (needs ``test``) and runs with it.

    Raises:
        SalunError: for every user error, before any work: grad disabled by
            ``torch.inference_mode``, every parameter frozen, forget and retain sharing an
            example, a label the model has no logit for, a bad setting (see
            docs/your-model.md). Suspicious inputs only warn (:class:`salun.guards.InputWarning`).
    """
    from salun.guards import check_grad_mode

    _check_model(model)
    check_grad_mode()
    if settings.get("lr") == "auto":  # the learning rate found without a Retrain (salun.tune)
        return _auto_lr(
            model, forget, retain, method, test=test, mask=mask, normalize=normalize,
            num_classes=num_classes, device=device, flip=flip, quiet=quiet, stream=stream,
            num_workers=num_workers, retrain_fn=retrain_fn, model_factory=model_factory,
            recipe=recipe, settings=settings,
        )  # fmt: skip
    # inside torch.no_grad() the methods still need gradients: salun enables them for its
    # own work only (the caller's grad mode is back when unlearn returns)
    with torch.enable_grad():
        return _unlearn(
            model, forget, retain, method, test=test, mask=mask, normalize=normalize,
            num_classes=num_classes, device=device, flip=flip, quiet=quiet,
            retrain_fn=retrain_fn, model_factory=model_factory, recipe=recipe, stream=stream,
            num_workers=num_workers, settings=settings,
        )  # fmt: skip


def _unlearn(
    model, forget, retain, method, *, test, mask, normalize, num_classes, device, flip, quiet,
    retrain_fn, model_factory, recipe, stream, num_workers, settings,
) -> UnlearnResult:  # fmt: skip
    from salun import guards
    from salun.cost import describe, estimate
    from salun.methods import UnlearnContext, make_config, run_method

    dev = resolve_device(device)
    cfg = make_config(method, settings)  # unknown settings fail before data is read
    guards.check_disjoint(forget, retain)  # by index, before anything is read
    if method == "retrain":
        return _retrain(
            model,
            retain,
            cfg,
            mask=mask,
            normalize=normalize,
            device=dev,
            flip=flip,
            quiet=quiet,
            retrain_fn=retrain_fn,
            model_factory=model_factory,
            recipe=recipe,
            stream=stream,
        )
    if retrain_fn is not None or model_factory is not None or recipe is not None:
        raise SalunError(
            f"retrain_fn, model_factory and recipe are for method='retrain', not {method!r}"
        )
    guards.check_trainable(model, method)
    sets = {"forget": forget, "retain": retain}
    if test is not None:
        sets["test"] = test
    if stream:
        _check_streamable(method, cfg)
    f, r, *t = _prepare(sets, stream, num_workers)
    guards.check_disjoint(forget, retain, f, r)  # by content, in memory
    work = adapt_model(clone_model(model), normalize)
    k = _num_classes(work, _first_image(f), num_classes, f, r)
    mask = _load_mask(mask, model)
    wdev = model_device(work)
    notes = guards.check_inputs_fit(work, r, k, wdev)
    if t:
        note = guards.check_forget_was_trained(work, f, t[0], wdev)
        notes += [note] if note else []
    cost = estimate(method, cfg, len(f), len(r))
    if cost["train_epochs"] >= 1 and not _silenced(quiet):  # worth knowing before it runs
        print(f"salun: {describe(method, cost)}", file=sys.stderr)
    ctx = UnlearnContext(num_classes=k, device=dev, flip=flip, quiet=quiet)
    res = run_method(method, work, f, r, cfg, ctx, mask=mask)
    out = UnlearnResult(strip_adapter(res.model), res.seconds, method, asdict(cfg), k)
    out.cost, out.warnings = cost, notes
    return out


def _auto_lr(model, forget, retain, method, *, test, settings, **kw) -> UnlearnResult:
    """``lr="auto"``: :func:`salun.tune` picks the learning rate; its pick's result is
    returned with the tuning attached (``.tuning``)."""
    from salun.tune import tune

    if test is None:
        raise SalunError(
            'lr="auto" needs test=: held-out data of the same classes, which the learning '
            "rate is picked against (docs/your-model.md, Settings without a Retrain)"
        )
    if method == "retrain":
        raise SalunError('lr="auto" tunes an unlearning method; retrain has nothing to tune')
    unused = [k for k in ("mask", "retrain_fn", "model_factory", "recipe") if kw[k] is not None]
    if unused or kw["stream"]:
        raise SalunError(f'lr="auto" reads the sets in memory and takes no {unused or "stream"}')
    rest = {k: v for k, v in settings.items() if k != "lr"}
    res = tune(
        model, forget, retain, test, method, normalize=kw["normalize"],
        num_classes=kw["num_classes"], device=kw["device"], quiet=kw["quiet"], **rest,
    )  # fmt: skip
    if res.field != "lr":
        raise SalunError(f"{method} has no learning rate to tune (it searches {res.field})")
    res.best.tuning = res
    return res.best


def evaluate(
    model: nn.Module,
    forget: Any,
    retain: Any,
    test: Any,
    *,
    retrain: nn.Module | Mapping[str, float] | None = None,
    normalize: Normalize | None = None,
    device: str = "cpu",
    seed: int = 0,
    mia_features: tuple[str, ...] = FEATURES,
    stream: bool = False,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """The paper's metrics of ``model`` on your sets (docs/evaluation.md).

    Args:
        model: the model to evaluate (never modified).
        forget, retain, test: D_f, D_r and the test set (ImageDataset, Dataset or
            DataLoader); ``test`` is used as given (remove forgotten classes yourself).
        retrain: a Retrain model (evaluated on the same sets, with the same ``normalize``)
            or its metrics dict: adds ``retrain`` (its metrics), ``gaps`` and ``avg_gap``.
        seed: draws the balanced subsample of the MIA's shadow sets.
        stream, num_workers: read the sets batch by batch (as :func:`unlearn`).

    Returns:
        ``UA``, ``RA``, ``TA``, ``MIA`` in % (and the other MIA features and the attack's
        bookkeeping, as :func:`salun.metrics.evaluate_unlearning`).
    """
    _check_model(model)
    dev = resolve_device(device)
    sets = _prepare({"forget": forget, "retain": retain, "test": test}, stream, num_workers)
    out = _evaluate_sets(model, sets, seed, normalize, dev, mia_features)
    if retrain is not None:
        if isinstance(retrain, nn.Module):
            ref = _evaluate_sets(retrain, sets, seed, normalize, dev, mia_features)
        elif isinstance(retrain, Mapping):
            ref = dict(retrain)
        else:
            raise SalunError(
                f"retrain must be a model or its metrics dict, got {type(retrain).__name__}"
            )
        out["retrain"] = {k: ref[k] for k in ("UA", "RA", "TA", "MIA")}
        out["gaps"] = gaps(out, ref)
        out["avg_gap"] = avg_gap(out, ref)
    return out


# ---------------------------------------------------------------- helpers


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise SalunError(f"model must be a torch nn.Module, got {type(model).__name__}")


# the methods that only ever batch D_f and D_r (never concatenate or copy the images), so
# they can read them batch by batch; RL and SalUn in their sequential regime only
STREAMING_METHODS = ("be", "bs", "ft", "ga", "l1_sparse", "neggrad_plus", "rl", "salun", "scrub")


def _check_streamable(method: str, cfg) -> None:
    if method not in STREAMING_METHODS:
        raise SalunError(
            f"{method} needs D_f and D_r in memory, so it cannot stream; streaming methods: "
            f"{', '.join(STREAMING_METHODS)} (call without stream=True)"
        )
    if getattr(cfg, "regime", "sequential") != "sequential":
        raise SalunError(f"{method} with regime={cfg.regime!r} cannot stream: use sequential")


def _prepare(sets: dict[str, Any], stream: bool, num_workers: int | None) -> list:
    """The sets in memory (one dtype, one shape), or each as a :class:`StreamedImages`."""
    if not stream:
        return _materialise(sets)
    from salun.data.streaming import StreamedImages, StreamedIterable

    out = []
    for name, data in sets.items():
        if isinstance(data, ImageDataset):
            out.append(data)  # already in memory
            continue
        workers = num_workers
        if isinstance(data, torch.utils.data.DataLoader):
            # salun draws the order and the batches itself; the loader gives its dataset
            # and its workers
            workers = data.num_workers if workers is None else workers
            data = data.dataset
        if not isinstance(data, torch.utils.data.Dataset):
            raise SalunError(f"{name}: streaming needs a torch Dataset or DataLoader")
        if isinstance(data, torch.utils.data.IterableDataset):  # passes in its own order
            out.append(StreamedIterable(data, name, num_workers=workers or 0))
            continue
        out.append(StreamedImages(data, name, num_workers=workers or 0))
    shapes = {k: tuple(_first_image(d).shape[1:]) for k, d in zip(sets, out)}
    if len(set(shapes.values())) > 1:
        raise SalunError(f"the sets hold images of different shapes: {shapes}")
    return out


def _materialise(sets: dict[str, Any]) -> list[ImageDataset]:
    """Every set in memory with one image dtype and one image shape."""
    data = same_storage(*(as_image_dataset(v, k) for k, v in sets.items()))
    shapes = {k: tuple(d.images.shape[1:]) for k, d in zip(sets, data)}
    if len(set(shapes.values())) > 1:
        raise SalunError(f"the sets hold images of different shapes: {shapes}")
    return data


def _first_image(data) -> torch.Tensor:
    return data.first_image() if hasattr(data, "first_image") else data.images[:1]


def _num_classes(work: nn.Module, first: torch.Tensor, given: int | None, *sets) -> int:
    from salun.data.batches import to_float

    k = infer_num_classes(work, to_float(first, model_device(work)))
    if given is not None:
        if not isinstance(given, int) or isinstance(given, bool) or given < 2:
            raise SalunError(f"num_classes must be an integer >= 2, got {given!r}")
        if given > k:
            raise SalunError(f"num_classes={given} but the model outputs only {k} logits")
        k = given
    names = ("forget", "retain", "test")
    for name, d in zip(names, sets):
        top = int(d.labels.max()) if len(d) else -1
        if top >= k:
            raise SalunError(
                f"{name}: a label is {top} but the model has {k} classes (0..{k - 1}); "
                "labels are class indices the model has a logit for"
            )
    return k


def _load_mask(mask, model: nn.Module):
    from salun.saliency import check_mask_fits, load_mask

    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        return load_mask(mask, model)[0]  # names, shapes and the fingerprint checked
    if isinstance(mask, Mapping):
        check_mask_fits(mask, model)
        return dict(mask)
    raise SalunError(f"mask must be a dict of bool tensors or a mask file, got {type(mask)}")


def _evaluate_sets(model, sets, seed, normalize, dev, features) -> dict[str, Any]:
    from salun.metrics.evaluate import evaluate_sets

    _check_model(model)
    work = adapt_model(clone_model(model), normalize).to(dev)
    f, r, t = sets
    # a label the model has no logit for: one clear error, not an IndexError in the MIA
    with torch.no_grad():
        _num_classes(work, _first_image(f), None, f, r, t)
    return evaluate_sets(work, f, r, t, int(seed), device=dev, mia_features=features)


def _retrain(
    model,
    retain,
    cfg,
    *,
    mask,
    normalize,
    device,
    flip,
    quiet,
    retrain_fn,
    model_factory,
    recipe,
    stream=False,
) -> UnlearnResult:
    """Retrain for a user model: the user's training function, or salun's trainer with a
    recipe on a model from the user's factory (docs/your-model.md, "Retrain")."""
    from salun.methods.retrain import retrain_recipe
    from salun.train import TrainConfig, train_supervised

    if mask is not None:
        raise SalunError("retrain trains a fresh model from scratch: a mask means nothing here")
    if retrain_fn is not None:
        if recipe is not None:
            raise SalunError("give retrain either retrain_fn or a recipe, not both")
        overrides = {k: v for k, v in asdict(cfg).items() if k != "lr_grid" and v is not None}
        if overrides:
            raise SalunError(
                f"retrain settings {sorted(overrides)} configure salun's recipe; your "
                "retrain_fn trains as it likes (drop them, or use recipe= and model_factory=)"
            )
        fresh = model_factory() if model_factory is not None else clone_model(model)
        _check_fresh(fresh, model, "model_factory()")
        t0 = time.perf_counter()
        out = retrain_fn(fresh, retain)
        seconds = time.perf_counter() - t0
        _check_fresh(out, model, "retrain_fn")
        config = {"retrain_fn": getattr(retrain_fn, "__qualname__", repr(retrain_fn))}
        return UnlearnResult(out.eval(), seconds, "retrain", config)
    missing = [n for n, v in (("model_factory", model_factory), ("recipe", recipe)) if v is None]
    if missing:
        raise SalunError(
            "retrain of your own model needs retrain_fn=fn(model, retain) -> model, or "
            f"model_factory= and recipe= (salun's trainer); missing: {', '.join(missing)}"
        )
    if isinstance(recipe, TrainConfig):
        recipe = asdict(recipe)
    if not isinstance(recipe, Mapping):
        raise SalunError(f"recipe must be a dict of TrainConfig fields, got {type(recipe)}")
    train_cfg = retrain_recipe(dict(recipe), cfg)
    if stream:
        raise SalunError(
            "retrain with a recipe trains from memory, so it cannot stream; pass retrain_fn= "
            "to train on your data as it is, or call without stream=True"
        )
    (r,) = _materialise({"retain": retain})
    seed_everything(train_cfg.seed)  # the fresh init is part of the recipe
    fresh = model_factory()
    _check_fresh(fresh, model, "model_factory()")
    adapt_model(fresh, normalize)
    t0 = time.perf_counter()
    # D_r only: the forget set is never seen (exact unlearning)
    train_supervised(fresh, r, train_cfg, device=device, flip_allowed=flip, quiet=quiet)
    seconds = time.perf_counter() - t0
    return UnlearnResult(strip_adapter(fresh).eval(), seconds, "retrain", asdict(train_cfg))


def _check_fresh(obj: Any, original: nn.Module, what: str) -> None:
    if not isinstance(obj, nn.Module):
        raise SalunError(f"{what} must return an nn.Module, got {type(obj).__name__}")
    if obj is original:
        raise SalunError(f"{what} returned the input model itself; it must build a new one")


# the deletion-request helper and the Retrain-free tuner, beside the two calls
from salun.data.forget_ids import split_by_ids  # noqa: E402
from salun.tune import TuneResult, tune  # noqa: E402

__all__ = [
    "STREAMING_METHODS",
    "TuneResult",
    "UnlearnResult",
    "evaluate",
    "split_by_ids",
    "tune",
    "unlearn",
]
