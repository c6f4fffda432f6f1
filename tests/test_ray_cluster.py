"""A real two-node Ray cluster whose worker node cannot see the benchmark folder (issue #26).

The head node (``ray start --head --num-cpus 0``: no run can land on it) and a worker node
(``ray start --address``) started in its own mount namespace (``unshare -m``) with a tmpfs
mounted over the benchmark folder's parent: to the worker node's processes the folder does
not exist, as on a second machine. ``salun bench --executor ray --ray-address`` must run
to completion with the same records as the local executor (metrics exact), survive a
killed worker process (Ray retries the run), and stop with one clear line, never hang and
never write a partial record, when the worker node's raylet is killed.

Needs root (mount namespaces) and Ray. A cluster that Ray itself cannot start fails the
test with Ray's message (its agents time out on a saturated machine: seen at load average
12-22 on 2 cores; on a machine running only this suite both tests pass in under a minute);
SALUN_RAY_CLUSTER_OPTIONAL=1 turns that one case into a skip, for a machine known to be
saturated. Every Ray process here gets explicit ports and a
temp dir of its own, and is stopped by PID (never ``ray stop``, which stops every cluster
on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from test_ray_transfer import small_raw

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
BIN = Path(sys.executable).parent
ENTRY = "ray::run_shipped_with_plugins"  # a worker process's title while it runs a task

if os.geteuid() != 0 or shutil.which("unshare") is None:
    pytest.skip("needs root and unshare (a mount namespace per node)", allow_module_level=True)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_ports() -> list[str]:
    names = ("node-manager", "object-manager", "dashboard-agent-grpc")
    names += ("dashboard-agent-listen", "metrics-export", "runtime-env-agent")
    return [x for n, p in zip(names, _free_ports(len(names))) for x in (f"--{n}-port", str(p))]


def _ours(root: str) -> list[psutil.Process]:
    """Every process of this test's cluster: those naming its temp dir, and their children."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        if any(root in a for a in p.info["cmdline"] or ()):
            found[p.pid] = p
            for c in p.children(recursive=True):
                found[c.pid] = c
    return list(found.values())


class Cluster:
    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Unix socket paths
        self.hidden = Path(self.root) / "hidden"  # the tmpfs goes over this on node 2
        self.hidden.mkdir()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        common = ["--disable-usage-stats", "--include-dashboard=false"]
        head = [str(BIN / "ray"), "start", "--head", "--port", str(self.port)]
        head += ["--temp-dir", f"{self.root}/ray", "--num-cpus", "0", *common, *_node_ports()]
        self._run(head, "head")
        worker = [str(BIN / "ray"), "start", "--address", self.address, "--num-cpus", "2"]
        ports = _node_ports()
        self.worker_manager_port = ports[1]  # --node-manager-port of the worker node
        worker += ["--disable-usage-stats", *ports]
        inner = f"mount -t tmpfs none {self.hidden} && exec {' '.join(worker)}"
        self._run(["unshare", "-m", "sh", "-c", inner], "worker")

    def _run(self, cmd: list[str], what: str) -> None:
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        if r.returncode:
            self.stop()
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:]
            # Ray's raylet gives its agents 20 s to start: on a saturated machine they do
            # not, whatever salun does (seen at load average 12-22 on 2 cores). Not ours.
            why = f"ray start ({what} node) failed: {' | '.join(tail)}"
            if os.environ.get("SALUN_RAY_CLUSTER_OPTIONAL"):
                pytest.skip(why)
            pytest.fail(why)

    def worker_raylet(self) -> psutil.Process:
        """The worker node's raylet (found by its node manager port)."""
        flag = f"--node_manager_port={self.worker_manager_port}"
        (raylet,) = [p for p in _ours(self.root) if p.name() == "raylet" and flag in p.cmdline()]
        return raylet

    def stop(self) -> None:
        for p in _ours(self.root):
            try:
                p.kill()
            except psutil.Error:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(yaml.safe_dump(small_raw()))
    return path


@pytest.fixture(scope="module")
def local_records(config_file, tmp_path_factory):
    from salun.bench import BenchOptions, load_config, read_records, run_bench

    out = tmp_path_factory.mktemp("local") / "bench"
    run_bench(load_config(config_file), out, BenchOptions(quiet=True, device="cpu", threads=1))
    return {r["key"]: r for r in read_records(out)}


def _bench(cluster: Cluster, config: Path, out: Path, env=None, **popen):
    cmd = [str(BIN / "salun"), "bench", "--config", str(config), "--out", str(out)]
    cmd += ["--executor", "ray", "--ray-address", cluster.address, "--device", "cpu"]
    cmd += ["--threads", "1", "--quiet", "--no-report"]
    return subprocess.Popen(
        cmd, env={**cluster.env, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def _kill_first(match, stop: threading.Event, killed: list) -> None:
    """SIGKILL the first process ``match`` accepts (once), polling until ``stop``."""
    while not stop.is_set():
        for p in psutil.process_iter(["cmdline", "name"]):
            try:
                if match(p):
                    p.send_signal(signal.SIGKILL)
                    killed.append(p.pid)
                    return
            except psutil.Error:
                pass
        time.sleep(0.05)


def _running_task(p) -> bool:
    return ENTRY in " ".join(p.info["cmdline"] or ()) or p.info["name"] == ENTRY[:15]


def test_two_nodes_without_a_shared_folder_match_local_and_survive_a_killed_worker(
    cluster, config_file, local_records
):
    out = cluster.hidden / "bench"  # the worker node sees an empty tmpfs here
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first, args=(_running_task, stop, killed))
    killer.start()
    try:
        proc = _bench(cluster, config_file, out)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop.set()
        killer.join()
    assert proc.returncode == 0, stderr[-2000:]
    assert killed, "no worker process was seen running a task"
    records = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        records[r["key"]] = r
    assert records.keys() == local_records.keys()
    for key, r in records.items():
        for field in ("metrics", "avg_gap", "gaps", "config", "status"):
            assert r[field] == local_records[key][field], (key, field)
    bench = json.loads((out / "bench.json").read_text())
    session = bench["sessions"][-1]
    assert session["ray_files"] == "object-store" and session["status"] == "finished"
    assert session["cluster_resources"]["CPU"] == 2  # the worker node's CPUs only


def test_a_killed_worker_node_is_one_clear_line_and_no_partial_record(
    cluster, config_file, tmp_path
):
    out = cluster.hidden / "bench-killed"
    raylet = cluster.worker_raylet()
    stop, killed = threading.Event(), []
    target = threading.Thread(
        target=_kill_first, args=(lambda p: p.pid == raylet.pid and _busy(), stop, killed)
    )
    target.start()
    t0 = time.monotonic()
    try:
        proc = _bench(cluster, config_file, out, env={"SALUN_RAY_NO_NODE_WAIT_S": "5"})
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        stop.set()
        target.join()
    assert killed, "the worker node's raylet was not killed while a task ran"
    assert proc.returncode != 0 and time.monotonic() - t0 < 400
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "rerun the same command" in lines[-1], lines[-3:]
    for f in (out / "runs").glob("*.json"):  # every record written is complete
        rec = json.loads(f.read_text())
        assert rec["status"] == "ok" and rec["metrics"], f


def _busy() -> bool:
    return any(_running_task(p) for p in psutil.process_iter(["cmdline", "name"]))
