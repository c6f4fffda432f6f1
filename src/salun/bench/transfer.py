"""A run's files through Ray's object store: the bench on a cluster without a shared folder.

In ``object-store`` mode (docs/benchmarks.md, "Running on a cluster") no worker touches the
benchmark folder. The driver packs what a task may read (its split file, the original's
model folder, Retrain's or the mask when they exist, an audit shadow's files) as
``{relative path: bytes}``, puts each such object into Ray's object store once, and hands
the references to the task together with one reference to the dataset's tensors. The
worker writes them into a private scratch folder, runs the task there unchanged
(:func:`salun.bench.tasks.execute`), and returns with its result every file the task
wrote (new models, SalUn's mask, audit records). The driver places those files into the
benchmark folder atomically (a new folder appears whole, see :func:`write_outputs`)
before it writes the run's record, so the folder keeps a single writer and a record never
points at a model that is not there.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from salun.bench.plan import AUDIT, ORIGINAL, RETRAIN, UNLEARN, Task
from salun.errors import SalunError
from salun.io import TMP_MAGIC, atomic_dir, atomic_write_bytes

Files = dict[str, bytes]  # a relative POSIX path in the bench folder -> its bytes
FILES_KEY = "files"  # where a remote result carries the files its task wrote


def task_inputs(task: Task) -> list[str]:
    """The bench-folder paths (files or folders, relative) that ``task`` may read."""
    if task.kind == AUDIT:
        root = PurePosixPath(task.audit_dir)
        k = f"s{task.shadow}"
        return [str(root / "audit.json"), str(root / "records" / k), str(root / "shadows" / k)]
    if task.kind not in (ORIGINAL, RETRAIN, UNLEARN):
        raise ValueError(f"unknown task kind {task.kind!r}")
    paths = [task.split_file, task.original_dir]
    if task.kind == RETRAIN:
        paths.append(task.retrain_dir)
    if task.kind == UNLEARN and task.mask_file:
        paths.append(task.mask_file)
    return [p for p in paths if p]


def pack(out: Path, rel: str) -> Files | None:
    """The file or folder ``out/rel`` as ``{relative path: bytes}``; None when missing.

    Salun's own temp siblings (a write in progress or a dead writer's leftover) are left
    out: they are not part of the folder's content.
    """
    path = out / rel
    if path.is_file():
        return {_posix(rel): path.read_bytes()}
    if not path.is_dir():
        return None
    files: Files = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not any(TMP_MAGIC in part for part in p.relative_to(out).parts):
            files[p.relative_to(out).as_posix()] = p.read_bytes()
    return files


def materialise(root: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` under ``root`` (a worker's scratch folder)."""
    for rel, data in files.items():
        dest = root / _checked_rel(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def collect_outputs(root: Path, inputs: Mapping[str, bytes]) -> Files:
    """Every file under ``root`` that the task created or changed (not one it only read)."""
    out: Files = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if TMP_MAGIC in rel:  # a write the task did not finish
            continue
        data = p.read_bytes()
        if inputs.get(rel) != data:
            out[rel] = data
    return out


def write_outputs(out: Path, files: Mapping[str, bytes]) -> list[str]:
    """Place a task's files into the benchmark folder; returns the paths written.

    The top-most folder that does not exist yet appears whole (built aside, then renamed
    into place: a model folder is complete or absent, whatever instant the driver is
    killed at); a file in an existing folder is written atomically on its own.
    """
    _place(out, PurePosixPath(), {PurePosixPath(_checked_rel(r)): d for r, d in files.items()})
    return sorted(files)


def _place(out: Path, prefix: PurePosixPath, files: dict[PurePosixPath, bytes]) -> None:
    depth = len(prefix.parts)
    children: dict[str, dict[PurePosixPath, bytes]] = {}
    for rel, data in files.items():
        children.setdefault(rel.parts[depth], {})[rel] = data
    for name, sub in children.items():
        rel = prefix / name
        dest = out / rel
        if rel in sub:  # a file
            atomic_write_bytes(dest, sub[rel])
        elif not dest.exists():
            atomic_dir(dest, lambda tmp, rel=rel, sub=sub: _fill(tmp, rel, sub))
        else:
            _place(out, rel, sub)


def _fill(tmp: Path, rel: PurePosixPath, files: dict[PurePosixPath, bytes]) -> None:
    for path, data in files.items():
        dest = tmp / path.relative_to(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def _checked_rel(rel: str) -> str:
    """A relative path that stays inside the folder (files come back from other machines)."""
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise SalunError(f"a Ray worker returned a file outside the benchmark folder: {rel!r}")
    return str(p)


def _posix(rel: str) -> str:
    return PurePosixPath(Path(rel).as_posix()).as_posix()


# ---- the worker's side -----------------------------------------------------------------

_BUNDLES: dict[str, Any] = {}  # ref id -> DataBundle: one copy per worker process


def shipped_bundle(ray, holder: Sequence[Any]) -> Any:
    """The dataset behind ``holder[0]`` (an ObjectRef inside a list, so that Ray does not
    fetch it for every task), fetched once per worker process."""
    ref = holder[0]
    key = ref.hex()
    if key not in _BUNDLES:
        _BUNDLES.clear()  # one dataset per bench: do not keep an older one alive
        _BUNDLES[key] = ray.get(ref)
    return _BUNDLES[key]


@contextlib.contextmanager
def scratch_run(task: Task, inputs: Iterable[Mapping[str, bytes]]) -> Iterator[tuple[Task, Files]]:
    """A private folder holding ``inputs``; yields ``(task pointed at it, the inputs)``.

    The folder is removed afterwards, whatever happens.
    """
    files: Files = {}
    for part in inputs:
        files.update(part)
    tmp = Path(tempfile.mkdtemp(prefix="salun-run-"))
    try:
        materialise(tmp, files)
        yield replace(task, out=str(tmp)), files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_shipped(task: Task, bundle: Any, inputs: Sequence[Mapping[str, bytes]]) -> dict[str, Any]:
    """Run ``task`` on a worker that cannot see the benchmark folder: its inputs in a
    scratch folder, the dataset ``bundle`` from the object store; the result carries the
    files the task wrote under :data:`FILES_KEY`."""
    from salun.bench import tasks

    with scratch_run(task, inputs) as (local, files):
        with tasks.remote_context(bench_out=task.out, scratch=local.out, bundle=bundle):
            result = tasks.execute(local)
        result[FILES_KEY] = collect_outputs(Path(local.out), files)
    return result
