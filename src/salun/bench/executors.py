"""Executors run a stage's tasks and hand each result back to the driver as it finishes.

``local`` runs them one after another in this process. ``ray`` submits each as a Ray
remote task (with a CPU/GPU request) to an existing cluster or to a local instance started
here; the driver still writes every record, so the store has a single writer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from salun.bench.plan import Task
from salun.bench.tasks import execute
from salun.errors import SalunError

OnDone = Callable[[Task, dict[str, Any]], None]
EXECUTORS = ("local", "ray")


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
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=local_cpus, **kwargs)
                self._started = True
        self.address = address
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        self._remote = ray.remote(execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run)

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        ray = self._ray
        pending = {self._remote.remote(t): t for t in tasks}
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
