"""Named presets: ``configs/<name>.yaml`` of a salun checkout (or ``$SALUN_CONFIGS``)."""

from __future__ import annotations

import os
from pathlib import Path

from salun.bench.config import BenchConfig, load_config
from salun.errors import SalunError


def preset_dirs() -> list[Path]:
    """Where presets are looked for, in order: ``$SALUN_CONFIGS``, ``./configs``, and the
    ``configs/`` folder of the checkout this package runs from."""
    dirs = []
    env = os.environ.get("SALUN_CONFIGS")
    if env:
        dirs.append(Path(env))
    dirs.append(Path.cwd() / "configs")
    dirs.append(Path(__file__).resolve().parents[3] / "configs")  # src/salun/bench -> repo
    seen, out = set(), []
    for d in dirs:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def list_presets() -> list[str]:
    names = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``."""
    for d in preset_dirs():
        p = d / f"{name}.yaml"
        if p.is_file():
            return p
    known = ", ".join(list_presets()) or "none found"
    raise SalunError(
        f"unknown preset {name!r} (known: {known}); pass --config FILE.yaml instead, or set "
        "SALUN_CONFIGS to a folder of presets"
    )


def load_preset(name: str) -> BenchConfig:
    """Load ``configs/<name>.yaml``."""
    return load_config(preset_path(name))
