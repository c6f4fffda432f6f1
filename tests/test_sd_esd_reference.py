"""Stable Diffusion ESD against the reference's sampler arithmetic, on the tiny pipeline.

The reference (rohitgandikota/erasing b8aeab6 ``train-scripts/train-esd.py``; the CompVis
``ldm/models/diffusion/ddim.py`` it calls) samples z with ``till_T = t_enc``::

    c = 1000 // S; grid = range(0, 1000, c) + 1          # make_ddim_timesteps, "uniform"
    for i, step in enumerate(flip(grid)):
        index = total_steps - i - 1
        ... one DDIM step at `step` ...
        if index + 1 == till_T: break

and then draws the loss timestep in [round(1000·t_enc/S), round(1000·(t_enc+1)/S)). The
expected timesteps below are that loop, written out here, not salun's helper.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from salun.generation.sd import esd as esd_mod  # noqa: E402
from salun.generation.sd.esd import ESDConfig, partial_sample, unlearn_esd  # noqa: E402
from salun.generation.sd.pipeline import encode_prompts  # noqa: E402
from sd_fixtures import NUDE, RES  # noqa: E402

STEPS = 10  # DDIM steps of these tests (the reference's 50 costs 5× more UNet calls)


def compvis_till_t(steps: int, till_t: int, n_train: int = 1000) -> list[int]:
    """The DDPM timesteps CompVis' DDIM sampler denoises at before it breaks."""
    c = n_train // steps
    grid = [k + 1 for k in range(0, n_train, c)]
    total_steps = len(grid)
    seen = []
    for i, step in enumerate(reversed(grid)):
        index = total_steps - i - 1
        seen.append(step)
        if index + 1 == till_t:
            break
    return seen


def test_the_reference_loop_itself():
    """The oracle, by hand: t_enc 9 breaks after index 8 (two steps), t_enc 1 after index 0
    (all ten), and t_enc 0 never breaks (all ten too)."""
    assert compvis_till_t(10, 9) == [901, 801]
    assert compvis_till_t(10, 1) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert compvis_till_t(10, 0) == compvis_till_t(10, 1)
    assert compvis_till_t(50, 2)[-1] == 21  # z ends at t ≈ 20·t_enc: 20·2 − 19


class UNetTimesteps:
    """Records the timestep of every forward call of a UNet (one batched CFG call per step)."""

    def __init__(self, unet):
        self.seen: list[int] = []
        self.handle = unet.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self.seen.append(int(torch.as_tensor(t).reshape(-1)[0]))

    def remove(self):
        self.handle.remove()


@pytest.mark.parametrize("t_enc", [0, 1, 2, 5, 8, 9])
def test_partial_sampler_stops_where_compvis_till_T_breaks(pipe, t_enc):
    """Small t_enc: many steps (z almost clean); large t_enc: few steps (z almost noise)."""
    cond, uncond = encode_prompts(pipe, [NUDE]), encode_prompts(pipe, [""])
    rec = UNetTimesteps(pipe.unet)
    try:
        z = partial_sample(pipe, pipe.unet, cond, uncond, steps=STEPS, till_t=t_enc,
                           guidance=3.0, resolution=RES,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    finally:
        rec.remove()
    want = compvis_till_t(STEPS, t_enc)
    assert rec.seen == want  # the same grid, the same order, the same stop
    assert len(rec.seen) == (STEPS - t_enc + 1 if t_enc else STEPS)
    assert z.shape == (1, 4, RES // 2, RES // 2)


def test_esd_loss_timestep_sits_in_the_bucket_the_sampler_stopped_at(pipe, monkeypatch):
    """Every iteration: the sampler denoised down to DDIM index t_enc − 1 (the reference's
    loop), and the loss t lies in index t_enc's bucket, the one just above the last step
    taken, so z's noise level and t agree to within two DDIM steps; small and large t_enc
    both occur."""
    sampled: list[list[int]] = []
    real_sample = esd_mod.partial_sample

    def recording_sample(pipe_, unet, *args, **kwargs):
        rec = UNetTimesteps(unet)
        try:
            return real_sample(pipe_, unet, *args, **kwargs)
        finally:
            rec.remove()
            sampled.append(rec.seen)

    loss_t: list[int] = []
    real_target = esd_mod.esd_target

    def recording_target(frozen, z, t, *args):
        loss_t.append(int(t[0]))
        return real_target(frozen, z, t, *args)

    monkeypatch.setattr(esd_mod, "partial_sample", recording_sample)
    monkeypatch.setattr(esd_mod, "esd_target", recording_target)
    seed, iterations = 3, 8
    cfg = ESDConfig(concept=NUDE, iterations=iterations, ddim_steps=STEPS, resolution=RES,
                    seed=seed, quiet=True)  # fmt: skip
    unlearn_esd(pipe, cfg)
    # replay the run's draws: t_enc, the sampler's start latent, then t
    g = torch.Generator().manual_seed(seed)
    t_encs = []
    for k in range(iterations):
        t_enc = int(torch.randint(0, STEPS, (1,), generator=g))
        torch.randn((1, 4, RES // 2, RES // 2), generator=g)
        lo, hi = round(1000 * t_enc / STEPS), round(1000 * (t_enc + 1) / STEPS)
        assert int(torch.randint(lo, hi, (1,), generator=g)) == loss_t[k]
        assert sampled[k] == compvis_till_t(STEPS, t_enc), k
        assert lo <= loss_t[k] < hi
        if t_enc:  # the last step taken is index t_enc − 1, one bucket below t
            assert lo - 1000 // STEPS <= sampled[k][-1] < lo
        t_encs.append(t_enc)
    assert min(t_encs) <= 2 and max(t_encs) >= STEPS - 2  # both ends were exercised


def test_cli_resolution_flag_sizes_esd_partial_sampling(tmp_path, capsys, monkeypatch):
    """`salun sd unlearn --method esd --resolution 16` (what `salun sd tiny` tells users to
    pass) samples 16-pixel images (8×8 latents), records 16, and a second resolution for
    the method alone is one clear error before anything is written."""
    from salun.cli import main

    tiny = tmp_path / "tiny"
    assert main(["sd", "tiny", "--out", str(tiny), "--words", "nude"]) == 0
    shapes = []
    real_target = esd_mod.esd_target

    def recording_target(frozen, z, *args):
        shapes.append(tuple(z.shape))
        return real_target(frozen, z, *args)

    monkeypatch.setattr(esd_mod, "esd_target", recording_target)
    capsys.readouterr()
    base = ["sd", "unlearn", "--model", str(tiny), "--device", "cpu", "--quiet",
            "--method", "esd", "--concept", NUDE, "--ddim-steps", "2"]  # fmt: skip
    out = tmp_path / "unet"
    assert main([*base, "--resolution", "16", "--set", "max_steps=1", "--out", str(out)]) == 0
    assert shapes == [(1, 4, 8, 8)]
    assert json.loads(capsys.readouterr().out)["config"]["resolution"] == 16
    assert json.loads((out / "salun_unet.json").read_text())["config"]["resolution"] == 16

    clash = tmp_path / "clash"
    argv = [*base, "--resolution", "16", "--set", "resolution=32", "--out", str(clash)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "two resolutions" in err and "16" in err, err
    assert not clash.exists()
