"""DDPM forward process and the ε-prediction loss (docs/generation.md).

Linear betas 1e-4..0.02 over T = 1000 steps; x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε; antithetic
timesteps (draw n/2+1, append T−1−t, truncate to n); label dropout to the null class with
probability 0.1 during training (classifier-free guidance).

Randomness comes from a CPU ``torch.Generator`` and is moved to the model's device, so the
same seed gives the same numbers on any device's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from salun.errors import SalunError
from salun.generation.objectives import squared_error
from salun.validate import check_fields


@dataclass(frozen=True)
class NoiseSchedule:
    """The linear DDPM schedule (paper: 1e-4 → 0.02, T = 1000)."""

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000

    def __post_init__(self) -> None:
        check_fields(self)
        if self.num_steps < 2:
            raise SalunError(f"num_steps must be at least 2, got {self.num_steps}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise SalunError(
                f"betas must satisfy 0 < beta_start <= beta_end < 1, got "
                f"{self.beta_start}, {self.beta_end}"
            )

    @property
    def betas(self) -> torch.Tensor:
        # float64 for the cumulative product, as the reference does, then float32
        return torch.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=torch.float64)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for t = 0..T−1 (float64, CPU)."""
        return torch.cumprod(1.0 - self.betas, dim=0)


def to_model_range(x01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → the model's [−1, 1]."""
    return x01 * 2.0 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-scale images in [−1, 1] → uint8 0..255 on the CPU (values outside are clipped)."""
    return ((x.detach().float().cpu() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def antithetic_timesteps(n: int, num_steps: int, generator: torch.Generator) -> torch.Tensor:
    """n timesteps in 0..T−1: half drawn uniformly, the other half mirrored (T−1−t)."""
    t = torch.randint(0, num_steps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, num_steps - 1 - t])[:n]


def drop_labels(
    c: torch.Tensor, p: float, null_class: int, generator: torch.Generator
) -> torch.Tensor:
    """Replace each label by ``null_class`` with probability ``p`` (CFG training)."""
    if p <= 0:
        return c
    drop = (torch.rand(c.shape, generator=generator) < p).to(c.device)
    return torch.where(drop, torch.full_like(c, null_class), c)


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε."""
    abar = schedule.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def noisy_batch(
    schedule: NoiseSchedule, x0: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh ε and antithetic t for a batch: returns ``(x_t, t, ε)`` on x0's device."""
    t = antithetic_timesteps(len(x0), schedule.num_steps, generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    return q_sample(schedule, x0, t, noise), t, noise


def reduce_sq_error(err: torch.Tensor, reduction: str) -> torch.Tensor:
    """``mean``: over every element; ``sum``: over pixels, then mean over the batch
    (the reference's scaling, 3 072× larger at 32×32×3)."""
    return squared_error(err, torch.zeros((), dtype=err.dtype, device=err.device), reduction)


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    c: torch.Tensor,
    generator: torch.Generator,
    *,
    p_uncond: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """The standard conditional ε-prediction loss ‖ε − ε_θ(x_t, t, c̃)‖².

    Args:
        model: a denoiser with a ``null_class`` attribute.
        x0: clean images in [−1, 1].
        c: their labels; each is dropped to the null class with probability ``p_uncond``.
        generator: CPU generator for t, ε and the label dropout.
        reduction: ``"mean"`` or ``"sum"`` (see :func:`reduce_sq_error`).
    """
    x_t, t, noise = noisy_batch(schedule, x0, generator)
    c = drop_labels(c, p_uncond, model.null_class, generator)
    return reduce_sq_error(noise - model(x_t, t, c), reduction)
