"""One writer per benchmark folder: an exclusive ``flock`` on ``<folder>/.bench.lock``.

Why flock: the kernel releases it when the holder dies, however it dies (SIGKILL, OOM,
a lost terminal), so a killed run never blocks the next one. The lock file also holds the
holder's pid, host, start time and command, for the message the second process prints and
so that the next holder can tell that it took over from a run that died (the file still
names a holder although nobody holds the lock).

``report_lock`` serialises report writers (``salun report`` and the end of ``salun bench``),
so an older report can never replace a newer one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from salun.errors import SalunError

LOCK_FILE = ".bench.lock"
REPORT_LOCK_FILE = ".report.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def describe_holder(info: dict[str, Any]) -> str:
    """``pid 123 on host h since 2026-...: salun bench ...`` (what is known of it)."""
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("started_at"):
        parts.append(f"since {info['started_at']}")
    text = " ".join(parts)
    return f"{text}: {info['command']}" if info.get("command") else text


def _read_info(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    if not raw.strip():
        return None
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"unreadable": raw[:200].decode("utf-8", "replace")}
    return info if isinstance(info, dict) else {"unreadable": str(info)[:200]}


def _flock(fd: int, path: Path, flags: int) -> bool:
    """Take the lock; False when another process holds it (non-blocking requests only)."""
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise SalunError(
            f"cannot lock {path}: {e.strerror}; put the benchmark folder on a local file system"
        ) from None
    return True


def _flock_retry(fd: int, path: Path, tries: int = 5, wait_s: float = 0.1) -> bool:
    """The exclusive lock, retried briefly: :func:`is_locked` takes a shared lock for an
    instant, which must not make a starting benchmark fail."""
    for i in range(tries):
        if _flock(fd, path, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return True
        if i + 1 < tries:
            time.sleep(wait_s)
    return False


def is_locked(folder: str | Path) -> bool:
    """Whether a live process holds ``folder``'s benchmark lock (read-only probe)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return False  # unreadable: cannot tell; the sessions are shown as recorded
    try:
        return not _flock(fd, path, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(fd)


class BenchLock:
    """The exclusive lock of one benchmark folder (the folder must exist).

    After :meth:`acquire`, ``stale`` is the previous holder's info when the lock file still
    named a holder (a process that died holding it), else None.

    Example:
        >>> with BenchLock("results/ci", command="salun bench ...") as lock:
        ...     if lock.stale: print("took over from", lock.stale["pid"])
    """

    def __init__(self, folder: str | Path, *, command: str | None = None, started_at: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "started_at": started_at,
            "command": command,
        }
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self) -> BenchLock:
        for _ in range(3):
            fd = self._open_locked()
            if fd is not None:
                break
        else:
            raise SalunError(f"cannot lock {self.path}: it keeps being replaced")
        try:
            self.stale = _read_info(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(self.info) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _open_locked(self) -> int | None:
        """Open and lock the lock file; None when the file was removed or replaced between
        the open and the lock (a run discarding the folder it made): then try again."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise SalunError(f"cannot create the lock file {self.path}: {e.strerror}") from None
        try:
            if not _flock_retry(fd, self.path):
                raise SalunError(self._busy_message(_read_info(fd) or {}))
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return None
        return fd

    def _busy_message(self, holder: dict[str, Any]) -> str:
        msg = f"{self.folder} is in use by another salun bench ({describe_holder(holder)})"
        pid = holder.get("pid")
        if holder.get("host") == platform.node() and isinstance(pid, int) and not pid_alive(pid):
            # flock is held although the recorded holder is gone: a process it started
            # inherited the lock; it goes away when that process ends
            return f"{msg}; pid {pid} is dead but a process it started still holds the lock"
        return f"{msg}; wait for it to finish or stop it, then rerun to resume"

    def release(self) -> None:
        """Clear the holder (a clean end leaves no stale info) and unlock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> BenchLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def report_lock(folder: str | Path) -> Iterator[None]:
    """Wait for, then hold, the report lock of ``folder`` (report writers take turns)."""
    path = Path(folder) / REPORT_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise SalunError(f"cannot create the lock file {path}: {e.strerror}") from None
    try:
        _flock(fd, path, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
