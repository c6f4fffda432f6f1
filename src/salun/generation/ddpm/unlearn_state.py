"""Resumable DDPM unlearning: what a checkpoint keeps so that a killed run continues exactly.

A checkpoint is the ``--out`` folder itself, written atomically every ``checkpoint_every``
steps: the weights so far, ``model.json`` with ``complete: false`` and ``steps_done``, and
``unlearn_state.safetensors`` (Adam moments, the batch generator, the torch RNG that draws
the UNet's dropout, each batch stream's permutation and position, and, for ESD's
``esd_update: reference``, the running gradient sum its next step uses). Resuming from it gives
the same weights, bit for bit, as the run that was never stopped (tested with SIGKILL).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from salun.artifacts import check_weights_sha, load_state
from salun.errors import ArtifactError, SalunError
from salun.generation.ddpm.checkpoint import load_optimizer_tensors, optimizer_tensors
from salun.generation.ddpm.data import BatchStream
from salun.generation.ddpm.model import WEIGHTS, Denoiser, read_denoiser_meta, save_denoiser

UNLEARN_STATE_FILE = "unlearn_state.safetensors"


def empty_sums() -> dict[str, float]:
    return {"forget": 0.0, "retain": 0.0, "n": 0}


@dataclass
class UnlearnRun:
    """A run in progress: everything its next step depends on."""

    model: Denoiser
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    streams: dict[str, BatchStream]
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=empty_sums)  # the open 50-step window
    seconds_before: float = 0.0  # spent in the sessions before this one
    started: float = field(default_factory=time.perf_counter)  # this session's start
    keep_grads: bool = False  # .grad carries over between steps (ESD's reference update)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {
            "step": torch.tensor(self.step),
            "rng.batches": self.generator.get_state(),
            "rng.torch": torch.get_rng_state(),
        }
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            out["rng.cuda"] = torch.cuda.get_rng_state(device)
        for name, stream in self.streams.items():
            out.update({f"stream.{name}.{k}": v for k, v in stream.state_dict().items()})
        if self.keep_grads:
            for name, p in self.model.named_parameters():
                if p.grad is not None:
                    out[f"grad.{name}"] = p.grad.detach().to("cpu", copy=True).contiguous()
        return {**out, **optimizer_tensors(self.model, self.optimizer)}

    def progress(self) -> dict[str, Any]:
        """The JSON half of the state (goes into ``model.json``)."""
        return {
            "steps_done": self.step,
            "history": self.history,
            "window": self.sums,
            "seconds": self.seconds(),
        }

    def seconds(self) -> float:
        """Run time so far, over every session."""
        return self.seconds_before + time.perf_counter() - self.started

    def restore(self, tensors: dict[str, torch.Tensor], progress: dict[str, Any]) -> None:
        """Continue from a checkpoint (the model already holds its weights)."""
        self.step = int(tensors["step"])
        self.generator.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        device = next(self.model.parameters()).device
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        for name, stream in self.streams.items():
            prefix = f"stream.{name}."
            stream.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )
        load_optimizer_tensors(self.model, self.optimizer, tensors)
        if self.keep_grads:
            for name, p in self.model.named_parameters():
                g = tensors.get(f"grad.{name}")
                p.grad = None if g is None else g.to(p.device).clone()
        self.history = list(progress.get("history", []))
        self.sums = dict(progress.get("window") or empty_sums())
        self.seconds_before = float(progress.get("seconds", 0.0))


@dataclass(frozen=True)
class UnlearnResume:
    """A checkpoint read back: the weights so far, the tensor state and the JSON progress."""

    weights: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]
    progress: dict[str, Any]


# The record fields that identify a run: a checkpoint continues only the run it came from.
RUN_KEY = ("unlearn", "forget_class", "source_sha256", "source_weights", "mask_sha256")


def matching_run(out: str | Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """The ``model.json`` of ``out`` when it holds this very run (finished or not), else None.

    Raises when ``out`` holds another run's checkpoint, naming the settings that differ.
    """
    if not (Path(out) / "model.json").is_file():
        return None
    meta = read_denoiser_meta(out)
    if meta.get("kind") != "unlearned":
        return None
    # compared as JSON: the record holds tuples where the file holds lists
    differ = [k for k in RUN_KEY if json.loads(json.dumps(record.get(k))) != meta.get(k)]
    if differ:
        if meta.get("complete") is False:
            raise SalunError(
                f"{out} holds an unfinished unlearning run with other settings "
                f"({', '.join(differ)}); pass --overwrite to start over, or another --out"
            )
        return None
    return meta


def save_unlearn_checkpoint(out: str | Path, run: UnlearnRun, record: dict[str, Any]) -> None:
    """Write ``out`` as a clearly unfinished folder that :func:`read_resume` continues."""
    meta = {**record, **run.progress(), "complete": False}
    save_denoiser(out, run.model, meta, extra_files={UNLEARN_STATE_FILE: run.tensors()})


def read_resume(out: str | Path, meta: dict[str, Any]) -> UnlearnResume:
    """The checkpoint in ``out`` (checksums verified)."""
    out = Path(out)
    recorded = meta.get("file_sha256") or {}
    for name in (WEIGHTS, UNLEARN_STATE_FILE):
        if not (out / name).is_file():
            raise ArtifactError(f"{out} is an unfinished run without {name}; cannot resume it")
        check_weights_sha(out / name, recorded.get(name))
    return UnlearnResume(load_state(out / WEIGHTS), load_state(out / UNLEARN_STATE_FILE), meta)
