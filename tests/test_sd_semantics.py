"""Stable Diffusion unlearning semantics pinned against oracles on the tiny offline pipeline.

Each test replays the same random draws with plain torch and recomputes, from the documented
formula, the loss a method hands its optimizer (or the saliency it computes), so that a
flipped sign, an ignored weight, a wrong prompt or different noise in one branch fails.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

# the `pipe` and `sets` fixtures: tests/sd_fixtures.py (a plugin of tests/conftest.py)
from salun.generation.sd import esd as esd_mod  # noqa: E402
from salun.generation.sd.data import FMN_TRANSFORM  # noqa: E402
from salun.generation.sd.esd import ESDConfig, unlearn_esd  # noqa: E402
from salun.generation.sd.fmn import FMNConfig, unlearn_fmn  # noqa: E402
from salun.generation.sd.losses import predict  # noqa: E402
from salun.generation.sd.mask import sd_saliency  # noqa: E402
from salun.generation.sd.methods import (  # noqa: E402
    GASDConfig,
    SalUnSDConfig,
    unlearn_ga,
    unlearn_salun,
)
from salun.generation.sd.pipeline import encode_prompts, tokenize  # noqa: E402
from salun.generation.sd.train import SDTrainer  # noqa: E402
from sd_fixtures import CLOTHED, NUDE, RES  # noqa: E402


@pytest.fixture
def losses(monkeypatch):
    """Every loss value a method hands :meth:`SDTrainer.step`, in order."""
    seen: list[float] = []
    real = SDTrainer.step

    def spy(self, loss):
        seen.append(float(loss.detach()))
        return real(self, loss)

    monkeypatch.setattr(SDTrainer, "step", spy)
    return seen


def latents(pipe, images, g):
    with torch.no_grad():
        z = pipe.vae.encode(images).latent_dist.sample(generator=g)
    return z.float() * pipe.vae.config.scaling_factor


def noise(pipe, z0, g):
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (z0.shape[0],), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    return pipe.scheduler.add_noise(z0, eps, t), eps, t


def first_batches(forget, retain, bs, seed):
    fb = next(iter(forget.batches(bs)))
    rb = next(retain.cycle(bs, seed=seed)) if retain is not None else None
    return fb, rb


def retain_term(pipe, unet, rb, g):
    z0 = latents(pipe, rb["images"], g)
    zt, eps, t = noise(pipe, z0, g)
    return F.mse_loss(predict(unet, zt, t, encode_prompts(pipe, rb["prompts"])), eps)


@pytest.mark.parametrize("alpha", [0.3, 2.0])
def test_salun_loss_is_forget_to_replacement_at_the_same_zt_plus_alpha_retain(
    pipe, sets, losses, alpha
):
    forget, retain = sets
    cfg = SalUnSDConfig(alpha=alpha, batch_size=2, max_steps=1, seed=5, quiet=True)
    unlearn_salun(pipe, forget, retain, cfg)
    unet = copy.deepcopy(pipe.unet)
    g = torch.Generator().manual_seed(5)
    fb, rb = first_batches(forget, retain, 2, 5)
    assert fb["replacements"] == [CLOTHED, CLOTHED]
    with torch.no_grad():
        z0 = latents(pipe, fb["images"], g)
        zt, _, t = noise(pipe, z0, g)  # ONE z_t for both branches
        out = predict(unet, zt, t, encode_prompts(pipe, [NUDE, NUDE]))
        target = predict(unet, zt, t, encode_prompts(pipe, [CLOTHED, CLOTHED]))
        want = F.mse_loss(out, target) + alpha * retain_term(pipe, unet, rb, g)
    assert losses[0] == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ga_ascends_the_ldm_loss_and_weights_the_retain_term(pipe, sets, losses, reduction):
    forget, retain = sets
    cfg = GASDConfig(alpha=0.7, batch_size=2, max_steps=1, seed=6, ga_reduction=reduction,
                     quiet=True)  # fmt: skip
    unlearn_ga(pipe, forget, retain, cfg)
    unet = copy.deepcopy(pipe.unet)
    g = torch.Generator().manual_seed(6)
    fb, rb = first_batches(forget, retain, 2, 6)
    with torch.no_grad():
        z0 = latents(pipe, fb["images"], g)
        zt, eps, t = noise(pipe, z0, g)
        err = (predict(unet, zt, t, encode_prompts(pipe, fb["prompts"])) - eps).square()
        ldm = err.flatten(1).sum(1).mean() if reduction == "sum" else err.mean()
        want = -ldm + 0.7 * retain_term(pipe, unet, rb, g)
    assert losses[0] == pytest.approx(float(want), rel=1e-5)


def test_ga_defaults_are_the_reference_script():
    cfg = GASDConfig()
    assert (cfg.alpha, cfg.epochs, cfg.lr, cfg.batch_size, cfg.ga_reduction) == (
        0.1, 10, 1e-5, 8, "mean")  # fmt: skip


def test_sd_saliency_uses_the_cfg_combined_prediction(pipe, sets):
    forget, _ = sets
    w = 7.5
    scores = sd_saliency(pipe, forget, guidance=w, batch_size=2, seed=3, quiet=True)
    unet = copy.deepcopy(pipe.unet).eval()
    names = [n for n, _ in unet.named_parameters()]
    params = list(unet.parameters())
    acc = [torch.zeros_like(p) for p in params]
    g = torch.Generator().manual_seed(3)
    uncond = encode_prompts(pipe, [""])
    for batch in forget.batches(2):  # one unshuffled pass
        z0 = latents(pipe, batch["images"], g)
        zt, eps, t = noise(pipe, z0, g)
        cond = encode_prompts(pipe, batch["prompts"])
        pred = (1 + w) * predict(unet, zt, t, cond) - w * predict(
            unet, zt, t, uncond.expand(len(batch["prompts"]), -1, -1)
        )
        grads = torch.autograd.grad(-F.mse_loss(pred, eps), params)
        acc = [a + gr for a, gr in zip(acc, grads)]
    for n, a in zip(names, acc):
        assert torch.allclose(scores[n], a.abs(), rtol=1e-4, atol=1e-9), n


def test_esd_loss_targets_negative_guidance_and_maps_t_into_the_ddim_bucket(
    pipe, losses, monkeypatch
):
    seen = []
    real_target = esd_mod.esd_target

    def spy(frozen, z, t, cond, uncond, eta):
        seen.append((z.clone(), t.clone()))
        return real_target(frozen, z, t, cond, uncond, eta)

    monkeypatch.setattr(esd_mod, "esd_target", spy)
    eta, steps = 2.0, 10
    cfg = ESDConfig(concept=NUDE, iterations=4, ddim_steps=steps, resolution=RES,
                    negative_guidance=eta, seed=8, quiet=True)  # fmt: skip
    unlearn_esd(pipe, cfg)
    # the first step's loss, from the original weights
    unet = copy.deepcopy(pipe.unet)
    cond, uncond = encode_prompts(pipe, [NUDE]), encode_prompts(pipe, [""])
    z, t = seen[0]
    with torch.no_grad():
        e_c, e_0 = predict(unet, z, t, cond), predict(unet, z, t, uncond)
        want = F.mse_loss(e_c, e_0 - eta * (e_c - e_0))
    assert losses[0] == pytest.approx(float(want), rel=1e-5)
    # t: replay the draws: t_enc, the sampler's start latent, then t inside t_enc's bucket
    g = torch.Generator().manual_seed(8)
    for _, t in seen:
        t_enc = int(torch.randint(0, steps, (1,), generator=g))
        torch.randn((1, 4, RES // 2, RES // 2), generator=g)
        lo, hi = round(t_enc / steps * 1000), round((t_enc + 1) / steps * 1000)
        assert int(t[0]) == int(torch.randint(lo, hi, (1,), generator=g))
    assert len({int(t[0]) for _, t in seen}) > 1


def attention_l2_oracle(pipe, unet, images, prompts, concept, g, use_pooler):
    """FMN's official loss computed independently: forward hooks capture each attn2
    layer's inputs, attention probabilities are recomputed by hand."""
    captured = []
    hooks = [
        m.register_forward_hook(
            lambda mod, args, kwargs, out: captured.append((mod, args, kwargs)), with_kwargs=True
        )  # fmt: skip
        for n, m in unet.named_modules()
        if n.endswith("attn2")
    ]
    z0 = latents(pipe, images, g)
    zt, _, t = noise(pipe, z0, g)
    ctx = encode_prompts(pipe, prompts)
    try:
        with torch.no_grad():
            predict(unet, zt, t, ctx)
    finally:
        for h in hooks:
            h.remove()
    ids = tokenize(pipe, prompts)
    want = pipe.tokenizer(concept, add_special_tokens=False).input_ids
    sel = torch.zeros(ids.shape, dtype=torch.bool)
    for i, row in enumerate(ids.tolist()):
        for s in range(len(row) - len(want) + 1):
            if row[s : s + len(want)] == want:
                sel[i, s : s + len(want)] = True
    if use_pooler:  # the pooled column: the first end-of-text token, not the padding
        eot = pipe.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        for i, row in enumerate(ids.tolist()):
            sel[i, row.index(eot)] = True
    total = torch.zeros(())
    for mod, args, kwargs in captured:  # (no_grad: the oracle needs values only)
        h = args[0]
        c = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        b, q_len, _ = h.shape
        heads = mod.heads
        with torch.no_grad():
            q = mod.to_q(h).view(b, q_len, heads, -1).transpose(1, 2)
            k = mod.to_k(c).view(b, c.shape[1], heads, -1).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * mod.scale, dim=-1)  # b, heads, q, L
        total = total + probs.square()[sel[:, None, None, :].expand_as(probs)].sum()
    assert captured
    return total.sqrt()


@pytest.mark.parametrize("use_pooler", [True, False])
def test_fmn_minimises_the_official_attention_l2_norm(pipe, sets, losses, use_pooler):
    forget, _ = sets
    cfg = FMNConfig(
        concept="nude", steps=1, use_pooler=use_pooler, seed=4, use_ti=False, quiet=True
    )
    unlearn_fmn(pipe, forget, cfg)
    # FMN's stream (shuffled, random crops: tests/test_sd_fmn_reference.py pins it)
    batch = next(forget.cycle(1, shuffle=True, seed=4, transform=FMN_TRANSFORM))
    g = torch.Generator().manual_seed(4)
    want = attention_l2_oracle(
        pipe, copy.deepcopy(pipe.unet), batch["images"], batch["prompts"], "nude", g, use_pooler
    )
    assert losses[0] == pytest.approx(float(want), rel=1e-4)  # +norm, minimised


def test_fmn_defaults_are_the_official_attn_yaml():
    cfg = FMNConfig(concept="x")
    assert (cfg.loss, cfg.params, cfg.optimizer, cfg.lr, cfg.weight_decay) == (
        "attn_l2", "full", "adamw", 2e-6, 0.01)  # fmt: skip
    # grad_clip None: the reference's max_grad_norm 1 clips nothing (test_sd_fmn_reference.py)
    assert (cfg.grad_clip, cfg.steps, cfg.batch_size, cfg.use_pooler) == (None, 35, 1, True)
    assert cfg.use_ti is True  # the textual-inversion stage first (tests/test_sd_fmn_ti.py)


def test_cli_tiny_then_every_sd_verb_with_a_recipe(tmp_path, capsys):
    """`salun sd tiny` builds a pipeline offline; mask, unlearn (salun, esd, fmn),
    generate --config and evaluate --config all run on it through the real CLI."""
    import json

    import yaml
    from PIL import Image

    from salun.cli import main

    tiny = tmp_path / "tiny"
    assert main(["sd", "tiny", "--out", str(tiny), "--words", "nude"]) == 0
    assert (tiny / "model_index.json").is_file()
    assert main(["sd", "tiny", "--out", str(tiny)]) == 2  # exists: --overwrite needed
    assert main(["sd", "tiny", "--out", str(tiny), "--words", "nude", "--overwrite"]) == 0
    common = ["--model", str(tiny), "--device", "cpu", "--quiet", "--resolution", "16"]
    (tmp_path / "prompts.csv").write_text(f"prompt,evaluation_seed\n{NUDE},3\n{CLOTHED},4\n")
    recipe = {
        "model": str(tiny),
        "resolution": 16,
        "data": {"forget": str(tmp_path / "nsfw"), "replacement_prompt": CLOTHED},
        "mask": {"keep": 0.25, "batch_size": 2},
        "methods": {"fmn": {"concept": "nude", "steps": 1, "ti_steps": 1}},
        "sample": {
            "scheduler": "ddim",
            "steps": 2,
            "guidance": 3.0,
            "n_per_prompt": 2,
            "prompts": str(tmp_path / "prompts.csv"),
        },  # fmt: skip
        "evaluate": {"nudenet_threshold": 0.4},
    }
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    nsfw = str(tmp_path / "nsfw")
    assert main(["sd", "generate", *common, "--prompt", NUDE, "--n-per-prompt", "4",
                 "--steps", "2", "--scheduler", "ddim", "--out", nsfw]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sd", "mask", "--config", str(cfg), "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "m.safetensors")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["keep"] == 0.25  # read from the recipe
    for method, extra in [
        ("salun", ["--mask", str(tmp_path / "m.safetensors"), "--set", "alpha=0"]),
        ("esd", ["--set", f"concept={NUDE}", "--set", "ddim_steps=2"]),
        ("fmn", []),
    ]:
        assert main(["sd", "unlearn", "--config", str(cfg), "--quiet", "--device", "cpu",
                     "--method", method, *extra, "--set", "max_steps=1",
                     "--out", str(tmp_path / f"unet-{method}")]) == 0, method  # fmt: skip
        out = json.loads(capsys.readouterr().out)
        assert out["steps"] == 1 and out["method"] == method
    assert out["config"]["concept"] == "nude" and out["config"]["loss"] == "attn_l2"
    unet = str(tmp_path / "unet-fmn")
    assert main(["sd", "generate", "--config", str(cfg), "--quiet", "--device", "cpu",
                 "--unet", unet, "--out", str(tmp_path / "gen")]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 4 and out["scheduler"] == "ddim"  # 2 prompts x 2, from sample:
    assert (out["config"]["steps"], out["config"]["guidance"]) == (2, 3.0)
    with Image.open(sorted((tmp_path / "gen").glob("*.png"))[0]) as im:
        assert im.size == (16, 16)
    assert main(["sd", "evaluate", "nudity", "--config", str(cfg), "--images",
                 str(tmp_path / "gen"), "--json-out", str(tmp_path / "nud.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "nud.json").read_text())["threshold"] == 0.4
