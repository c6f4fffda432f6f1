"""The DDPM saliency mask (docs/generation.md).

One pass over D_f in eval mode. Per batch: fresh ε and antithetic t, the **CFG-combined**
prediction (1 + w)·ε(x_t, c) − w·ε(x_t, ∅) with w = 2, the loss Σ_pixels (ε − ε̂)² averaged
over the batch, its gradient **clipped to norm 1.0 per batch**, then summed (signed) over
batches; |·| once; a global top-50 % over every parameter of the denoiser — the class table
(null row included) and the time embedding are parameters like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from salun.data import ImageDataset, iterate_batches
from salun.errors import SalunError
from salun.generation.ddpm.diffusion import (
    NoiseSchedule,
    noisy_batch,
    reduce_sq_error,
    to_model_range,
)
from salun.generation.ddpm.model import Denoiser
from salun.generation.ddpm.sampler import guided_eps
from salun.saliency import check_keeps_some, compute_saliency, saliency_mask
from salun.validate import check_fields, check_nonnegative, check_positive, check_seed


@dataclass(frozen=True)
class DDPMMaskConfig:
    """How to compute the DDPM saliency mask.

    Attributes:
        keep: kept fraction of all scalars (paper: 0.5).
        batch_size: forget images per gradient (paper: 128).
        guidance: CFG weight w of the forgetting loss (paper: 2.0).
        clip_grad_norm: per-batch gradient clip before summing (paper: 1.0).
        passes: passes over D_f (paper: 1).
        seed: seeds ε and t.
    """

    keep: float = 0.5
    batch_size: int = 128
    guidance: float = 2.0
    clip_grad_norm: float = 1.0
    passes: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        check_nonnegative("guidance", self.guidance)
        check_positive("clip_grad_norm", self.clip_grad_norm)
        check_seed("seed", self.seed)
        if not 0 < self.keep <= 1:
            raise SalunError(f"keep must lie in (0, 1], got {self.keep}")
        if self.batch_size < 1 or self.passes < 1:
            raise SalunError("batch_size and passes must be >= 1")


def cfg_forget_loss(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    c: torch.Tensor,
    generator: torch.Generator,
    guidance: float = 2.0,
) -> torch.Tensor:
    """Σ_pixels (ε − [(1+w)·ε(x_t, c) − w·ε(x_t, ∅)])², mean over the batch."""
    x_t, t, noise = noisy_batch(schedule, x0, generator)
    return reduce_sq_error(noise - guided_eps(model, x_t, t, c, guidance), "sum")


def ddpm_saliency(
    model: Denoiser,
    forget: ImageDataset,
    cfg: DDPMMaskConfig,
    *,
    schedule: NoiseSchedule | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Saliency scores |Σ_b clip(∇ℓ_f(batch_b))| for every parameter of ``model``."""
    if len(forget) == 0:
        raise SalunError("the forget set is empty: nothing to compute saliency for")
    schedule = schedule or NoiseSchedule()
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(device)

    def batches():
        for _ in range(cfg.passes):
            for x, y in iterate_batches(forget, cfg.batch_size, device=device):
                yield to_model_range(x), y

    def loss_fn(m, batch):
        return cfg_forget_loss(m, schedule, batch[0], batch[1], gen, cfg.guidance)

    return compute_saliency(model, batches(), loss_fn, clip_grad_norm=cfg.clip_grad_norm)


def ddpm_saliency_mask(
    model: Denoiser,
    forget: ImageDataset,
    cfg: DDPMMaskConfig,
    *,
    schedule: NoiseSchedule | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The boolean SalUn mask: global top-``keep`` of :func:`ddpm_saliency`."""
    scores = ddpm_saliency(model, forget, cfg, schedule=schedule, device=device)
    check_keeps_some(scores, cfg.keep)
    return saliency_mask(scores, keep=cfg.keep, scope="global")
