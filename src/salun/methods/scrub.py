"""SCRUB: teacher–student unlearning (Kurmanji et al., NeurIPS 2023, "Towards Unbounded
Machine Unlearning"; docs/methods-extra.md).

The teacher is a frozen copy of the original model; the student starts from it and is
trained. With d(x) = KL(teacher(x) ‖ student(x)) on temperature-T softmaxes (× T², the
usual distillation scale), each epoch is

1. a *max-step* pass over D_f (only in the first ``msteps`` epochs): minimise −d, i.e.
   push the student away from the teacher on the forget set;
2. a *min-step* pass over D_r: minimise α·d + γ·CE, i.e. stay close to the teacher and
   correct on the retain set.

The learning rate is multiplied by ``lr_decay_rate`` once for every milestone in
``lr_decay_epochs`` that the (1-based) epoch has passed, as in the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from salun.errors import SalunError
from salun.methods.common import SGDConfig, Stepper, epoch_batches
from salun.methods.registry import register
from salun.utils import clone_model, progress, seed_everything
from salun.validate import check_increasing, check_int, check_nonnegative, check_positive


@dataclass(frozen=True)
class SCRUBConfig(SGDConfig):
    """SCRUB. The defaults are the authors' large-scale CIFAR settings as their notebook
    runs them (meghdadk/SCRUB @98ffb11, ``large_scale_unlearning.ipynb``: the values of
    its ``args`` cell, and the batch sizes of the loaders it builds — forget 512, retain
    256; the ``sgda_batch_size = 128`` / ``del_batch_size = 32`` it also sets are never
    read). Fields beyond :class:`SGDConfig`:

    Attributes:
        epochs: total epochs (reference: ``sgda_epochs = 3``).
        msteps: the first ``msteps`` epochs also run the max-step pass on D_f (reference: 2).
        lr: SGD learning rate of both passes (reference: ``sgda_learning_rate = 5e-4``).
        lr_grid: log-spaced around the reference's value (our choice).
        batch_size: retain (min-step) batch size (reference: ``retain_loader`` batch 256).
        forget_batch_size: forget (max-step) batch size (reference: ``forget_loader``
            batch 512).
        alpha: weight α of the KL term of the min-step (reference: 0.001).
        gamma: weight γ of the cross-entropy term of the min-step (reference: 0.99).
        temperature: distillation temperature T (reference: 4).
        lr_decay_epochs: epochs after which the lr is multiplied by ``lr_decay_rate``
            (reference: 3, 5, 9; with 3 epochs the decay never applies).
        lr_decay_rate: the decay factor (reference: 0.1).
    """

    epochs: int = 3  # reference
    lr: float = 5e-4  # reference
    lr_grid: tuple[float, ...] = (1e-4, 5e-4, 2e-3, 5e-3)  # our choice
    batch_size: int = 256  # reference: retain_loader
    msteps: int = 2  # reference
    forget_batch_size: int = 512  # reference: forget_loader
    alpha: float = 0.001  # reference
    gamma: float = 0.99  # reference
    temperature: float = 4.0  # reference
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)  # reference
    lr_decay_rate: float = 0.1  # reference

    def __post_init__(self) -> None:
        super().__post_init__()  # types and finiteness of every field, SGD ranges
        check_int("msteps", self.msteps, 0)
        check_int("forget_batch_size", self.forget_batch_size, 1)
        check_nonnegative("alpha", self.alpha)
        check_nonnegative("gamma", self.gamma)
        check_positive("temperature", self.temperature)
        check_increasing("lr_decay_epochs", self.lr_decay_epochs)
        check_positive("lr_decay_rate", self.lr_decay_rate)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float):
    """KL(softmax(teacher/T) ‖ softmax(student/T)) · T², averaged over the batch."""
    log_s = F.log_softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * (t * t)


def epoch_lr(cfg: SCRUBConfig, epoch: int) -> float:
    """The lr of 1-based ``epoch``: one decay per milestone already passed."""
    passed = sum(epoch > m for m in cfg.lr_decay_epochs)
    return cfg.lr * cfg.lr_decay_rate**passed


def max_step(student, teacher, x, stepper: Stepper, t: float, where: str) -> None:
    """One max-step: a descent step on −KL(teacher ‖ student) for the batch ``x``."""
    with torch.no_grad():
        target = teacher(x)
    stepper.step(-distill_kl(student(x), target, t), where)


def min_step(student, teacher, x, y, stepper: Stepper, cfg: SCRUBConfig, where: str) -> None:
    """One min-step: α·KL(teacher ‖ student) + γ·CE on the retain batch."""
    with torch.no_grad():
        target = teacher(x)
    out = student(x)
    loss = cfg.alpha * distill_kl(out, target, cfg.temperature) + cfg.gamma * F.cross_entropy(
        out, y
    )
    stepper.step(loss, where)


@register("scrub", SCRUBConfig, "teacher-student: away from the teacher on D_f, close on D_r")
def scrub(model, forget, retain, cfg: SCRUBConfig, ctx, mask=None):
    if len(retain) == 0:
        raise SalunError("scrub needs a non-empty retain set D_r (its min-steps)")
    gen = seed_everything(cfg.seed)
    teacher = clone_model(model).eval().requires_grad_(False)  # the original, never trained
    stepper = Stepper(model, cfg, mask)
    fcfg = replace(cfg, batch_size=cfg.forget_batch_size)
    model.train()
    for epoch in progress(range(1, cfg.epochs + 1), desc="scrub", quiet=ctx.quiet):
        for group in stepper.optimizer.param_groups:
            group["lr"] = epoch_lr(cfg, epoch)
        if epoch <= cfg.msteps:
            for x, _ in epoch_batches(forget, fcfg, ctx, gen):
                max_step(model, teacher, x, stepper, cfg.temperature, f"max-step, epoch {epoch}")
        for x, y in epoch_batches(retain, cfg, ctx, gen):
            min_step(model, teacher, x, y, stepper, cfg, f"min-step, epoch {epoch}")
    return model
