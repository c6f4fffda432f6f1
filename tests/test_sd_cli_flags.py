"""`salun sd` flags generated from the config dataclasses (salun.config_cli).

The heavy steps (loading a pipeline, training, sampling, saving) are replaced by recorders:
these tests check which values the command line hands to the config, not the training.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("diffusers")

from salun.cli import main  # noqa: E402
from salun.config_cli import field_docs  # noqa: E402
from salun.generation.sd import cli as sd_cli  # noqa: E402
from salun.generation.sd.esd import ESDConfig  # noqa: E402


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_unlearn_help_lists_the_methods_config_fields(capsys):
    assert main(["sd", "unlearn", "--method", "esd", "--help"]) == 0
    out = _flat(capsys.readouterr().out)
    assert "--out" in out and "--set" in out  # the verb's own flags come first
    docs = field_docs(ESDConfig)
    own = set(sd_cli.UNLEARN_OWN_FIELDS)
    listed = [f.name for f in fields(ESDConfig) if f.name not in own]
    assert {"negative_guidance", "start_guidance", "ddim_steps", "concept", "lr"} <= set(listed)
    for name in listed:
        flag = "--" + name.replace("_", "-")
        assert flag in out, flag
        # the docstring's help text, with RST ``literal`` shown as `literal` (config_cli)
        assert _flat(re.sub(r"``([^`]+)``", r"`\1`", docs[name])) in out, name
    assert "η of the target (reference: 1). (default: 1.0)" in out


@pytest.fixture
def recorded(monkeypatch):
    """Run `salun sd unlearn` up to the training call and return the config it got."""
    import salun.generation.sd.pipeline as pipeline
    import salun.generation.sd.unlearn as unlearn

    seen = {}

    def fake_run(pipe, method, cfg, **kw):
        seen["method"], seen["cfg"] = method, cfg
        return pipe.unet, [0.25]

    monkeypatch.setattr(sd_cli, "_pipe", lambda args, **kw: SimpleNamespace(unet="unet"))
    monkeypatch.setattr(unlearn, "run_unlearning", fake_run)
    monkeypatch.setattr(pipeline, "save_unet", lambda *a, **kw: None)
    return seen


def test_generated_flag_reaches_the_esd_config(recorded, tmp_path, capsys):
    argv = ["sd", "unlearn", "--model", "m", "--method", "esd", "--out", str(tmp_path / "u"),
            "--concept", "nudity", "--negative-guidance", "2.0", "--ddim-steps", "7",
            "--params", "noxattn", "--seed", "5"]  # fmt: skip
    assert main(argv) == 0
    cfg = recorded["cfg"]
    assert isinstance(cfg, ESDConfig) and recorded["method"] == "esd"
    assert cfg.negative_guidance == 2.0 and isinstance(cfg.negative_guidance, float)
    assert (cfg.ddim_steps, cfg.params, cfg.concept, cfg.seed) == (7, "noxattn", "nudity", 5)
    assert cfg.start_guidance == 3.0  # untouched fields keep the class default
    assert json.loads(capsys.readouterr().out)["config"]["negative_guidance"] == 2.0


def test_flag_beats_set_beats_recipe(recorded, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": "m", "method": "esd",
        "methods": {"esd": {"concept": "from recipe", "negative_guidance": 4.0, "lr": 3e-5,
                            "iterations": 9}},
    }))  # fmt: skip
    argv = ["sd", "unlearn", "--config", str(recipe), "--out", str(tmp_path / "u"),
            "--set", "negative_guidance=5", "--set", "lr=0.00002",
            "--negative-guidance", "2.5"]  # fmt: skip
    assert main(argv) == 0
    cfg = recorded["cfg"]  # the method came from the recipe, and so did its flag parser
    assert cfg.negative_guidance == 2.5  # flag over --set over recipe
    assert cfg.lr == 0.00002  # --set over recipe (kept for compatibility)
    assert (cfg.iterations, cfg.concept) == (9, "from recipe")


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--alpha", "1"], r"unrecognized arguments: --alpha"),  # SalUn's field, not ESD's
        (["--negative-guidance", "abc"], r"--negative-guidance.*abc"),
        (["--frozen-dtype", "float8"], r"frozen.dtype.*float8"),
    ],
)
def test_bad_generated_flags_are_one_line_errors(recorded, tmp_path, capsys, extra, pattern):
    out = tmp_path / "u"
    argv = ["sd", "unlearn", "--model", "m", "--method", "esd", "--concept", "x",
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err
    assert "cfg" not in recorded and not out.exists()


@pytest.mark.parametrize(
    ("recipe_res", "argv_res", "set_res", "want"),
    [
        (None, None, None, 512),  # ESD's own default (SD v1)
        (None, "16", None, 16),  # --resolution sizes ESD's sampling too
        (16, None, None, 16),  # so does the recipe's top-level resolution:
        (16, None, 16, 16),  # the same value twice is no conflict
        (None, None, 24, 24),  # --set alone still works
    ],
)
def test_one_resolution_per_run(recorded, tmp_path, recipe_res, argv_res, set_res, want):
    recipe = tmp_path / "r.yaml"
    body = {"model": "m", "method": "esd", "methods": {"esd": {"concept": "x"}}}
    if recipe_res is not None:
        body["resolution"] = recipe_res
    recipe.write_text(yaml.safe_dump(body))
    argv = ["sd", "unlearn", "--config", str(recipe), "--out", str(tmp_path / "u")]
    argv += ["--resolution", argv_res] if argv_res else []
    argv += ["--set", f"resolution={set_res}"] if set_res else []
    assert main(argv) == 0
    assert recorded["cfg"].resolution == want


def test_two_resolutions_for_one_run_are_one_error(recorded, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(
        {"model": "m", "resolution": 16, "methods": {"esd": {"concept": "x", "resolution": 32}}}
    ))  # fmt: skip
    out = tmp_path / "u"
    argv = ["sd", "unlearn", "--config", str(recipe), "--method", "esd", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"two resolutions.*16.*32", err), err
    assert "cfg" not in recorded and not out.exists()


def test_missing_out_is_reported(recorded, capsys):
    assert main(["sd", "unlearn", "--model", "m", "--method", "esd", "--concept", "x"]) == 2
    assert "--out" in capsys.readouterr().err


def test_generate_sample_flags_come_from_sample_config(monkeypatch, tmp_path, capsys):
    import salun.generation.sd.generate as generate

    seen = {}

    def fake_generate(pipe, items, cfg, quiet=False):
        seen["cfg"] = cfg
        return [], []

    monkeypatch.setattr(sd_cli, "_pipe", lambda args, **kw: seen.setdefault("pipe_kw", kw))
    monkeypatch.setattr(generate, "generate", fake_generate)
    monkeypatch.setattr(generate, "save_folder", lambda path, images, meta: path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"sample": {"steps": 9, "batch_size": 4, "guidance": 6}}))
    argv = ["sd", "generate", "--model", "m", "--config", str(recipe), "--prompt", "a cat",
            "--steps", "3", "--n-per-prompt", "2", "--resolution", "16",
            "--out", str(tmp_path / "g")]  # fmt: skip
    assert main(argv) == 0
    cfg = seen["cfg"]
    # flags over the recipe's sample: section over SampleConfig's defaults
    assert (cfg.steps, cfg.n_per_prompt, cfg.batch_size, cfg.guidance) == (3, 2, 4, 6.0)
    assert isinstance(cfg.guidance, float) and cfg.resolution == 16
    assert seen["pipe_kw"]["scheduler"] == "lms"
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse's own --help exits
        main(["sd", "generate", "--help"])
    help_text = _flat(capsys.readouterr().out)
    assert "SampleConfig settings" in help_text and "denoising steps (100)" in help_text
    assert "--use-prompt-guidance" in help_text and "--scheduler" in help_text


def test_set_reads_exponent_numbers_as_numbers():
    from salun.generation.sd.cli import _parse_value

    assert _parse_value("2e-5") == 2e-5 and isinstance(_parse_value("2e-5"), float)
    assert _parse_value("0.5") == 0.5 and _parse_value("3") == 3
    assert _parse_value("nudity") == "nudity" and _parse_value("nan") == "nan"
