"""One writer per benchmark folder, checked before anything is written.

Real processes where it matters: two ``salun bench`` on one folder (the second exits 2
naming the first), a SIGKILLed holder (its stale lock is taken over and its session marked
``died``), a Ray address nobody listens on (one clear error within seconds). The
benchmark is a three-run grid on scikit-learn's digits, so each process is mostly startup.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from salun.bench import BenchOptions, parse_config, read_records, run_bench
from salun.bench.config import MethodEntry
from salun.bench.lock import LOCK_FILE, BenchLock, pid_alive, report_lock
from salun.bench.session import read_bench
from salun.cli import main
from salun.errors import SalunError

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "arch": "mlp",
    "width": 0.25,
    "original": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "scenarios": ["random10"],
    "seeds": [0],
    "mia_features": ["confidence"],
    "methods": {"ft": {"epochs": 1, "lr": 0.01}},
}
TINY_KEYS = {"original.s0", "retrain.random10.s0", "final.paper.random10.s0.ft"}


def write_config(tmp_path: Path, **edits) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **edits}))
    return path


def bench_argv(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "salun", "bench", "--config", str(config), "--out", str(out),
            "--threads", "1", "--device", "cpu", "--no-report", *extra]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "SALUN_QUIET": "1"}


def wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lock_names(out: Path, pid: int) -> bool:
    try:
        return json.loads((out / LOCK_FILE).read_text() or "{}").get("pid") == pid
    except (OSError, json.JSONDecodeError):
        return False


def session_running(out: Path, pid: int) -> bool:
    try:
        sessions = read_bench(out)["sessions"]
    except (SalunError, KeyError):
        return False
    return any(s["pid"] == pid and s["status"] == "running" for s in sessions)


# ---- two processes ---------------------------------------------------------------------


def test_second_bench_on_the_same_folder_exits_2_naming_the_holder(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "out"
    first = subprocess.Popen(bench_argv(config, out), env=env(), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: lock_names(out, first.pid) or first.poll() is not None, what="the lock")
        assert first.poll() is None, first.stderr.read()
        first.send_signal(signal.SIGSTOP)  # keep it holding the lock, whatever the machine's speed
        second = subprocess.run(bench_argv(config, out), env=env(), capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        first.send_signal(signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in second.stderr
        assert "in use by another salun bench" in err[0] and f"pid {first.pid} " in err[0]
        assert "--config" in err[0]  # the holder's command
        assert first.wait(timeout=300) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    bench = read_bench(out)
    # the refused process wrote nothing: one session, the first one's, finished
    assert [(s["pid"], s["status"]) for s in bench["sessions"]] == [(first.pid, "finished")]
    assert {r["key"] for r in read_records(out)} == TINY_KEYS
    assert (out / LOCK_FILE).read_text() == ""  # a clean end leaves no holder behind


def test_sigkilled_holder_leaves_a_stale_lock_that_the_next_run_takes_over(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "out"
    victim = subprocess.Popen(bench_argv(config, out), env=env(), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: session_running(out, victim.pid) or victim.poll() is not None,
                 what="the first session")  # fmt: skip
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        victim.kill()
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert lock_names(out, victim.pid)  # the holder's info is still there: stale
    assert not pid_alive(victim.pid)
    rerun = subprocess.run(bench_argv(config, out), env=env(), capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert f"took over the lock of a run that died (pid {victim.pid} " in rerun.stderr
    assert "1 earlier session(s) marked died" in rerun.stderr
    sessions = read_bench(out)["sessions"]
    assert [(s["pid"], s["status"]) for s in sessions] == [
        (victim.pid, "died"),
        (rerun_pid := sessions[1]["pid"], "finished"),
    ] and rerun_pid != victim.pid
    assert sessions[0]["ended_at"] == sessions[0]["updated_at"]  # its last heartbeat
    records = read_records(out)
    assert {r["key"] for r in records} == TINY_KEYS
    for r in records:  # where each result was computed
        assert r["torch_threads"] == 1 and r["device"].startswith("cpu"), r["key"]


def test_ray_address_nobody_listens_on_fails_fast_with_one_line(tmp_path):
    pytest.importorskip("ray")
    config, out = write_config(tmp_path), tmp_path / "out"
    t0 = time.monotonic()
    res = subprocess.run(bench_argv(config, out, "--executor", "ray", "--ray-address",
                                    "127.0.0.1:1"), env=env(), capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    seconds = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err[0]
    assert seconds < 60  # startup included (torch, ray imports on a busy machine); was >10 min
    assert not out.exists()  # the folder it created for the lock is removed again


def test_probe_address_rejects_bad_forms_and_accepts_a_listener():
    import socket

    from salun.bench.executors import probe_address

    with pytest.raises(SalunError, match="use HOST:PORT"):
        probe_address("localhost")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        probe_address(f"127.0.0.1:{srv.getsockname()[1]}")  # reachable: no error
        probe_address(f"ray://127.0.0.1:{srv.getsockname()[1]}")
    t0 = time.monotonic()
    with pytest.raises(SalunError, match="connection refused|Connection refused"):
        probe_address(f"127.0.0.1:{_free_port()}")
    assert time.monotonic() - t0 < 5


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the lock itself (in-process: flock conflicts between two open files) -------------


def test_lock_is_exclusive_and_released(tmp_path):
    with BenchLock(tmp_path, command="salun bench A", started_at="t0") as a:
        assert a.stale is None
        with pytest.raises(SalunError, match=rf"pid {os.getpid()} on .* since t0: salun bench A"):
            BenchLock(tmp_path).acquire()
    with BenchLock(tmp_path) as b:  # released: free again, nothing stale
        assert b.stale is None and b.held


def test_lock_left_by_a_dead_holder_is_reported_stale(tmp_path):
    dead = BenchLock(tmp_path, command="salun bench dead").acquire()
    os.close(dead._fd)  # as the kernel does for a killed process: flock gone, info left
    with BenchLock(tmp_path) as b:
        assert b.stale is not None and b.stale["command"] == "salun bench dead"


def test_busy_lock_whose_recorded_pid_is_dead_says_so(tmp_path):
    holder = BenchLock(tmp_path).acquire()
    gone = subprocess.Popen(["true"])
    gone.wait()
    info = {**holder.info, "pid": gone.pid}  # e.g. a child of a dead run inherited the lock
    os.pwrite(holder._fd, json.dumps(info).encode(), 0)
    with pytest.raises(SalunError, match=rf"pid {gone.pid} is dead but a process it started"):
        BenchLock(tmp_path).acquire()
    holder.release()


# ---- validated before anything is written -----------------------------------------------


def test_bad_grid_fails_before_training_and_writes_nothing(tmp_path, monkeypatch):
    import salun.bench.tasks

    def no_training(*a, **k):
        raise AssertionError("trained before the grid was checked")

    monkeypatch.setattr(salun.bench.tasks, "train_supervised", no_training)
    cfg = parse_config({**TINY, "protocol": "tuned", "tune_seeds": [1]}, "tiny")
    opts = BenchOptions(quiet=True, device="cpu", threads=1)
    for grid, message in (
        ([0.01, -1.0], "-1"),
        ([0.01, float("nan")], "nan"),
    ):
        bad = replace(cfg, methods=(MethodEntry("ft", "ft", {"epochs": 1, "lr_grid": grid}),))
        with pytest.raises(SalunError, match=rf"method 'ft'.*finite.*{message}"):
            run_bench(bad, tmp_path / "new", opts)
        assert not (tmp_path / "new").exists()
    # a setting the method's config refuses (each config of the grid is built); a folder
    # that exists (empty) stays empty
    bad = replace(cfg, methods=(MethodEntry("ft", "ft", {"epochs": -1, "lr_grid": [0.01]}),))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SalunError, match=r"method 'ft'.*epochs"):
        run_bench(bad, empty, opts)
    assert list(empty.iterdir()) == []


def test_bad_grid_in_yaml_is_one_line_exit_2(tmp_path, capsys):
    config = write_config(tmp_path, protocol="tuned", tune_seeds=[1],
                          methods={"ft": {"epochs": 1, "lr_grid": [-1, float("nan")]}})  # fmt: skip
    out = tmp_path / "out"
    assert main(["bench", "--config", str(config), "--out", str(out), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("salun: error:") and "ft" in err[0]
    assert not out.exists()


def test_out_that_is_not_a_bench_folder_is_refused_untouched(tmp_path, capsys):
    config = write_config(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    a_file = tmp_path / "file.txt"
    a_file.write_text("me too")
    for out, message in ((mine, "not a salun benchmark folder"), (a_file, "is a file")):
        assert main(["bench", "--config", str(config), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me" and a_file.read_text() == "me too"


def test_report_of_a_folder_being_written_leaves_it_intact(tmp_path, capsys):
    """A benchmark holds the lock and has records: `salun report` reads, writes only its
    own files, and never touches the records or bench.json."""
    out = tmp_path / "out"
    cfg = parse_config(TINY, "tiny")
    run_bench(cfg, out, BenchOptions(quiet=True, device="cpu", threads=1))
    before = {p: p.read_bytes() for p in [out / "bench.json", *sorted((out / "runs").iterdir())]}
    with BenchLock(out, command="salun bench (running)"):
        assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()
    assert {p: p.read_bytes() for p in before} == before
    with report_lock(out):  # free again
        pass
    capsys.readouterr()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["report", str(plain)]) == 2
    assert list(plain.iterdir()) == []


def test_connection_deadline_turns_a_hang_into_one_error():
    from salun.bench.executors import _deadline

    before = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    with pytest.raises(SalunError, match="connecting to Ray at x: no answer within 0.2 s"):
        with _deadline(0.2, "connecting to Ray at x"):
            while True:  # a retry loop that catches every Exception
                try:
                    time.sleep(0.05)
                except Exception:
                    pass
    assert time.monotonic() - t0 < 3
    assert signal.getsignal(signal.SIGALRM) == before


def test_readers_see_a_running_session_without_a_lock_holder_as_died(tmp_path):
    from salun.bench.session import Session, read_bench_live

    cfg = parse_config(TINY, "tiny")
    Session(tmp_path, cfg, {"command": "salun bench (killed)"})  # never ended: "running"
    assert read_bench(tmp_path)["sessions"][-1]["status"] == "running"
    with BenchLock(tmp_path):  # its process is alive and holds the lock
        assert read_bench_live(tmp_path)["sessions"][-1]["status"] == "running"
    live = read_bench_live(tmp_path)  # nobody holds it: the process died
    assert live["sessions"][-1]["status"] == "died"
    assert read_bench(tmp_path)["sessions"][-1]["status"] == "running"  # the file is untouched
