"""A tiny Hugging Face image classifier (built offline from a config) through salun.unlearn,
salun.evaluate and the CLI (``--model HF_FOLDER``), its folder written back and re-read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import salun
from salun.cli import main
from salun.data import load_dataset, load_split
from salun.models.hf import RECORD, hf_normalize

transformers = pytest.importorskip("transformers")  # the [hf] extra; dev installs it

MEAN, STD = [0.5, 0.4, 0.45], [0.25, 0.3, 0.2]


def tiny_resnet(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=3,
    )
    return transformers.ResNetForImageClassification(cfg).eval()


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory):
    """An .npz dataset (3 classes, 3×16×16), a split, and the model's HF folder."""
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(0)
    np.savez(
        root / "tiny.npz",
        x_train=rng.integers(0, 256, (48, 16, 16, 3), dtype=np.uint8),
        y_train=np.arange(48) % 3,
        x_test=rng.integers(0, 256, (15, 16, 16, 3), dtype=np.uint8),
        y_test=np.arange(15) % 3,
    )
    spec = f"npz:{root / 'tiny.npz'}"
    split = root / "split.json"
    assert main(["split", "--data", spec, "--scenario", "random", "--count", "8",
                 "--out", str(split)]) == 0  # fmt: skip
    folder = root / "hf_model"
    model = tiny_resnet()
    model.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "image_mean": MEAN, "image_std": STD})
    )
    return root, spec, split, folder, model


def sets(spec, split_file):
    bundle, split = load_dataset(spec), load_split(split_file)
    test = bundle.test.subset(split.test_indices(bundle))
    return bundle.train.subset(split.forget), bundle.train.subset(split.retain), test


def test_tiny_hf_model_is_unlearned_with_salun_and_evaluated_through_the_api(hf_setup):
    _, spec, split_file, _, _ = hf_setup
    f, r, t = sets(spec, split_file)
    model = tiny_resnet()
    before = params(model)
    res = salun.unlearn(
        model, f, r, "salun", normalize=(MEAN, STD), epochs=1, batch_size=16, quiet=True
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    assert type(res.model) is type(model) and res.num_classes == 3
    assert [n for n, _ in res.model.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert any(not torch.equal(v, before[k]) for k, v in res.model.state_dict().items())
    # the result is the user's HF model again: it returns its output object, takes their input
    out = res.model(torch.zeros(1, 3, 16, 16))
    assert out.logits.shape == (1, 3)
    metrics = salun.evaluate(res.model, f, r, t, normalize=(MEAN, STD), retrain=model)
    assert set(metrics["gaps"]) == {"UA", "RA", "TA", "MIA"}
    assert metrics["avg_gap"] == pytest.approx(sum(metrics["gaps"].values()) / 4)


def test_preprocessor_config_gives_the_normalisation(hf_setup, tmp_path):
    *_, folder, _ = hf_setup
    assert hf_normalize(folder) == (tuple(MEAN), tuple(STD))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert hf_normalize(tmp_path) is None
    assert hf_normalize(tmp_path / "nowhere") is None


def test_cli_mask_and_unlearn_on_an_hf_folder_write_it_back_as_the_api_would(hf_setup, capsys):
    root, spec, split_file, folder, model = hf_setup
    mask = root / "mask.safetensors"
    out = root / "unlearned"
    source_files = {q.name: q.read_bytes() for q in folder.iterdir()}
    assert main(["mask", "--model", str(folder), "--forget", str(split_file), "--data", spec,
                 "--out", str(mask), "--device", "cpu"]) == 0  # fmt: skip
    args = ["unlearn", "--model", str(folder), "--forget", str(split_file), "--data", spec,
            "--mask", str(mask), "--method", "salun", "--epochs", "1", "--batch-size", "16",
            "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "UA" in capsys.readouterr().err
    # the layout it came in: config + safetensors + the image-processor config, no pickle
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", RECORD} <= names
    assert "model.json" not in names and not any(n.endswith(".bin") for n in names)
    record = json.loads((out / RECORD).read_text())
    assert record["method"] == "salun" and set(record["metrics"]) >= {"UA", "RA", "TA", "MIA"}
    loaded = transformers.AutoModelForImageClassification.from_pretrained(
        str(out), local_files_only=True, use_safetensors=True
    )
    # the same run through the API (the folder's normalisation, the same mask file)
    f, r, _ = sets(spec, split_file)
    api = salun.unlearn(
        model, f, r, "salun", mask=mask, normalize=(MEAN, STD), epochs=1, batch_size=16,
        quiet=True,
    )  # fmt: skip
    want = params(api.model)
    got = params(loaded)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), "folder != API result"
    assert any(not torch.equal(got[k], v) for k, v in params(model).items())
    # and the written folder is a model salun reads again (evaluate, overwrite)
    assert main(["evaluate", "--model", str(out), "--forget", str(split_file), "--data", spec,
                 "--device", "cpu"]) == 0  # fmt: skip
    assert main([*args, "--overwrite"]) == 0
    assert {q.name: q.read_bytes() for q in folder.iterdir()} == source_files  # input intact


def test_hf_folder_errors_are_one_line(hf_setup, capsys, tmp_path):
    root, spec, split_file, folder, _ = hf_setup
    base = ["unlearn", "--model", str(folder), "--forget", str(split_file),
            "--out", str(tmp_path / "o"), "--epochs", "1"]  # fmt: skip
    assert main(base) == 2
    assert "records no dataset: pass --data SPEC" in capsys.readouterr().err
    assert main([*base[:-2], "--method", "retrain", "--data", spec]) == 2
    assert "retrain it in Python" in capsys.readouterr().err
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    bad = ["unlearn", "--model", str(pickled), "--forget", str(split_file), "--data", spec,
           "--out", str(tmp_path / "o2")]  # fmt: skip
    assert main(bad) == 2
    assert "pickled weights (pytorch_model.bin)" in capsys.readouterr().err
    # a model for other images: its channels are checked against the data
    gray = tmp_path / "gray"
    cfg = tiny_resnet().config
    cfg.num_channels = 1
    transformers.ResNetForImageClassification(cfg).save_pretrained(str(gray))
    assert main(["mask", "--model", str(gray), "--forget", str(split_file), "--data", spec,
                 "--out", str(tmp_path / "m.safetensors")]) == 2  # fmt: skip
    assert "takes 1-channel images but" in capsys.readouterr().err
