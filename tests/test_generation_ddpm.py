"""The class-conditional DDPM path on a tiny UNet (8×8 images, 3 classes, CPU, seconds)."""

import json
import shlex
import subprocess
import sys

import diffusers  # noqa: F401  (CI installs the [diffusion] extra; fail loudly if missing)
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ddpm_fixtures import K, class_templates, tiny_denoiser
from salun.cli import main
from salun.errors import ArtifactError, SalunError
from salun.generation.ddpm.checkpoint import resume_train_state, save_checkpoint
from salun.generation.ddpm.diffusion import NoiseSchedule, antithetic_timesteps, to_model_range
from salun.generation.ddpm.esd import esd_target
from salun.generation.ddpm.mask import DDPMMaskConfig, ddpm_saliency, ddpm_saliency_mask
from salun.generation.ddpm.metrics import frechet_distance, unlearning_accuracy
from salun.generation.ddpm.model import (
    build_denoiser,
    load_denoiser,
    save_denoiser,
)
from salun.generation.ddpm.sampler import SamplerConfig, sample
from salun.generation.ddpm.train import DDPMTrainConfig, train_ddpm
from salun.generation.ddpm.unlearn import (
    GenUnlearnConfig,
    other_class,
    resolve_alpha,
    rl_forget_loss,
    unlearn_ddpm,
)
from salun.generation.grids import save_class_grid

TINY = tiny_denoiser(dropout=0.1)


@pytest.fixture(scope="module")
def data():
    return class_templates(48, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    model = build_denoiser(TINY, seed=0)
    train_ddpm(model, data[0], DDPMTrainConfig(steps=4, batch_size=16), quiet=True)
    return model


def test_masked_weights_stay_bit_identical_under_adam(trained, data):
    _, forget, retain = data
    mask = ddpm_saliency_mask(trained, forget, DDPMMaskConfig(batch_size=8))
    cfg = GenUnlearnConfig(method="salun", iterations=3, batch_size=8, lr=1e-2)
    res = unlearn_ddpm(trained, forget, retain, cfg, mask=mask, quiet=True)
    before = dict(trained.named_parameters())
    moved = 0
    for name, p in res.model.named_parameters():
        m = mask[name]
        assert torch.equal(p.detach()[~m], before[name].detach()[~m]), name
        moved += int((p.detach()[m] != before[name].detach()[m]).sum())
    assert moved > 0, "salient weights should move"
    # the input model is never changed
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), before.values()))


def test_salun_requires_a_mask(trained, data):
    _, forget, retain = data
    with pytest.raises(SalunError, match="mask"):
        unlearn_ddpm(trained, forget, retain, GenUnlearnConfig(iterations=1), quiet=True)


def test_pseudo_target_branch_gets_no_gradient(trained, data):
    _, forget, _ = data
    x0 = to_model_range(forget.images[:4].float() / 255)
    c = forget.labels[:4]
    calls = []
    handle = trained.register_forward_hook(
        lambda mod, inp, out: calls.append((torch.is_grad_enabled(), out.requires_grad))
    )
    try:
        trained.train()
        loss = rl_forget_loss(
            trained, NoiseSchedule(), x0, c, GenUnlearnConfig(), torch.Generator().manual_seed(0)
        )
    finally:
        handle.remove()
        trained.eval()
    # first call: the trained output (the reference's order); second: the stop-gradient
    # target (no graph)
    assert calls == [(True, True), (False, False)]
    loss.backward()
    assert trained.unet.class_embedding.weight.grad is not None
    trained.zero_grad(set_to_none=True)


def test_other_class_never_equals_the_forget_class():
    c = torch.tensor([0, 1, 2] * 50)
    assert torch.equal(other_class(c, K, "next", torch.Generator()), (c + 1) % K)
    r = other_class(c, K, "random", torch.Generator().manual_seed(0))
    assert bool((r != c).all()) and set(r.tolist()) == {0, 1, 2}


def test_esd_target_is_computed_without_gradient(trained, data):
    _, forget, retain = data
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([1, 10, 100, 999])
    target = esd_target(trained, x, t, torch.zeros(4, dtype=torch.long), eta=1.0)
    assert not target.requires_grad and target.grad_fn is None
    res = unlearn_ddpm(
        trained,
        forget,
        retain,
        GenUnlearnConfig(method="esd", iterations=2, batch_size=8),
        quiet=True,
    )
    assert res.alpha == 0.0
    assert all(p.grad is None for p in trained.parameters())


def test_mask_covers_class_and_time_embeddings(trained, data):
    _, forget, _ = data
    cfg = DDPMMaskConfig(batch_size=8)
    scores = ddpm_saliency(trained, forget, cfg)
    emb = scores["unet.class_embedding.weight"]
    assert emb.shape[0] == K + 1  # K classes + the learned null class
    assert emb[0].sum() > 0 and emb[K].sum() > 0  # forget row and null row (CFG branch)
    mask = ddpm_saliency_mask(trained, forget, cfg)
    assert set(mask) == {n for n, _ in trained.named_parameters()}
    for name in ("unet.class_embedding.weight", "unet.time_embedding.linear_1.weight"):
        assert bool(mask[name].any()), name
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == total // 2


def test_alpha_scaling_matches_the_reference():
    assert resolve_alpha(GenUnlearnConfig(), 784) == pytest.approx(0.784)
    assert resolve_alpha(GenUnlearnConfig(retain_reduction="sum"), 784) == pytest.approx(1e-3)
    assert resolve_alpha(GenUnlearnConfig(method="esd"), 784) == 0.0
    assert resolve_alpha(GenUnlearnConfig(alpha=0.5), 784) == 0.5


def test_ga_and_rl_run(trained, data):
    _, forget, retain = data
    for method in ("ga", "rl"):
        cfg = GenUnlearnConfig(method=method, iterations=2, batch_size=8, target_class="random")
        res = unlearn_ddpm(trained, forget, retain, cfg, quiet=True)
        assert res.history and np.isfinite(res.history[-1]["forget_loss"])
    assert res.history[-1]["forget_loss"] >= 0


def test_antithetic_timesteps_mirror():
    t = antithetic_timesteps(9, 1000, torch.Generator().manual_seed(0))
    assert len(t) == 9 and torch.equal(t[5:], 999 - t[:4])


def test_sampler_is_deterministic_under_a_seed(trained):
    cfg = SamplerConfig(steps=4, eta=1.0, seed=7)
    a = sample(trained, [0, 1, 2, 0], cfg, quiet=True)
    b = sample(trained, [0, 1, 2, 0], cfg, quiet=True)
    c = sample(trained, [0, 1, 2, 0], SamplerConfig(steps=4, eta=1.0, seed=8), quiet=True)
    assert a.dtype == torch.uint8 and a.shape == (4, 1, 8, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(SalunError):
        sample(trained, [K + 1], cfg, quiet=True)


def test_checkpoint_round_trip_and_strict_loading(trained, tmp_path):
    save_denoiser(tmp_path / "m", trained, {"note": "x"}, ema=trained)
    loaded, meta = load_denoiser(tmp_path / "m")
    x, t, c = torch.randn(2, 1, 8, 8), torch.tensor([5, 500]), torch.tensor([0, K])
    trained.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, c), trained(x, t, c))
    assert meta["note"] == "x" and load_denoiser(tmp_path / "m", weights="ema")[0] is not None
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    state.pop("unet.class_embedding.weight")
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ArtifactError, match="model.safetensors is corrupted: its sha256"):
        load_denoiser(tmp_path / "m")
    meta_file = tmp_path / "m" / "model.json"  # as a folder of an older version: no sha256
    meta_file.write_text(meta_file.read_text().replace('"file_sha256"', '"no_sha256"'))
    with pytest.raises(ArtifactError, match="missing keys.*class_embedding"):
        load_denoiser(tmp_path / "m")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_denoiser(tmp_path / "nowhere")


def test_training_resumes_from_a_checkpoint(data, tmp_path):
    cfg = DDPMTrainConfig(steps=4, batch_size=16)
    model = build_denoiser(TINY, seed=0)
    saved = []
    train_ddpm(
        model,
        data[0],
        DDPMTrainConfig(steps=2, batch_size=16),
        checkpoint=lambda s: saved.append(save_checkpoint(tmp_path / "c", s, {}, complete=False)),
        quiet=True,
    )
    state = resume_train_state(tmp_path / "c", cfg)
    assert state.step == 2 and state.optimizer.state
    state = train_ddpm(state.model, data[0], cfg, state=state, quiet=True)
    assert state.step == 4


def test_resume_of_a_folder_without_training_state_never_retrains_over_it(tmp_path):
    """A finished model shared without its optimiser state (the committed Original of
    benchmarks/gen) is reused as is by --resume; an unfinished one is refused, untouched.
    Starting over would overwrite weights that took hours."""

    def run(cmd: str) -> int:
        return main(shlex.split(cmd))

    data = "--data synthetic:64 --batch-size 16"
    tiny = "--block-out-channels 8 16 --attention-levels --norm-num-groups 4"
    d = tmp_path / "orig"
    assert run(f"gen train {data} {tiny} --steps 2 --out {d} --quiet") == 0
    (d / "train_state.safetensors").unlink()
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    assert run(f"gen train {data} {tiny} --steps 2 --resume --out {d} --quiet") == 0
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # skipped: nothing rewritten
    assert run(f"gen train {data} {tiny} --steps 3 --resume --out {d} --quiet") == 2
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_metrics_on_known_values():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8], [0.6, 0.4, 0.0]])
    assert unlearning_accuracy(probs, 0)["ua"] == pytest.approx(50.0)
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, size=(4000, 1))
    b = rng.normal(2, 3, size=(4000, 1))
    # 1-D closed form: (μa−μb)² + (σa−σb)²
    expect = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expect, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_class_grid_png(tmp_path):
    imgs = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    path = save_class_grid(
        tmp_path / "g.png", imgs, torch.tensor([0, 0, 1, 1, 2, 2]), n_per_class=2
    )
    with Image.open(path) as im:
        assert im.size[1] == 3 * (8 * 2 + 2) + 2


def test_gen_cli_end_to_end(tmp_path, capsys):
    d = tmp_path

    def run(cmd: str) -> int:
        return main(shlex.split(cmd))

    data = "--data synthetic:64 --batch-size 16"
    tiny = "--block-out-channels 8 16 --attention-levels --norm-num-groups 4"
    common = f"--model {d}/orig --forget-class 1 --quiet"
    assert run(f"train --data synthetic:64 --arch mlp --epochs 1 --out {d}/clf --quiet") == 0
    assert run(f"gen train {data} {tiny} --steps 2 --out {d}/orig --quiet") == 0
    # training further resumes from the saved state (Adam moments, RNG, step)
    assert run(f"gen train {data} --steps 3 --resume --out {d}/orig --quiet") == 0
    assert json.loads((d / "orig" / "model.json").read_text())["steps_done"] == 3
    assert run(f"gen mask {common} --batch-size 16 --out {d}/m.st") == 0
    salun = f"--method salun --mask {d}/m.st --iterations 2 --batch-size 8"
    assert run(f"gen unlearn {common} {salun} --out {d}/salun") == 0
    meta = json.loads((d / "salun" / "model.json").read_text())
    assert meta["method"] == "salun" and meta["alpha_used"] == pytest.approx(0.064)  # 1e-3·64 px
    assert run(f"gen unlearn {common} --method retrain --out {d}/re") == 0
    assert json.loads((d / "re" / "model.json").read_text())["excluded_class"] == 1
    assert run(f"gen sample --model {d}/salun --steps 2 --n-per-class 2 --out {d}/s.png") == 0
    capsys.readouterr()
    ev = "--steps 2 --n-forget 4 --n-per-class 2 --n-ref-per-class 4"
    assert run(f"gen evaluate {common} --classifier {d}/clf {ev} --grid {d}/e.png --json") == 0
    record = json.loads(capsys.readouterr().out)
    assert 0 <= record["metrics"]["ua"] <= 100 and np.isfinite(record["metrics"]["feature_fd"])
    # user errors: one line, exit 2
    assert run(f"gen unlearn {common} --method salun --out {d}/x") == 2
    assert "salun gen mask" in capsys.readouterr().err
    assert run(f"gen unlearn {common} --method nope --out {d}/x") == 2
    assert run(f"gen mask {common} --forget-class 9 --out {d}/x.st") == 2
    # ESD records the reference behaviours it ran with; the pre-#24 name is refused
    esd = "--method esd --iterations 1 --batch-size 1 --esd-ddim-steps 4"
    assert run(f"gen unlearn {common} {esd} --out {d}/esd") == 0
    u = json.loads((d / "esd" / "model.json").read_text())["unlearn"]
    got = (u["esd_xt"], u["esd_update"], u["esd_frozen_mode"], u["esd_start_guidance"])
    assert got == ("reference", "reference", "train", 2.0)
    capsys.readouterr()
    assert run(f"gen unlearn {common} --method esd --esd-xt sample --out {d}/x") == 2
    err = capsys.readouterr().err
    assert "'ddim'" in err and len(err.strip().splitlines()) == 1 and not (d / "x").exists()


def test_generation_imports_without_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "import salun, salun.generation, salun.generation.ddpm.cli\n"
        "from salun.generation.ddpm.model import DenoiserConfig, build_denoiser\n"
        "from salun.errors import SalunError\n"
        "try:\n"
        "    build_denoiser(DenoiserConfig())\n"
        "except SalunError as e:\n"
        "    assert 'pip install salun[diffusion]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error without diffusers')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
