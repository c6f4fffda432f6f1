"""Class forgetting in the conditional DDPM: SalUn and its baselines (docs/generation.md).

Every method minimises ``forget_term + α · retain_term`` with Adam (lr 1e-4, wd 0), clips
the gradient norm to 1.0 **before** masking, and updates through
:class:`salun.masking.MaskedUpdate` (strict: masked weights stay bit-identical).

Forget terms (x_t = √ᾱ_t·x_f + √(1−ᾱ_t)·ε with fresh ε and antithetic t):

- ``salun`` / ``rl``: ‖ε_θ(x_t, c) − sg[ε_θ(x_t, c')]‖² (mean), the forget class's prediction
  pulled to a stop-gradient prediction for another class c' — ``target_class="next"``:
  c' = (c+1) mod K as in the reference; ``"random"``: uniform over the other classes. Both
  forwards run in train mode with independent label dropout, as in the reference. ``salun``
  requires a mask; ``rl`` is the same objective without one (the paper's "SalUn w/o mask").
- ``ga``: −ℓ_diffusion(D_f), gradient ascent on the ordinary loss, **summed over pixels** as
  in the reference (``ga_reduction="sum"``; ``"mean"`` divides the ascent term by C·H·W, so
  it pulls 1/(C·H·W) as hard against the retain term).
- ``esd``: ‖ε_θ(x_t, c) − [ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅))]‖² with ε* a frozen copy
  of the original model (no gradient reaches it). Defaults are the reference's removed DDPM
  ESD: η = 7.5, 10 000 iterations at batch 1, and x_t from **partial sampling**
  (``esd_xt="sample"``: DDIM from pure noise with the model being trained, under guidance
  ``esd_start_guidance``, down to a random step of an ``esd_ddim_steps`` grid, mapped to a DDPM
  timestep inside that step's bucket). ``esd_xt="forward"`` instead noises the forget images
  with the forward process (much cheaper on CPU; the same target).
- Retrain and the random-mask ablation live elsewhere: Retrain is :func:`train_ddpm` on D_r;
  the ablation is ``salun`` with :func:`salun.saliency.random_mask`.

**α scaling.** The reference's α = 1e-3 multiplies a retain loss *summed* over pixels (while
its forget loss is a mean), i.e. an effective per-element weight of 1e-3 × C·H·W (≈ 3 on
CIFAR-10). We use a **mean-reduced** retain loss, so the default α is 1e-3 × C·H·W: 0.784 for
28×28×1 Fashion-MNIST, 3.072 for CIFAR-10. α = 1e-3 on a mean loss collapses every class
(DESIGN §4; reference issue #19). ``retain_reduction="sum"`` restores the reference's
scaling, with default α = 1e-3. ESD has no retain term by default (α = 0), as in ESD.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.generation.ddpm.data import BatchStream
from salun.generation.ddpm.diffusion import (
    NoiseSchedule,
    diffusion_loss,
    drop_labels,
    noisy_batch,
)
from salun.generation.ddpm.model import Denoiser
from salun.generation.ddpm.sampler import guided_eps, timestep_sequence
from salun.generation.ddpm.unlearn_state import UnlearnResume, UnlearnRun, empty_sums
from salun.generation.objectives import (
    ascent,
    forget_to_other_condition,
    negative_guidance,
    squared_error,
    with_retain,
)
from salun.masking import MaskedUpdate
from salun.train import check_finite
from salun.utils import clone_model, progress, seeded_global_rng
from salun.validate import check_choice, check_fields, check_nonnegative, check_range, check_seed

METHODS = ("salun", "rl", "ga", "esd")
REFERENCE_ALPHA_PER_PIXEL = 1e-3  # the reference's α on its pixel-summed retain loss


@dataclass(frozen=True)
class GenUnlearnConfig:
    """Settings of DDPM class forgetting (defaults: the reference's, docs/generation.md).

    Attributes:
        method: ``salun`` | ``rl`` | ``ga`` | ``esd``.
        iterations: optimizer steps; None = the method's reference value (SalUn, RL, GA:
            1 000; ESD: 10 000).
        batch_size: forget and retain images per step, each; None = the method's reference
            value (SalUn, RL, GA: 128 + 128; ESD: 1).
        lr: Adam learning rate (paper: 1e-4).
        alpha: retain weight; None = the method's default (see the module docstring).
        retain_reduction: ``mean`` (ours) or ``sum`` over pixels (the reference).
        target_class: ``next`` (c+1 mod K, the reference) or ``random`` (another class).
        p_uncond: label dropout on the forget branches and the retain loss (paper: 0.1).
        ga_reduction: GA's forget loss summed over pixels (``sum``, the reference) or
            averaged over every element (``mean``).
        esd_eta: ESD's negative-guidance strength η (reference DDPM ESD: 7.5).
        esd_xt: where ESD's x_t comes from: ``sample`` (partial DDIM sampling with the model
            being trained, the reference) or ``forward`` (forward process on D_f).
        esd_ddim_steps: ESD's partial-sampling grid (reference ESD: 50 DDIM steps).
        esd_start_guidance: CFG weight w of ESD's partial sampling (reference ESD: 3).
        grad_clip: global gradient-norm clip before masking (paper: 1.0); 0 disables.
        mask_mode: ``strict`` (masked weights never move) or ``legacy``.
        flip: random horizontal flips on both streams.
        seed: seeds batches, noise, timesteps, dropout and random targets.
    """

    method: str = "salun"
    iterations: Optional[int] = None  # noqa: UP045
    batch_size: Optional[int] = None  # noqa: UP045
    lr: float = 1e-4
    # Optional[...] because salun.config_cli does not yet read `X | None` (types.UnionType)
    alpha: Optional[float] = None  # noqa: UP045
    retain_reduction: str = "mean"
    target_class: str = "next"
    p_uncond: float = 0.1
    ga_reduction: str = "sum"
    esd_eta: float = 7.5
    esd_xt: str = "sample"
    esd_ddim_steps: int = 50
    esd_start_guidance: float = 3.0
    grad_clip: float = 1.0
    mask_mode: str = "strict"
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("p_uncond", self.p_uncond, 0, 1)
        check_nonnegative("esd_eta", self.esd_eta)
        check_nonnegative("grad_clip", self.grad_clip)
        check_choice("mask_mode", self.mask_mode, ("strict", "legacy"))
        check_seed("seed", self.seed)
        if self.method not in METHODS:
            raise SalunError(
                f"unknown DDPM unlearning method {self.method!r}; choose one of "
                f"{', '.join(METHODS)} (or retrain via `salun gen unlearn --method retrain`)"
            )
        for name in ("iterations", "batch_size", "esd_ddim_steps"):
            v = getattr(self, name)
            if v is not None and not v >= 1:
                raise SalunError(f"{name} must be >= 1, got {v}")
        if self.ga_reduction not in ("mean", "sum"):
            raise SalunError(f"ga_reduction must be mean or sum, got {self.ga_reduction!r}")
        if self.esd_xt not in ("sample", "forward"):
            raise SalunError(f"esd_xt must be sample or forward, got {self.esd_xt!r}")
        for name in ("esd_eta", "esd_start_guidance"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise SalunError(f"{name} must be a finite number, got {v}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SalunError(f"lr must be a positive number, got {self.lr}")
        if self.alpha is not None and not self.alpha >= 0:
            raise SalunError(f"alpha must be >= 0, got {self.alpha}")
        if self.retain_reduction not in ("mean", "sum"):
            raise SalunError(f"retain_reduction must be mean or sum, got {self.retain_reduction!r}")
        if self.target_class not in ("next", "random"):
            raise SalunError(f"target_class must be next or random, got {self.target_class!r}")


# The reference's schedule per method: (iterations, batch size).
REFERENCE_SCHEDULE = {"salun": (1000, 128), "rl": (1000, 128), "ga": (1000, 128), "esd": (10000, 1)}


def resolve_schedule(cfg: GenUnlearnConfig) -> tuple[int, int]:
    """``(iterations, batch_size)`` actually used: the config's, or the method's reference."""
    its, bs = REFERENCE_SCHEDULE[cfg.method]
    return (cfg.iterations or its, cfg.batch_size or bs)


def resolve_alpha(cfg: GenUnlearnConfig, pixels_per_image: int) -> float:
    """The retain weight actually used (see the module docstring for the scaling)."""
    if cfg.alpha is not None:
        return float(cfg.alpha)
    if cfg.method == "esd":
        return 0.0
    if cfg.retain_reduction == "sum":
        return REFERENCE_ALPHA_PER_PIXEL
    return REFERENCE_ALPHA_PER_PIXEL * pixels_per_image


def other_class(
    c: torch.Tensor, num_classes: int, how: str, generator: torch.Generator
) -> torch.Tensor:
    """c' ≠ c: ``next`` = (c+1) mod K; ``random`` = uniform over the K−1 other classes."""
    if how == "next":
        return (c + 1) % num_classes
    shift = torch.randint(1, num_classes, c.shape, generator=generator).to(c.device)
    return (c + shift) % num_classes


@torch.no_grad()
def esd_target(
    frozen: Denoiser, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor, eta: float
) -> torch.Tensor:
    """ε*(x_t, ∅) − η·(ε*(x_t, c) − ε*(x_t, ∅)) from the frozen original (no gradient)."""
    null = torch.full_like(c, frozen.null_class)
    both = frozen(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, null]))
    e_c, e_null = both.chunk(2)
    return negative_guidance(e_c, e_null, eta)


def rl_forget_loss(
    model: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    c: torch.Tensor,
    cfg: GenUnlearnConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """SalUn's forget term: MSE(ε_θ(x_t, c), sg[ε_θ(x_t, c')]) on the same x_t and t."""
    x_t, t, _ = noisy_batch(schedule, x0, generator)
    c_target = other_class(c, model.num_classes, cfg.target_class, generator)
    # independent label dropout per branch, drawn target first (the seeded order of before)
    c_other = drop_labels(c_target, cfg.p_uncond, model.null_class, generator)
    c_own = drop_labels(c, cfg.p_uncond, model.null_class, generator)
    return forget_to_other_condition(lambda cond: model(x_t, t, cond), c_own, c_other)


@torch.no_grad()
def esd_partial_sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    c: torch.Tensor,
    shape: tuple[int, ...],
    cfg: GenUnlearnConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ESD's x_t: deterministic DDIM from pure noise with ``model`` under guidance
    ``esd_start_guidance``, stopped after a random number of the ``esd_ddim_steps`` steps.

    Returns ``(x_t, t)`` where t is a DDPM timestep drawn uniformly inside the bucket of the
    DDIM step reached (the same mapping as ESD's Stable Diffusion code)."""
    n_steps = cfg.esd_ddim_steps
    seq = timestep_sequence(schedule.num_steps, n_steps)  # descending DDPM timesteps
    stop = int(torch.randint(0, n_steps, (1,), generator=generator))
    abar = schedule.alphas_cumprod
    x = torch.randn((len(c), *shape), generator=generator).to(c.device)
    was_training = model.training
    model.eval()
    try:
        for i in range(stop):  # DDIM (η = 0) steps seq[0] -> ... -> seq[stop]
            t, t_next = seq[i], seq[i + 1]
            a_t, a_next = float(abar[t]), float(abar[t_next])
            tt = torch.full((len(c),), t, device=c.device, dtype=torch.long)
            eps = guided_eps(model, x, tt, c, cfg.esd_start_guidance)
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
            x = a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps
    finally:
        model.train(was_training)
    bucket = schedule.num_steps // n_steps
    # seq[stop] is the bucket's lowest timestep; draw t uniformly inside it
    low = seq[stop]
    t = low + int(torch.randint(0, bucket, (1,), generator=generator))
    return x, torch.full((len(c),), min(t, schedule.num_steps - 1), device=c.device)


def esd_forget_loss(
    model: Denoiser,
    frozen: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    c: torch.Tensor,
    cfg: GenUnlearnConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """ESD's term: MSE(ε_θ(x_t, c), negative-guidance target of the frozen copy)."""
    if cfg.esd_xt == "sample":
        x_t, t = esd_partial_sample(model, schedule, c, tuple(x0.shape[1:]), cfg, generator)
    else:
        x_t, t, _ = noisy_batch(schedule, x0, generator)
    return squared_error(model(x_t, t, c), esd_target(frozen, x_t, t, c, cfg.esd_eta))


def forget_term(
    net: Denoiser,
    frozen: Denoiser | None,
    schedule: NoiseSchedule,
    xf: torch.Tensor,
    cf: torch.Tensor,
    cfg: GenUnlearnConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The method's forget term on one D_f batch (the quantity it *minimises*)."""
    if cfg.method in ("salun", "rl"):
        return rl_forget_loss(net, schedule, xf, cf, cfg, generator)
    if cfg.method == "ga":
        return ascent(
            diffusion_loss(
                net, schedule, xf, cf, generator, p_uncond=cfg.p_uncond, reduction=cfg.ga_reduction
            )
        )
    return esd_forget_loss(net, frozen, schedule, xf, cf, cfg, generator)


@dataclass
class GenUnlearnResult:
    model: Denoiser
    alpha: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    iterations: int = 0
    batch_size: int = 0


def unlearn_ddpm(
    model: Denoiser,
    forget: ImageDataset,
    retain: ImageDataset,
    cfg: GenUnlearnConfig,
    *,
    mask: dict[str, torch.Tensor] | None = None,
    schedule: NoiseSchedule | None = None,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    resume: UnlearnResume | None = None,
    checkpoint: Callable[[UnlearnRun], None] | None = None,
    checkpoint_every: int = 0,
) -> GenUnlearnResult:
    """Unlearn the forget class from a copy of ``model`` (the input is not changed).

    Args:
        model: the original denoiser θ_o.
        forget: D_f, all training images of the forgotten class.
        retain: D_r, the other classes (unused when α = 0).
        cfg: the method and its settings.
        mask: ``{name: bool}`` saliency mask (required for ``salun``; optional for the rest,
            e.g. GA + mask as an ablation).
        resume: a checkpoint of this very run to continue (``model`` stays the original:
            ESD's frozen copy is taken from it).
        checkpoint: called with the run's state every ``checkpoint_every`` steps.

    Returns:
        :class:`GenUnlearnResult` with the unlearned model (eval mode), α used, wall time
        (all sessions of a resumed run) and a loss history every 50 steps.

    Example:
        >>> mask = ddpm_saliency_mask(original, forget, DDPMMaskConfig())
        >>> res = unlearn_ddpm(original, forget, retain, GenUnlearnConfig(), mask=mask)
    """
    if cfg.method == "salun" and mask is None:
        raise SalunError("method salun needs a saliency mask; compute one with `salun gen mask`")
    if len(forget) == 0:
        raise SalunError("the forget set is empty")
    schedule = schedule or NoiseSchedule()
    start = time.perf_counter()
    pixels = int(forget.images[0].numel())
    alpha = resolve_alpha(cfg, pixels)
    iterations, batch_size = resolve_schedule(cfg)
    if alpha > 0 and len(retain) == 0:
        raise SalunError("the retain set is empty but alpha > 0")
    net = clone_model(model).to(device).train()
    frozen = None
    if cfg.method == "esd":
        frozen = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    streams = {"forget": BatchStream(forget, batch_size, gen, device, flip=cfg.flip)}
    if alpha > 0:
        streams["retain"] = BatchStream(retain, batch_size, gen, device, flip=cfg.flip)
    opt = torch.optim.Adam(
        net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    run = UnlearnRun(net, opt, gen, streams, started=start)
    masked = MaskedUpdate(net, mask, mode=cfg.mask_mode)
    bar = progress(total=iterations, desc=f"gen unlearn {cfg.method}", quiet=quiet)
    # the UNet's dropout draws from torch's global RNG: seeded here (and saved with each
    # checkpoint), so a seed fixes the whole run
    with seeded_global_rng(cfg.seed, device):
        if resume is not None:
            net.load_state_dict(resume.weights)
            run.restore(resume.tensors, resume.progress)
        bar.update(run.step)
        _loop(
            run, frozen, schedule, cfg, masked, alpha, iterations, bar, checkpoint, checkpoint_every
        )
    bar.close()
    net.eval()
    return GenUnlearnResult(net, alpha, run.seconds(), run.history, iterations, batch_size)


def _loop(
    run: UnlearnRun,
    frozen: Denoiser | None,
    schedule: NoiseSchedule,
    cfg: GenUnlearnConfig,
    masked: MaskedUpdate,
    alpha: float,
    iterations: int,
    bar: Any,
    checkpoint: Callable[[UnlearnRun], None] | None,
    checkpoint_every: int,
) -> None:
    """The unlearning steps from ``run.step`` to ``iterations``."""
    net, opt, gen, streams = run.model, run.optimizer, run.generator, run.streams
    while run.step < iterations:
        xf, cf = next(streams["forget"])
        f_loss = forget_term(net, frozen, schedule, xf, cf, cfg, gen)
        loss = f_loss
        r_val = 0.0
        if "retain" in streams:
            xr, cr = next(streams["retain"])
            r_loss = diffusion_loss(
                net, schedule, xr, cr, gen, p_uncond=cfg.p_uncond, reduction=cfg.retain_reduction
            )
            loss = with_retain(loss, r_loss, alpha)
            r_val = r_loss.item()
        check_finite(loss, f"{cfg.method} unlearning step {run.step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:  # clip the full gradient first, then mask (pitfall 12)
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        masked.step(opt)
        run.step += 1
        bar.update(1)
        sums = run.sums
        sums["forget"] += f_loss.item()
        sums["retain"] += r_val
        sums["n"] += 1
        if run.step % 50 == 0 or run.step == iterations:
            n = sums["n"]
            run.history.append(
                {
                    "step": run.step,
                    "forget_loss": sums["forget"] / n,
                    "retain_loss": sums["retain"] / n,
                }
            )
            run.sums = empty_sums()
        # the last step writes the finished folder instead (the caller's job)
        due = checkpoint_every > 0 and run.step % checkpoint_every == 0 and run.step < iterations
        if checkpoint is not None and due:
            checkpoint(run)
