"""The method registry: one function and one frozen config class per unlearning method.

Every method has the signature ``fn(model, forget, retain, cfg, ctx, mask) -> nn.Module``
and is called through :func:`run_method`, which copies the input model first (methods
never mutate the model they are given) and measures the run time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.utils import clone_model

MethodFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class UnlearnContext:
    """What a method may need besides its config: where to run and how the model was made.

    Attributes:
        num_classes: classes of the task.
        device: where to compute.
        flip: whether horizontal flips are valid augmentation for this dataset.
        model_kwargs: ``build_model`` arguments (Retrain builds a fresh model from them).
        original_train: the original model's training config as a dict (Retrain reuses it).
        quiet: no progress bars.
    """

    num_classes: int
    device: torch.device = torch.device("cpu")
    flip: bool = True
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    original_train: Mapping[str, Any] = field(default_factory=dict)
    quiet: bool = False


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: MethodFn
    config: type
    summary: str
    uses_mask: bool = True


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, config: type, summary: str, uses_mask: bool = True):
    """Decorator registering ``fn`` under ``name`` with its config dataclass."""

    def wrap(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:  # a plugin taking a built-in's name among them
            where = getattr(_REGISTRY[name].fn, "__module__", "?")
            raise SalunError(f"method {name!r} is already registered (by {where})")
        _REGISTRY[name] = MethodSpec(name, fn, config, summary, uses_mask)
        return fn

    return wrap


def load_builtins() -> None:
    from salun.methods import catalog  # noqa: F401  (imports every method module)


def _load_all() -> None:
    """The built-ins, then installed packages' ``salun.methods`` entry points (once)."""
    load_builtins()
    from salun.methods.plugins import load_entry_points

    load_entry_points()


def list_methods() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    _load_all()
    if name not in _REGISTRY:
        raise SalunError(
            f"unknown method {name!r}; choose one of: {', '.join(list_methods())} "
            "(a method of your own module needs --plugin MODULE; docs/plugins.md)"
        )
    return _REGISTRY[name]


def make_config(name: str, overrides: Mapping[str, Any] | None = None):
    """The method's config with ``overrides`` applied; unknown keys are a clear error."""
    spec = get_method(name)
    overrides = dict(overrides or {})
    known = {f.name: f for f in fields(spec.config)}
    bad = sorted(set(overrides) - set(known))
    if bad:
        raise SalunError(f"method {name!r} has no setting {bad[0]!r}; it has: {', '.join(known)}")
    for k, v in list(overrides.items()):
        if isinstance(v, list):
            overrides[k] = tuple(v)
    return spec.config(**overrides)


@dataclass
class UnlearnResult:
    model: nn.Module
    seconds: float
    method: str
    config: Any


def run_method(
    name: str,
    model: nn.Module,
    forget: ImageDataset,
    retain: ImageDataset,
    cfg=None,
    ctx: UnlearnContext | None = None,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> UnlearnResult:
    """Run method ``name`` on a copy of ``model``; the input model is never modified.

    Args:
        name: a registered method (see :func:`list_methods`).
        model: the original model θ_o.
        forget, retain: D_f and D_r.
        cfg: the method's config (default: the paper's defaults).
        ctx: the context (default: CPU, classes from the model's head).
        mask: an optional saliency mask; any method accepts one (GA + mask, FT + mask...).

    Returns:
        An :class:`UnlearnResult` with the new model and the wall-clock seconds (RTE).
    """
    spec = get_method(name)
    cfg = cfg if cfg is not None else spec.config()
    if not isinstance(cfg, spec.config):
        raise SalunError(
            f"method {name!r} takes a {spec.config.__name__}, got {type(cfg).__name__}"
        )
    if len(forget) == 0:
        raise SalunError("the forget set is empty: there is nothing to unlearn")
    if ctx is None:
        ctx = UnlearnContext(
            num_classes=int(getattr(model, "num_classes", 0))
            or int(max(forget.labels.max(), retain.labels.max())) + 1
        )
    work = clone_model(model).to(ctx.device)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    t0 = time.perf_counter()
    out = spec.fn(work, forget, retain, cfg, ctx, mask)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    seconds = time.perf_counter() - t0
    return UnlearnResult(out.eval(), seconds, name, cfg)
