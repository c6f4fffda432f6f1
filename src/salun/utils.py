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


_LINES = {"on": False}  # set by progress_lines: plain progress lines in a log


@contextmanager
def progress_lines(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`progress` writes plain lines (:class:`LineProgress`) where a
    bar cannot be drawn: stderr is not a terminal, e.g. ``salun train ... 2> log``. The
    verbs a user runs by hand turn it on; the benchmark keeps its one line per run."""
    before = _LINES["on"]
    _LINES["on"] = enabled
    try:
        yield
    finally:
        _LINES["on"] = before


class LineProgress:
    """The part of tqdm's interface salun uses, written as one plain line per tenth of
    the total (an epoch of a 10-epoch run) and at least every ``every_s`` seconds:
    ``desc: 3/10 (30 %), 12 s elapsed, about 28 s left; loss=0.41``. A log that is
    redirected shows the run advancing instead of minutes of silence."""

    disable = False

    def __init__(self, iterable=None, *, total=None, desc="", every_s=60.0, clock=None):
        import time

        self.iterable, self.desc, self.every_s = iterable, desc or "progress", every_s
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.postfix = total, 0, ""
        self.clock = clock or time.monotonic
        self.start = self.last_time = self.clock()
        self.next_n = self._step()

    def _step(self) -> int:
        return self.n + max(1, (self.total or 0) // 10) if self.total else 2**62

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        done = self.total is not None and self.n >= self.total
        if self.n >= self.next_n or done or now - self.last_time >= self.every_s:
            self._line(now)
            self.next_n = self._step() if not done else 2**62

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f} %)"
        text += f", {_seconds(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total:
            text += f", about {_seconds(elapsed / self.n * (self.total - self.n))} left"
        if self.postfix:
            text += f"; {self.postfix}"
        self.last_time = now
        print(text, file=sys.stderr, flush=True)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={_short(v)}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh=True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str = "", refresh=True) -> None:
        self.desc = desc

    def write(self, s: str, file=None, **kwargs) -> None:
        print(s, file=file or sys.stderr, flush=True)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def progress(iterable=None, *, total=None, desc: str = "", quiet: bool = False, leave=False):
    """A tqdm bar on stderr, silenced by ``quiet``, ``SALUN_QUIET=1`` or a stderr that is not
    a terminal (a redirected log would fill with carriage-return redraws); within
    :func:`progress_lines`, a log gets plain lines instead (:class:`LineProgress`)."""
    terminal = stderr_is_terminal()
    if _LINES["on"] and not terminal and not _silenced(quiet):
        return LineProgress(iterable, total=total, desc=desc)
    disable = _silenced(quiet) or not terminal
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
