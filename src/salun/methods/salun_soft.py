"""SalUn-soft: random labelling with a proximal soft-thresholding step (docs/method.md).

No precomputed mask. After every SGD step, with Δ = θ − θ_anchor over all parameters and
k = ⌊ρ · (T − t)/T · n⌋ (n parameters), τ = the k-th smallest |Δ_i|; coordinates with
|Δ_i| ≤ τ snap back to the anchor, the others shrink by τ toward it. The anchor is the
weights at the start of each epoch, as the reference. ``schedule`` says how t and T count:

- ``epoch`` (the reference's CIFAR branch): T = epochs × (forget-loader batches +
  retain-loader batches) and t = epoch × that + 1, so k is constant within an epoch and
  drops from one epoch to the next;
- ``step``: T = the steps actually taken, t = the steps done so far, so k shrinks after
  every step.

ρ is a real parameter (``prox_ratio``): the reference never defines it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from salun.data import num_batches
from salun.methods.common import Stepper
from salun.methods.registry import register
from salun.methods.rl import RLConfig, random_label_unlearning
from salun.validate import check_choice, check_range


@dataclass(frozen=True)
class SalUnSoftConfig(RLConfig):
    """Attributes beyond :class:`RLConfig`:

    Attributes:
        prox_ratio: ρ, the initial fraction of coordinates snapped back to the anchor each
            step; decays linearly to 0 over training. Not defined by the reference code
            (its parser lacks ``mask_ratio``); 0.5 mirrors SalUn's 50 % mask.
        regime: joint batches, as the reference's CIFAR branch.
        schedule: ``epoch`` (the reference: the reset fraction is constant within an epoch,
            T counted in loader batches) or ``step`` (it decays after every step). Default
            ``step``; the paper preset uses ``epoch``.
    """

    prox_ratio: float = 0.5
    regime: str = "joint"
    schedule: str = "step"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("prox_ratio", self.prox_ratio, 0, 1, high_open=False)
        check_choice("schedule", self.schedule, ("epoch", "step"))


class ProximalStepper(Stepper):
    """A stepper that soft-thresholds θ − θ_anchor after every SGD step.

    Args:
        total_steps: T.
        epoch_steps: with the ``epoch`` schedule, the steps credited per epoch (loader
            batches); None gives the ``step`` schedule.
    """

    def __init__(
        self, model, cfg: SalUnSoftConfig, mask, total_steps: int, epoch_steps: int | None = None
    ) -> None:
        super().__init__(model, cfg, mask)
        self.ratio = cfg.prox_ratio
        self.total = max(total_steps, 1)
        self.epoch_steps = epoch_steps
        self.done = 0
        self.epoch = 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.n = sum(p.numel() for p in self.params)
        self.anchor: list[torch.Tensor] = []

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.anchor = [p.detach().clone() for p in self.params]

    def snap_count(self) -> int:
        """k: how many coordinates go back to the anchor at this step."""
        if self.epoch_steps is None:
            t = self.done
        else:
            t = self.epoch * self.epoch_steps + 1  # the reference: one value per epoch
        return int(self.ratio * (self.total - t) / self.total * self.n)

    @torch.no_grad()
    def after_step(self) -> None:
        self.done += 1
        k = self.snap_count()
        if k <= 0:
            return
        deltas = [p - a for p, a in zip(self.params, self.anchor)]
        tau = torch.cat([d.abs().flatten() for d in deltas]).kthvalue(k).values
        for p, a, d in zip(self.params, self.anchor, deltas):
            shrunk = d - tau * d.sign()  # move |Δ| down by τ, toward the anchor
            p.copy_(torch.where(d.abs() > tau, a + shrunk, a))


@register(
    "salun_soft",
    SalUnSoftConfig,
    "RL with a proximal soft-thresholding step instead of a hard mask (SalUn-soft)",
)
def salun_soft(model, forget, retain, cfg: SalUnSoftConfig, ctx, mask=None):
    loader_batches = num_batches(len(forget), cfg.batch_size) + num_batches(
        len(retain), cfg.batch_size
    )
    if cfg.schedule == "epoch":
        stepper = ProximalStepper(
            model, cfg, mask, cfg.epochs * loader_batches, epoch_steps=loader_batches
        )
    else:
        per_epoch = loader_batches
        if cfg.regime == "joint":
            per_epoch = num_batches(len(forget) + len(retain), cfg.batch_size)
        stepper = ProximalStepper(model, cfg, mask, cfg.epochs * per_epoch)
    return random_label_unlearning(model, forget, retain, cfg, ctx, mask, stepper)
