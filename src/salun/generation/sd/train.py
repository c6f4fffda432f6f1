"""The training loop every SD method shares: accelerate, masked strict updates, history.

Only the chosen parameter set is trainable and only those tensors are handed to the
optimizer, so weight decay (AdamW) or Adam state can never move a frozen weight. With a
saliency mask, :class:`salun.masking.MaskedUpdate` (strict mode by default) keeps the
mask-0 coordinates bit-identical after every step. Mixed precision (fp16/bf16 autocast
with fp32 master weights) and gradient checkpointing are accelerate/diffusers options.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from salun.errors import SalunError
from salun.generation.sd.deps import require
from salun.generation.sd.params import PARAM_SETS, ParamSubset, restrict_mask, set_trainable
from salun.masking import MODES, MaskedUpdate
from salun.validate import check_fields, check_int, check_positive, check_seed

OPTIMIZERS = ("adam", "adamw")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass(frozen=True)
class SDTrainConfig:
    """Settings shared by every SD method (defaults: the reference, docs/generation.md).

    Attributes:
        lr: learning rate (reference: 1e-5).
        batch_size: images per forget (and per retain) batch (reference: 8).
        epochs: passes over D_f (Imagenette: 5; nudity: 1).
        max_steps: stop after this many steps (None: run all epochs / iterations).
        params: trained parameter set: full | xattn | noxattn.
        optimizer: adam (reference) | adamw.
        weight_decay: only with adamw; reaches the trained parameters only.
        grad_clip: clip the global gradient norm before masking (None: no clipping, as the
            SD reference).
        mixed_precision: no | fp16 | bf16 (accelerate autocast; master weights stay fp32).
        gradient_checkpointing: trade compute for memory in the UNet.
        mask_mode: strict (mask-0 weights bit-identical) | legacy (gradient masking only).
        seed: seeds noise, timesteps and data order.
        quiet: no progress bars.
    """

    lr: float = 1e-5
    batch_size: int = 8
    epochs: int = 1
    max_steps: int | None = None
    params: str = "full"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    mask_mode: str = "strict"
    seed: int = 0
    quiet: bool = False

    def __post_init__(self) -> None:
        check_fields(self)  # types and finite floats first: `--set lr=nan` is the string 'nan'
        if self.max_steps is not None:
            check_int("max_steps", self.max_steps, 1)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        check_seed("seed", self.seed)
        checks = [
            (self.params in PARAM_SETS, f"params must be one of {PARAM_SETS}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}"),
            (self.mask_mode in MODES, f"mask_mode must be one of {MODES}"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (self.batch_size >= 1 and self.epochs >= 1, "batch_size and epochs must be >= 1"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.weight_decay == 0 or self.optimizer == "adamw", "weight_decay needs adamw"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SalunError(f"{msg} (config: {self})")


def _accelerator(accelerate: Any, mixed_precision: str, cpu: bool) -> Any:
    """An Accelerator; accelerate keeps one process-wide state, so a second run in the same
    process with another precision (a benchmark loop) resets it instead of failing."""
    try:
        return accelerate.Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as e:
        if "already been initialized" not in str(e):
            raise
        accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)
        return accelerate.Accelerator(mixed_precision=mixed_precision, cpu=cpu)


class SDTrainer:
    """Owns the trained UNet's optimizer and masked updates; methods call :meth:`step`.

    Example:
        >>> tr = SDTrainer(unet, cfg, mask=mask)
        >>> for batch in ...: tr.step(loss_of(tr.unet, batch))
        >>> unet = tr.finish()
    """

    def __init__(
        self,
        unet: Any,
        cfg: SDTrainConfig,
        *,
        mask: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        accelerate = require("accelerate")
        self.cfg = cfg
        device = next(unet.parameters()).device
        self.accelerator = _accelerator(accelerate, cfg.mixed_precision, device.type == "cpu")
        pairs = set_trainable(unet, cfg.params)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        trainable = [p for _, p in pairs]
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam(trainable, lr=cfg.lr)
        else:
            opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.unet, self.optimizer = self.accelerator.prepare(unet, opt)
        sub = None if mask is None else restrict_mask(mask, pairs)
        self.masked = MaskedUpdate(ParamSubset(pairs), sub, mode=cfg.mask_mode)
        self.trainable = pairs
        self.history: list[float] = []

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def step(self, loss: torch.Tensor) -> float:
        """Backward, optional clipping (before masking), masked optimizer step."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise SalunError(
                f"the loss became {value} at step {len(self.history)}; lower the learning "
                "rate or use mixed_precision bf16/no"
            )
        self.accelerator.backward(loss)
        if self.cfg.grad_clip is not None:
            self.accelerator.clip_grad_norm_([p for _, p in self.trainable], self.cfg.grad_clip)
        self.masked.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.history.append(value)
        return value

    def done(self) -> bool:
        return self.cfg.max_steps is not None and len(self.history) >= self.cfg.max_steps

    def finish(self) -> Any:
        """The trained UNet, unwrapped, in eval mode, every parameter requiring grad again."""
        unet = self.accelerator.unwrap_model(self.unet, keep_fp32_wrapper=False)
        if self.cfg.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        for p in unet.parameters():
            p.requires_grad_(True)
        return unet.eval()


def trainable_copy(unet: Any, inplace: bool = False) -> Any:
    """The UNet to train: a deep copy unless ``inplace`` (methods never silently mutate)."""
    return unet if inplace else copy.deepcopy(unet)
