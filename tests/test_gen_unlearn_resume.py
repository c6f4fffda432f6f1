"""Resumable DDPM unlearning: a checkpointed, killed and resumed run equals the run that was
never stopped, bit for bit; a checkpoint continues only its own run."""

import dataclasses
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from ddpm_fixtures import class_templates, tiny_denoiser
from salun.cli import main
from salun.generation.ddpm.checkpoint import resume_train_state, save_checkpoint
from salun.generation.ddpm.data import BatchStream
from salun.generation.ddpm.model import build_denoiser, read_denoiser_meta
from salun.generation.ddpm.train import DDPMTrainConfig, train_ddpm
from salun.generation.ddpm.unlearn import GenUnlearnConfig, unlearn_ddpm
from salun.generation.ddpm.unlearn_state import (
    UNLEARN_STATE_FILE,
    read_resume,
    save_unlearn_checkpoint,
)
from salun.saliency import random_mask


def test_stream_restored_mid_pass_continues_the_same_batches():
    data, _, _ = class_templates(20, seed=0)
    a = BatchStream(data, 8, torch.Generator().manual_seed(1))  # 2 batches per pass
    for _ in range(3):  # into the second pass
        next(a)
    state, rng = a.state_dict(), a.generator.get_state()
    expected = [next(a) for _ in range(4)]  # crosses into a third pass
    g = torch.Generator()
    g.set_state(rng)
    b = BatchStream(data, 8, g)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, (next(b) for _ in range(4))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize(
    "method,extra",
    [("salun", {}), ("esd", {"esd_ddim_steps": 4, "alpha": 0.5})],
)
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, method, extra):
    # dropout on, flips on, a retain stream of 5 batches per pass and a forget stream of 2:
    # the checkpoints at steps 3 and 6 fall mid-pass and on a pass boundary
    _, forget, retain = class_templates(60, seed=0)
    model = build_denoiser(tiny_denoiser(dropout=0.3), seed=0)
    mask = random_mask(model, 0.5, seed=0) if method == "salun" else None
    cfg = GenUnlearnConfig(method=method, iterations=8, batch_size=8, lr=1e-3, **extra)
    record = {"kind": "unlearned", "dataset": "templates"}

    def save(run):
        save_unlearn_checkpoint(tmp_path / f"ck{run.step}", run, record)

    torch.manual_seed(123)  # the dropout draws of the uninterrupted run
    full = unlearn_ddpm(
        model, forget, retain, cfg, mask=mask, quiet=True, checkpoint=save, checkpoint_every=3
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck3", "ck6"]
    for step in (3, 6):
        folder = tmp_path / f"ck{step}"
        meta = read_denoiser_meta(folder)
        assert meta["complete"] is False and meta["steps_done"] == step
        torch.manual_seed(999)  # the checkpoint, not the caller's RNG, decides the dropout
        resumed = unlearn_ddpm(
            model, forget, retain, cfg, mask=mask, quiet=True, resume=read_resume(folder, meta)
        )
        for (name, p), q in zip(
            full.model.state_dict().items(), resumed.model.state_dict().values()
        ):
            assert torch.equal(p, q), (step, name)
        assert resumed.history == full.history


def test_the_input_model_is_not_the_checkpoint(tmp_path):
    """ESD's frozen copy comes from the original even on resume: resuming with the
    checkpoint's weights as ``model`` gives another result."""
    _, forget, retain = class_templates(30, seed=1)
    model = build_denoiser(tiny_denoiser(dropout=0.0), seed=0)
    cfg = GenUnlearnConfig(method="esd", iterations=4, batch_size=4, lr=1e-2, esd_ddim_steps=3)
    saved = {}
    full = unlearn_ddpm(
        model,
        forget,
        retain,
        cfg,
        quiet=True,
        checkpoint=lambda r: saved.update(
            weights={k: v.clone() for k, v in r.model.state_dict().items()},
            tensors=r.tensors(),
            progress=r.progress(),
        ),
        checkpoint_every=2,
    )
    from salun.generation.ddpm.unlearn_state import UnlearnResume

    resume = UnlearnResume(saved["weights"], saved["tensors"], saved["progress"])
    right = unlearn_ddpm(model, forget, retain, cfg, quiet=True, resume=resume)
    assert all(
        torch.equal(a, b)
        for a, b in zip(full.model.state_dict().values(), right.model.state_dict().values())
    )
    wrong_model = build_denoiser(tiny_denoiser(dropout=0.0), seed=0)
    wrong_model.load_state_dict(saved["weights"])
    resume = UnlearnResume(saved["weights"], saved["tensors"], saved["progress"])
    wrong = unlearn_ddpm(wrong_model, forget, retain, cfg, quiet=True, resume=resume)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(full.model.state_dict().values(), wrong.model.state_dict().values())
    )


def test_the_seed_fixes_dropout_whatever_the_callers_rng(tmp_path):
    """torch seeds its global RNG randomly per process; the run seeds its own dropout."""
    _, forget, retain = class_templates(30, seed=2)
    model = build_denoiser(tiny_denoiser(dropout=0.5), seed=0)
    cfg = GenUnlearnConfig(method="rl", iterations=3, batch_size=4)
    results = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        results.append(unlearn_ddpm(model, forget, retain, cfg, quiet=True).model)
        after = torch.rand(1)
        torch.manual_seed(caller_seed)
        assert torch.equal(after, torch.rand(1))  # the caller's RNG is given back untouched
    a, b = (r.state_dict() for r in results)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = unlearn_ddpm(model, forget, retain, dataclasses.replace(cfg, seed=1), quiet=True)
    assert not all(torch.equal(a[k], v) for k, v in other.model.state_dict().items())


def test_resumed_training_equals_the_uninterrupted_one(tmp_path):
    data, _, _ = class_templates(40, seed=3)  # 16 per batch: 2 batches per pass
    cfg = DDPMTrainConfig(steps=5, batch_size=16, lr=1e-3)

    def fresh():
        return build_denoiser(tiny_denoiser(dropout=0.3), seed=0)

    folder = tmp_path / "ck"
    full = train_ddpm(
        fresh(),
        data,
        cfg,
        quiet=True,
        checkpoint=lambda st: st.step == 3 and save_checkpoint(folder, st, {}, complete=False),
        checkpoint_every=3,
    )
    state = resume_train_state(folder, cfg)
    assert state.step == 3 and state.stream_state["taken"] == 1  # mid-pass
    torch.manual_seed(7)
    resumed = train_ddpm(state.model, data, cfg, state=state, quiet=True)
    for m_full, m_res in ((full.model, resumed.model), (full.ema, resumed.ema)):
        a, b = m_full.state_dict(), m_res.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ the CLI, with SIGKILL

TINY = "--block-out-channels 8 16 --attention-levels --norm-num-groups 4"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    d = tmp_path_factory.mktemp("orig")
    cmd = f"gen train --data synthetic:64 --batch-size 16 {TINY} --steps 2 --out {d}/o --quiet"
    assert main(shlex.split(cmd)) == 0
    return d / "o"


def _unlearn_cmd(original, out, iterations=120, lr="1e-4") -> list[str]:
    return shlex.split(
        f"gen unlearn --model {original} --forget-class 1 --method rl --iterations {iterations} "
        f"--batch-size 8 --lr {lr} --checkpoint-every 1 --quiet --out {out}"
    )


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SALUN_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "salun", *args], env=env, capture_output=True, text=True
    )


def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tmp_path, original):
    whole = _run_cli(_unlearn_cmd(original, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SALUN_QUIET": "1"}
    victim = subprocess.Popen(
        [sys.executable, "-m", "salun", *_unlearn_cmd(original, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    steps = 0
    while time.monotonic() < deadline and steps < 5:
        time.sleep(0.05)
        try:
            steps = read_denoiser_meta(out).get("steps_done", 0)
        except Exception:  # not written yet
            steps = 0
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    meta = read_denoiser_meta(out)  # what the kill left is loadable and says it is partial
    assert meta["complete"] is False and 5 <= meta["steps_done"] < 120
    assert (out / UNLEARN_STATE_FILE).is_file()

    done = _run_cli(_unlearn_cmd(original, out))  # the same command, no --overwrite
    assert done.returncode == 0, done.stderr
    final = read_denoiser_meta(out)
    assert final["complete"] is True and final["resumed_at_step"] >= 5
    assert not (out / UNLEARN_STATE_FILE).exists()
    assert _sha(out / "model.safetensors") == _sha(tmp_path / "whole" / "model.safetensors")
    assert final["history"] == read_denoiser_meta(tmp_path / "whole")["history"]


def test_finished_run_is_kept_and_another_runs_checkpoint_is_refused(tmp_path, original, capsys):
    out = tmp_path / "u"
    assert main(_unlearn_cmd(original, out, iterations=4)) == 0
    before = _sha(out / "model.safetensors")
    capsys.readouterr()
    loud = [a for a in _unlearn_cmd(original, out, iterations=4) if a != "--quiet"]
    assert main(loud) == 0  # the same run again: nothing to do
    assert "nothing to do" in capsys.readouterr().err
    assert _sha(out / "model.safetensors") == before
    # a finished folder of other settings is a user's artifact: refused without --overwrite
    assert main(_unlearn_cmd(original, out, iterations=4, lr="1e-3")) == 2
    assert _sha(out / "model.safetensors") == before

    # an unfinished checkpoint of other settings is not continued with the new ones
    meta = read_denoiser_meta(out)
    meta.update(complete=False)
    (out / "model.json").write_text(json.dumps(meta))
    assert main(_unlearn_cmd(original, out, iterations=4, lr="1e-3")) == 2
    assert "other settings (unlearn)" in capsys.readouterr().err
    assert main([*_unlearn_cmd(original, out, iterations=4, lr="1e-3"), "--overwrite"]) == 0
    again = read_denoiser_meta(out)
    assert again["complete"] is True and "resumed_at_step" not in again
    assert again["unlearn"]["lr"] == 1e-3


def test_each_checkpoint_leaves_a_line_in_the_log(tmp_path, original, capsys, monkeypatch):
    monkeypatch.delenv("SALUN_QUIET", raising=False)
    cmd = [a for a in _unlearn_cmd(original, tmp_path / "u", iterations=4) if a != "--quiet"]
    assert main([*cmd, "--checkpoint-every", "2"]) == 0
    err = capsys.readouterr().err
    assert "step 2/4" in err and "step 4/4" not in err  # the finished folder is no checkpoint
