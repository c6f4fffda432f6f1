"""The Ray executor without a shared folder, with a stand-in for Ray (no cluster, seconds).

``FakeRay`` runs each remote task in this process at once, resolving top-level ObjectRefs
as Ray does, and hides the benchmark folder (renamed away) while a task runs: a task that
read or wrote the folder would fail or leave a trace. What Ray itself does (scheduling,
nodes, kills) is tested on a real two-node cluster in tests/test_ray_cluster.py.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import yaml

from salun.bench import BenchOptions, parse_config, read_records, run_bench
from salun.bench import executors as ex
from salun.bench.presets import preset_path
from salun.bench.session import read_bench
from salun.bench.transfer import write_outputs
from salun.errors import SalunError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def small_raw() -> dict:
    """The ci preset cut to one scenario, FT and SalUn (SalUn also writes its mask), and
    the paper protocol: original, Retrain, two runs."""
    raw = yaml.safe_load(preset_path("ci").read_text())
    raw["scenarios"] = ["random10"]
    raw["protocol"] = ["paper"]
    del raw["tune_seeds"]
    raw["methods"] = {k: raw["methods"][k] for k in ("ft", "salun")}
    raw["original"]["epochs"] = 8
    return raw


def small_config():
    return parse_config(small_raw(), "ray-small")


class Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def hex(self):
        return f"{id(self):x}"


class RayError(Exception):
    pass


class RayTaskError(RayError):
    pass


class WorkerCrashedError(RayError):
    pass


class FakeRay(types.SimpleNamespace):
    """What RayExecutor uses of Ray; records puts and .options(); ``hide`` is the folder
    renamed away while a task runs; ``crash`` names run keys whose worker 'dies'."""

    def __init__(self, hide: Path | None = None, crash=(), nodes=None):
        super().__init__(
            __version__="fake",
            exceptions=types.SimpleNamespace(
                RayError=RayError, RayTaskError=RayTaskError, AuthenticationError=RayError
            ),
        )
        self.hide, self.crash, self._nodes = hide, set(crash), nodes
        self.puts, self.options_seen, self.calls, self.inits = [], [], [], []

    def is_initialized(self):
        return not self.inits_wanted

    inits_wanted = False

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def put(self, value):
        self.puts.append(value)
        return Ref(value)

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def cancel(self, ref, force=False):
        pass

    def nodes(self):
        return (
            self._nodes if self._nodes is not None else [{"Alive": True, "Resources": {"CPU": 2}}]
        )

    def cluster_resources(self):
        return {"CPU": 2}

    def shutdown(self):
        pass

    def remote(self, fn):
        fake = self

        class Remote:
            def options(self, **kw):
                fake.options_seen.append(kw)
                return self

            def remote(self, *args):
                fake.calls.append(args)
                task = args[0]
                if task.key in fake.crash:
                    return Ref(error=WorkerCrashedError("the worker died (SIGKILL)"))
                resolved = [a.value if isinstance(a, Ref) else a for a in args]
                hidden = None
                if fake.hide is not None:
                    hidden = fake.hide.with_name(fake.hide.name + ".hidden")
                    os.rename(fake.hide, hidden)
                try:
                    return Ref(fn(*resolved))
                finally:
                    if hidden is not None:
                        os.rename(hidden, fake.hide)

        return Remote()


@pytest.fixture
def small():
    return small_config()


@pytest.fixture
def local_small(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "bench"
    run_bench(small, out, BenchOptions(quiet=True, device="cpu", threads=1, report=False))
    return out


def _install(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "ray", fake)


def test_object_store_mode_never_touches_the_folder_and_records_match_local(
    small, local_small, tmp_path, monkeypatch
):
    out = tmp_path / "bench"
    fake = FakeRay(hide=out)
    _install(monkeypatch, fake)
    opts = BenchOptions(
        executor="ray", ray_files="object-store", quiet=True, device="cpu", threads=1
    )
    run_bench(small, out, opts)

    local = {r["key"]: r for r in read_records(local_small)}
    remote = {r["key"]: r for r in read_records(out)}
    assert remote.keys() == local.keys() and len(remote) == 4
    for key, r in remote.items():  # the same numbers, bit for bit
        for field in ("metrics", "avg_gap", "gaps", "config", "status", "original", "split_hash"):
            assert r[field] == local[key][field], (key, field)
    # the driver wrote every file the workers made: the models, SalUn's mask
    for folder in ("models", "masks", "splits"):
        names = sorted(
            p.relative_to(local_small).as_posix() for p in (local_small / folder).rglob("*")
        )
        assert names == sorted(p.relative_to(out).as_posix() for p in (out / folder).rglob("*"))
    for p in (local_small / "models").rglob("model.safetensors"):
        assert (out / p.relative_to(local_small)).read_bytes() == p.read_bytes()
    # a model folder names the benchmark folder's split file, not a worker's scratch copy
    metas = [yaml.safe_load(p.read_text()) for p in (out / "models").rglob("model.json")]
    assert metas and all(m["split_file"].startswith(str(out.resolve())) for m in metas)
    # each input went into the object store once: the dataset, the split, the original
    shipped = [sorted(v) for v in fake.puts if isinstance(v, dict)]
    assert len(shipped) == len({tuple(s) for s in shipped})  # no object put twice
    bundles = [v for v in fake.puts if not isinstance(v, dict)]
    assert len(bundles) == 1
    split_puts = [s for s in shipped if any(k.startswith("splits/") for k in s)]
    assert len(split_puts) == 1  # one split, used by all four runs
    assert read_bench(out)["sessions"][-1]["ray_files"] == "object-store"


def test_auto_means_object_store_with_an_address_and_shared_without(monkeypatch):
    fake = FakeRay()
    _install(monkeypatch, fake)
    monkeypatch.setattr(ex, "probe_address", lambda address: None)
    assert ex.RayExecutor("10.0.0.7:6379").files == "object-store"
    assert ex.RayExecutor(None).files == "shared"
    assert ex.RayExecutor("10.0.0.7:6379", files="shared").files == "shared"
    with pytest.raises(SalunError, match="--ray-files 'nfs'"):
        ex.RayExecutor(None, files="nfs")
    with pytest.raises(SalunError, match="--ray-files needs --executor ray"):
        ex.make_executor("local", files="object-store")


def test_gpus_per_run_reaches_the_ray_resource_request(monkeypatch):
    fake = FakeRay()
    _install(monkeypatch, fake)
    ex.make_executor("ray", cpus_per_run=3, gpus_per_run=0.5)
    (opts,) = fake.options_seen
    assert opts["num_gpus"] == 0.5 and opts["num_cpus"] == 3
    assert opts["max_retries"] == ex.RAY_MAX_RETRIES and opts["retry_exceptions"] is False


def test_gpus_per_run_from_the_command_line(monkeypatch, tmp_path):
    """``salun bench --gpus-per-run 0.5`` (flag to BenchOptions to the executor)."""
    import argparse

    from salun.bench import runner
    from salun.bench.cli import add_bench_subcommands

    seen = {}

    def capture(name, **kw):
        seen.update(kw, name=name)
        raise KeyboardInterrupt  # stop before any run

    monkeypatch.setattr(runner, "make_executor", capture)
    parser = argparse.ArgumentParser()
    add_bench_subcommands(parser.add_subparsers())
    args = parser.parse_args(
        ["bench", "--preset", "ci", "--out", str(tmp_path / "o"), "--executor", "ray"]
        + ["--gpus-per-run", "0.5", "--ray-files", "object-store", "--device", "cpu"]
    )
    with pytest.raises(KeyboardInterrupt):
        args.handler(args)
    assert seen["gpus_per_run"] == 0.5 and seen["files"] == "object-store"


def test_a_dead_worker_is_one_clear_error_and_no_record(small, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    fake = FakeRay(crash={"retrain.random10.s0"})
    _install(monkeypatch, fake)
    opts = BenchOptions(executor="ray", ray_files="object-store", quiet=True, device="cpu")
    with pytest.raises(SalunError) as e:
        run_bench(small, out, opts)
    msg = str(e.value)
    assert "\n" not in msg
    assert "run retrain.random10.s0 did not finish on the Ray cluster: WorkerCrashedError" in msg
    assert "rerun the same command" in msg
    keys = {r["key"] for r in read_records(out)}
    assert keys == {"original.s0"}  # nothing recorded for the dead run (nor after it)
    assert read_bench(out)["sessions"][-1]["status"] == "failed"


def test_no_node_left_stops_the_bench_instead_of_waiting_forever(small, tmp_path, monkeypatch):
    fake = FakeRay(nodes=[{"Alive": False, "Resources": {"CPU": 2}}, {"Alive": True}])
    fake.wait = lambda refs, num_returns=1, timeout=None: ([], refs)  # nothing ever finishes
    _install(monkeypatch, fake)
    monkeypatch.setattr(ex, "RAY_NO_NODE_WAIT_S", 0.2)
    monkeypatch.setattr(ex, "RAY_POLL_S", 0.05)
    opts = BenchOptions(executor="ray", ray_files="object-store", quiet=True, device="cpu")
    with pytest.raises(
        SalunError,
        match=r"no node of the Ray cluster at local can take a run "
        r"\(1 CPU\) for 0.2 s.*original.s0.*rerun the same command",
    ):
        run_bench(small, tmp_path / "bench", opts)
    assert read_records(tmp_path / "bench") == []


def test_a_node_that_fits_keeps_the_bench_waiting(monkeypatch):
    fake = FakeRay(nodes=[{"Alive": True, "Resources": {"CPU": 4, "GPU": 1}}])
    _install(monkeypatch, fake)
    e = ex.RayExecutor(None, cpus_per_run=2, gpus_per_run=1)
    assert e._some_node_fits()
    e.gpus_per_run = 2  # no node has two GPUs
    assert not e._some_node_fits()


def test_a_local_instance_ignores_a_stale_pointer_or_ray_address(monkeypatch):
    """The fix of executors.py ('a stale ray_current_cluster pointer or RAY_ADDRESS'):
    without --ray-address a new local instance is started, never another cluster."""
    fake = FakeRay()
    fake.inits_wanted = True
    _install(monkeypatch, fake)
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    ex.RayExecutor(None, local_cpus=2)
    (kw,) = fake.inits
    assert kw["address"] == "local" and kw["num_cpus"] == 2


def test_write_outputs_places_new_folders_whole_and_refuses_escapes(tmp_path):
    out = tmp_path / "b"
    (out / "models").mkdir(parents=True)
    write_outputs(out, {"models/h1/model.json": b"{}", "models/h1/w": b"1", "masks/m": b"2"})
    assert (out / "models/h1/w").read_bytes() == b"1" and (out / "masks/m").read_bytes() == b"2"
    write_outputs(out, {"masks/n": b"3"})  # into an existing folder
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["m", "n"]
    for bad in ("../x", "/etc/x"):
        with pytest.raises(SalunError, match="outside the benchmark folder"):
            write_outputs(out, {bad: b""})
