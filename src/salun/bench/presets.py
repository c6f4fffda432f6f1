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


def list_presets(kind: str | None = None) -> list[str]:
    """The preset names found in :func:`preset_dirs` (only those of ``kind`` if given:
    ``bench``, ``audit``, ``gen`` or ``sd``, see :func:`preset_kind`)."""
    names = {}
    for d in preset_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                names.setdefault(p.stem, p)  # the first folder wins, as in preset_path
    return sorted(n for n, p in names.items() if kind is None or preset_kind(p) == kind)


def preset_kind(path: Path) -> str | None:
    """Which verb a preset file is for, from its top-level keys: ``bench`` (scenarios and
    methods), ``audit`` (shadows), ``gen`` (a DDPM preset: forget_class and train), ``sd``
    (resolution); None for a file that is none of these or does not parse."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if "scenarios" in data and "methods" in data:
        return "bench"
    if "shadows" in data:
        return "audit"
    if "resolution" in data:
        return "sd"
    if "forget_class" in data and "train" in data:
        return "gen"
    return None


def preset_help(kind: str) -> str:
    """The help of a ``--preset`` flag: the names of the presets of ``kind`` that exist
    (generated, so a new ``configs/*.yaml`` appears without editing any help text)."""
    names = list_presets(kind)
    shown = ", ".join(names) if names else "none found"
    return f"a preset name (configs/NAME.yaml): {shown}"


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
