"""SalUn, RL and GA for Stable Diffusion (docs/generation.md).

Each step takes one D_f batch (one unshuffled pass per epoch, as the reference) and the
next D_r batch from an endless cycle:

- ``salun`` / ``rl``: loss = MSE(ε_θ(z_t, c), stopgrad ε_θ(z_t, c')) + α·MSE(ε_θ(z_r,t, c_r), ε)
  with the same z_t for both forget branches; SalUn = RL with a saliency mask.
- ``ga``: loss = −MSE(ε_θ(z_t, c), ε) on D_f + α·retain loss (the reference: α 0.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from salun.errors import SalunError
from salun.generation.objectives import ascent, with_retain
from salun.generation.sd.data import ImagePromptSet
from salun.generation.sd.losses import (
    diffusion_loss,
    encode_latents,
    forget_to_replacement_loss,
)
from salun.generation.sd.pipeline import encode_prompts
from salun.generation.sd.train import SDTrainConfig, SDTrainer, trainable_copy
from salun.utils import progress, seed_everything
from salun.validate import check_nonnegative


@dataclass(frozen=True)
class SalUnSDConfig(SDTrainConfig):
    """SalUn / RL for SD. Beyond :class:`SDTrainConfig`:

    Attributes:
        alpha: weight of the retain loss (Imagenette README: 0.5; nudity script: 0.1).
    """

    alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("alpha", self.alpha)  # when built, not after the weights load


@dataclass(frozen=True)
class GASDConfig(SDTrainConfig):
    """Gradient ascent on D_f plus α × the retain loss. Defaults: the reference's SD
    gradient-ascent script (α 0.1, 10 epochs, lr 1e-5, batch 8).

    Attributes:
        alpha: weight of the retain loss (reference: 0.1; 0 = plain GA).
        ga_reduction: the ascent term's reduction: ``mean`` over latent elements (the
            reference, whose LDM loss is a mean) or ``sum`` over C·H·W, mean over the batch.
    """

    alpha: float = 0.1
    epochs: int = 10
    ga_reduction: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative("alpha", self.alpha)
        if self.ga_reduction not in ("mean", "sum"):
            raise SalunError(f"ga_reduction must be mean or sum, got {self.ga_reduction!r}")


def _retain_loss(pipe, unet, batch, g) -> torch.Tensor:
    z0 = encode_latents(pipe.vae, batch["images"], g).to(next(unet.parameters()).device)
    return diffusion_loss(unet, pipe.scheduler, z0, encode_prompts(pipe, batch["prompts"]), g)


def _run(pipe, forget, retain, cfg, mask, inplace, forget_loss) -> tuple[Any, list[float]]:
    if cfg.alpha < 0:
        raise SalunError(f"alpha must be >= 0, got {cfg.alpha}")
    if cfg.alpha > 0 and (retain is None or len(retain) == 0):
        raise SalunError("alpha > 0 needs retain data (D_r); pass it or set alpha 0")
    seed_everything(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    tr = SDTrainer(trainable_copy(pipe.unet, inplace), cfg, mask=mask)
    stream = retain.cycle(cfg.batch_size, seed=cfg.seed) if cfg.alpha > 0 else None
    steps_per_epoch = -(-len(forget) // cfg.batch_size)
    bar = progress(total=cfg.epochs * steps_per_epoch, desc="unlearn", quiet=cfg.quiet)
    for _ in range(cfg.epochs):
        for batch in forget.batches(cfg.batch_size):
            loss = forget_loss(tr.unet, batch, g)
            if stream is not None:
                loss = with_retain(loss, _retain_loss(pipe, tr.unet, next(stream), g), cfg.alpha)
            bar.set_postfix(loss=f"{tr.step(loss):.4f}")
            bar.update()
            if tr.done():
                break
        if tr.done():
            break
    bar.close()
    return tr.finish(), tr.history


def unlearn_salun(
    pipe: Any,
    forget: ImagePromptSet,
    retain: ImagePromptSet | None,
    cfg: SalUnSDConfig,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    inplace: bool = False,
) -> tuple[Any, list[float]]:
    """SalUn (with ``mask``) or RL (``mask=None``) on SD; returns (new UNet, loss history).

    ``forget.replacements`` must hold the pseudo prompt c' of every image (Imagenette:
    the next class's prompt; nudity: "a photo of a person wearing clothes").
    """
    if forget.replacements is None:
        raise SalunError("SalUn/RL need a replacement prompt per forget image (with_replacements)")

    def forget_loss(unet, batch, g):
        z0 = encode_latents(pipe.vae, batch["images"], g).to(next(unet.parameters()).device)
        c = encode_prompts(pipe, batch["prompts"])
        c_rep = encode_prompts(pipe, batch["replacements"])
        return forget_to_replacement_loss(unet, pipe.scheduler, z0, c, c_rep, g)

    return _run(pipe, forget, retain, cfg, mask, inplace, forget_loss)


def unlearn_ga(
    pipe: Any,
    forget: ImagePromptSet,
    retain: ImagePromptSet | None,
    cfg: GASDConfig,
    *,
    mask: Mapping[str, torch.Tensor] | None = None,
    inplace: bool = False,
) -> tuple[Any, list[float]]:
    """Gradient ascent on the LDM loss of D_f; returns (new UNet, loss history)."""

    def forget_loss(unet, batch, g):
        z0 = encode_latents(pipe.vae, batch["images"], g).to(next(unet.parameters()).device)
        emb = encode_prompts(pipe, batch["prompts"])
        return ascent(diffusion_loss(unet, pipe.scheduler, z0, emb, g, reduction=cfg.ga_reduction))

    return _run(pipe, forget, retain, cfg, mask, inplace, forget_loss)
