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
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from salun.bench.plan import Task
from salun.bench.tasks import execute
from salun.errors import SalunError
from salun.methods.plugins import load_in_worker, loaded_plugins

OnDone = Callable[[Task, dict[str, Any]], None]
EXECUTORS = ("local", "ray")
RAY_PROBE_TIMEOUT_S = 5.0  # the TCP probe of --ray-address
RAY_CONNECT_TIMEOUT_S = 30.0  # the whole ray.init on an existing cluster


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

    The benchmark folder must be visible to every worker at the same path (a local
    instance, or a shared file system on a cluster): workers read splits and models there.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        local_cpus: int = 2,
    ) -> None:
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
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        self._remote = ray.remote(execute_with_plugins).options(
            num_cpus=cpus_per_run, num_gpus=gpus_per_run
        )

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        ray = self._ray
        plugins = loaded_plugins()  # loaded by the driver before the bench began
        modules = [p.module for p in plugins]
        folders = [p.path for p in plugins]
        pending = {self._remote.remote(t, modules, folders): t for t in tasks}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    on_done(task, self._get(ref))
        except BaseException:
            for ref in pending:  # a killed driver should not leave work running
                ray.cancel(ref, force=True)
            raise

    def _get(self, ref) -> dict[str, Any]:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SalunError):  # a user error inside a worker stays one
                raise cause from None
            raise

    def info(self) -> dict[str, Any]:
        return {
            "executor": self.name,
            "ray_version": self._ray.__version__,
            "address": self.address or "local",
            "cluster_resources": self._ray.cluster_resources(),
            "cpus_per_run": self.cpus_per_run,
            "gpus_per_run": self.gpus_per_run,
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
) -> Executor:
    """``local`` or ``ray``."""
    if name == "local":
        if address:
            raise SalunError("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, cpus_per_run, gpus_per_run)
    raise SalunError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
