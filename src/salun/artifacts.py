"""Model folders: ``model.safetensors`` (weights) + ``model.json`` (everything else).

``model.json`` holds the architecture's build arguments, the dataset, the classes, the
training or unlearning config, the split file and hash, the seed, versions, the git
commit, metrics and the sha256 of the weights file. Loading is strict: a ``model.json``
that does not fit its schema, a wrong architecture, a missing or an unexpected key, or
weights whose sha256 differs from the recorded one is an :class:`ArtifactError` with a clear
message (see docs/safety.md). Folders written before the sha256 was recorded still load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from salun.errors import ArtifactError
from salun.io import (
    atomic_dir,
    canonical_safetensors,
    recover,
    sha256_bytes,
    sha256_file,
    to_jsonable,
)
from salun.models import build_from_kwargs
from salun.utils import git_commit, model_device, runtime_info, versions

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
    weights = canonical_safetensors(safetensors_bytes(state, metadata={"format": FORMAT}))
    record = {
        "format": FORMAT,
        "model": model_kwargs,
        "versions": versions(),
        "runtime": runtime_info(model_device(model)),  # thread count changes results
        "git_commit": git_commit(),
        **meta,
        "weights_sha256": sha256_bytes(weights),
    }
    check_meta_schema(json.loads(json.dumps(record, default=to_jsonable)), str(path))
    text = json.dumps(record, indent=2, sort_keys=True, default=to_jsonable) + "\n"

    def write(tmp: Path) -> None:
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / META).write_text(text)

    atomic_dir(path, write)
    return Path(path)


def read_meta(path: str | Path) -> dict:
    """The ``model.json`` of a model folder, checked against its schema."""
    meta = read_sidecar(path, FORMAT, "model", "salun model folder")
    check_meta_schema(meta, str(Path(path) / META))
    return meta


# The build arguments of salun.models.build_model: name -> (JSON types, required).
_MODEL_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "arch": ((str,), True),
    "in_channels": ((int,), True),
    "num_classes": ((int,), True),
    "image_size": ((int,), True),
    "mean": ((list,), True),
    "std": ((list,), True),
    "width": ((int, float), False),
}


def check_meta_schema(meta: dict, where: str) -> None:
    """One clear :class:`ArtifactError` per problem of a classifier ``model.json``."""
    ds = meta.get("dataset")
    if not isinstance(ds, str) or not ds:
        raise ArtifactError(f"{where}: 'dataset' is missing or not a name (got {ds!r})")
    spec = meta.get("data_spec")
    if spec is not None and not isinstance(spec, str):
        raise ArtifactError(f"{where}: 'data_spec' must be a string, got {spec!r}")
    model = meta.get("model")
    if not isinstance(model, dict):
        raise ArtifactError(f"{where}: 'model' must be an object of build arguments")
    extra = sorted(set(model) - set(_MODEL_KEYS))
    if extra:
        raise ArtifactError(
            f"{where}: unexpected key model.{extra[0]}; allowed: {', '.join(_MODEL_KEYS)}"
        )
    for key, (types, required) in _MODEL_KEYS.items():
        if key not in model:
            if required:
                raise ArtifactError(f"{where}: 'model.{key}' is missing")
            continue
        v = model[key]
        if not isinstance(v, types) or isinstance(v, bool):
            raise ArtifactError(f"{where}: model.{key} has the wrong type ({v!r})")
        if isinstance(v, int) and v <= 0:
            raise ArtifactError(f"{where}: model.{key} must be positive, got {v}")
        if isinstance(v, list) and (
            len(v) != model.get("in_channels")
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ):
            raise ArtifactError(
                f"{where}: model.{key} must list one number per input channel, got {v!r}"
            )
    sha = meta.get("weights_sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
        raise ArtifactError(f"{where}: 'weights_sha256' is not a sha256 hex digest ({sha!r})")


def read_sidecar(path: str | Path, fmt: str, required: str, what: str, hint: str = "") -> dict:
    """Read and check the JSON sidecar of a folder artifact (classifier or denoiser).

    Args:
        fmt: the expected ``format`` value; ``required``: a key that must be present.
        what: how to name the folder in messages; ``hint``: what to do when it is missing.
    """
    path = Path(path)
    recover(path)  # a writer killed mid-replace may have left the old folder aside
    meta_file = path / META
    if not path.is_dir():
        raise ArtifactError(f"{what} {path} does not exist{'; ' + hint if hint else ''}")
    if not meta_file.is_file():
        raise ArtifactError(f"{path} is not a {what}: {META} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{meta_file} is corrupted: {e}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(
            f"{meta_file} must hold a JSON object, not a {type(meta).__name__}; "
            "it is corrupted or hand-edited"
        )
    if meta.get("format") != fmt or required not in meta:
        raise ArtifactError(f"{meta_file} is not a {fmt} file")
    return meta


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild and load a model folder strictly; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    meta = read_meta(path)
    check_weights_sha(path / WEIGHTS, meta.get("weights_sha256"))
    model = build_from_kwargs(meta["model"])
    state = load_state(path / WEIGHTS)
    load_state_strict(model, state, str(path))
    return model.to(device).eval(), meta


def check_weights_sha(file: Path, expected: str | None) -> None:
    """A weights file must hash to what its sidecar recorded (``None``: not recorded,
    as in folders written by older versions)."""
    if expected is None:
        return
    if not file.is_file():
        raise ArtifactError(f"{file} is missing")
    got = sha256_file(file)
    if got != expected:
        raise ArtifactError(
            f"{file} is corrupted: its sha256 {got[:16]}... differs from the "
            f"{expected[:16]}... recorded in {META}; restore or retrain the model"
        )


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
