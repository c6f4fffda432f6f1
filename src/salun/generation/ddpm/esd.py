"""ESD's forget term for the class-conditional DDPM, and the two ways it gets its x_t.

The target is ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅)) from a frozen copy ε* of the original.
Where x_t comes from is ``esd_xt`` (docs/generation.md, "ESD"):

- ``reference``: what the removed DDPM ESD of the SalUn code (OPTML-Group/Unlearn-Saliency
  @ b874ee9, ``DDPM/runners/diffusion.py``, ``train_esd``) did at run time. It draws
  t_enc ∈ {0, …, K} (K = ``esd_ddim_steps``, 50), starts from pure noise and runs its
  generalised DDIM (η = 1, guidance w) on the **one-step** grid t_enc − 1, …, 0 down to the
  predicted x_0 (``skip = T // args.timesteps`` with both 1 000; the 50-step grid is never
  used for sampling). The loss then takes t from [round(t_enc·T/K), round((t_enc+1)·T/K)),
  up to 1 019, which the UNet's sinusoidal embedding accepts. So the UNet sees something close
  to the starting noise, labelled with a timestep that has nothing to do with it. The model
  samples in train mode (dropout on), as the reference's loop left it.
- ``ddim``: salun's own reading, used by the records before issue #24: deterministic DDIM
  from pure noise in eval mode on the ``esd_ddim_steps`` grid, stopped at a random step, with
  t drawn inside that step's bucket, so the timestep matches the noise level.
- ``forward``: the forward process on the forget images (cheap; not ESD's sampling).
"""

from __future__ import annotations

import torch

from salun.generation.ddpm.diffusion import NoiseSchedule, noisy_batch
from salun.generation.ddpm.model import Denoiser
from salun.generation.ddpm.sampler import guided_eps, timestep_sequence
from salun.generation.objectives import negative_guidance, squared_error

ESD_XT = ("reference", "ddim", "forward")
REFERENCE_DDIM_ETA = 1.0  # the reference's --eta default, used by its partial sampler


@torch.no_grad()
def esd_target(
    frozen: Denoiser, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor, eta: float
) -> torch.Tensor:
    """ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅)) from the frozen original (no gradient)."""
    null = torch.full_like(c, frozen.null_class)
    both = frozen(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, null]))
    e_c, e_null = both.chunk(2)
    return negative_guidance(e_c, e_null, eta)


def reference_timestep(t_enc: int, grid: int, num_steps: int, generator: torch.Generator) -> int:
    """The reference's t for the loss: uniform in [round(t_enc·T/K), round((t_enc+1)·T/K))."""
    low = round(t_enc / grid * num_steps)
    high = round((t_enc + 1) / grid * num_steps)
    return low + int(torch.randint(0, high - low, (1,), generator=generator))


@torch.no_grad()
def esd_reference_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    c: torch.Tensor,
    shape: tuple[int, ...],
    t_enc: int,
    guidance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The reference's partial sampler for one ``t_enc``: pure noise, then generalised DDIM
    (η = 1) with guidance ``guidance`` at timesteps t_enc − 1, t_enc − 2, …, 0, each step to
    the next lower timestep (ᾱ = 1 after 0, so the last step returns the predicted x_0).
    ``t_enc`` = 0 returns the noise itself. The model is used in whatever mode it is in."""
    abar = schedule.alphas_cumprod
    x = torch.randn((len(c), *shape), generator=generator).to(c.device)
    for t in range(t_enc - 1, -1, -1):
        a_t = float(abar[t])
        a_next = float(abar[t - 1]) if t > 0 else 1.0
        tt = torch.full((len(c),), t, device=c.device, dtype=torch.long)
        eps = guided_eps(model, x, tt, c, guidance)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        c1 = REFERENCE_DDIM_ETA * ((1 - a_t / a_next) * (1 - a_next) / (1 - a_t)) ** 0.5
        c2 = max(1 - a_next - c1**2, 0.0) ** 0.5
        z = torch.randn(x.shape, generator=generator).to(x.device)
        x = a_next**0.5 * x0 + c1 * z + c2 * eps
    return x


@torch.no_grad()
def esd_ddim_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    c: torch.Tensor,
    shape: tuple[int, ...],
    grid: int,
    guidance: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """salun's partial sampler (``esd_xt: ddim``): deterministic DDIM from pure noise with
    ``model`` in eval mode, stopped after a random number of the ``grid`` steps.

    Returns ``(x_t, t)`` where t is a DDPM timestep drawn uniformly inside the bucket of the
    DDIM step reached."""
    seq = timestep_sequence(schedule.num_steps, grid)  # descending DDPM timesteps
    stop = int(torch.randint(0, grid, (1,), generator=generator))
    abar = schedule.alphas_cumprod
    x = torch.randn((len(c), *shape), generator=generator).to(c.device)
    was_training = model.training
    model.eval()
    try:
        for i in range(stop):  # DDIM (η = 0) steps seq[0] -> ... -> seq[stop]
            t, t_next = seq[i], seq[i + 1]
            a_t, a_next = float(abar[t]), float(abar[t_next])
            tt = torch.full((len(c),), t, device=c.device, dtype=torch.long)
            eps = guided_eps(model, x, tt, c, guidance)
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
            x = a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps
    finally:
        model.train(was_training)
    bucket = schedule.num_steps // grid
    # seq[stop] is the bucket's lowest timestep; draw t uniformly inside it
    t = seq[stop] + int(torch.randint(0, bucket, (1,), generator=generator))
    return x, torch.full((len(c),), min(t, schedule.num_steps - 1), device=c.device)


def esd_noisy_input(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    c: torch.Tensor,
    how: str,
    grid: int,
    guidance: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, t)`` for ESD's loss, the way ``how`` (= ``esd_xt``) says."""
    if how == "reference":
        t_enc = int(torch.randint(0, grid + 1, (1,), generator=generator))  # 0..K inclusive
        shape = tuple(x0.shape[1:])
        x = esd_reference_sample(model, schedule, c, shape, t_enc, guidance, generator)
        t = reference_timestep(t_enc, grid, schedule.num_steps, generator)
        return x, torch.full((len(c),), t, device=c.device, dtype=torch.long)
    if how == "ddim":
        return esd_ddim_sample(model, schedule, c, tuple(x0.shape[1:]), grid, guidance, generator)
    x_t, t, _ = noisy_batch(schedule, x0, generator)
    return x_t, t


def esd_loss(
    model: Denoiser,
    frozen: Denoiser,
    x_t: torch.Tensor,
    t: torch.Tensor,
    c: torch.Tensor,
    eta: float,
) -> torch.Tensor:
    """ESD's term: MSE(ε_θ(x_t, c), negative-guidance target of the frozen copy)."""
    return squared_error(model(x_t, t, c), esd_target(frozen, x_t, t, c, eta))
