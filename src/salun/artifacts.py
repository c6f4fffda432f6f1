"""Model folders: ``model.safetensors`` (weights) + ``model.json`` (everything else).

``model.json`` holds the architecture's build arguments, the dataset, the classes, the
training or unlearning config, the split file and hash, the seed, versions, the git
commit and metrics. Loading is strict: a wrong architecture, a missing or an unexpected
key, or a corrupted file is an :class:`ArtifactError` with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from salun.errors import ArtifactError
from salun.io import atomic_dir, to_jsonable
from salun.models import build_from_kwargs
from salun.utils import git_commit, versions

WEIGHTS = "model.safetensors"
META = "model.json"
FORMAT = "salun-model-1"


def save_model(
    path: str | Path, model: nn.Module, model_kwargs: dict, meta: dict[str, Any]
) -> Path:
    """Write a model folder atomically (a reader never sees a half-written model).

    Args:
        path: the folder to create (replaced if it exists).
        model: the trained network; its ``state_dict`` is saved (buffers included).
        model_kwargs: the :func:`salun.models.build_model` arguments (see ``model_kwargs_for``).
        meta: anything else to record (config, split, metrics...); must be JSON-able.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    record = {
        "format": FORMAT,
        "model": model_kwargs,
        "versions": versions(),
        "git_commit": git_commit(),
        **meta,
    }
    text = json.dumps(record, indent=2, sort_keys=True, default=to_jsonable) + "\n"

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / META).write_text(text)

    atomic_dir(path, write)
    return Path(path)


def read_meta(path: str | Path) -> dict:
    """The ``model.json`` of a model folder."""
    return read_sidecar(path, FORMAT, "model", "salun model folder")


def read_sidecar(path: str | Path, fmt: str, required: str, what: str, hint: str = "") -> dict:
    """Read and check the JSON sidecar of a folder artifact (classifier or denoiser).

    Args:
        fmt: the expected ``format`` value; ``required``: a key that must be present.
        what: how to name the folder in messages; ``hint``: what to do when it is missing.
    """
    path = Path(path)
    meta_file = path / META
    if not path.is_dir():
        raise ArtifactError(f"{what} {path} does not exist{'; ' + hint if hint else ''}")
    if not meta_file.is_file():
        raise ArtifactError(f"{path} is not a {what}: {META} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{meta_file} is corrupted: {e}") from None
    if meta.get("format") != fmt or required not in meta:
        raise ArtifactError(f"{meta_file} is not a {fmt} file")
    return meta


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load a model folder strictly; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    meta = read_meta(path)
    model = build_from_kwargs(meta["model"])
    state = load_state(path / WEIGHTS)
    load_state_strict(model, state, str(path))
    return model.to(device).eval(), meta


def load_state(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise ArtifactError(f"{file} is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{file} is corrupted or not a safetensors file: {e}") from None


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict`` that names every missing, unexpected or mis-shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if shapes:
            k = shapes[0]
            parts.append(f"shape mismatch at {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise ArtifactError(
            f"{where} does not fit the architecture in its model.json: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
