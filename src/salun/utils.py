"""Small helpers: seeding, devices, progress bars, versions, model copies."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
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


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SalunError(
            f"device {device!r} requested but no CUDA GPU is available; use --device cpu"
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise SalunError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None


def progress(iterable=None, *, total=None, desc: str = "", quiet: bool = False, leave=False):
    """A tqdm bar on stderr, silenced by ``quiet`` or ``SALUN_QUIET=1``."""
    disable = quiet or os.environ.get("SALUN_QUIET") == "1"
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable,
        leave=leave,
        file=sys.stderr,
        dynamic_ncols=True,
    )


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
