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
    # Library notices (deprecations, "some weights were not used"...) would bury salun's
    # one-line errors; errors only, unless the user sets these variables themselves.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise SalunError(
            f"the Stable Diffusion tools need the package {name!r} ({e}); "
            f"install them with `{INSTALL_HINT}`"
        ) from None
    _quiet_library_logs(module)
    return module


def _quiet_library_logs(module: ModuleType) -> None:
    """Set transformers/diffusers loggers to the verbosity of the variables above (the
    libraries read them only at their first import, which may have happened earlier)."""
    env = {"transformers": "TRANSFORMERS_VERBOSITY", "diffusers": "DIFFUSERS_VERBOSITY"}
    var = env.get(module.__name__)
    logging = getattr(module, "logging", None) or getattr(
        getattr(module, "utils", None), "logging", None
    )
    if var is None or logging is None:
        return
    level = os.environ.get(var, "error").upper()
    setter = getattr(logging, "set_verbosity", None)
    if setter is not None and hasattr(logging, level):
        setter(getattr(logging, level))
    # "Loading pipeline components", "Loading weights", "Writing model shards": the libraries'
    # own bars, one per load, would flood salun's log; salun shows its own progress.
    off = getattr(logging, "disable_progress_bar", None)
    if off is not None and os.environ.get("SALUN_LIBRARY_PROGRESS") != "1":
        off()
