"""Dataset sources by name, and where their files are looked for.

``load_dataset("fashion-mnist")`` searches, in order: ``$SALUN_DATA_DIR/<name>``,
``$SALUN_DATA_DIR``, a system folder (e.g. ``/usr/share/datasets/fashion-mnist`` from
Debian's ``dataset-fashion-mnist``), then the user cache ``~/.cache/salun/<name>``.
Nothing is ever downloaded: a missing dataset ends with one message that says where we
looked and how to get the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from salun.data.dataset import DataBundle
from salun.errors import DatasetNotFoundError, SalunError

Loader = Callable[..., DataBundle]

_LOADERS: dict[str, Loader] = {}
_HOW_TO_GET: dict[str, str] = {}


def register_loader(name: str, how_to_get: str = "") -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(root: Path | None, arg: str | None) -> DataBundle``."""

    def wrap(fn: Loader) -> Loader:
        if name in _LOADERS:
            raise ValueError(f"dataset source {name!r} registered twice")
        _LOADERS[name] = fn
        _HOW_TO_GET[name] = how_to_get
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (``npz`` and ``imagefolder`` take ``:PATH``)."""
    _import_sources()
    return sorted(_LOADERS)


def load_dataset(spec: str, root: str | Path | None = None) -> DataBundle:
    """Load a dataset by name, e.g. ``"fashion-mnist"``, ``"cifar10"``, ``"npz:/data/x.npz"``.

    Args:
        spec: a source name, optionally followed by ``:ARG`` (a path for ``npz`` and
            ``imagefolder``, a size for ``synthetic``).
        root: a folder to look in first (overrides the search path).

    Returns:
        A :class:`DataBundle` with train and test sets as uint8 tensors.

    Raises:
        DatasetNotFoundError: the files were not found; the message says where we looked.
    """
    _import_sources()
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in _LOADERS:
        raise SalunError(f"unknown dataset {spec!r}; choose one of: {', '.join(list_datasets())}")
    return _LOADERS[name](Path(root) if root else None, arg or None)


# Sources whose ``:ARG`` is a path: their spec is recorded with the path made absolute.
PATH_SOURCES = ("npz", "imagefolder")


def canonical_spec(spec: str) -> str:
    """The spec to record in artifacts: ``npz:my.npz`` becomes ``npz:/abs/dir/my.npz``, so a
    later step finds the same file from any working directory and a file named like a
    built-in dataset (``digits.npz``) is never taken for it."""
    name, sep, arg = spec.partition(":")
    name = name.strip().lower()
    if sep and arg and name in PATH_SOURCES and Path(arg).expanduser().exists():
        # (a relative path that is not here is looked up in the search folders: kept as is)
        return f"{name}:{Path(arg).expanduser().resolve()}"
    return f"{name}{sep}{arg}"


def search_dirs(name: str, root: Path | None, system: list[str] = ()) -> list[Path]:
    """The folders searched for ``name``, in order (see the module docstring)."""
    dirs: list[Path] = []
    if root is not None:
        dirs.append(root)
    env = os.environ.get("SALUN_DATA_DIR")
    if env:
        dirs += [Path(env) / name, Path(env)]
    dirs += [Path(s) for s in system]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "salun" / name
    dirs.append(cache)
    return dirs


def find_first(
    name: str, root: Path | None, wanted: list[str], system: list[str] = ()
) -> tuple[Path, dict[str, Path]]:
    """The first searched folder holding every file in ``wanted`` (each may be a list of
    alternatives separated by ``|``), with the path found for each."""
    tried = search_dirs(name, root, system)
    for d in tried:
        found: dict[str, Path] = {}
        for entry in wanted:
            for alt in entry.split("|"):
                if (d / alt).exists():
                    found[entry] = d / alt
                    break
        if len(found) == len(wanted):
            return d, found
    raise DatasetNotFoundError(not_found_message(name, tried, wanted))


def not_found_message(name: str, tried: list[Path], wanted: list[str]) -> str:
    files = ", ".join(w.split("|")[0] for w in wanted)
    where = "; ".join(str(t) for t in tried)
    how = _HOW_TO_GET.get(name, "")
    return (
        f"dataset {name!r} not found: looked for {files} in {where}. "
        f"{how} You can also point SALUN_DATA_DIR at a folder holding the files."
    ).strip()


def _import_sources() -> None:
    # The sources register themselves on import; importing here keeps the registry lazy.
    from salun.data import sources  # noqa: F401
