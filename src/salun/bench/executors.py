"""Executors run a stage's tasks and hand each result back to the driver as it finishes.

``local`` runs them one after another in this process. ``ray`` submits each as a Ray
remote task (with a CPU/GPU request) to an existing cluster or to a local instance started
here; the driver still writes every record, so the store has a single writer.

Connecting to a cluster is bounded: ``ray.init`` itself retries an unreachable address for
many minutes, so the address is first probed with a plain TCP connect (a few seconds), and
the whole connection gets :data:`RAY_CONNECT_TIMEOUT_S`; either failure is one clear error.
Ray ≥ 2.59 clusters started with ``ray start`` want a token by default; Ray reads it from
its own places (``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, or
``~/.ray/auth_token``), and a refused connection says so (:func:`token_hint`).

Methods of the user's own modules (docs/plugins.md) are imported by each Ray worker before
its task runs (:func:`execute_with_plugins`); the local executor shares the driver's.

How Ray workers get a run's files (``--ray-files``, docs/benchmarks.md):

- ``shared``: they read and write the benchmark folder itself, which must then be at the
  same path on every node (a local instance, or a cluster with a shared file system);
- ``object-store``: nothing on a worker touches the folder. The dataset's tensors, each
  split, each model a later run starts from, go into Ray's object store once
  (``ray.put``); a task returns the files it wrote with its result, and the driver alone
  writes them into the folder before the record (``transfer.py``);
- ``auto`` (default): ``shared`` for a local instance started here, ``object-store`` for
  a cluster named by ``--ray-address``.

A worker process or node that dies is Ray's to retry (:data:`RAY_MAX_RETRIES` times, on
any node with room); once no node of the cluster can run a task any more (the worker
nodes are gone), the bench stops after :data:`RAY_NO_NODE_WAIT_S` with one clear line
instead of waiting forever. Either way no record is written for an unfinished run, and
rerunning the command resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from salun.bench.plan import AUDIT, Task
from salun.bench.tasks import bundle_for, execute
from salun.bench.transfer import (
    FILES_KEY,
    pack,
    run_shipped,
    shipped_bundle,
    task_inputs,
    write_outputs,
)
from salun.errors import SalunError
from salun.methods.plugins import load_in_worker, loaded_plugins

OnDone = Callable[[Task, dict[str, Any]], None]
EXECUTORS = ("local", "ray")
SHARED, OBJECT_STORE, AUTO = "shared", "object-store", "auto"
RAY_FILES = (AUTO, SHARED, OBJECT_STORE)
RAY_PROBE_TIMEOUT_S = 5.0  # the TCP probe of --ray-address
RAY_CONNECT_TIMEOUT_S = 30.0  # the whole ray.init on an existing cluster
RAY_MAX_RETRIES = 2  # a run whose worker process or node died is run again this often
# How long runs may wait with no node able to take them (the worker nodes died or left)
# before the bench stops; an autoscaling cluster starting nodes needs minutes.
RAY_NO_NODE_WAIT_S = float(os.environ.get("SALUN_RAY_NO_NODE_WAIT_S", 300))
RAY_POLL_S = 2.0  # how often the driver looks at the cluster while runs are pending


class Executor(Protocol):
    name: str

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Sequential, in this process."""

    name = "local"

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        for task in tasks:
            on_done(task, execute(task))

    def info(self) -> dict[str, Any]:
        return {"executor": self.name}

    def close(self) -> None:
        pass


class RayExecutor:
    """One Ray remote task per run.

    Args:
        address: an existing cluster (``auto`` or ``ray://host:10001``...); None starts a
            local instance with ``local_cpus`` CPUs, stopped again by :meth:`close`.
        cpus_per_run, gpus_per_run: the resources each run requests.
        local_cpus: CPUs of the local instance.
        files: how workers get a run's files: ``shared`` (the benchmark folder at the same
            path on every node), ``object-store`` (through Ray; no shared folder needed) or
            ``auto`` (shared for a local instance, object-store with ``address``).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        local_cpus: int = 2,
        files: str = AUTO,
    ) -> None:
        if files not in RAY_FILES:
            raise SalunError(f"--ray-files {files!r}: choose one of {', '.join(RAY_FILES)}")
        try:
            import ray
        except ImportError:
            raise SalunError(
                "the ray executor needs Ray: pip install 'salun[ray]' (or pip install ray)"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                probe_address(address)
                with _deadline(RAY_CONNECT_TIMEOUT_S, f"connecting to Ray at {address}"):
                    try:
                        ray.init(address=address, **kwargs)
                    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
                        raise SalunError(
                            f"cannot connect to the Ray cluster at {address}: "
                            f"{_first_line(e)}; {token_hint()}"
                        ) from None
                    except _auth_error(ray) as e:
                        raise SalunError(
                            f"the Ray cluster at {address} refused the connection: "
                            f"{e.message}; {token_hint()}"
                        ) from None
            else:
                # "local": a new instance, whatever Ray finds lying around (a stale
                # ray_current_cluster pointer or RAY_ADDRESS would make it connect instead)
                ray.init(address="local", num_cpus=local_cpus, **kwargs)
                self._started = True
        self.address = address
        self.files = files if files != AUTO else (OBJECT_STORE if address else SHARED)
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        entry = run_shipped_with_plugins if self.files == OBJECT_STORE else execute_with_plugins
        self._remote = ray.remote(entry).options(
            num_cpus=cpus_per_run,
            num_gpus=gpus_per_run,
            max_retries=RAY_MAX_RETRIES,  # a dead worker process or node: run it again
            retry_exceptions=False,  # an error of the run itself is not retried
        )
        self._refs: dict[str, Any] = {}  # object-store mode: bench path -> its ObjectRef
        self._bundles: dict[tuple[str, str | None], Any] = {}

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        ray = self._ray
        plugins = loaded_plugins()  # loaded by the driver before the bench began
        modules = [p.module for p in plugins]
        folders = [p.path for p in plugins]
        pending = {self._submit(t, modules, folders): t for t in tasks}
        stuck_since: float | None = None
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=RAY_POLL_S)
                if not ready:
                    stuck_since = self._watch(pending.values(), stuck_since)
                    continue
                stuck_since = None
                for ref in ready:
                    task = pending.pop(ref)
                    result = self._get(ref, task)
                    if self.files == OBJECT_STORE:
                        self._place(task, result.pop(FILES_KEY, {}))
                    on_done(task, result)
        except BaseException:
            for ref in pending:  # a killed driver should not leave work running
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise

    # ---- object-store mode -------------------------------------------------------
    def _submit(self, task: Task, modules: list[str], folders: list[str | None]):
        if self.files != OBJECT_STORE:
            return self._remote.remote(task, modules, folders)
        out = Path(task.out)
        inputs = [ref for rel in task_inputs(task) if (ref := self._input(out, rel)) is not None]
        return self._remote.remote(task, modules, folders, [self._bundle(task)], *inputs)

    def _input(self, out: Path, rel: str):
        """The ObjectRef of bench path ``rel`` (put once), or None when it does not exist."""
        if rel not in self._refs:
            files = pack(out, rel)
            if files is None:
                return None
            self._refs[rel] = self._ray.put(files)
        return self._refs[rel]

    def _bundle(self, task: Task):
        """The dataset's tensors in the object store, put once per dataset."""
        spec = task.audit if task.kind == AUDIT else task.bench
        key = (spec.dataset, spec.data_root)
        if key not in self._bundles:
            self._bundles[key] = self._ray.put(bundle_for(*key))
        return self._bundles[key]

    def _place(self, task: Task, files: dict[str, bytes]) -> None:
        """Write what the task made into the benchmark folder (before its record), and
        forget the stale object-store copies of the paths it changed."""
        written = write_outputs(Path(task.out), files)
        for rel in list(self._refs):
            if any(w == rel or w.startswith(rel.rstrip("/") + "/") for w in written):
                del self._refs[rel]

    # ---- results and failures ----------------------------------------------------
    def _get(self, ref, task: Task) -> dict[str, Any]:
        ex = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except ex.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SalunError):  # a user error inside a worker stays one
                raise cause from None
            raise
        except ex.RayError as e:  # the worker process or its node died, an object was lost
            raise SalunError(
                f"run {task.key} did not finish on the Ray cluster: {type(e).__name__} "
                f"({_first_line(e)[:200]}) after {RAY_MAX_RETRIES} retries; no record was "
                "written for it: rerun the same command to resume"
            ) from None

    def _watch(self, tasks: Iterable[Task], stuck_since: float | None) -> float | None:
        """Stop waiting once no alive node can run a task for :data:`RAY_NO_NODE_WAIT_S`."""
        if self._some_node_fits():
            return None
        now = time.monotonic()
        if stuck_since is None:
            return now
        if now - stuck_since < RAY_NO_NODE_WAIT_S:
            return stuck_since
        keys = sorted(t.key for t in tasks)
        raise SalunError(
            f"no node of the Ray cluster at {self.address or 'local'} can take a run "
            f"({self._request()}) for {RAY_NO_NODE_WAIT_S:g} s: its worker nodes died or left; "
            f"{len(keys)} run(s) unfinished (e.g. {keys[0]}), no record written for them: "
            "rerun the same command to resume once the cluster has such a node "
            "(SALUN_RAY_NO_NODE_WAIT_S sets how long to wait)"
        )

    def _request(self) -> str:
        return f"{self.cpus_per_run:g} CPU" + (
            f", {self.gpus_per_run:g} GPU" if self.gpus_per_run else ""
        )

    def _some_node_fits(self) -> bool:
        try:
            nodes = self._ray.nodes()
        except Exception:  # the head itself is unreachable: Ray's own errors will say so
            return True
        need = {"CPU": self.cpus_per_run, "GPU": self.gpus_per_run}
        return any(
            n.get("Alive")
            and all(n.get("Resources", {}).get(r, 0) >= v for r, v in need.items() if v)
            for n in nodes
        )

    def info(self) -> dict[str, Any]:
        return {
            "executor": self.name,
            "ray_version": self._ray.__version__,
            "address": self.address or "local",
            "cluster_resources": self._ray.cluster_resources(),
            "cpus_per_run": self.cpus_per_run,
            "gpus_per_run": self.gpus_per_run,
            "ray_files": self.files,
        }

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def execute_with_plugins(
    task: Task, modules: Sequence[str] = (), folders: Sequence[str | None] = ()
) -> dict[str, Any]:
    """A Ray worker's entry: import the driver's plugin modules (their folders first), then
    run the task. A worker process keeps them loaded for its later tasks."""
    load_in_worker(modules, folders)
    return execute(task)


def run_shipped_with_plugins(
    task: Task,
    modules: Sequence[str],
    folders: Sequence[str | None],
    bundle: Sequence[Any],
    *inputs: dict[str, bytes],
) -> dict[str, Any]:
    """A Ray worker's entry in object-store mode: the plugins, then the task in a scratch
    copy of its ``inputs`` (resolved by Ray from the object store) with the dataset of
    ``bundle`` (a one-element list holding its ObjectRef, fetched once per process); the
    result carries the files the task wrote (``transfer.run_shipped``)."""
    import ray

    load_in_worker(modules, folders)
    return run_shipped(task, shipped_bundle(ray, bundle), inputs)


def token_hint() -> str:
    """What to do when a cluster refuses us: Ray's token conventions, and which of them
    this process has."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        have = "RAY_AUTH_TOKEN is set here: check that it is the cluster's token"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        have = (
            f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']} is set here: check "
            "that the file holds the cluster's token"
        )
    elif os.path.isfile(os.path.expanduser("~/.ray/auth_token")):
        have = "~/.ray/auth_token exists here: check that it holds the cluster's token"
    else:
        have = "no token is set here"
    return (
        "the cluster may want a token (Ray >= 2.59 clusters started with `ray start` use "
        f"token authentication by default), and {have}. Run `ray get-auth-token` on the "
        "head node and pass its output as the RAY_AUTH_TOKEN environment variable (or "
        "write it to ~/.ray/auth_token, or to a file named by RAY_AUTH_TOKEN_PATH) on this "
        "machine; docs/benchmarks.md"
    )


def _auth_error(ray) -> type[BaseException] | tuple:
    """Ray's AuthenticationError (Ray >= 2.52), or nothing to catch on older Rays."""
    return getattr(getattr(ray, "exceptions", None), "AuthenticationError", ())


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def probe_address(address: str, timeout: float = RAY_PROBE_TIMEOUT_S) -> None:
    """Fail fast unless ``host:port`` (or ``ray://host:port``) accepts a TCP connection.

    ``auto`` (find a cluster started on this machine) is left to Ray, which answers quickly.
    """
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        raise SalunError(f"--ray-address {address!r}: use HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else e.strerror or str(e)
        raise SalunError(
            f"cannot reach the Ray cluster at {address}: {why} (connect timeout "
            f"{timeout:g} s); check --ray-address, or leave it out to start a local Ray"
        ) from None


class _Timeout(BaseException):  # not an Exception: Ray's retry loops must not swallow it
    pass


@contextlib.contextmanager
def _deadline(seconds: float, what: str) -> Iterator[None]:
    """Turn a call that outlives ``seconds`` into a SalunError (main thread only: SIGALRM)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Timeout:
        raise SalunError(f"{what}: no answer within {seconds:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_executor(
    name: str,
    *,
    address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    files: str = AUTO,
) -> Executor:
    """``local`` or ``ray`` (``files``: see :class:`RayExecutor`)."""
    if name == "local":
        if address:
            raise SalunError("--ray-address needs --executor ray")
        if files != AUTO:
            raise SalunError("--ray-files needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run, files=files)
    raise SalunError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
