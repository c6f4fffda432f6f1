import json
import re
import subprocess
import sys

import pytest

from salun.cli import main


def test_help_works_without_torchvision():
    code = (
        "import sys, salun.cli; salun.cli.build_parser();"
        "assert 'torchvision' not in sys.modules, 'torchvision must not be imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "salun", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "unlearn" in out.stdout


def test_full_cli_flow_on_synthetic_data(tmp_path, capsys):
    d = tmp_path
    assert (
        main(
            [
                "split",
                "--data",
                "synthetic",
                "--scenario",
                "class",
                "--classes",
                "1",
                "--out",
                str(d / "split.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic",
                "--arch",
                "mlp",
                "--width",
                "0.1",
                "--epochs",
                "4",
                "--lr",
                "0.05",
                "--batch-size",
                "32",
                "--split",
                str(d / "split.json"),
                "--out",
                str(d / "orig"),
                "--quiet",
            ]
        )
        == 0
    )
    meta = json.loads((d / "orig" / "model.json").read_text())
    assert meta["train"]["epochs"] == 4 and meta["split_hash"]
    assert (
        main(
            [
                "mask",
                "--model",
                str(d / "orig"),
                "--forget",
                str(d / "split.json"),
                "--keep",
                "0.5",
                "--keep",
                "0.2",
                "--out",
                str(d / "mask.safetensors"),
            ]
        )
        == 0
    )
    assert (d / "mask_keep0.2.safetensors").exists() and (d / "mask_keep0.5.safetensors").exists()
    capsys.readouterr()
    assert (
        main(
            [
                "unlearn",
                "--model",
                str(d / "orig"),
                "--forget",
                str(d / "split.json"),
                "--method",
                "ga",
                "--mask",
                str(d / "mask_keep0.5.safetensors"),
                "--epochs",
                "1",
                "--lr",
                "0.01",
                "--out",
                str(d / "ga"),
                "--quiet",
            ]
        )
        == 0
    )
    record = json.loads((d / "ga" / "model.json").read_text())
    assert record["method"] == "ga" and record["config"]["lr"] == 0.01
    assert record["mask"]["keep"] == 0.5 and record["rte_seconds"] > 0
    assert set(record["metrics"]) >= {"UA", "RA", "TA", "MIA"}
    assert (
        main(["evaluate", "--model", str(d / "ga"), "--forget", str(d / "split.json"), "--json"])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["UA"] == pytest.approx(record["metrics"]["UA"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [
                "split",
                "--data",
                "synthetic",
                "--scenario",
                "random",
                "--fraction",
                "2",
                "--out",
                "x.json",
            ],
            "fraction",
        ),
        (
            [
                "split",
                "--data",
                "nope-data",
                "--scenario",
                "random",
                "--fraction",
                "0.1",
                "--out",
                "x.json",
            ],
            "unknown dataset",
        ),
        (["evaluate", "--model", "missing-dir", "--forget", "x.json"], "does not exist"),
        (["unlearn", "--method", "nonexistent"], "unknown method"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir()), "nothing half-written"


def test_missing_dataset_message_says_where_and_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("SALUN_DATA_DIR", str(tmp_path / "data"))
    assert (
        main(
            [
                "split",
                "--data",
                "mnist",
                "--scenario",
                "random",
                "--fraction",
                "0.1",
                "--out",
                str(tmp_path / "s.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(tmp_path / "data") in err and "train-images-idx3-ubyte" in err


def test_precision_flag_is_applied_and_recorded(tmp_path):
    import json

    from salun.cli import main
    from salun.precision import current_policy, set_policy

    before = current_policy()
    try:
        out = tmp_path / "m"
        argv = ["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "1", "--quiet",
                "--precision", "bf16", "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
        meta = json.loads((out / "model.json").read_text())
        assert meta["device_policy"]["precision"] == "bf16"
    finally:
        set_policy(before)


def test_mask_augment_flag_is_recorded_and_keep_zero_refused(tmp_path, capsys):
    from salun.cli import main
    from salun.saliency import load_mask

    model, split = tmp_path / "m", tmp_path / "s.json"
    assert main(["split", "--data", "synthetic", "--scenario", "random", "--fraction", "0.1",
                 "--out", str(split)]) == 0  # fmt: skip
    assert main(["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "1", "--quiet",
                 "--split", str(split), "--out", str(model)]) == 0  # fmt: skip
    for flag, want in (([], False), (["--augment"], True)):
        out = tmp_path / f"mask{want}.safetensors"
        assert main(["mask", "--model", str(model), "--forget", str(split), "--quiet", *flag,
                     "--out", str(out)]) == 0  # fmt: skip
        _, meta = load_mask(out)
        assert bool(meta["augment"]) is want
    capsys.readouterr()
    assert main(["mask", "--model", str(model), "--forget", str(split), "--keep", "0",
                 "--out", str(tmp_path / "k0.safetensors")]) == 2  # fmt: skip
    assert "--keep" in capsys.readouterr().err


# ---- a new user's first commands: version, one error prefix, suggestions, help texts ----


def test_version_prints_the_package_version(capsys):
    import salun

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"salun {salun.__version__}\n"


@pytest.mark.parametrize(
    "argv, wanted",
    [
        (["trian"], "did you mean train?"),
        (["train", "--data", "synthetic", "--epohcs", "3", "--out", "m"], "did you mean --epochs?"),
        (
            [
                "unlearn",
                "--method",
                "salun",
                "--model",
                "m",
                "--forget",
                "s",
                "--out",
                "o",
                "--lrr",
                "0.1",
            ],
            "did you mean --lr?",
        ),  # fmt: skip
        (["gen", "sampel"], "did you mean sample?"),
    ],
)
def test_a_typo_gets_one_prefix_and_the_closest_spelling(
    argv, wanted, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("salun: error: ")
    assert "salun: error: salun" not in err  # the parser's prog is not said twice
    assert wanted in err
    assert not list(tmp_path.iterdir())


def test_the_help_hint_names_the_verb_whose_flag_was_wrong(capsys):
    assert main(["train", "--data", "synthetic", "--zzzz", "1", "--out", "m"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --zzzz 1" in err and "(see `salun train --help`)" in err
    assert "did you mean" not in err  # nothing close: no guess


def test_methods_prints_each_default_step_the_same_way(capsys):
    from salun.methods import get_method, list_methods

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list_methods())
    for name, line in zip(list_methods(), lines):
        tail = line.rsplit("[", 1)[1]
        cfg = get_method(name).config()
        assert "None" not in tail and not tail.startswith("lr -"), line
        if name == "iu":
            assert tail == f"alpha {cfg.alpha:g}]"
        elif name == "retrain":
            assert tail == "lr: the original's]"
        elif hasattr(cfg, "lr"):
            assert tail == f"lr {cfg.lr:g}]", line


def _bench_presets_on_disk() -> list[str]:
    import yaml

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
    out = []
    for f in sorted(root.glob("*.yaml")):
        data = yaml.safe_load(f.read_text())
        if "scenarios" in data and "methods" in data:
            out.append(f.stem)
    return out


def test_bench_help_names_every_bench_preset_that_exists(capsys, tmp_path, monkeypatch):
    names = _bench_presets_on_disk()
    assert {"ci", "quick", "standard", "paper-cifar10", "audit-bench-cpu"} <= set(names)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in names:
        assert name in text, name
    assert "gen-quick" not in text and "sd-nudity" not in text  # other verbs' presets
    # generated, not written down: a new preset file appears in the help
    extra = tmp_path / "presets"
    extra.mkdir()
    (extra / "my-own.yaml").write_text("name: my-own\nscenarios: []\nmethods: []\n")
    monkeypatch.setenv("SALUN_CONFIGS", str(extra))
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "my-own" in capsys.readouterr().out


# Tags of the private specification the defaults were researched from; they mean nothing to
# a user and must never reach a help text or a doc.
PRIVATE_TAG = re.compile(r"\[(?:NOT FOUND|REPO|SIBLING|BLOG|ISSUE ?#?\d*|TAB\d|DESIGN)\b[^\]]*\]")


def _every_help() -> dict[str, str]:
    import argparse

    from salun.cli import build_parser, method_parser
    from salun.generation.sd.cli import method_parser as sd_method_parser
    from salun.generation.sd.unlearn import CONFIGS as SD_CONFIGS
    from salun.methods import list_methods

    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")

    found = dict(walk(build_parser(), "salun"))
    found |= {f"salun unlearn --method {m}": method_parser(m) for m in list_methods()}
    found |= {f"salun sd unlearn --method {m}": sd_method_parser(m) for m in SD_CONFIGS}
    return {path: p.format_help() for path, p in found.items()}


def test_no_private_reference_tags_or_rst_markup_in_any_help():
    helps = _every_help()
    assert len(helps) > 30 and "salun unlearn --method iu" in helps
    bad = [f"{path}: {m.group(0)}" for path, text in helps.items()
           for m in PRIVATE_TAG.finditer(text)]  # fmt: skip
    assert bad == []
    rst = [path for path, text in helps.items() if "``" in text or ":class:`" in text]
    assert rst == []


def test_no_private_reference_tags_in_the_docs():
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    assert len(files) > 5
    bad = [f"{f.name}: {m.group(0)}" for f in files
           for m in PRIVATE_TAG.finditer(f.read_text())]  # fmt: skip
    assert bad == []


def test_the_tag_pattern_catches_what_it_is_for():
    caught = ["[ISSUE #11, a user quoting the paper]", "[REPO]", "[NOT FOUND]",
              "[SIBLING Unlearn-Sparse #5; DESIGN §4 calibration]", "[TAB1 caption]"]  # fmt: skip
    for text in caught:
        assert PRIVATE_TAG.search(text), text
    for text in ("[1e-4, 1e-1]", "[0, 1] pixel scale", "[--mask FILE]", "[lr 0.01]"):
        assert not PRIVATE_TAG.search(text), text


def test_several_keep_values_name_their_files_and_unlearn_points_at_them(tmp_path, capsys):
    d = tmp_path
    split, model = d / "split.json", d / "orig"
    assert main(["split", "--data", "synthetic", "--scenario", "random", "--fraction", "0.1",
                 "--out", str(split)]) == 0  # fmt: skip
    assert main(["train", "--data", "synthetic", "--arch", "mlp", "--epochs", "1", "--quiet",
                 "--split", str(split), "--out", str(model)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["mask", "--model", str(model), "--forget", str(split), "--keep", "0.5",
                 "--keep", "0.1", "--quiet",
                 "--out", str(d / "mask.safetensors")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"wrote {d / 'mask_keep0.5.safetensors'} (keep 0.5)" in err
    assert f"wrote {d / 'mask_keep0.1.safetensors'} (keep 0.1)" in err
    assert "pass one of them to `salun unlearn --mask`" in err
    assert main(["unlearn", "--model", str(model), "--forget", str(split), "--method", "ga",
                 "--epochs", "1", "--mask", str(d / "mask.safetensors"), "--quiet",
                 "--out", str(d / "ga")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "mask_keep0.1.safetensors" in err and "mask_keep0.5.safetensors" in err
    assert not (d / "ga").exists()
