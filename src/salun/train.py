"""One supervised trainer. The Original model and Retrain are both produced by it.

SGD with momentum, weight decay and optional Nesterov; cosine, multistep or constant
learning-rate schedules; batched augmentation; optional best-on-validation checkpoint.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from salun.data import Augment, ImageDataset, iterate_batches, num_batches
from salun.errors import SalunError
from salun.precision import (
    autocast,
    current_policy,
    grad_scaler,
    on_device,
    prepare_input,
    prepare_model,
)
from salun.utils import progress, seed_everything
from salun.validate import (
    check_choice,
    check_fields,
    check_increasing,
    check_int,
    check_nonnegative,
    check_positive,
    check_range,
    check_seed,
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train a classifier from scratch (docs/method.md for the paper's recipe).

    Attributes:
        epochs: passes over the training set (paper: 182 for CIFAR-10 ResNet-18).
        batch_size: samples per SGD step (paper: 256).
        lr: initial learning rate (paper: 0.1).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: L2 weight decay inside SGD (paper: 5e-4).
        nesterov: use Nesterov momentum.
        schedule: ``cosine`` (paper's Retrain), ``multistep`` (reference harness) or ``constant``.
        milestones: epochs at which ``multistep`` multiplies the lr by ``gamma`` (paper: 91, 136).
        gamma: the multistep factor (paper: 0.1).
        augment: random crop with padding and flips (flips only where the dataset allows).
        pad: crop padding in pixels (paper: 4).
        val_best: keep the weights with the best validation accuracy (needs a validation set).
        seed: seeds init, shuffling and augmentation.
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    milestones: tuple[int, ...] = (91, 136)
    gamma: float = 0.1
    augment: bool = False
    pad: int = 4
    val_best: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # one clear error per bad field, before anything trains (salun.validate)
        check_fields(self)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0, 1)
        check_nonnegative("weight_decay", self.weight_decay)
        check_choice("schedule", self.schedule, ("cosine", "multistep", "constant"))
        check_increasing("milestones", self.milestones)
        check_range("gamma", self.gamma, 0, 1, low_open=True, high_open=False)
        check_int("pad", self.pad, 0)
        check_seed("seed", self.seed)
        if self.nesterov and self.momentum == 0:
            raise SalunError("nesterov needs momentum > 0, got momentum 0")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    device_policy: dict = field(default_factory=dict)  # precision etc. (salun.precision)


def make_scheduler(
    optimizer,
    schedule: str,
    total_steps: int,
    steps_per_epoch: int,
    milestones=(),
    gamma: float = 0.1,
):
    """A per-step LR scheduler: cosine to 0 over ``total_steps``, multistep at epoch
    milestones, or constant."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
    if schedule == "multistep":
        steps = [m * steps_per_epoch for m in milestones]
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: gamma ** sum(s >= m for m in steps)
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Stop with a clear message instead of training on NaN (lr too high, usually)."""
    if not torch.isfinite(loss):
        raise SalunError(f"the loss became {loss.item()} during {where}; lower the learning rate")


@torch.no_grad()
def quick_accuracy(model: nn.Module, data: ImageDataset, device, batch_size: int = 1024) -> float:
    """Accuracy in % in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in iterate_batches(data, batch_size, device=device):
        correct += (model(x).argmax(1) == y).sum().item()
    model.train(was_training)
    return 100.0 * correct / max(len(data), 1)


def train_supervised(
    model: nn.Module,
    train: ImageDataset,
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    val: ImageDataset | None = None,
    flip_allowed: bool = True,
    quiet: bool = False,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place on ``train`` with cross-entropy and SGD; return it with history.

    Args:
        model: the network (moved to ``device``).
        train: the training samples (for Retrain: D_r only).
        cfg: the recipe.
        device: where to train.
        val: a validation set, needed when ``cfg.val_best``.
        flip_allowed: whether the dataset permits horizontal flips.
        quiet: no progress bar.
    """
    if len(train) == 0:
        raise SalunError("the training set is empty")
    if cfg.val_best and (val is None or len(val) == 0):
        raise SalunError("val_best needs a validation split (make the split with val_fraction > 0)")
    gen = seed_everything(cfg.seed)
    # device policy (docs/gpu.md): memory format, compile; the data resident on the device
    prepare_model(model, device).train()
    train = on_device(train, device)
    scaler = grad_scaler(device)  # fp16 only; otherwise a pass-through
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
    )
    spe = num_batches(len(train), cfg.batch_size)
    sched = make_scheduler(opt, cfg.schedule, cfg.epochs * spe, spe, cfg.milestones, cfg.gamma)
    aug = Augment(pad=cfg.pad, flip=flip_allowed) if cfg.augment else None
    result = TrainResult(model, device_policy=current_policy().as_record())
    best_acc, best_state = -1.0, None
    bar = progress(total=cfg.epochs * spe, desc=desc, quiet=quiet)
    for epoch in range(cfg.epochs):
        # loss and hits add up on the device and are read once per epoch: no host sync
        # per step (a NaN loss poisons the sum and stops the run at the epoch's end)
        total = 0
        correct = torch.zeros((), dtype=torch.int64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for x, y in iterate_batches(
            train, cfg.batch_size, shuffle=True, generator=gen, device=device, augment=aug
        ):
            with autocast(device):
                out = model(prepare_input(x))
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)  # opt.step(), unscaled first under fp16
            scaler.update()
            sched.step()
            loss_sum += loss.detach().double() * len(y)  # as the float64 sum it replaced
            correct += (out.argmax(1) == y).sum()
            total += len(y)
            bar.update(1)
        check_finite(loss_sum, f"training epoch {epoch + 1}")
        rec = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / total,
            "train_acc": 100.0 * int(correct) / total,
        }
        if val is not None and len(val):
            rec["val_acc"] = quick_accuracy(model, val, device)
            if cfg.val_best and rec["val_acc"] > best_acc:
                best_acc, result.best_epoch = rec["val_acc"], epoch + 1
                best_state = copy.deepcopy(model.state_dict())
        result.history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_acc']:.1f}")
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result
