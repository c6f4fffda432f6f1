"""Which UNet parameters a method may change (docs/generation.md).

- ``full``: every UNet parameter (SalUn's default).
- ``xattn``: cross-attention only, names containing ``attn2`` (SalUn "xattn", ESD-x, FMN).
- ``noxattn``: everything except cross-attention, the time embedding and the output layer
  (ESD-u; the CompVis names ``time_embed`` / ``out.`` are diffusers' ``time_embedding`` /
  ``conv_norm_out`` + ``conv_out``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn

from salun.errors import SalunError

PARAM_SETS = ("full", "xattn", "noxattn")
_OUTPUT_LAYER = ("conv_norm_out.", "conv_out.")


def in_set(name: str, which: str) -> bool:
    """Whether UNet parameter ``name`` belongs to the parameter set ``which``."""
    if which == "full":
        return True
    if which == "xattn":
        return "attn2" in name
    if which == "noxattn":
        return not (
            "attn2" in name or name.startswith("time_embedding.") or name.startswith(_OUTPUT_LAYER)
        )
    raise SalunError(f"parameter set must be one of {PARAM_SETS}, got {which!r}")


def select(unet: nn.Module, which: str) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of the set, in ``named_parameters`` order."""
    chosen = [(n, p) for n, p in unet.named_parameters() if in_set(n, which)]
    if not chosen:
        raise SalunError(f"the parameter set {which!r} is empty for this UNet")
    return chosen


def set_trainable(unet: nn.Module, which: str) -> list[tuple[str, nn.Parameter]]:
    """Only the set requires grad afterwards; returns it. Frozen weights never reach the
    optimizer, so neither weight decay nor Adam state can touch them."""
    chosen = select(unet, which)
    names = {n for n, _ in chosen}
    for n, p in unet.named_parameters():
        p.requires_grad_(n in names)
    return chosen


class ParamSubset(nn.Module):
    """A view exposing only some parameters of a model under their original names, so that
    :class:`salun.masking.MaskedUpdate` can act on the trained subset alone."""

    def __init__(self, pairs: list[tuple[str, nn.Parameter]]) -> None:
        super().__init__()
        self._pairs = list(pairs)

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, nn.Parameter]]:  # type: ignore[override]
        yield from self._pairs

    def parameters(self, *args, **kwargs) -> Iterator[nn.Parameter]:  # type: ignore[override]
        for _, p in self._pairs:
            yield p


def restrict_mask(
    mask: Mapping[str, torch.Tensor], pairs: list[tuple[str, nn.Parameter]]
) -> dict[str, torch.Tensor]:
    """The mask entries of the trained parameters (the mask must cover the whole UNet)."""
    missing = [n for n, _ in pairs if n not in mask]
    if missing:
        raise SalunError(f"the mask has no entry for {missing[0]} ({len(missing)} missing)")
    return {n: mask[n] for n, _ in pairs}
