"""An output is claimed for the whole run: what appears at ``--out`` meanwhile is never lost.

Real concurrent processes (``.venv/bin/salun`` started with ``subprocess.Popen``): a user
creating the output while a run works, two runs writing one ``--out``, the ``.NAME.old``
names salun used to treat as its own. The test hook ``SALUN_TEST_PAUSE_BEFORE_PUBLISH``
(seconds, read only by :func:`salun.io.publish`) holds a run just before it publishes, once
its complete temp sibling exists, so the competing write lands at that moment every time.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from salun import io as sio
from salun.errors import SalunError

SALUN = str(Path(sys.executable).with_name("salun"))
TRAIN = ["--data", "synthetic:120", "--arch", "mlp", "--width", "0.1", "--epochs", "1"]
TRAIN += ["--batch-size", "32", "--device", "cpu", "--quiet"]
SPLIT = ["--data", "synthetic:120", "--scenario", "random", "--count", "12"]
PAUSE = 4.0  # long enough for the test to act while the run waits at its publish step


def _env(pause: float | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SALUN_QUIET": "1"}
    env.pop(sio.PAUSE_ENV, None)
    if pause is not None:
        env[sio.PAUSE_ENV] = str(pause)
    return env


def _start(argv: list, cwd: Path, pause: float | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [SALUN, *map(str, argv)],
        cwd=cwd,
        env=_env(pause),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 1800) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


def _salun(argv: list, cwd: Path, timeout: float = 1800) -> tuple[int, list[str]]:
    return _finish(_start(argv, cwd), timeout)


def _refused(result: tuple[int, list[str]], *needles: str) -> str:
    code, err = result
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("salun: error: "), err
    for n in needles:
        assert n in err[0], (n, err)
    return err[0]


def _when_publishing(folder: Path, acts: dict[str, tuple[subprocess.Popen, Callable]]) -> None:
    """Run each ``act()`` as soon as the run of its name has its complete temp sibling (the
    run then waits at its publish step for :data:`PAUSE` seconds)."""
    todo = dict(acts)
    deadline = time.monotonic() + 1800  # a loaded shared machine: never fail for slowness
    while todo and time.monotonic() < deadline:
        names = [p.name for p in folder.iterdir()]
        for name, (proc, act) in list(todo.items()):
            if any(n.startswith(f".{name}.{sio.TMP_MAGIC}.") for n in names):
                act()
                del todo[name]
            else:
                assert proc.poll() is None, _finish(proc)
        time.sleep(0.02)
    assert not todo, f"these runs never got to publishing: {sorted(todo)}"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


# ---------------------------------------------------------------- the publish primitive


@pytest.fixture(params=["renameat2", "fallback"])
def rename_impl(request, monkeypatch):
    """Both ways of never replacing: Linux renameat2 and the link / mkdir fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(sio, "_rename2", lambda a, b, flags: -1)
    elif sio._renameat2_fn() is False:
        pytest.skip("this libc has no renameat2")
    return request.param


@pytest.mark.parametrize("target", ["file", "empty folder", "folder"])
@pytest.mark.parametrize("source", ["file", "folder"])
def test_rename_noreplace_refuses_every_existing_target(tmp_path, rename_impl, source, target):
    src, dst = tmp_path / "src", tmp_path / "dst"
    if source == "file":
        src.write_text("new")
    else:
        src.mkdir()
        (src / "model.json").write_text("new")
    if target == "file":
        dst.write_text("mine")
    else:
        dst.mkdir()
        if target == "folder":
            (dst / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    # a plain rename would replace the file and the empty folder
    with pytest.raises(FileExistsError):
        sio.rename_noreplace(src, dst)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("source", ["file", "folder"])
def test_rename_noreplace_moves_onto_a_free_name(tmp_path, rename_impl, source):
    src, dst = tmp_path / "src", tmp_path / "dst"
    if source == "file":
        src.write_text("new")
    else:
        src.mkdir()
        (src / "model.json").write_text("new")
    sio.rename_noreplace(src, dst)
    assert not src.exists()
    got = dst.read_text() if source == "file" else (dst / "model.json").read_text()
    assert got == "new"


def _race_writer(path: str, me: int, barrier, fallback: bool, results) -> None:
    if fallback:
        sio._rename2 = lambda a, b, flags: -1
    sio.claim(path, sio.Claim(lambda q: False))  # no --overwrite: nothing may be replaced
    barrier.wait()
    try:
        sio.atomic_write_text(path, f"writer {me}")
        results.put((me, "won"))
    except SalunError as e:
        results.put((me, str(e)))


@pytest.mark.parametrize("impl", ["renameat2", "fallback"])
def test_writers_racing_for_one_path_exactly_one_wins(tmp_path, impl):
    ctx = mp.get_context("fork")
    fallback = impl == "fallback"
    for round_ in range(5):
        path = tmp_path / f"out{round_}.json"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=_race_writer, args=(str(path), i, barrier, fallback, results))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        got = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        winners = [i for i, r in got.items() if r == "won"]
        assert len(winners) == 1, got
        assert path.read_text() == f"writer {winners[0]}"
        for i, r in got.items():
            if i != winners[0]:
                assert "created or changed by someone else" in r, r
        assert (
            sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{path.name}")) == []
        )


def test_overwrite_is_judged_at_the_moment_of_publishing(tmp_path):
    path = tmp_path / "s.json"
    sio.atomic_write_text(path, "ours")
    ours = {"ok": True}
    sio.claim(path, sio.Claim(lambda q: ours["ok"] and q.read_text() == "ours"))
    path.unlink()
    path.write_text("the user's")  # appeared after the claim, before the publish
    with pytest.raises(SalunError, match="someone else"):
        sio.atomic_write_text(path, "new")
    assert path.read_text() == "the user's"
    path.write_text("ours")  # what may be replaced is replaced, by an exchange
    sio.atomic_write_text(path, "new")
    assert path.read_text() == "new"
    sio.atomic_write_text(path, "newer")  # what this process published is its own
    assert path.read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_a_swap_that_brings_out_something_else_is_undone(tmp_path, monkeypatch):
    path = tmp_path / "m"
    path.mkdir()
    (path / "model.json").write_text("ours")
    sio.claim(path, sio.Claim(lambda q: True))
    real = sio._exchange
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("mine")
    calls = []

    def exchange(a, b):  # the user's folder takes the place between the check and the swap
        if not calls:
            (path / "model.json").unlink()
            path.rmdir()
            user.rename(path)
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(sio, "_exchange", exchange)
    with pytest.raises(SalunError, match="changed while this run was publishing"):
        sio.atomic_dir(path, lambda tmp: (tmp / "model.json").write_text("new"))
    assert _tree(path) == {"thesis.tex": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


# ---------------------------------------------------------------- leftovers carry a marker


def test_recovery_touches_only_marked_asides(tmp_path):
    user_old = tmp_path / ".newm.old"  # the name older versions used: now the user's
    user_old.mkdir()
    (user_old / "model.json").write_text("{}")
    sio.recover(tmp_path / "newm")
    assert user_old.is_dir() and not (tmp_path / "newm").exists()
    forged = tmp_path / ".newm.salun-old.1"  # the number is not its inode
    forged.mkdir()
    sio.recover(tmp_path / "newm")
    assert forged.is_dir() and not (tmp_path / "newm").exists()
    aside = tmp_path / "x"
    aside.mkdir()
    marked = tmp_path / f".newm.salun-old.{aside.stat().st_ino}"
    aside.rename(marked)
    sio.recover(tmp_path / "newm")
    assert (tmp_path / "newm").is_dir() and not marked.exists()
    assert user_old.is_dir() and forged.is_dir()


# ---------------------------------------------------------------- real concurrent runs


def test_a_folder_created_during_training_is_not_replaced(tmp_path):
    run = _start(["train", *TRAIN, "--out", "racey"], tmp_path, pause=PAUSE)

    def user() -> None:  # the user, while the run is working
        (tmp_path / "racey").mkdir()
        (tmp_path / "racey" / "notes.txt").write_text("mine")

    _when_publishing(tmp_path, {"racey": (run, user)})
    _refused(_finish(run), "refusing to write racey", "nothing was replaced")
    assert _tree(tmp_path / "racey") == {"notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["racey"], "no temp left behind"


def test_an_empty_folder_or_a_file_created_during_a_run_is_not_replaced(tmp_path):
    # a rename onto an empty folder succeeds on Linux: the claim must refuse it all the same
    runs = {
        "empty": _start(["train", *TRAIN, "--out", "empty"], tmp_path, pause=PAUSE),
        "s.json": _start(["split", *SPLIT, "--out", "s.json"], tmp_path, pause=PAUSE),
    }
    acts = {
        "empty": lambda: (tmp_path / "empty").mkdir(),
        "s.json": lambda: (tmp_path / "s.json").write_text("my own split"),
    }
    _when_publishing(tmp_path, {name: (runs[name], act) for name, act in acts.items()})
    for name, run in runs.items():
        _refused(_finish(run), f"refusing to write {name}")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    assert (tmp_path / "s.json").read_text() == "my own split"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "s.json"]


def test_overwrite_refuses_what_replaced_the_artifact_during_the_run(tmp_path):
    assert _salun(["split", *SPLIT, "--out", "s.json"], tmp_path)[0] == 0
    run = _start(
        ["split", *SPLIT, "--seed", "1", "--out", "s.json", "--overwrite"], tmp_path, PAUSE
    )

    def user() -> None:  # the user puts their own file in its place
        (tmp_path / "s.json").unlink()
        (tmp_path / "s.json").write_text("my own split")

    _when_publishing(tmp_path, {"s.json": (run, user)})
    _refused(_finish(run), "refusing to write s.json")
    assert (tmp_path / "s.json").read_text() == "my own split"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_two_trainings_into_one_out_exactly_one_wins(tmp_path):
    # both claim a free path, both pause at publishing: their publishes meet
    runs = [
        _start(["train", *TRAIN, "--seed", str(s), "--out", "twin"], tmp_path, pause=PAUSE)
        for s in (1, 2)
    ]
    results = [_finish(r) for r in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    winner = [s for s, (code, _) in zip((1, 2), results) if code == 0][0]
    loser = [r for r in results if r[0] == 2][0]
    _refused(loser, "refusing to write twin", "someone else")
    meta = json.loads((tmp_path / "twin" / "model.json").read_text())
    assert meta["seed"] == winner  # the winner's model, not replaced by the loser's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["twin"]


# ---------------------------------------------------------------- the .NAME.old cases, real CLI


def test_user_files_named_like_old_leftovers_are_never_touched(tmp_path):
    for name in (".orig.old", ".newm.old"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.json").write_text('{"format": "salun-model-1"}')
        (tmp_path / name / "thesis.tex").write_text("mine")
    (tmp_path / ".s9.json.old").write_text('{"format": "salun-split-1", "mine": true}')
    users = {n: _tree(tmp_path / n) for n in (".orig.old", ".newm.old")}
    user_file = (tmp_path / ".s9.json.old").read_bytes()

    assert _salun(["train", *TRAIN, "--out", "orig"], tmp_path)[0] == 0
    runs = [  # three independent runs: at once, to save time
        _start(["train", *TRAIN, "--seed", "3", "--out", "orig", "--overwrite"], tmp_path),
        _start(["train", *TRAIN, "--out", "newm"], tmp_path),  # .newm.old must not block it
        _start(["split", *SPLIT, "--out", "s9.json"], tmp_path),
    ]
    for run in runs:
        code, err = _finish(run)
        assert code == 0, err
    assert json.loads((tmp_path / "orig" / "model.json").read_text())["seed"] == 3
    assert json.loads((tmp_path / "newm" / "model.json").read_text())["format"] == "salun-model-1"
    s9 = json.loads((tmp_path / "s9.json").read_text())
    assert s9["format"] == "salun-split-1" and "mine" not in s9

    assert {n: _tree(tmp_path / n) for n in users} == users
    assert (tmp_path / ".s9.json.old").read_bytes() == user_file
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".newm.old", ".orig.old", ".s9.json.old", "newm", "orig", "s9.json"]
    )


# ---------------------------------------------------------------- refused before any work


def _in_process(argv: list, capsys) -> tuple[int, list[str]]:
    from salun.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_fifo_outputs_are_refused_without_hanging(tmp_path):
    # in a child with a timeout: a check that opened the FIFO would block forever
    (tmp_path / "fifo").mkdir()
    for name in ("m.safetensors", "s.json", "g.png", "r.json", "x.npz"):
        os.mkfifo(tmp_path / "fifo" / name)
    code = (
        "from salun.outputs import claim_output\n"
        "from salun.errors import SalunError\n"
        "from salun.cli import main\n"
        "import sys\n"
        "for name, kind in [('m.safetensors','mask'),('s.json','split'),('g.png','grid'),"
        "('r.json','record'),('x.npz','samples-npz')]:\n"
        "    for ow in (False, True):\n"
        "        try:\n"
        "            claim_output('fifo/' + name, kind, overwrite=ow)\n"
        "        except SalunError as e:\n"
        "            assert 'it is a FIFO' in str(e), e\n"
        "        else:\n"
        "            sys.exit(name + ' accepted')\n"
        "argv = ['split', '--data', 'synthetic:120', '--scenario', 'random', '--count', '12']\n"
        "sys.exit(main([*argv, '--out', 'fifo/s.json', '--overwrite']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(), timeout=120, capture_output=True
    )
    _refused((done.returncode, done.stderr.decode().splitlines()), "it is a FIFO")


def test_name_too_long_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    # the longest sibling salun writes: ".NAME.salun-old.<inode up to 2**64>"
    overhead = len(f"..salun-old.{2**64}")
    longest = "a" * (name_max - overhead - len(".json")) + ".json"
    code, err = _in_process(["split", *SPLIT, "--out", longest], capsys)
    assert code == 0, err
    assert (tmp_path / longest).is_file()
    # data that does not exist: had the name been checked after loading it (or after
    # training), the error would be about the data
    argv = ["train", *TRAIN, "--data", "npz:missing.npz", "--out", "b" * (len(longest) + 1)]
    _refused(_in_process(argv, capsys), "is too long", f"at most {len(longest)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [longest]


def test_output_inside_an_input_folder_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _in_process(["split", *SPLIT, "--out", "s.json"], capsys)[0] == 0
    assert _in_process(["train", *TRAIN, "--out", "orig"], capsys)[0] == 0
    before = _tree(tmp_path / "orig")
    argv = ["unlearn", "--model", "orig", "--forget", "s.json", "--method", "ft"]
    result = _in_process([*argv, "--out", "orig/sub", "--epochs", "1", "--device", "cpu"], capsys)
    _refused(result, "inside the input folder orig")
    assert _tree(tmp_path / "orig") == before
