"""Small helpers: seeding, devices, progress bars, versions, model copies."""

from __future__ import annotations

import copy
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from salun.errors import SalunError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch (every seed, 0 included) and return a CPU generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# keeps the dropout stream apart from a run's own generator seeded with the same number
_GLOBAL_STREAM_OFFSET = 0x9E3779B97F4A7C15


@contextmanager
def seeded_global_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with torch's global RNG (what ``nn.Dropout`` draws from) seeded from
    ``seed``, and give the caller's global RNG back afterwards.

    torch seeds its default generator randomly in every process, so a model trained in
    train mode with dropout is only reproducible when its run seeds that generator.
    """
    dev = torch.device(device)
    cuda = []
    if dev.type == "cuda":
        cuda = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed((seed + _GLOBAL_STREAM_OFFSET) % 2**63)
        yield


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda[:N]`` without that GPU is a clear
    error. Nothing else is accepted: ``mps``/``meta`` would fail deep inside torch."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise SalunError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SalunError(
                f"device {device!r} requested but no CUDA GPU is available; use --device cpu"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise SalunError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    return torch.device(device)


def _silenced(quiet: bool) -> bool:
    """Whether progress output is off: by the caller (``quiet``) or by ``SALUN_QUIET=1``."""
    return quiet or os.environ.get("SALUN_QUIET") == "1"


def progress(iterable=None, *, total=None, desc: str = "", quiet: bool = False, leave=False):
    """A tqdm bar on stderr, silenced by ``quiet``, ``SALUN_QUIET=1`` or a stderr that is not
    a terminal (a redirected log would fill with carriage-return redraws)."""
    disable = _silenced(quiet) or not stderr_is_terminal()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable,
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def note_progress(message: str, *, quiet: bool = False) -> None:
    """One line on stderr between progress-bar redraws (a log keeps it when no bar shows),
    silenced like :func:`progress` by ``quiet`` or ``SALUN_QUIET=1``."""
    if not _silenced(quiet):
        tqdm.write(message, file=sys.stderr)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy, so methods never mutate the model they were given."""
    return copy.deepcopy(model)


def versions() -> dict[str, str]:
    from salun import __version__

    return {
        "salun": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def runtime_info(device: torch.device | str | None = None) -> dict[str, object]:
    """Where a result was computed: torch's thread counts and the device.

    Results depend on the thread count (float reductions change order), so every record
    keeps it. ``device`` may be a device, its name, or None (unknown).
    """
    info: dict[str, object] = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        info["device_name"] = device_name(dev)
    return info


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (CPU for an empty model)."""
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


def git_commit() -> str | None:
    """The commit of the salun checkout in use (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
