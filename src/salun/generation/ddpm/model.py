"""The class-conditional DDPM denoiser ε_θ(x_t, t, c) with a learned null class for CFG.

Built from diffusers' ``UNet2DModel`` with ``class_embed_type=None`` and
``num_class_embeds = K + 1``: rows ``0..K-1`` of ``unet.class_embedding.weight`` are the K
classes and **row K is the learned null class ∅** used for classifier-free guidance
(docs/generation.md: the reference has ``classes_emb`` plus a separate ``null_classes_emb``;
one table with an extra row holds the same parameters). The class embedding is added to
the time embedding and fed to every ResNet block. One difference from the reference's
DDIM-codebase UNet: there the class vector passes through its own 2-layer MLP first; here
the (K+1)×D table maps straight into the time-embedding space (diffusers' layout). Both
embeddings are ordinary parameters, so the saliency mask covers them (§1.3, pitfall 12).

FMN (Forget-Me-Not) is **not applicable** to this model: it re-weights cross-attention maps
over prompt tokens, and this UNet conditions through an added class embedding, with no
cross-attention at all. FMN belongs to the Stable Diffusion path.

Weights live in a model folder like :mod:`salun.artifacts` (``model.safetensors`` +
``model.json``, plus ``ema.safetensors`` when training kept an EMA); loading is strict.

diffusers is an optional extra: this module imports without it, and building a model
without it raises a :class:`SalunError` that says ``pip install salun[diffusion]``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from salun.artifacts import check_weights_sha, load_state, load_state_strict, read_sidecar
from salun.errors import ArtifactError, SalunError
from salun.io import atomic_dir, canonical_safetensors, sha256_bytes, to_jsonable
from salun.utils import git_commit, model_device, runtime_info, versions
from salun.validate import check_each, check_fields, check_int, check_range

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
META = "model.json"
FORMAT = "salun-ddpm-1"
INSTALL_HINT = "the DDPM code needs diffusers: pip install salun[diffusion]"


def require_diffusers():
    """Import diffusers' ``UNet2DModel`` or raise a SalunError naming the extra to install."""
    try:
        from diffusers import UNet2DModel
    except ImportError as e:
        raise SalunError(f"{INSTALL_HINT} ({e})") from None
    return UNet2DModel


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of the denoiser; stored in ``model.json`` so it rebuilds exactly.

    Attributes:
        image_size: side of the (square) images, e.g. 28 for Fashion-MNIST, 32 for CIFAR-10.
            It must be divisible by 2^(levels−1); 28 works with 3 levels (28→14→7), so
            Fashion-MNIST needs no padding.
        in_channels: image channels (1 or 3); the output has as many (ε-prediction).
        num_classes: K real classes; the embedding table has K+1 rows (row K = null).
        block_out_channels: channels per resolution level (paper: 128,256,256,256).
        layers_per_block: ResNet blocks per level (paper: 2).
        attention_levels: indices of the levels that get self-attention (paper: the 16×16
            level of a 32×32 model, i.e. level 1).
        dropout: dropout in the ResNet blocks (paper: 0.1).
        norm_num_groups: GroupNorm groups (paper: 32); must divide every channel count.
        attention_head_dim: channels per attention head.
    """

    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 10
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] = (2,)
    dropout: float = 0.1
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        check_int("image_size", self.image_size, 1)
        check_int("in_channels", self.in_channels, 1)
        check_each("block_out_channels", self.block_out_channels, check_int, 1)
        check_int("layers_per_block", self.layers_per_block, 1)
        check_range("dropout", self.dropout, 0, 1)
        check_int("norm_num_groups", self.norm_num_groups, 1)
        check_int("attention_head_dim", self.attention_head_dim, 1)
        levels = len(self.block_out_channels)
        if levels < 1:
            raise SalunError("block_out_channels needs at least one level")
        if self.num_classes < 2:
            raise SalunError(f"num_classes must be at least 2, got {self.num_classes}")
        step = 2 ** (levels - 1)
        if self.image_size < step or self.image_size % step:
            raise SalunError(
                f"image_size {self.image_size} is not divisible by 2^{levels - 1} = {step} "
                f"({levels} levels); pad the images or use fewer levels"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise SalunError(
                f"norm_num_groups {self.norm_num_groups} must divide every channel count, not {bad}"
            )
        if any(not 0 <= i < levels for i in self.attention_levels):
            raise SalunError(
                f"attention_levels {self.attention_levels} must lie in 0..{levels - 1}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenoiserConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("block_out_channels", "attention_levels"):
            if k in known:
                known[k] = tuple(int(v) for v in known[k])
        return cls(**known)


class Denoiser(nn.Module):
    """ε_θ(x_t, t, c): a diffusers UNet whose class table has an extra null row.

    Call it as ``model(x, t, c)`` with x in the model's [−1, 1] scale, integer timesteps
    ``t`` (B,) and labels ``c`` (B,) in ``0..K`` where ``K == model.null_class`` means
    "unconditional".
    """

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        unet_cls = require_diffusers()
        self.cfg = cfg
        n = len(cfg.block_out_channels)
        att = set(cfg.attention_levels)
        down = tuple("AttnDownBlock2D" if i in att else "DownBlock2D" for i in range(n))
        up = tuple("AttnUpBlock2D" if i in att else "UpBlock2D" for i in reversed(range(n)))
        self.unet = unet_cls(
            sample_size=cfg.image_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=down,
            up_block_types=up,
            layers_per_block=cfg.layers_per_block,
            dropout=cfg.dropout,
            norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=cfg.attention_head_dim,
            class_embed_type=None,
            num_class_embeds=cfg.num_classes + 1,  # + the learned null class at index K
            **cfg.extra,
        )

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def null_class(self) -> int:
        """The label index of the learned null class ∅ (= K)."""
        return self.cfg.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=c).sample


def build_denoiser(cfg: DenoiserConfig, seed: int | None = None) -> Denoiser:
    """A freshly initialised denoiser (seeded when ``seed`` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return Denoiser(cfg)


def save_denoiser(
    path: str | Path,
    model: Denoiser,
    meta: dict[str, Any],
    ema: Denoiser | None = None,
    extra_files: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a DDPM model folder atomically: weights (+ EMA weights) and ``model.json``.

    ``extra_files`` maps further safetensors file names to tensors (e.g. a resume state).
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    ema_state = None
    if ema is not None:
        ema_state = {k: v.detach().to("cpu").contiguous() for k, v in ema.state_dict().items()}
    record = {
        "format": FORMAT,
        "denoiser": asdict(model.cfg),
        "has_ema": ema is not None,
        "versions": versions(),
        "runtime": runtime_info(model_device(model)),  # thread count changes results
        "git_commit": git_commit(),
        **meta,
    }
    tensors = {WEIGHTS: state, **({EMA_WEIGHTS: ema_state} if ema_state is not None else {})}
    tensors.update(extra_files or {})
    blobs = {
        name: canonical_safetensors(safetensors_bytes(t, metadata={"format": FORMAT}))
        for name, t in tensors.items()
    }
    # checked on load: a flipped byte is an error, not a silently different model
    record["file_sha256"] = {name: sha256_bytes(b) for name, b in blobs.items()}
    text = json.dumps(record, indent=2, sort_keys=True, default=to_jsonable) + "\n"

    def write(tmp: Path) -> None:
        for name, blob in blobs.items():
            (tmp / name).write_bytes(blob)
        (tmp / META).write_text(text)

    atomic_dir(path, write)
    return Path(path)


def read_denoiser_meta(path: str | Path) -> dict[str, Any]:
    """The ``model.json`` of a DDPM model folder (checked for format)."""
    return read_sidecar(
        path, FORMAT, "denoiser", "salun DDPM folder", "train one with `salun gen train`"
    )


def load_denoiser(
    path: str | Path, device: torch.device | str = "cpu", *, weights: str = "model"
) -> tuple[Denoiser, dict[str, Any]]:
    """Rebuild a denoiser from its folder and load it strictly; returns (model in eval, meta).

    Args:
        weights: ``"model"`` (the raw weights; the reference samples and unlearns with
            these) or ``"ema"`` (the exponential moving average, if training kept one).
    """
    if weights not in ("model", "ema"):
        raise SalunError(f"weights must be 'model' or 'ema', got {weights!r}")
    path = Path(path)
    meta = read_denoiser_meta(path)
    if weights == "ema" and not meta.get("has_ema"):
        raise ArtifactError(f"{path} holds no EMA weights; use weights='model'")
    model = Denoiser(DenoiserConfig.from_dict(meta["denoiser"]))
    file = path / (EMA_WEIGHTS if weights == "ema" else WEIGHTS)
    check_weights_sha(file, (meta.get("file_sha256") or {}).get(file.name))  # None: older
    state = load_state(file)
    load_state_strict(model, state, str(path))
    return model.to(device).eval(), meta
