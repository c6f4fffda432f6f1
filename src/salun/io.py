"""Crash-safe writes and content hashes shared by every artifact writer.

Guarantee: a reader sees the previous artifact or the new complete one, whatever instant
the writer is killed at (see docs/safety.md).

- Files: written to a temp sibling ``.NAME.<pid>.<rand>.tmp``, fsynced, then renamed onto
  ``NAME`` (``rename`` is atomic on POSIX).
- Folders: built in a temp sibling, then swapped with the existing folder in one step by
  Linux ``renameat2(RENAME_EXCHANGE)``; the old tree, now under the temp name, is deleted
  afterwards. Where the exchange is not available the old folder is first renamed to
  ``.NAME.old`` and the new one renamed in; a kill between the two leaves ``NAME`` missing
  and ``.NAME.old`` complete, and :func:`recover` (run by every loader through
  :func:`recover` and by the next writer) puts it back.
- Leftovers of a killed writer (temp siblings whose process is gone, a stale ``.NAME.old``)
  are removed by the next write to the same path.
- Temp files are created 0600/0700 by ``mkstemp``/``mkdtemp``; the result is given the mode
  the user's umask asks for (0644/0755 with the usual 022).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_TMP_SUFFIX = ".tmp"


# ---------------------------------------------------------------- names and recovery


def _tmp_name(path: Path) -> Path:
    # The writer's pid is in the name so that a later writer can tell a dead writer's
    # leftover (removed) from a live one's work in progress (left alone).
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")


def _aside_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(path: str | Path) -> list[Path]:
    """Temp siblings of ``path`` left by writers that are no longer running."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return []
    name, tmp = re.escape(path.name), re.escape(_TMP_SUFFIX)
    pat = re.compile(rf"^\.{name}\.(\d+)\.[0-9a-f]+{tmp}$")
    # Older versions named temp siblings by mkstemp/mkdtemp (8 random characters, no pid):
    # an hour without change means their writer is long gone.
    old_pat = re.compile(rf"^\.{name}\.[a-z0-9_]{{8}}{tmp}$")
    found = []
    for entry in parent.iterdir():
        m = pat.match(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            found.append(entry)
        elif old_pat.match(entry.name) and _age_seconds(entry) > 3600:
            found.append(entry)
    return sorted(found)


def _age_seconds(p: Path) -> float:
    try:
        return time.time() - p.lstat().st_mtime
    except OSError:
        return 0.0


def recover(path: str | Path) -> None:
    """Apply the recovery rule to ``path``: if ``NAME`` is missing and ``.NAME.old`` exists
    (a writer was killed between moving the old artifact aside and moving the new one in),
    put the old one back. Loaders call this before reading; writers before writing."""
    path = Path(path)
    aside = _aside_name(path)
    if aside.exists() and not os.path.lexists(path):
        try:
            os.rename(aside, path)
        except OSError:
            pass  # e.g. a read-only folder: the loader then reports NAME missing


def clean_leftovers(path: str | Path) -> None:
    """Recover ``path`` if needed, then remove what killed writers left beside it."""
    path = Path(path)
    recover(path)
    aside = _aside_name(path)
    if aside.exists() and os.path.lexists(path):
        _remove(aside)
    for entry in leftovers(path):
        _remove(entry)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------- umask and fsync


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _apply_umask(p: Path) -> None:
    """Give what mkstemp/mkdtemp made (0600/0700) the mode a plain open/mkdir would have."""
    mask = current_umask()
    base = 0o777 if p.is_dir() else 0o666
    os.chmod(p, base & ~mask)
    if p.is_dir():
        for root, dirs, files in os.walk(p):
            for d in dirs:
                q = Path(root, d)
                if stat.S_IMODE(q.stat().st_mode) == 0o700:
                    os.chmod(q, 0o777 & ~mask)
            for f in files:
                q = Path(root, f)
                if stat.S_IMODE(q.stat().st_mode) == 0o600:
                    os.chmod(q, 0o666 & ~mask)


def _fsync_file(p: Path) -> None:
    with open(p, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(p: Path) -> None:
    for root, _dirs, files in os.walk(p):
        for f in files:
            q = Path(root, f)
            if not q.is_symlink():
                _fsync_file(q)
        _fsync_dir(Path(root))


# ---------------------------------------------------------------- atomic file writes


def atomic_write(path: str | Path, writer: Callable[[str], Any]) -> None:
    """Call ``writer(tmp_path)`` on a temp sibling, fsync it, then rename it onto ``path``.

    A kill at any instant leaves the old file or the new complete one; a dead writer's
    temp file is removed by the next write to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        writer(str(tmp))
        _apply_umask(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=to_jsonable) + "\n")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open("plot.png") as f: fig.savefig(f, format="png")``: the file
    appears at ``path`` only when the block finishes without an error."""
    if mode not in ("w", "wb"):
        raise ValueError("atomic_open writes only: mode 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _apply_umask(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig`` that never leaves a half-written image at ``path``.

    The format is taken from the suffix of ``path`` unless ``format=`` is given.
    """
    fmt = kwargs.pop("format", None) or (Path(path).suffix.lstrip(".") or "png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


# ---------------------------------------------------------------- atomic folder replace

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2); False if unsupported."""
    global _renameat2
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            fn.argtypes += [ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (AttributeError, OSError):
            _renameat2 = False
    if _renameat2 is False:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the kernel or the filesystem cannot exchange: use the fallback
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def replace_dir(new: Path, path: Path) -> None:
    """Put the complete folder ``new`` at ``path``, removing the folder that was there.

    At every instant ``path`` is the old folder or the new one (RENAME_EXCHANGE), or, on
    the fallback, missing with ``.NAME.old`` complete, which :func:`recover` restores.
    """
    if not os.path.lexists(path):
        os.rename(new, path)
        _fsync_dir(path.parent)
        return
    if _exchange(new, path):
        _fsync_dir(path.parent)
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now names the old tree
        return
    aside = _aside_name(path)
    if aside.exists():
        _remove(aside)
    os.rename(path, aside)
    os.rename(new, path)
    _fsync_dir(path.parent)
    # Rename the old tree to a temp name first: ``.NAME.old`` must only ever name a
    # complete folder, since recovery would restore it.
    trash = _tmp_name(path)
    os.rename(aside, trash)
    shutil.rmtree(trash, ignore_errors=True)


def atomic_dir(path: str | Path, writer: Callable[[Path], Any]) -> None:
    """Build a folder with ``writer(tmp)`` in a temp sibling, then swap it into place.

    The previous folder at ``path`` stays loadable until the new one is complete; a kill at
    any instant leaves the old folder or the new complete one (see :func:`replace_dir`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = _tmp_name(path)
    os.mkdir(tmp, 0o700)
    try:
        writer(tmp)
        _apply_umask(tmp)
        _fsync_tree(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- hashes


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hash of a JSON-able object, independent of key order."""
    text = json.dumps(obj, sort_keys=True, default=to_jsonable, separators=(",", ":"))
    return sha256_bytes(text.encode())[:length]


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its header written in one fixed order.

    safetensors writes its ``__metadata__`` in hash-map order, which changes from run to
    run; sorting it makes the files of identical runs byte-identical (and so their sha256).
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict[str, Any] = {}
    if meta is not None:
        ordered["__metadata__"] = dict(sorted(meta.items()))
    ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"][0], kv[0])))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


PNG_TAG = b"Software\x00salun"


def tag_png(data: bytes) -> bytes:
    """Insert a ``tEXt`` chunk ``Software: salun`` after the PNG header chunk, so the output
    policy can tell a PNG salun wrote (which ``--overwrite`` may replace) from a user's."""
    import zlib

    sig, ihdr_end = data[:8], 8 + 12 + int.from_bytes(data[8:12], "big")
    if sig != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    chunk = b"tEXt" + PNG_TAG
    crc = zlib.crc32(chunk).to_bytes(4, "big")
    text = len(PNG_TAG).to_bytes(4, "big") + chunk + crc
    return data[:ihdr_end] + text + data[ihdr_end:]


def to_jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
