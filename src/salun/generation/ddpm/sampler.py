"""Classifier-free-guided DDIM sampling (docs/generation.md).

ε̂ = (1 + w)·ε(x_t, c) − w·ε(x_t, ∅), w = 2.0 by default (the "s = 3" convention). The
update is the generalised DDIM step with stochasticity η: η = 1 with all 1 000 steps is the
reference's setting (effectively ancestral DDPM sampling); fewer steps with η = 0 is the
cheap deterministic DDIM. Noise is drawn from a CPU generator seeded by ``seed``, so the
same seed, steps and batch size give the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from salun.errors import SalunError
from salun.generation.ddpm.diffusion import NoiseSchedule, to_uint8
from salun.utils import progress
from salun.validate import check_fields, check_nonnegative, check_seed


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample.

    Attributes:
        guidance: CFG weight w in (1+w)·cond − w·uncond (paper: 2.0); 0 = plain conditional.
        steps: denoising steps, evenly spaced over T (paper: 1 000).
        eta: DDIM stochasticity (paper: 1.0; 0 = deterministic DDIM).
        batch_size: images per forward pass (the CFG pass doubles it internally).
        clip_denoised: clip the predicted x_0 to [−1, 1] at each step (the reference
            does not; it helps small, briefly trained models).
        seed: seeds the initial noise and the per-step noise.
    """

    guidance: float = 2.0
    steps: int = 1000
    eta: float = 1.0
    batch_size: int = 256
    clip_denoised: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        check_nonnegative("guidance", self.guidance)
        check_seed("seed", self.seed)
        if self.steps < 1:
            raise SalunError(f"sampling steps must be >= 1, got {self.steps}")
        if self.eta < 0:
            raise SalunError(f"eta must be >= 0, got {self.eta}")
        if self.batch_size < 1:
            raise SalunError(f"batch_size must be >= 1, got {self.batch_size}")


def guided_eps(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, w: float
) -> torch.Tensor:
    """(1 + w)·ε(x, t, c) − w·ε(x, t, ∅), with both branches in one batched forward."""
    if w == 0:
        return model(x, t, c)
    null = torch.full_like(c, model.null_class)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, null]))
    cond, uncond = both.chunk(2)
    return (1.0 + w) * cond - w * uncond


def timestep_sequence(num_steps: int, steps: int) -> list[int]:
    """Evenly skipped timesteps from T−1-ish down to 0 (the DDIM 'uniform' skip)."""
    if steps > num_steps:
        raise SalunError(f"cannot sample with {steps} steps from a {num_steps}-step schedule")
    skip = num_steps // steps
    return list(range(0, num_steps, skip))[:steps][::-1]


@torch.no_grad()
def ddim_sample_batch(
    model: nn.Module,
    schedule: NoiseSchedule,
    labels: torch.Tensor,
    cfg: SamplerConfig,
    generator: torch.Generator,
    shape: tuple[int, int, int],
    *,
    quiet: bool = True,
) -> torch.Tensor:
    """Sample one batch for ``labels`` (on the model's device); returns x_0 in ~[−1, 1]."""
    device = labels.device
    abar = schedule.alphas_cumprod  # float64 CPU
    seq = timestep_sequence(schedule.num_steps, cfg.steps)
    x = torch.randn((len(labels), *shape), generator=generator).to(device)
    for i in progress(range(len(seq)), desc="sample", quiet=quiet):
        t = seq[i]
        t_next = seq[i + 1] if i + 1 < len(seq) else -1
        a_t = float(abar[t])
        a_next = float(abar[t_next]) if t_next >= 0 else 1.0
        tt = torch.full((len(labels),), t, device=device, dtype=torch.long)
        eps = guided_eps(model, x, tt, labels, cfg.guidance)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if cfg.clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        # generalised DDIM step (Song et al. 2021, eq. 12) with σ scaled by η
        sigma = cfg.eta * ((1 - a_t / a_next) * (1 - a_next) / (1 - a_t)) ** 0.5
        dir_coef = max(1 - a_next - sigma**2, 0.0) ** 0.5
        x = a_next**0.5 * x0 + dir_coef * eps
        if sigma > 0 and t_next >= 0:
            x = x + sigma * torch.randn(x.shape, generator=generator).to(device)
    return x


def sample(
    model: nn.Module,
    labels: torch.Tensor | list[int],
    cfg: SamplerConfig,
    *,
    schedule: NoiseSchedule | None = None,
    image_shape: tuple[int, int, int] | None = None,
    device: torch.device | str | None = None,
    quiet: bool = False,
) -> torch.Tensor:
    """Generate one image per label with CFG; returns uint8 N×C×H×W on the CPU.

    Args:
        model: a denoiser (``model.cfg`` gives the image shape unless ``image_shape``).
        labels: class indices in 0..K−1 (K = the null class is allowed: unguided samples).
        cfg: sampler settings; ``cfg.seed`` makes the result reproducible.

    Example:
        >>> imgs = sample(model, [3] * 16, SamplerConfig(steps=100, eta=0.0, seed=1))
    """
    schedule = schedule or NoiseSchedule()
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > model.null_class):
        raise SalunError(f"labels must lie in 0..{model.null_class - 1} (or {model.null_class})")
    if image_shape is None:
        c = model.cfg
        image_shape = (c.in_channels, c.image_size, c.image_size)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    try:
        chunks = labels.split(cfg.batch_size)
        for chunk in progress(chunks, desc="sample batches", quiet=quiet or len(chunks) < 2):
            x = ddim_sample_batch(
                model, schedule, chunk.to(device), cfg, gen, image_shape, quiet=quiet
            )
            out.append(to_uint8(x))
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((0, *image_shape), dtype=torch.uint8)
    return torch.cat(out)
