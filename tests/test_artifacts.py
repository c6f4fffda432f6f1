import pytest
import torch

from salun.artifacts import load_model, save_model
from salun.errors import ArtifactError
from salun.models import build_from_kwargs, list_archs, model_kwargs_for


@pytest.mark.parametrize("arch", ["mlp", "cnn", "vgg16_bn", "resnet18"])
def test_every_arch_builds_for_the_dataset_shape(arch, synthetic):
    model = build_from_kwargs(model_kwargs_for(synthetic, arch, width=0.125))
    out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 4) and model.head.out_features == 4
    assert not any("mean" in n or "std" in n for n, _ in model.named_parameters())
    assert arch in list_archs()


def _drop_recorded_sha(folder):
    import json

    meta = json.loads((folder / "model.json").read_text())
    del meta["weights_sha256"]
    (folder / "model.json").write_text(json.dumps(meta))


def test_round_trip_and_strict_loading(tmp_path, synthetic):
    kwargs = model_kwargs_for(synthetic, "cnn", width=0.25)
    model = build_from_kwargs(kwargs).eval()
    save_model(tmp_path / "m", model, kwargs, {"dataset": "synthetic", "seed": 0})
    loaded, meta = load_model(tmp_path / "m")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))
    assert meta["seed"] == 0 and meta["versions"]["torch"] == torch.__version__
    assert not list(tmp_path.glob(".*tmp")), "no temp files left behind"

    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    state.pop("head.bias")
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    _drop_recorded_sha(tmp_path / "m")  # a folder of an older version: no sha256 recorded
    with pytest.raises(ArtifactError, match="missing keys"):
        load_model(tmp_path / "m")


def test_corrupted_weights_and_wrong_arch_are_clear_errors(tmp_path, synthetic):
    kwargs = model_kwargs_for(synthetic, "mlp", width=0.1)
    save_model(tmp_path / "m", build_from_kwargs(kwargs), kwargs, {"dataset": "synthetic"})
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    _drop_recorded_sha(tmp_path / "m")  # the safetensors parser, not the sha256, must catch it
    with pytest.raises(ArtifactError, match="corrupted"):
        load_model(tmp_path / "m")
    save_model(tmp_path / "m2", build_from_kwargs(kwargs), kwargs, {"dataset": "synthetic"})
    meta = (tmp_path / "m2" / "model.json").read_text().replace('"mlp"', '"cnn"')
    (tmp_path / "m2" / "model.json").write_text(meta)
    with pytest.raises(ArtifactError, match="does not fit"):
        load_model(tmp_path / "m2")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "nothing")
