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
  of the original model (no gradient reaches it; :mod:`salun.generation.ddpm.esd`). Defaults
  are what the removed DDPM ESD of the SalUn code did at run time (OPTML-Group/
  Unlearn-Saliency @ b874ee9, ``DDPM/runners/diffusion.py``, ``train_esd``): η = 7.5,
  10 000 iterations at batch 1, its partial sampler (``esd_xt="reference"``, guidance 2),
  the frozen copy in train mode (``esd_frozen_mode="train"``) and its update order
  (``esd_update="reference"``: the optimiser steps on the running sum of all earlier clipped
  gradients, then this iteration's gradient is added; never zeroed). ``esd_xt="ddim"``,
  ``"eval"`` and ``"standard"`` are salun's own variant, which the records made before
  issue #24 ran (with ``esd_xt: sample``, its old name, and guidance 3).
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
from salun.generation.ddpm.esd import ESD_XT, esd_loss, esd_noisy_input
from salun.generation.ddpm.model import Denoiser
from salun.generation.ddpm.unlearn_state import UnlearnResume, UnlearnRun, empty_sums
from salun.generation.objectives import ascent, forget_to_other_condition, with_retain
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
        esd_xt: where ESD's x_t comes from: ``reference`` (the reference's partial sampler:
            noise denoised on the one-step grid t_enc−1..0, η 1), ``ddim`` (salun's: DDIM
            η 0 on the ``esd_ddim_steps`` grid to a random step; named ``sample`` before
            issue #24) or ``forward`` (forward process on D_f).
        esd_ddim_steps: K, ESD's t_enc range 0..K and timestep buckets of T/K (reference:
            50); ``ddim`` also samples on this grid.
        esd_start_guidance: CFG weight w, (1+w)·cond − w·uncond, of ESD's partial sampling
            (reference: ``--cond_scale`` 2; the pre-#24 records used 3).
        esd_update: ``reference`` (optimiser step on the gradients accumulated over all
            earlier iterations, then this iteration's gradient added, never zeroed) or
            ``standard`` (zero, backward, clip, step).
        esd_frozen_mode: mode of ESD's frozen copy: ``train`` (dropout on, the reference)
            or ``eval``.
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
    esd_xt: str = "reference"
    esd_ddim_steps: int = 50
    esd_start_guidance: float = 2.0
    esd_update: str = "reference"
    esd_frozen_mode: str = "train"
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
        if self.esd_xt == "sample":
            raise SalunError(
                "esd_xt 'sample' is now called 'ddim' (salun's own partial sampler); "
                "'reference' is the reference's"
            )
        check_choice("esd_xt", self.esd_xt, ESD_XT)
        check_choice("esd_update", self.esd_update, ("reference", "standard"))
        check_choice("esd_frozen_mode", self.esd_frozen_mode, ("train", "eval"))
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


# Values renamed since records were first written (issue #24: salun's sampler was "sample").
RENAMED_VALUES = {("esd_xt", "sample"): "ddim"}
# Fields added later, with what a record written before them ran (benchmarks/gen/README.md):
# ESD from the forward process and a mean GA loss before esd_xt and ga_reduction existed;
# salun's update order and an eval-mode frozen copy before issue #24.
ADDED_FIELDS = {
    "esd_xt": "forward",
    "ga_reduction": "mean",
    "esd_update": "standard",
    "esd_frozen_mode": "eval",
}


def config_of_record(unlearn: dict[str, Any]) -> GenUnlearnConfig:
    """The config an unlearned folder's ``unlearn`` section ran with, in today's names
    (older records use old names and lack settings added since; see ADDED_FIELDS)."""
    settings = {**ADDED_FIELDS, **unlearn}
    for (name, old), value in RENAMED_VALUES.items():
        if settings.get(name) == old:
            settings[name] = value
    return GenUnlearnConfig(**settings)


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
    x_t, t = esd_noisy_input(
        net, schedule, xf, cf, cfg.esd_xt, cfg.esd_ddim_steps, cfg.esd_start_guidance, generator
    )
    return esd_loss(net, frozen, x_t, t, cf, cfg.esd_eta)


def esd_frozen_copy(model: Denoiser, cfg: GenUnlearnConfig, device) -> Denoiser:
    """ESD's ε*: a copy of the original that no gradient or optimiser reaches, in the mode
    ``esd_frozen_mode`` says (the reference never called ``eval()`` on it: dropout on)."""
    frozen = copy.deepcopy(model).to(device).requires_grad_(False)
    return frozen.train(cfg.esd_frozen_mode == "train")


def lags_and_accumulates(cfg: GenUnlearnConfig) -> bool:
    """Whether this run updates in the reference ESD's order (``esd_update: reference``)."""
    return cfg.method == "esd" and cfg.esd_update == "reference"


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
    frozen = esd_frozen_copy(model, cfg, device) if cfg.method == "esd" else None
    gen = torch.Generator().manual_seed(cfg.seed)
    streams = {"forget": BatchStream(forget, batch_size, gen, device, flip=cfg.flip)}
    if alpha > 0:
        streams["retain"] = BatchStream(retain, batch_size, gen, device, flip=cfg.flip)
    opt = torch.optim.Adam(
        net.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    run = UnlearnRun(net, opt, gen, streams, started=start, keep_grads=lags_and_accumulates(cfg))
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
        if run.keep_grads:
            step_then_accumulate(net, opt, masked, loss, cfg.grad_clip)
        else:
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


def step_then_accumulate(
    net: Denoiser, opt: torch.optim.Optimizer, masked: MaskedUpdate, loss: torch.Tensor, clip: float
) -> None:
    """The reference DDPM ESD's update: clip the gradients left in ``.grad`` by all earlier
    iterations (in place), step on them, then add this iteration's gradient; ``.grad`` is
    never zeroed, so the first step moves nothing and the last gradient is never used.

    The reference calls ``loss.backward()`` after ``optimizer.step()``; on a PyTorch that
    checks in-place changes of saved tensors that raises at the second iteration, so the
    gradient is taken here before the step, at the weights the forward pass used.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if clip > 0 and any(p.grad is not None for p in params):
        torch.nn.utils.clip_grad_norm_(params, clip)
    masked.step(opt)  # Adam skips parameters whose .grad is still None (the first step)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.detach().clone()
            else:
                p.grad.add_(g)
