"""One entry point for every SD method: ``salun``, ``rl``, ``ga``, ``esd``, ``fmn``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import torch

from salun.errors import SalunError
from salun.generation.sd.data import ImagePromptSet
from salun.generation.sd.esd import ESDConfig, unlearn_esd
from salun.generation.sd.fmn import FMNConfig, unlearn_fmn
from salun.generation.sd.methods import GASDConfig, SalUnSDConfig, unlearn_ga, unlearn_salun

CONFIGS: dict[str, type] = {
    "salun": SalUnSDConfig,
    "rl": SalUnSDConfig,
    "ga": GASDConfig,
    "esd": ESDConfig,
    "fmn": FMNConfig,
}
SUMMARIES = {
    "salun": "SalUn: forget prompt pulled to a replacement prompt, on salient weights only",
    "rl": "RL: SalUn's objective on every weight of the parameter set (no mask)",
    "ga": "GA: gradient ascent on the diffusion loss of the forget images",
    "esd": "ESD: negative guidance from a frozen copy (ESD-x: xattn, ESD-u: noxattn)",
    "fmn": "FMN: attention re-steering away from the concept tokens",
}


def make_config(method: str, values: Mapping[str, Any] | None = None) -> Any:
    """Build the frozen config of ``method`` from a dict; unknown keys are errors."""
    if method not in CONFIGS:
        raise SalunError(f"unknown SD method {method!r}; choose one of {sorted(CONFIGS)}")
    cls = CONFIGS[method]
    names = {f.name for f in fields(cls)}
    values = dict(values or {})
    unknown = sorted(set(values) - names)
    if unknown:
        raise SalunError(f"unknown settings {unknown} for {method}; valid: {sorted(names)}")
    return cls(**values)


def run_unlearning(
    pipe: Any,
    method: str,
    cfg: Any,
    *,
    forget: ImagePromptSet | None = None,
    retain: ImagePromptSet | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    inplace: bool = False,
) -> tuple[Any, list[float]]:
    """Run ``method``; returns (unlearned UNet, loss history). ``pipe.unet`` is left as it
    was unless ``inplace``."""
    if method == "salun" and mask is None:
        raise SalunError("SalUn needs a saliency mask: make one with `salun sd mask`")
    if method in ("salun", "rl", "ga", "fmn") and (forget is None or len(forget) == 0):
        raise SalunError(f"{method} needs forget images (D_f)")
    if method in ("salun", "rl"):
        return unlearn_salun(pipe, forget, retain, cfg, mask=mask, inplace=inplace)
    if method == "ga":
        return unlearn_ga(pipe, forget, retain, cfg, mask=mask, inplace=inplace)
    if method == "esd":
        return unlearn_esd(pipe, cfg, mask=mask, inplace=inplace)
    if method == "fmn":
        return unlearn_fmn(pipe, forget, cfg, mask=mask, inplace=inplace)
    raise SalunError(f"unknown SD method {method!r}; choose one of {sorted(CONFIGS)}")
