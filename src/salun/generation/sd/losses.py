"""Latent-diffusion losses used by every SD method (docs/generation.md).

All losses are plain means over elements (the LDM ``l_simple``). The forward/noising
convention is the scheduler's own (``add_noise``; ε- or v-prediction from its config).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from salun.errors import SalunError
from salun.generation.objectives import forget_to_other_condition, squared_error


def encode_latents(vae: Any, images: torch.Tensor, generator: torch.Generator | None = None):
    """z_0 = sample of q(z|x) × scaling factor (0.18215 for SD v1), without gradient."""
    with torch.no_grad():
        images = images.to(vae.device, vae.dtype)
        z = vae.encode(images).latent_dist.sample(generator=generator)
    return z.float() * vae.config.scaling_factor


def noisy(
    scheduler: Any, z0: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_t, ε, t) with t uniform in [0, T) and ε ~ N(0, I), drawn from ``generator``."""
    b = z0.shape[0]
    n = scheduler.config.num_train_timesteps
    t = torch.randint(0, n, (b,), generator=generator).to(z0.device)
    eps = torch.randn(z0.shape, generator=generator).to(z0.device, z0.dtype)
    return scheduler.add_noise(z0, eps, t), eps, t


def target_of(scheduler: Any, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor):
    """The regression target: ε, or v for v-prediction models."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, eps, t)
    raise SalunError(f"prediction type {kind!r} is not supported")


def predict(unet: Any, zt: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The UNet output ε_θ(z_t, t, c) as float32 (works on accelerate-wrapped UNets too)."""
    dtype = next(unet.parameters()).dtype
    return unet(zt.to(dtype), t, encoder_hidden_states=emb.to(dtype)).sample.float()


def diffusion_loss(
    unet: Any, scheduler: Any, z0, emb, generator=None, reduction: str = "mean"
) -> torch.Tensor:
    """The standard LDM loss MSE(ε_θ(z_t, t, c), ε): SD's remain loss and GA's (negated).

    ``reduction``: ``mean`` over every element (LDM's ``l_simple``) or ``sum`` over each
    latent's C·H·W, then mean over the batch."""
    zt, eps, t = noisy(scheduler, z0, generator)
    return squared_error(predict(unet, zt, t, emb), target_of(scheduler, z0, eps, t), reduction)


def cfg_mask_loss(
    unet: Any, scheduler: Any, z0, cond, uncond, guidance: float = 7.5, generator=None
) -> torch.Tensor:
    """SalUn's SD mask loss: −MSE(ε, (1 + w)·ε(c) − w·ε(∅)) with w = 7.5 (§5.2.2)."""
    zt, eps, t = noisy(scheduler, z0, generator)
    pred = (1 + guidance) * predict(unet, zt, t, cond) - guidance * predict(unet, zt, t, uncond)
    return -F.mse_loss(pred, target_of(scheduler, z0, eps, t))


def forget_to_replacement_loss(unet: Any, scheduler: Any, z0, cond, replacement, generator=None):
    """SalUn/RL forget loss: MSE(ε_θ(z_t, t, c), stopgrad ε_θ(z_t, t, c')) at the SAME z_t
    (same noise and t) for both branches (§5.2.1, pitfall 13)."""
    zt, _, t = noisy(scheduler, z0, generator)
    return forget_to_other_condition(lambda emb: predict(unet, zt, t, emb), cond, replacement)
