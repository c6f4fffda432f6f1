"""Resumable DDPM training: a model folder plus ``train_state.safetensors``.

A checkpoint is an ordinary DDPM model folder (raw + EMA weights, ``model.json`` with
``complete`` and ``steps_done``) that also holds the Adam moments, the step and the RNG
state. A killed run therefore leaves a usable, clearly-marked partial model, and
``resume_train_state`` continues it (or a finished one, to train it longer) exactly where
it stopped: the batch stream's position and the CPU dropout RNG are kept too (on a GPU the
CUDA generator that draws dropout is not saved, so a resumed run there differs).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from salun.artifacts import check_weights_sha, load_state
from salun.errors import ArtifactError
from salun.generation.ddpm.model import (
    EMA_WEIGHTS,
    WEIGHTS,
    Denoiser,
    DenoiserConfig,
    read_denoiser_meta,
    save_denoiser,
)
from salun.generation.ddpm.train import DDPMTrainConfig, TrainState, make_optimizer

STATE_FILE = "train_state.safetensors"


def optimizer_tensors(
    model: torch.nn.Module, opt: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as flat tensors ``adam.{index}.{key}``."""
    tensors = {}
    for i, p in enumerate(model.parameters()):
        for k, v in opt.state.get(p, {}).items():
            # a copy: on the CPU `.to("cpu")` would alias the live, still-updated moments
            tensors[f"adam.{i}.{k}"] = v.detach().to("cpu", copy=True).contiguous()
    return tensors


def load_optimizer_tensors(
    model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    """Put back what :func:`optimizer_tensors` saved (``model`` already on its device)."""
    for i, p in enumerate(model.parameters()):
        entry = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"adam.{i}.")}
        if entry:
            opt.state[p] = {k: v.to(p.device) if v.dim() else v for k, v in entry.items()}


def _state_tensors(state: TrainState) -> dict[str, torch.Tensor]:
    tensors = {"rng": state.generator.get_state(), "step": torch.tensor(state.step)}
    if state.dropout_rng is not None:
        tensors["rng.dropout"] = state.dropout_rng
    for k, v in (state.stream_state or {}).items():
        tensors[f"stream.{k}"] = v
    return {**tensors, **optimizer_tensors(state.model, state.optimizer)}


def save_checkpoint(
    path: str | Path, state: TrainState, meta: dict[str, Any], *, complete: bool
) -> Path:
    """Write the model folder with EMA and the resume state (kept when ``complete`` too, so
    a finished run can be trained further with a larger ``steps``)."""
    record = {**meta, "steps_done": state.step, "complete": complete, "history": state.history}
    extra = {STATE_FILE: _state_tensors(state)}
    return save_denoiser(path, state.model, record, ema=state.ema, extra_files=extra)


def resume_train_state(
    path: str | Path, cfg: DDPMTrainConfig, device: torch.device | str = "cpu"
) -> TrainState:
    """Rebuild the :class:`TrainState` of a training checkpoint folder."""
    from salun.artifacts import load_state_strict

    path = Path(path)
    meta = read_denoiser_meta(path)
    if not (path / STATE_FILE).is_file():
        raise ArtifactError(f"{path} holds no training state ({STATE_FILE}); cannot resume it")
    recorded = meta.get("file_sha256") or {}  # absent in folders of older versions
    for name in (WEIGHTS, EMA_WEIGHTS, STATE_FILE):
        check_weights_sha(path / name, recorded.get(name))
    model = Denoiser(DenoiserConfig.from_dict(meta["denoiser"]))
    load_state_strict(model, load_state(path / WEIGHTS), str(path))
    ema = copy.deepcopy(model)
    load_state_strict(ema, load_state(path / EMA_WEIGHTS), str(path))
    model.to(device).train()
    ema.to(device).eval().requires_grad_(False)
    tensors = load_state(path / STATE_FILE)
    opt = make_optimizer(model, cfg)
    load_optimizer_tensors(model, opt, tensors)
    gen = torch.Generator()
    gen.set_state(tensors["rng"])
    # checkpoints of older versions hold neither: their resume starts a new pass
    stream = {k[len("stream.") :]: v for k, v in tensors.items() if k.startswith("stream.")}
    return TrainState(
        model,
        ema,
        opt,
        int(tensors["step"]),
        gen,
        list(meta.get("history", [])),
        stream_state=stream or None,
        dropout_rng=tensors.get("rng.dropout"),
    )
