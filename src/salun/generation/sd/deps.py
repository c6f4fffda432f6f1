"""Optional dependencies of the Stable Diffusion code (the ``[sd]`` extra).

``import salun`` never needs them; every SD entry point calls :func:`require` first, so a
missing package gives one clear :class:`SalunError` instead of an ImportError deep inside.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from salun.errors import SalunError

INSTALL_HINT = "pip install salun[sd]"


def require(name: str) -> ModuleType:
    """Import ``name`` (diffusers, transformers, accelerate, nudenet) or raise SalunError."""
    # Never reach the hub: SD weights must come from a local folder (DESIGN §4).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise SalunError(
            f"the Stable Diffusion tools need the package {name!r} ({e}); "
            f"install them with `{INSTALL_HINT}`"
        ) from None
