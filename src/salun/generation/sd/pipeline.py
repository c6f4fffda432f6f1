"""Loading a local SD pipeline, swapping schedulers, encoding prompts, saving the UNet.

Weights come only from the local disk: a diffusers folder (``model_index.json``) or a
single-file checkpoint (``.ckpt``/``.safetensors``, via ``from_single_file``). A path that
does not exist is refused with a clear message (we never treat it as a hub id).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from salun.errors import ArtifactError, SalunError
from salun.generation.sd.deps import require
from salun.io import atomic_dir

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "lms": "LMSDiscreteScheduler",  # the reference's evaluation sampler (docs/generation.md)
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
}
UNET_META = "salun_unet.json"


@contextmanager
def _dtype_rename_quiet() -> Iterator[None]:
    """Recent diffusers renamed ``torch_dtype`` to ``dtype``; we keep the name every
    supported version (>= 0.30) accepts and silence the rename notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        yield


def _local(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ArtifactError(
            f"{what} {str(path)!r} is not a local folder or file; salun never downloads "
            "weights: download the model once (e.g. `huggingface-cli download "
            "CompVis/stable-diffusion-v1-4 --local-dir sd14`) and pass that folder"
        )
    return p


def load_pipeline(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    unet: str | Path | None = None,
    single_file_config: str | Path | None = None,
    scheduler: str | None = None,
) -> Any:
    """Load a ``StableDiffusionPipeline`` from a local folder or single-file checkpoint.

    Args:
        path: a diffusers folder, or a ``.ckpt``/``.safetensors`` single-file checkpoint.
        device: where to put every component.
        dtype: component dtype (float16 halves memory for the frozen VAE/text encoder on
            GPUs; training keeps the UNet in float32 and uses ``mixed_precision``).
        unet: optional folder of an unlearned UNet (from :func:`save_unet`) to swap in.
        single_file_config: for single-file checkpoints, a local diffusers folder whose
            configs describe the model (offline ``from_single_file`` needs one).
        scheduler: optional scheduler name (see :data:`SCHEDULERS`).

    The safety checker is disabled: evaluation must see what the model generates.
    """
    diffusers = require("diffusers")
    require("transformers")
    p = _local(path, "model")
    common = {"torch_dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
    if p.is_dir() and not (p / "model_index.json").is_file():
        raise ArtifactError(f"{p} is not a diffusers pipeline folder (no model_index.json)")
    if p.is_file() and p.suffix.lower() != ".safetensors":
        raise ArtifactError(
            f"{p}: salun reads single-file checkpoints only as .safetensors; a "
            f"{p.suffix or 'suffix-less'} file is a pickle, which can run code when loaded. "
            "Convert it once where you trust it (load it, then save_pretrained with "
            "safe_serialization=True) and pass the result"
        )
    _refuse_pickled_weights(p)
    try:
        with _dtype_rename_quiet():
            if p.is_dir():
                pipe = diffusers.StableDiffusionPipeline.from_pretrained(
                    str(p), local_files_only=True, use_safetensors=True, **common
                )
            else:
                kwargs: dict[str, Any] = {"local_files_only": True, **common}
                if single_file_config is not None:
                    cfg_dir = _local(single_file_config, "single-file config folder")
                    kwargs["config"] = str(cfg_dir)
                pipe = diffusers.StableDiffusionPipeline.from_single_file(str(p), **kwargs)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot load a Stable Diffusion pipeline from {p}: {e}") from None
    if unet is not None:
        pipe.unet = load_unet(unet, dtype=dtype)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def _refuse_pickled_weights(folder: Path) -> None:
    """A diffusers folder whose weights exist only as pickles (``.bin``...) is refused with
    the reason, before diffusers is asked (it would fall back to unpickling them)."""
    if not folder.is_dir():
        return
    for sub in [folder, *sorted(d for d in folder.iterdir() if d.is_dir())]:
        files = [f for f in sub.iterdir() if f.is_file()]
        pickled = [f for f in files if f.suffix.lower() in _PICKLE_SUFFIXES]
        if pickled and not any(f.suffix == ".safetensors" for f in files):
            raise ArtifactError(
                f"{pickled[0]}: weights stored only as a pickle ({pickled[0].suffix}), which "
                "can run code when loaded; salun loads safetensors only. Convert the folder "
                "once where you trust it: load it and save_pretrained(..., "
                "safe_serialization=True)"
            )


def set_scheduler(pipe: Any, name: str) -> Any:
    """Replace the pipeline's scheduler by ``name`` built from the same config (same betas)."""
    diffusers = require("diffusers")
    if name not in SCHEDULERS:
        raise SalunError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    return pipe


def tokenize(pipe: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length (77 for SD), as SD v1 conditions."""
    tok = pipe.tokenizer
    out = tok(
        list(prompts),
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return out.input_ids


@torch.no_grad()
def encode_prompts(pipe: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Frozen CLIP embeddings (last hidden state) of ``prompts``, shape (B, 77, D)."""
    ids = tokenize(pipe, prompts).to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0]


def save_unet(unet: Any, path: str | Path, **metadata: Any) -> None:
    """Write the UNet as a diffusers folder (safetensors) plus a JSON sidecar, atomically."""

    def write(tmp: Path) -> None:
        unet.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / UNET_META).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))

    atomic_dir(path, write)


def load_unet(path: str | Path, *, dtype: torch.dtype = torch.float32) -> Any:
    """Load a UNet written by :func:`save_unet` (or any diffusers UNet folder)."""
    diffusers = require("diffusers")
    p = _local(path, "UNet folder")
    if not (p / "config.json").is_file():
        raise ArtifactError(f"{p} is not a diffusers UNet folder (no config.json)")
    _refuse_pickled_weights(p)
    try:
        with _dtype_rename_quiet():
            return diffusers.UNet2DConditionModel.from_pretrained(
                str(p), local_files_only=True, use_safetensors=True, torch_dtype=dtype
            )
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot load the UNet in {p}: {e}") from None


def unet_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar written by :func:`save_unet` ({} when absent)."""
    f = Path(path) / UNET_META
    return json.loads(f.read_text()) if f.is_file() else {}
