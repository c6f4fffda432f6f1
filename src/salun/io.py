"""Crash-safe, race-safe writes and content hashes shared by every artifact writer.

Guarantees (see docs/safety.md):

- A reader sees the previous artifact or the new complete one, whatever instant the writer
  is killed at.
- A *claimed* output (every ``--out``: :func:`salun.outputs.claim_output` calls
  :func:`claim`) is published without ever replacing something that is not ours: a new
  output moves in with ``renameat2(RENAME_NOREPLACE)`` (fallback: ``link`` for files,
  ``mkdir`` + rename for folders), which fails when anything appeared at the path while
  the run was working; an existing one is swapped out with ``RENAME_EXCHANGE`` only if it
  is what this process published there before, or (``--overwrite``) a salun artifact of
  the claimed kind, checked at that moment. Two writers to one path: exactly one wins,
  the other gets a :class:`SalunError`.

Names salun gives its own leftovers (and the only names it ever deletes or renames besides
its outputs):

- temp siblings ``.NAME.salun-tmp.<pid>.<hex>``: removed by the next write to ``NAME`` once
  their writer's pid is gone;
- ``.NAME.salun-old.<inode>`` (the fallback replace without ``RENAME_EXCHANGE``): the old
  artifact moved aside; the number is the inode of the entry itself, so a user's file of
  that name is not taken for ours. It is moved back when ``NAME`` is missing and deleted
  when ``NAME`` exists. A user's ``.NAME.old`` (the name older versions used) is never
  touched.

Temp files are created 0600/0700 by ``mkstemp``/``mkdtemp``; the result is given the mode
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from salun.errors import SalunError

TMP_MAGIC = "salun-tmp"
ASIDE_MAGIC = "salun-old"
# The longest suffix salun adds to an output's name (temp and aside siblings): a name
# this much shorter than the file system's limit can always be written.
NAME_OVERHEAD = max(len(f"..{TMP_MAGIC}.{2**22}.{'0' * 8}"), len(f"..{ASIDE_MAGIC}.{2**64}"))
# A test hook (never set it in real use): seconds to wait just before a claimed output is
# published, so that tests can create a competing file at that moment deterministically.
PAUSE_ENV = "SALUN_TEST_PAUSE_BEFORE_PUBLISH"


# ---------------------------------------------------------------- names and recovery


def read_ends(path: str | Path, size: int = 512) -> tuple[str, str] | None:
    """The first and last ``size`` bytes of a regular file as text (undecodable bytes
    replaced), or None for anything else or an unreadable file: enough to recognise a
    report salun wrote (its heading, its closing mark) without reading it whole."""
    p = Path(path)
    try:
        if not stat.S_ISREG(p.lstat().st_mode):
            return None
        with open(p, "rb") as f:
            head = f.read(size).decode("utf-8", "replace")
            f.seek(max(0, p.stat().st_size - size))
            return head, f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _tmp_name(path: Path) -> Path:
    # The writer's pid is in the name so that a later writer can tell a dead writer's
    # leftover (removed) from a live one's work in progress (left alone).
    return path.with_name(f".{path.name}.{TMP_MAGIC}.{os.getpid()}.{secrets.token_hex(4)}")


def _aside_name(path: Path, ino: int) -> Path:
    return path.with_name(f".{path.name}.{ASIDE_MAGIC}.{ino}")


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


def _siblings(path: Path, pattern: str) -> Iterator[tuple[Path, re.Match]]:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    pat = re.compile(rf"^\.{re.escape(path.name)}\.{pattern}$")
    for entry in entries:
        m = pat.match(entry.name)
        if m:
            yield entry, m


def leftovers(path: str | Path) -> list[Path]:
    """Temp siblings of ``path`` left by salun writers that are no longer running."""
    path = Path(path)
    found = [
        e
        for e, m in _siblings(path, rf"{TMP_MAGIC}\.(\d+)\.[0-9a-f]+")
        if not _pid_alive(int(m.group(1)))
    ]
    return sorted(found)


def asides(path: str | Path) -> list[Path]:
    """Old artifacts of ``path`` moved aside by salun's fallback replace: only entries whose
    name carries their own inode number (a user's file of that name has another one)."""
    out = []
    for e, m in _siblings(Path(path), rf"{ASIDE_MAGIC}\.(\d+)"):
        try:
            if e.lstat().st_ino == int(m.group(1)):
                out.append(e)
        except OSError:
            pass
    return sorted(out)


def recover(path: str | Path) -> None:
    """Apply the recovery rule to ``path``: if ``NAME`` is missing and salun moved the old
    artifact aside (a writer was killed between moving it aside and moving the new one
    in), put it back. Loaders call this before reading; writers before writing."""
    path = Path(path)
    if os.path.lexists(path):
        return
    for aside in asides(path)[:1]:
        try:
            rename_noreplace(aside, path)
        except OSError:
            pass  # e.g. a read-only folder: the loader then reports NAME missing


def clean_leftovers(path: str | Path) -> None:
    """Recover ``path`` if needed, then remove what killed salun writers left beside it
    (only names that carry salun's marker; see the module docstring)."""
    path = Path(path)
    recover(path)
    if os.path.lexists(path):
        for aside in asides(path):
            _remove(aside)
    for entry in leftovers(path):
        _remove(entry)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """What a run may do at publish time to an output it claimed.

    Attributes:
        may_replace: ``may_replace(path)`` is True when the thing now at ``path`` may be
            swapped out (``--overwrite`` and a salun artifact of the claimed kind); it must
            not raise nor block (no FIFOs opened).
        refusal: how to end the message when something else is found there.
    """

    may_replace: Callable[[Path], bool]
    refusal: str = "choose another --out, or move it away and rerun"


_claims: dict[str, Claim] = {}
_published: dict[str, tuple[int, int, int] | None] = {}  # path -> _stamp of what we put there


def _key(path: str | Path) -> str:
    return os.path.abspath(path)


def claim(path: str | Path, c: Claim) -> None:
    """Register ``path`` as this process's output: its publishes follow ``c``."""
    _claims[_key(path)] = c
    _published.pop(_key(path), None)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """The identity plus the change time: an inode number freed and reused by a file
    system for someone else's file does not pass for ours."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _pause_for_tests() -> None:
    wait = os.environ.get(PAUSE_ENV)
    if wait:
        time.sleep(float(wait))


def publish(tmp: Path, path: Path) -> None:
    """Move the complete ``tmp`` (file or folder) to ``path``.

    Unclaimed paths are replaced as before (internal files such as records in a benchmark
    folder). A claimed path (see :func:`claim`) is never replaced by surprise: raises
    :class:`SalunError` when something that is not ours is there, leaving it untouched
    (``tmp`` is then removed by the caller).
    """
    key = _key(path)
    c = _claims.get(key)
    if c is None:
        if tmp.is_dir():
            replace_dir(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
        return
    _pause_for_tests()
    for _ in range(3):  # a path that appears and vanishes again is simply free
        try:
            rename_noreplace(tmp, path)  # never a look first: the look could be outdated
        except FileExistsError:
            pass  # something is there: judged below
        else:
            _published[key] = _stamp(path)
            _fsync_dir(path.parent)
            return
        before = _identity(path)
        if before is not None:
            break
    # what this run published before (a checkpoint) is its own: same inode, untouched since
    ours = before is not None and _stamp(path) == _published.get(key)
    if not (before is not None and (ours or c.may_replace(path))):
        raise SalunError(
            f"refusing to write {path}: it was created or changed by someone else while this "
            f"run was working; nothing was replaced ({c.refusal})"
        )
    _swap_in(tmp, path, before)
    _published[key] = _stamp(path)


def _swap_in(tmp: Path, path: Path, expected: tuple[int, int]) -> None:
    """Replace ``path`` (checked to be ``expected``) by ``tmp``; the old one is deleted once
    the new is in place. If ``path`` changed between the check and the swap, swap back."""
    if _exchange(tmp, path):
        if _identity(tmp) != expected:  # someone put something else there in between
            _exchange(tmp, path)
            raise SalunError(
                f"refusing to write {path}: it changed while this run was publishing; "
                "nothing was replaced"
            )
        _fsync_dir(path.parent)
        _remove(tmp)  # ``tmp`` now names the old artifact
        return
    if tmp.is_dir():
        replace_dir(tmp, path)
    else:
        os.replace(tmp, path)
    _fsync_dir(path.parent)


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
    """Call ``writer(tmp_path)`` on a temp sibling, fsync it, then move it to ``path``
    (:func:`publish`: a claimed output is never replaced by surprise).

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
        publish(tmp, path)
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
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig`` that never leaves a half-written image at ``path``.

    The format is taken from the suffix of ``path`` unless ``format=`` is given.
    """
    fmt = kwargs.pop("format", None) or (Path(path).suffix.lstrip(".") or "png")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


# ---------------------------------------------------------------- renames that never replace

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2: Any = None
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


def _renameat2_fn() -> Any:
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or False where there is none."""
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
    return _renameat2


def _rename2(a: Path, b: Path, flags: int) -> int:
    """0 on success, else the errno; ``-1`` when renameat2 cannot do it here."""
    fn = _renameat2_fn()
    if fn is False:
        return -1
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), flags) == 0:
        return 0
    err = ctypes.get_errno()
    return -1 if err in _UNSUPPORTED else err


def rename_noreplace(a: str | Path, b: str | Path) -> None:
    """Rename ``a`` to ``b`` only if ``b`` does not exist; raises :class:`FileExistsError`
    (``b`` untouched) if it does, even when it appeared an instant before.

    Linux ``renameat2(RENAME_NOREPLACE)``; elsewhere ``link`` + ``unlink`` for files and,
    for folders, ``mkdir`` of ``b`` followed by a rename onto that empty folder of ours
    (which fails if anything was put into it meanwhile).
    """
    a, b = Path(a), Path(b)
    err = _rename2(a, b, _RENAME_NOREPLACE)
    if err == 0:
        return
    if err > 0:
        raise OSError(err, os.strerror(err), str(b))
    if a.is_dir() and not a.is_symlink():
        os.mkdir(b)  # FileExistsError if b exists: a plain rename would replace an empty one
        try:
            os.rename(a, b)
        except OSError:
            raise FileExistsError(errno.EEXIST, "filled while being claimed", str(b)) from None
        return
    os.link(a, b)  # FileExistsError if b exists
    os.unlink(a)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2); False if unsupported."""
    err = _rename2(a, b, _RENAME_EXCHANGE)
    if err == 0:
        return True
    if err < 0:
        return False  # the kernel or the filesystem cannot exchange: use the fallback
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


# ---------------------------------------------------------------- atomic folder replace


def replace_dir(new: Path, path: Path) -> None:
    """Put the complete folder ``new`` at ``path``, removing the folder that was there.

    At every instant ``path`` is the old folder or the new one (RENAME_EXCHANGE), or, on
    the fallback, missing with the old folder complete under ``.NAME.salun-old.<inode>``,
    which :func:`recover` restores.
    """
    if not os.path.lexists(path):
        rename_noreplace(new, path)
        _fsync_dir(path.parent)
        return
    if _exchange(new, path):
        _fsync_dir(path.parent)
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now names the old tree
        return
    aside = _aside_name(path, os.lstat(path).st_ino)  # marked: recovery trusts only this
    os.rename(path, aside)
    try:
        rename_noreplace(new, path)
    except FileExistsError:
        raise SalunError(
            f"refusing to write {path}: something was created there while this run was "
            f"replacing it; the old artifact is kept as {aside.name}"
        ) from None
    _fsync_dir(path.parent)
    # Rename the old tree to a temp name first: an aside name must only ever name a
    # complete folder, since recovery would restore it.
    trash = _tmp_name(path)
    os.rename(aside, trash)
    shutil.rmtree(trash, ignore_errors=True)


def atomic_dir(path: str | Path, writer: Callable[[Path], Any]) -> None:
    """Build a folder with ``writer(tmp)`` in a temp sibling, then move it into place
    (:func:`publish`: a claimed output is never replaced by surprise).

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
        publish(tmp, path)
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
