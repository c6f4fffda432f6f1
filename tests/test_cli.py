import json
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
