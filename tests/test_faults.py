"""Faults a user meets: --out over their own files, kills mid-write, flipped bytes, own data.

The kill tests SIGKILL real child processes. Each child is forked from a zygote process
that imported torch once (so a run takes a fraction of a second instead of the seconds a fresh
interpreter needs on a busy machine) and runs the real code: ``salun.cli.main`` for
``salun train``, ``save_model`` for a replace of an existing model.
"""

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from salun.artifacts import load_model, save_model
from salun.cli import main
from salun.models import build_from_kwargs, model_kwargs_for


def run(argv, capsys):
    """``salun ARGV`` in process: (exit code, stderr lines)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def refused(argv, capsys, *needles):
    code, err = run(argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    for n in needles:
        assert str(n) in err[0], (n, err)
    return err[0]


TRAIN = ["--data", "synthetic:120", "--arch", "mlp", "--width", "0.1", "--epochs", "1"]
TRAIN += ["--batch-size", "32", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A model folder and a split for it, written through the CLI once."""
    root = tmp_path_factory.mktemp("made")
    assert (
        main(
            [
                "split",
                "--data",
                "synthetic:120",
                "--scenario",
                "random",
                "--count",
                "12",
                "--out",
                str(root / "split.json"),
            ]
        )
        == 0
    )
    assert main(["train", *TRAIN, "--out", str(root / "orig")]) == 0
    return root


def _user_folder(tmp_path: Path) -> Path:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_bytes(b"four years of work")
    return user


def _untouched(user: Path) -> None:
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]
    assert (user / "thesis.tex").read_bytes() == b"four years of work"


# ---------------------------------------------------------------- the output policy


def test_user_folder_survives_every_classifier_verb(tmp_path, made, capsys):
    user = _user_folder(tmp_path)
    m, s = made / "orig", made / "split.json"
    for argv in (
        ["split", "--data", "synthetic:120", "--scenario", "random", "--count", "5"],
        ["train", *TRAIN],
        ["mask", "--model", m, "--forget", s, "--device", "cpu"],
        ["unlearn", "--model", m, "--forget", s, "--method", "ft", "--device", "cpu"],
    ):
        for extra in ([], ["--overwrite"]):
            refused([*argv, "--out", user, *extra], capsys, user)
            _untouched(user)
    # a user's file where a file artifact goes
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    for argv in (
        ["split", "--data", "synthetic:120", "--scenario", "random", "--count", "5"],
        ["mask", "--model", m, "--forget", s, "--device", "cpu"],
    ):
        refused([*argv, "--out", notes, "--overwrite"], capsys, "not a salun")
    assert notes.read_text() == '{"mine": true}'


def test_user_folder_survives_gen_and_sd_verbs(tmp_path, made, capsys):
    pytest.importorskip("diffusers")
    user = _user_folder(tmp_path)
    png = tmp_path / "holiday.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png)
    before = png.read_bytes()
    ddpm = Path(__file__).parent.parent / "benchmarks" / "gen" / "results" / "original"
    for argv in (
        ["gen", "train", "--data", "synthetic", "--out", user],
        ["gen", "mask", "--model", ddpm, "--forget-class", "1", "--out", user],
        ["gen", "unlearn", "--model", ddpm, "--forget-class", "1", "--method", "ga", "--out", user],
        [
            "gen",
            "unlearn",
            "--model",
            ddpm,
            "--forget-class",
            "1",
            "--method",
            "retrain",
            "--out",
            user,
        ],
        ["gen", "sample", "--model", ddpm, "--out", png],
        ["gen", "sample", "--model", ddpm, "--out", tmp_path / "g.png", "--npz", user],
        ["sd", "mask", "--model", tmp_path / "nosd", "--out", user],
        ["sd", "unlearn", "--model", tmp_path / "nosd", "--out", user],
        ["sd", "generate", "--model", tmp_path / "nosd", "--prompt", "a", "--out", user],
    ):
        refused([*argv, "--overwrite"], capsys, "refusing to write")
        _untouched(user)
    assert png.read_bytes() == before
    assert not (tmp_path / "g.png").exists()  # refused before sampling anything


def test_same_kind_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "m"
    assert run(["train", *TRAIN, "--out", out], capsys)[0] == 0
    sha = json.loads((out / "model.json").read_text())["weights_sha256"]
    refused(["train", *TRAIN, "--seed", "1", "--out", out], capsys, "pass --overwrite")
    assert json.loads((out / "model.json").read_text())["weights_sha256"] == sha
    assert run(["train", *TRAIN, "--seed", "1", "--out", out, "--overwrite"], capsys)[0] == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["seed"] == 1 and meta["weights_sha256"] != sha
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # a split file is replaced by a split file, with --overwrite
    split = ["split", "--data", "synthetic:120", "--scenario", "random", "--out", tmp_path / "s"]
    assert run([*split, "--count", "5"], capsys)[0] == 0
    refused([*split, "--count", "6"], capsys, "pass --overwrite")
    assert run([*split, "--count", "6", "--overwrite"], capsys)[0] == 0
    assert len(json.loads((tmp_path / "s").read_text())["forget"]) == 6


def test_out_is_input_or_holds_the_cwd(tmp_path, made, capsys, monkeypatch):
    m, s = made / "orig", made / "split.json"
    before = (m / "model.safetensors").read_bytes()
    refused(
        [
            "unlearn",
            "--model",
            m,
            "--forget",
            s,
            "--method",
            "ft",
            "--device",
            "cpu",
            "--out",
            m,
            "--overwrite",
        ],
        capsys,
        "is the input",
    )
    refused(
        [
            "unlearn",
            "--model",
            m,
            "--forget",
            s,
            "--method",
            "ft",
            "--device",
            "cpu",
            "--out",
            made,
            "--overwrite",
        ],
        capsys,
        "contains the input",
    )
    assert (m / "model.safetensors").read_bytes() == before
    work = tmp_path / "proj" / "work"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    monkeypatch.chdir(work)
    refused(["train", *TRAIN, "--out", tmp_path / "proj", "--overwrite"], capsys, "working dir")
    assert (work / "keep.txt").read_text() == "x"


def test_flipped_byte_in_model_weights_is_one_clear_error(tmp_path, made, capsys):
    m = tmp_path / "m"
    shutil.copytree(made / "orig", m)
    w = m / "model.safetensors"
    data = bytearray(w.read_bytes())
    for i in range(len(data) - 1, len(data) - 400, -97):  # every 97th byte of the weights
        data[i] ^= 0xFF
    w.write_bytes(bytes(data))
    refused(
        ["evaluate", "--model", m, "--forget", made / "split.json", "--device", "cpu"],
        capsys,
        "is corrupted",
        "sha256",
    )


# ---------------------------------------------------------------- SIGKILL at random moments


# A zygote: a fresh interpreter (untouched by earlier tests, single-threaded) that imports
# salun once and then forks one child per job; the test SIGKILLs the child by its pid.
_ZYGOTE = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
import salun.data.sources, salun.outputs, salun.workflows
from salun import io as sio
from salun.artifacts import load_model, save_model
from salun.cli import main

def replace_forever(out, a, b, exchange):
    if not exchange:
        sio._exchange = lambda x, y: False  # the rename-aside fallback
    (ma, meta), (mb, _) = load_model(a), load_model(b)
    i = 1
    while True:  # replace the model folder again and again until killed
        save_model(out, (ma, mb)[i % 2], meta["model"], {"dataset": "synthetic", "seed": i % 2})
        i += 1

for line in sys.stdin:
    job = json.loads(line)
    if job.get("warm_up"):  # in the zygote itself: lazy imports and first-op set-up, once
        print(-1, flush=True)
        print(main(job["argv"]) << 8, flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 3
        try:
            code = main(job["argv"]) if "argv" in job else replace_forever(**job["replace"])
        finally:
            os._exit(code or 0)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


@pytest.fixture(scope="module")
def zygote():
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    yield proc
    proc.kill()  # the zygote only ever waits for the next job
    proc.wait(timeout=60)


def _run_killed(zygote, job: dict, delay: float) -> bool:
    """Run ``job`` in a fresh child; SIGKILL it after ``delay`` s unless it ended first.

    Returns True if the kill landed (the child died of SIGKILL)."""
    import select

    def line() -> int:  # unbuffered, so that select() sees exactly what is unread
        out = b""
        while not out.endswith(b"\n"):
            chunk = os.read(zygote.stdout.fileno(), 1)
            assert chunk, "the zygote died"
            out += chunk
        return int(out)

    zygote.stdin.write((json.dumps(job) + "\n").encode())
    pid = line()
    ready, _, _ = select.select([zygote.stdout], [], [], delay)
    if not ready and pid > 0:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended just now
    status = line()
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.waitstatus_to_exitcode(status) == 0, status
    return False


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_sigkill_during_train_leaves_old_or_new_model(tmp_path, zygote):
    out = tmp_path / "m"
    argv = ["train", *TRAIN, "--out", str(out), "--overwrite"]
    warm = ["train", *TRAIN, "--out", str(tmp_path / "warm")]
    assert not _run_killed(zygote, {"argv": warm, "warm_up": True}, 300.0)
    shutil.rmtree(tmp_path / "warm")
    t0 = time.monotonic()
    _run_killed(zygote, {"argv": [*argv, "--seed", "101"]}, 300.0)
    full = time.monotonic() - t0  # an uninterrupted run sets the kill window
    assert load_model(out)[1]["seed"] == 101
    rng = random.Random(0)
    kills = attempts = 0
    while kills < 20 and attempts < 60:
        attempts += 1
        seed_before = load_model(out)[1]["seed"]
        job = {"argv": [*argv, "--seed", str(attempts)]}
        kills += _run_killed(zygote, job, rng.uniform(0.0, full))
        _, meta = load_model(out)  # loads: weights checked against the recorded sha256
        assert meta["seed"] in (seed_before, attempts)
    assert kills >= 20, f"only {kills} of {attempts} kills landed during a run"
    assert main([*argv, "--seed", "7"]) == 0
    assert load_model(out)[1]["seed"] == 7
    assert _siblings(out) == [], "the next run removes what killed runs left"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "fallback"])
def test_sigkill_during_replace_leaves_old_or_new_model(tmp_path, synthetic, zygote, exchange):
    out = tmp_path / "runs" / "m"
    kwargs = model_kwargs_for(synthetic, "mlp", width=0.5)
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(build_from_kwargs(kwargs))
        save_model(tmp_path / f"m{s}", models[s], kwargs, {"dataset": "synthetic", "seed": s})
    save_model(out, models[0], kwargs, {"dataset": "synthetic", "seed": 0})
    job = {"replace": dict(out=str(out), a=str(tmp_path / "m0"), b=str(tmp_path / "m1"))}
    job["replace"]["exchange"] = exchange
    rng = random.Random(1)
    landed = 0
    for _ in range(20 if exchange else 12):
        landed += _run_killed(zygote, job, rng.uniform(0.1, 0.5))
        model, meta = load_model(out)  # recovers a folder left aside by the fallback
        want = models[meta["seed"]].state_dict()
        assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    assert landed >= 10
    save_model(out, models[0], kwargs, {"dataset": "synthetic", "seed": 0})
    assert _siblings(out) == [], "the next write removes what killed writers left"


# ---------------------------------------------------------------- your own data, end to end


def _arrays(seed: int, n_train=80, n_test=40, k=4):
    g = np.random.default_rng(seed)

    def part(n):
        y = np.arange(n) % k
        x = g.integers(0, 60, (n, 8, 8)).astype(np.uint8)
        for c in range(k):  # a bright quadrant per class: learnable in one epoch
            x[y == c, (c // 2) * 4 : (c // 2) * 4 + 4, (c % 2) * 4 : (c % 2) * 4 + 4] += 180
        return x, y.astype(np.int64)

    (xtr, ytr), (xte, yte) = part(n_train), part(n_test)
    return dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def _flow(capsys, tmp_path, spec, data_flag=()):
    """train -> split -> mask -> unlearn -> evaluate through the CLI; returns evaluate's JSON."""
    m, s, k, u = (tmp_path / n for n in ("orig", "split.json", "mask.safetensors", "unl"))
    arch = ["--arch", "mlp", "--width", "0.2", "--epochs", "2", "--batch-size", "16"]
    dev = ["--device", "cpu", "--quiet"]
    assert (
        run(["split", "--data", spec, "--scenario", "class", "--classes", "1", "--out", s], capsys)[
            0
        ]
        == 0
    )
    assert run(["train", "--data", spec, *arch, *dev, "--split", s, "--out", m], capsys)[0] == 0
    assert run(["mask", "--model", m, "--forget", s, *dev, "--out", k, *data_flag], capsys)[0] == 0
    code, err = run(
        [
            "unlearn",
            "--model",
            m,
            "--forget",
            s,
            "--mask",
            k,
            "--method",
            "salun",
            *dev,
            "--out",
            u,
            *data_flag,
            "--epochs",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(u),
                "--forget",
                str(s),
                "--json",
                *dev,
                *map(str, data_flag),
            ]
        )
        == 0
    )
    return json.loads(capsys.readouterr().out), m, s


def test_cli_flow_on_an_npz_named_like_a_builtin(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "digits.npz", **_arrays(0))
    spec = f"npz:{data / 'digits.npz'}"
    work = tmp_path / "work"
    work.mkdir()
    os.chdir(work)  # a relative spec, resolved once and recorded whole
    try:
        metrics, m, s = _flow(capsys, work, "npz:../data/digits.npz")
    finally:
        os.chdir(tmp_path)
    meta = json.loads((m / "model.json").read_text())
    assert meta["data_spec"] == spec and meta["dataset"] == "digits"
    assert json.loads(s.read_text())["data_spec"] == spec
    assert {"UA", "RA", "TA", "MIA"} <= set(metrics)
    # the data moves: the recorded path is gone, --data names the new place
    moved = tmp_path / "moved"
    moved.mkdir()
    os.replace(data / "digits.npz", moved / "digits.npz")
    ev = ["evaluate", "--model", m, "--forget", s, "--device", "cpu"]
    refused(ev, capsys, "digits.npz")
    assert run([*ev, "--data", f"npz:{moved / 'digits.npz'}"], capsys)[0] == 0
    # the built-in digits is another dataset, and so is a same-name, same-size other file
    refused([*ev, "--data", "digits"], capsys, "other data")
    other = tmp_path / "other"
    other.mkdir()
    np.savez(other / "digits.npz", **_arrays(1))
    assert (other / "digits.npz").stat().st_size == (moved / "digits.npz").stat().st_size
    refused([*ev, "--data", f"npz:{other / 'digits.npz'}"], capsys, "other data")
    # a split of the same stem and size from the other file is refused as well
    s2 = tmp_path / "s2.json"
    assert (
        run(
            [
                "split",
                "--data",
                f"npz:{other / 'digits.npz'}",
                "--scenario",
                "class",
                "--classes",
                "1",
                "--out",
                s2,
            ],
            capsys,
        )[0]
        == 0
    )
    refused(
        [
            "evaluate",
            "--model",
            m,
            "--forget",
            s2,
            "--device",
            "cpu",
            "--data",
            f"npz:{moved / 'digits.npz'}",
        ],
        capsys,
        "other content",
    )


def test_cli_flow_on_an_imagefolder_tree(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("SALUN_IMAGE_SIZE", "8")
    arrays = _arrays(2, n_train=48, n_test=24)
    root = tmp_path / "pets"
    for part, x, y in (
        ("train", arrays["x_train"], arrays["y_train"]),
        ("val", arrays["x_test"], arrays["y_test"]),
    ):
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / part / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, "L").convert("RGB").save(folder / f"{i}.png")
    metrics, m, s = _flow(capsys, tmp_path, f"imagefolder:{root}")
    assert json.loads((m / "model.json").read_text())["data_spec"] == f"imagefolder:{root}"
    assert metrics["UA"] >= 0 and json.loads(s.read_text())["data_spec"] == f"imagefolder:{root}"
    # the tree moves: --data with the new place works for every verb that reads data
    moved = tmp_path / "moved-pets"
    os.replace(root, moved)
    spec = f"imagefolder:{moved}"
    dev = ["--device", "cpu", "--quiet"]
    assert (
        run(
            [
                "mask",
                "--model",
                m,
                "--forget",
                s,
                *dev,
                "--data",
                spec,
                "--out",
                tmp_path / "k2.safetensors",
            ],
            capsys,
        )[0]
        == 0
    )
    code, err = run(
        [
            "unlearn",
            "--model",
            m,
            "--forget",
            s,
            "--method",
            "ft",
            *dev,
            "--data",
            spec,
            "--epochs",
            "1",
            "--out",
            tmp_path / "u2",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "u2" / "model.json").read_text())["data_spec"] == spec
