"""The output policy: which ``--out`` paths a verb may write, in one place.

Every writing verb calls :func:`claim_output` before it does any work, so a user never
loses a file and never waits an hour for a refusal. An existing path is replaced only when
it is a salun artifact of the same kind (recognised by its sidecar or header) **and** the
user passed ``--overwrite``; an output that is an input, holds an input, lies inside an
input folder or holds the working directory is always refused, as are FIFOs and other
non-regular files and names too long to write.

The claim holds for the whole run: the same rule is applied again, atomically, when the
output is published (:func:`salun.io.publish`), so a file or folder that appeared at the
path while the run was working is never replaced. See docs/safety.md.

Example:
    >>> out = claim_output(args.out, "model", overwrite=args.overwrite, inputs=[args.model])
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from salun.errors import SalunError
from salun.io import NAME_OVERHEAD, Claim, claim, recover


@dataclass(frozen=True)
class OutputKind:
    """A kind of artifact: how to recognise one on disk and how to name it."""

    name: str
    is_dir: bool
    what: str
    recognise: Callable[[Path], bool]
    # For folders: which entry names the artifact itself writes (None: any). A folder
    # holding anything else also holds a user's file, and is not replaced.
    owns: Callable[[str], bool] | None = None


_KINDS: dict[str, OutputKind] = {}


def register_kind(
    name: str,
    *,
    is_dir: bool,
    what: str,
    recognise: Callable[[Path], bool],
    owns: Callable[[str], bool] | None = None,
):
    """Teach the policy a new artifact kind.

    Args:
        recognise: ``recognise(path)`` is True for a salun artifact of that kind; it must
            not raise.
        owns: for folders, ``owns(name)`` is True for each entry the artifact writes; a
            folder with other entries is not replaced (None: the kind manages its contents).
    """
    _KINDS[name] = OutputKind(name, is_dir, what, recognise, owns)


def _names(*names: str) -> Callable[[str], bool]:
    return lambda n: n in names


def kinds() -> list[str]:
    return sorted(_KINDS)


def _json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _sidecar_format(file: str, fmt: str) -> Callable[[Path], bool]:
    return lambda p: (p / file).is_file() and _json(p / file).get("format") == fmt


def _json_format(fmt: str) -> Callable[[Path], bool]:
    return lambda p: p.is_file() and _json(p).get("format") == fmt


def _is_mask(p: Path) -> bool:
    from safetensors import safe_open

    from salun.saliency import MASK_FORMAT

    try:
        with safe_open(str(p), framework="pt") as f:
            return (f.metadata() or {}).get("format") == MASK_FORMAT
    except Exception:  # anything unreadable is simply not a mask
        return False


def is_salun_png(p: Path) -> bool:
    """A regular file that is a PNG carrying salun's ``Software`` tag (never opens a FIFO)."""
    if _kind_of_entry(p) != "file":
        return False
    try:
        from PIL import Image

        with Image.open(p) as im:
            return im.format == "PNG" and im.info.get("Software", "").startswith("salun")
    except Exception:
        return False


def _npz_format(p: Path) -> str | None:
    import numpy as np

    try:
        with np.load(p, allow_pickle=False) as z:
            return str(z["salun_format"]) if "salun_format" in z.files else None
    except Exception:
        return None


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda p: all((p / n).is_file() for n in names)


register_kind(
    "model",
    is_dir=True,
    what="salun model folder",
    recognise=_sidecar_format("model.json", "salun-model-1"),
    owns=_names("model.json", "model.safetensors"),
)
register_kind(
    "ddpm",
    is_dir=True,
    what="salun DDPM folder",
    recognise=_sidecar_format("model.json", "salun-ddpm-1"),
    owns=_names(
        "model.json",
        "model.safetensors",
        "ema.safetensors",
        "train_state.safetensors",  # a training checkpoint's resume state
        "unlearn_state.safetensors",  # an unlearning checkpoint's
    ),
)
register_kind(
    "split", is_dir=False, what="salun split file", recognise=_json_format("salun-split-1")
)
register_kind("mask", is_dir=False, what="salun mask file", recognise=_is_mask)
register_kind("bench", is_dir=True, what="salun benchmark folder", recognise=_has("bench.json"))
# JSON records of evaluations (their writers put one of these in ``format``).
RECORD_FORMATS = ("salun-gen-eval-1", "salun-sd-eval-1")
register_kind(
    "record",
    is_dir=False,
    what="salun JSON record",
    recognise=lambda p: p.is_file() and _json(p).get("format") in RECORD_FORMATS,
)
register_kind(
    "samples-npz",
    is_dir=False,
    what="salun samples .npz",
    recognise=lambda p: _npz_format(p) == "salun-samples-1",
)
register_kind("grid", is_dir=False, what="salun PNG grid", recognise=is_salun_png)
register_kind(
    "sd-unet",
    is_dir=True,
    what="salun Stable Diffusion UNet folder",
    recognise=_has("salun_unet.json", "config.json"),
    owns=lambda n: (
        n in ("salun_unet.json", "config.json")
        or (n.startswith("diffusion_pytorch_model") and n.endswith((".safetensors", ".json")))
    ),
)
register_kind(
    "sd-samples",
    is_dir=True,
    what="salun sample folder",
    recognise=lambda p: (
        (p / "metadata.csv").is_file()
        and (p / "metadata.csv").read_text(errors="replace").startswith("file_name,")
    ),
    owns=lambda n: n == "metadata.csv" or (n.endswith(".png") and not n.startswith(".")),
)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def claim_output(
    path: str | Path,
    kind: str,
    *,
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
    is_dir: bool | None = None,
) -> Path:
    """Check that a verb may write ``path``; raise :class:`SalunError` (exit 2) if not.

    Args:
        path: the ``--out`` the user gave.
        kind: the artifact kind the verb writes (see :func:`kinds`), e.g. ``"model"``,
            ``"split"``, ``"mask"``, ``"bench"``.
        overwrite: the user's ``--overwrite``: an existing artifact of the same kind may
            be replaced (for ``bench``: resumed). Without it any existing path is refused.
        inputs: paths the verb reads (model folders, split files, data); ``None`` entries
            are ignored. The output may not be one of them nor contain one.
        is_dir: whether the output is a folder (default: the kind's own).

    Returns:
        ``path`` as a :class:`Path`, unchanged.

    Refused: an existing path that is not a salun artifact of ``kind`` (a user's folder or
    file), an existing artifact without ``overwrite``, a file where a folder is expected
    and vice versa, an output that is an input or contains one, an output that contains
    the working directory, and a parent folder that cannot be written.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown output kind {kind!r}; known: {', '.join(kinds())}")
    spec = _KINDS[kind]
    want_dir = spec.is_dir if is_dir is None else is_dir
    p = Path(path)
    if str(path).strip() == "":
        raise SalunError("--out is empty; name the file or folder to write")
    target = p.resolve()
    cwd = Path.cwd().resolve()
    if _inside(cwd, target):
        raise SalunError(
            f"refusing to write {path}: it contains the working directory {cwd}; "
            "choose an output inside it, not above it"
        )
    _check_length(p)
    for inp in inputs:
        # Only inputs on disk count: a built-in dataset name ("digits") is not a path.
        if inp is None or str(inp) == "" or not os.path.lexists(_input_path(inp)):
            continue
        src = _input_path(inp).resolve()
        if _inside(src, target):
            same = "is" if src == target else "contains"
            raise SalunError(
                f"refusing to write {path}: it {same} the input {inp}; choose another --out"
            )
        if src.is_dir() and _inside(target, src):
            raise SalunError(
                f"refusing to write {path}: it lies inside the input folder {inp}, which "
                "salun does not write into; choose an --out outside it"
            )
    recover(p)  # a folder left aside by a killed replace counts as existing
    if os.path.lexists(p):
        _check_existing(p, spec, want_dir, overwrite)
    _check_parent(p)
    # The same rule again at publish time, atomically (salun.io.publish).
    claim(p, Claim(lambda q: overwrite and _replaceable(q, spec, want_dir)))
    return p


def _kind_of_entry(p: Path) -> str | None:
    """ "file", "folder", "link" or what else is at ``p`` (None: nothing), without opening it."""
    try:
        mode = os.lstat(p).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _replaceable(p: Path, spec: OutputKind, want_dir: bool) -> bool:
    """What ``--overwrite`` may replace, judged at the moment of publishing: a salun
    artifact of the claimed kind holding nothing else. Never raises, never opens a FIFO."""
    try:
        if _kind_of_entry(p) != ("folder" if want_dir else "file") or not spec.recognise(p):
            return False
        if want_dir and spec.owns is not None:
            return all(spec.owns(e.name) for e in p.iterdir())
        return True
    except OSError:
        return False


def _check_length(p: Path) -> None:
    """Refuse, before any work, a name the file system would refuse only at the end.

    salun writes ``.NAME.salun-tmp.<pid>.<hex>`` beside each output, so its last name is
    limited to the file system's name limit minus :data:`salun.io.NAME_OVERHEAD`; folders
    still to be created, to the limit itself.
    """
    full = p.absolute()
    parent = _nearest_existing(full.parent)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
        path_max = os.pathconf(parent, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    new_parts = full.relative_to(parent).parts if _inside(full, parent) else full.parts[1:]
    for i, part in enumerate(new_parts):
        limit = name_max - NAME_OVERHEAD if i == len(new_parts) - 1 else name_max
        n = len(os.fsencode(part))
        if n > limit:
            raise SalunError(
                f"cannot write --out: the name {part[:24]}... is too long: {n} bytes, at most "
                f"{limit} here (the file system allows {name_max}; salun adds up to "
                f"{NAME_OVERHEAD} for its temp name); choose a shorter one"
            )
    n = len(os.fsencode(str(full)))
    if n > path_max - NAME_OVERHEAD:
        raise SalunError(
            f"cannot write {str(p)[:40]}...: the path is too long: {n} bytes, at most "
            f"{path_max - NAME_OVERHEAD}; choose a shorter one"
        )


def _input_path(inp: str | Path) -> Path:
    # Data specs such as npz:PATH and imagefolder:PATH name a path after the colon.
    s = str(inp)
    name, sep, rest = s.partition(":")
    if sep and name.lower() in ("npz", "imagefolder") and rest:
        return Path(rest)
    return Path(s)


def _check_existing(p: Path, spec: OutputKind, want_dir: bool, overwrite: bool) -> None:
    a = "a folder" if want_dir else "a file"
    if p.is_symlink():
        raise SalunError(f"refusing to write {p}: it is a symbolic link; name a plain path")
    entry = _kind_of_entry(p)
    if entry not in ("file", "folder", None):  # opening a FIFO to look inside would hang
        raise SalunError(
            f"refusing to write {p}: it is a {entry}, not a regular file or folder; "
            "choose a new path"
        )
    if want_dir and not p.is_dir():
        raise SalunError(f"refusing to write {p}: it exists and is a file, but {a} is written")
    if not want_dir and p.is_dir():
        raise SalunError(f"refusing to write {p}: it is a folder, but {a} is written here")
    if not spec.recognise(p):
        raise SalunError(
            f"refusing to write {p}: it exists and is not a {spec.what}; choose a new path "
            "(salun never deletes or writes into files it did not make)"
        )
    if not overwrite:
        raise SalunError(f"{p} already exists (a {spec.what}); pass --overwrite to replace it")
    if spec.is_dir and spec.owns is not None:
        foreign = sorted(e.name for e in p.iterdir() if not spec.owns(e.name))
        if foreign:
            raise SalunError(
                f"refusing to replace {p}: it also holds {foreign[0]!r}, which salun did not "
                "write there; move it out first or choose another --out"
            )


def _check_parent(p: Path) -> None:
    parent = _nearest_existing(p.absolute().parent)
    if not parent.is_dir():
        raise SalunError(f"cannot write {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SalunError(f"cannot write {p}: the folder {parent} is read-only for you")
    # Root passes os.access everywhere; a read-only mount still refuses, so probe it.
    try:
        fd = os.open(parent / f".salun-probe-{os.getpid()}", os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as e:
        raise SalunError(f"cannot write {p}: {parent}: {e.strerror}") from None
    os.close(fd)
    os.unlink(parent / f".salun-probe-{os.getpid()}")


@dataclass(frozen=True)
class OverwriteOption:
    """The ``--overwrite`` flag every writing verb offers.

    Attributes:
        overwrite: replace an existing --out, only if it is a salun artifact of the same kind
    """

    overwrite: bool = False


def add_overwrite_flag(parser) -> None:
    """Add :class:`OverwriteOption`'s ``--overwrite`` to a verb's parser."""
    from salun.config_cli import add_options

    add_options(parser, OverwriteOption)


__all__ = [
    "OutputKind",
    "add_overwrite_flag",
    "claim_output",
    "is_salun_png",
    "kinds",
    "register_kind",
]
