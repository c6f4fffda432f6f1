"""Training a class-conditional DDPM with CFG label dropout (docs/generation.md).

Used for the Original model (all classes) and for Retrain (D_r only, the gold standard).
Adam, gradient-norm clipping at 1.0, EMA of the weights, antithetic timesteps, label
dropout 0.1. The reference trains 800k steps at batch 128 on CIFAR-10; on two CPU cores a
Fashion-MNIST model needs ~4-8k steps (DESIGN §4), so ``steps`` is the knob.

Long runs can be resumed: :func:`train_ddpm` takes and emits a :class:`TrainState`
(weights, EMA, Adam moments, step, RNG state) that the CLI writes every few hundred steps.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.generation.ddpm.data import BatchStream
from salun.generation.ddpm.diffusion import NoiseSchedule, diffusion_loss
from salun.generation.ddpm.model import Denoiser
from salun.train import check_finite
from salun.utils import progress, seeded_global_rng
from salun.validate import check_choice, check_fields, check_nonnegative, check_range, check_seed


@dataclass(frozen=True)
class DDPMTrainConfig:
    """How to train the denoiser from scratch.

    Attributes:
        steps: optimizer steps (paper: 800 000 on CIFAR-10; CPU Fashion-MNIST: ~6 000).
        batch_size: images per step (paper: 128).
        lr: Adam learning rate (paper: 2e-4).
        beta1: Adam β1 (paper: 0.9).
        beta2: Adam β2 (paper: 0.999).
        grad_clip: global gradient-norm clip (paper: 1.0); 0 disables.
        ema_decay: EMA decay (paper: 0.9999); the effective decay warms up as
            min(decay, (1+s)/(10+s)) so short runs still get a useful EMA.
        p_uncond: probability of training a sample with the null label (paper: 0.1).
        loss_reduction: ``mean`` over all elements (our default) or ``sum`` over pixels
            (the reference). With Adam and clipping both train alike; ``mean`` keeps the
            clip at 1.0 meaningful instead of always active.
        flip: random horizontal flips (paper: yes, CIFAR-10).
        seed: seeds initialisation order, batches, timesteps and noise.
    """

    steps: int = 6000
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    p_uncond: float = 0.1
    loss_reduction: str = "mean"
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        check_range("beta1", self.beta1, 0, 1)
        check_range("beta2", self.beta2, 0, 1)
        check_nonnegative("grad_clip", self.grad_clip)
        check_choice("loss_reduction", self.loss_reduction, ("mean", "sum"))
        check_seed("seed", self.seed)
        if self.steps < 1 or self.batch_size < 1:
            raise SalunError(
                f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SalunError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise SalunError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.p_uncond < 1:
            raise SalunError(f"p_uncond must lie in [0, 1), got {self.p_uncond}")


@dataclass
class TrainState:
    """Everything needed to continue a run: model, EMA, optimizer, step, RNG, history."""

    model: Denoiser
    ema: Denoiser
    optimizer: torch.optim.Optimizer
    step: int
    generator: torch.Generator
    history: list[dict] = field(default_factory=list)
    # where the run's batch stream and dropout RNG stood at the last checkpoint (None: new)
    stream_state: dict[str, torch.Tensor] | None = None
    dropout_rng: torch.Tensor | None = None


def make_optimizer(model: Denoiser, cfg: DDPMTrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, weight_decay=0.0
    )


def new_state(model: Denoiser, cfg: DDPMTrainConfig) -> TrainState:
    """A fresh run's state (the EMA starts as a copy of the model)."""
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    return TrainState(model, ema, make_optimizer(model, cfg), 0, gen)


@torch.no_grad()
def update_ema(ema: Denoiser, model: Denoiser, decay: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def train_ddpm(
    model: Denoiser,
    data: ImageDataset,
    cfg: DDPMTrainConfig,
    *,
    device: torch.device | str = "cpu",
    schedule: NoiseSchedule | None = None,
    state: TrainState | None = None,
    checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every: int = 0,
    quiet: bool = False,
    desc: str = "ddpm train",
) -> TrainState:
    """Train ``model`` in place on ``data`` (all its labels) and return the final state.

    Args:
        model: a :class:`Denoiser` (moved to ``device``).
        data: uint8 images and labels (the Original: the full train set; Retrain: D_r).
        cfg: the recipe.
        state: a saved :class:`TrainState` to resume from (its model must be ``model``).
        checkpoint: called with the state every ``checkpoint_every`` steps and at the end.
        quiet: no progress bar.

    Returns:
        The final :class:`TrainState`; ``state.ema`` holds the EMA weights.
    """
    if len(data) == 0:
        raise SalunError("the DDPM training set is empty")
    if int(data.labels.max()) >= model.num_classes:
        raise SalunError(
            f"labels go up to {int(data.labels.max())} but the model has "
            f"{model.num_classes} classes"
        )
    schedule = schedule or NoiseSchedule()
    model.to(device).train()
    if state is None:
        state = new_state(model, cfg)
    elif state.model is not model:
        raise SalunError("the resume state belongs to another model object")
    state.ema.to(device)
    batches = BatchStream(data, cfg.batch_size, state.generator, device, flip=cfg.flip)
    if state.stream_state is not None:
        batches.load_state_dict(state.stream_state)
    bar = progress(total=cfg.steps, desc=desc, quiet=quiet)
    bar.update(state.step)
    # the UNet's dropout draws from torch's global RNG: seeded, and kept with each checkpoint
    with seeded_global_rng(cfg.seed, device):
        if state.dropout_rng is not None:
            torch.set_rng_state(state.dropout_rng)
        _train_steps(model, batches, cfg, schedule, state, bar, checkpoint, checkpoint_every)
        if checkpoint is not None:
            checkpoint(_mark(state, batches))
    bar.close()
    model.eval()
    return state


def _mark(state: TrainState, batches: BatchStream) -> TrainState:
    """Record in ``state`` where the stream and the dropout RNG stand (for a checkpoint)."""
    state.stream_state = batches.state_dict()
    state.dropout_rng = torch.get_rng_state()
    return state


def _train_steps(
    model: Denoiser,
    batches: BatchStream,
    cfg: DDPMTrainConfig,
    schedule: NoiseSchedule,
    state: TrainState,
    bar: Any,
    checkpoint: Callable[[TrainState], None] | None,
    checkpoint_every: int,
) -> None:
    loss_sum, n_sum = 0.0, 0
    while state.step < cfg.steps:
        x0, c = next(batches)
        loss = diffusion_loss(
            model,
            schedule,
            x0,
            c,
            state.generator,
            p_uncond=cfg.p_uncond,
            reduction=cfg.loss_reduction,
        )
        check_finite(loss, f"DDPM training step {state.step + 1}")
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        state.optimizer.step()
        state.step += 1
        s = state.step
        update_ema(state.ema, model, min(cfg.ema_decay, (1 + s) / (10 + s)))
        loss_sum, n_sum = loss_sum + loss.item(), n_sum + 1
        bar.update(1)
        if s % 100 == 0 or s == cfg.steps:
            state.history.append({"step": s, "loss": loss_sum / n_sum})
            bar.set_postfix(loss=f"{loss_sum / n_sum:.4f}")
            loss_sum, n_sum = 0.0, 0
        if checkpoint is not None and checkpoint_every > 0 and s % checkpoint_every == 0:
            checkpoint(_mark(state, batches))
