"""Validation at the boundary: config fields, data files, pickles, devices, the CLI contract."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from salun.errors import SalunError
from salun.validate import (
    check_choice,
    check_fields,
    check_increasing,
    check_int,
    check_nonnegative,
    check_positive,
    check_range,
    check_resolution,
    check_seed,
)

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------ the helpers


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_positive("lr", NAN), "lr must be a finite number > 0, got nan"),
        (lambda: check_positive("lr", 0.0), "lr must be a finite number > 0, got 0.0"),
        (lambda: check_positive("lr", INF), "lr must be a finite number > 0, got inf"),
        (lambda: check_positive("lr", "0.1"), "lr must be a finite number > 0, got '0.1'"),
        (lambda: check_nonnegative("wd", -1e-9), "wd must be a finite number >= 0, got -1e-09"),
        (lambda: check_range("m", 1.0, 0, 1), "m must lie in [0, 1), got 1.0"),
        (
            lambda: check_range("k", 0.0, 0, 1, low_open=True, high_open=False),
            "k must lie in (0, 1], got 0.0",
        ),  # fmt: skip
        (lambda: check_int("epochs", 0, 1), "epochs must be an integer >= 1, got 0"),
        (lambda: check_int("epochs", True, 1), "epochs must be an integer >= 1, got True"),
        (lambda: check_int("n", 2.0, 1), "n must be an integer >= 1, got 2.0"),
        (lambda: check_int("c", 10, 0, 9), "c must be an integer in [0, 9], got 10"),
        (lambda: check_seed("seed", -1), "seed must be an integer in [0, 9223372036854775807]"),
        (
            lambda: check_choice("s", "cos", ("cosine", "constant")),
            "s must be one of 'cosine', 'constant', got 'cos'",
        ),  # fmt: skip
        (
            lambda: check_increasing("milestones", (5, 3)),
            "milestones must be strictly increasing positive integers, got [5, 3]",
        ),  # fmt: skip
        (
            lambda: check_increasing("milestones", (5, -1)),
            "milestones[1] must be an integer >= 1, got -1",
        ),  # fmt: skip
        (lambda: check_resolution("resolution", 0), "resolution must be a positive multiple of 8"),
        (lambda: check_resolution("resolution", 500), "got 500"),
    ],
)
def test_helpers_name_the_field_the_value_and_the_range(call, message):
    with pytest.raises(SalunError) as e:
        call()
    assert message in str(e.value)


def test_helpers_accept_the_edges_of_their_ranges():
    check_range("m", 0.0, 0, 1)
    check_range("k", 1.0, 0, 1, low_open=True, high_open=False)
    check_int("c", 9, 0, 9)
    check_seed("seed", 0)
    check_seed("seed", 2**63 - 1)
    check_positive("lr", 1)  # an int is a number
    check_increasing("milestones", ())
    check_resolution("resolution", 8)


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 0.1
    grid: tuple[float, ...] = (0.1,)
    steps: int = 1
    name: str = "x"
    flag: bool = False
    cap: int | None = None

    def __post_init__(self):
        check_fields(self)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("lr", NAN, "lr must be a finite number, got nan"),
        ("lr", "0.1", "lr must be a finite number, got '0.1'"),
        ("grid", (0.1, INF), "grid[1] must be a finite number, got inf"),
        ("grid", 0.1, "grid must be a list, got 0.1"),
        ("steps", 1.5, "steps must be an integer, got 1.5"),
        ("steps", True, "steps must be an integer, got True"),
        ("name", 3, "name must be a string, got 3"),
        ("flag", 1, "flag must be true or false, got 1"),
        ("cap", 2.5, "cap must be an integer, got 2.5"),
    ],
)
def test_check_fields_types_and_finiteness(field, value, message):
    with pytest.raises(SalunError) as e:
        _Cfg(**{field: value})
    assert message in str(e.value)
    _Cfg(cap=None)
    _Cfg(lr=1, cap=3, grid=[0.5])  # ints for floats, lists for tuples (YAML) are fine


def test_a_field_added_to_a_method_config_is_checked_for_free():
    """Other engineers add fields: the base class's check_fields covers them."""
    from salun.methods.common import SGDConfig

    @dataclasses.dataclass(frozen=True)
    class NewMethodConfig(SGDConfig):
        beta: float = 0.5

    with pytest.raises(SalunError, match="beta must be a finite number, got nan"):
        NewMethodConfig(beta=NAN)


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("lr", NAN), ("lr", -0.1),
        ("momentum", -1.0), ("momentum", 1.0), ("momentum", NAN), ("weight_decay", -1e-4),
        ("weight_decay", NAN), ("schedule", "linear"), ("milestones", (5, -1)),
        ("milestones", (10, 5)), ("gamma", 0.0), ("gamma", 1.5), ("pad", -3), ("seed", -1),
        ("seed", 1.5), ("augment", "yes"),
    ],
)  # fmt: skip
def test_train_config_refuses(field, value):
    from salun.train import TrainConfig

    with pytest.raises(SalunError, match=field):
        TrainConfig(**{field: value})


def test_train_config_accepts_the_paper_recipe():
    from salun.train import TrainConfig

    cfg = TrainConfig(epochs=182, lr=0.1, momentum=0.9, schedule="multistep", milestones=[91, 136])
    assert cfg.milestones == [91, 136] and cfg.momentum == 0.9
    TrainConfig(momentum=0.0, weight_decay=0.0, pad=0, seed=0, gamma=1.0)


@pytest.mark.parametrize(
    "method, overrides, field",
    [
        ("iu", {"alpha": NAN}, "alpha"), ("iu", {"alpha": -1.0}, "alpha"),
        ("iu", {"alpha": 0.0}, "alpha"), ("iu", {"lr_grid": [1.0, -2.0]}, r"lr_grid\[1\]"),
        ("iu", {"damping": NAN}, "damping"),
        ("l1_sparse", {"alpha": NAN}, "alpha"), ("l1_sparse", {"alpha": -1.0}, "alpha"),
        ("ft", {"lr_grid": [-1.0]}, r"lr_grid\[0\]"), ("ft", {"lr_grid": [NAN]}, "lr_grid"),
        ("ft", {"momentum": 1.0}, "momentum"), ("ft", {"weight_decay": NAN}, "weight_decay"),
        ("ft", {"mask_mode": "loose"}, "mask_mode"), ("ft", {"seed": -2}, "seed"),
        ("ft", {"epochs": -1}, "epochs"), ("ga", {"lr": INF}, "lr"),
        ("rl", {"alpha": NAN}, "alpha"), ("rl", {"regime": "mixed"}, "regime"),
        ("salun", {"keep": 0.0}, "keep"), ("salun", {"keep": 1.5}, "keep"),
        ("salun", {"scope": "row"}, "scope"), ("salun", {"mask_batch_size": 0}, "mask_batch"),
        ("salun_soft", {"prox_ratio": NAN}, "prox_ratio"), ("bs", {"eps": NAN}, "eps"),
        ("retrain", {"lr": NAN}, "lr"), ("retrain", {"seed": -1}, "seed"),
        ("retrain", {"epochs": 0}, "epochs"),
    ],
)  # fmt: skip
def test_method_configs_refuse(method, overrides, field):
    from salun.methods import make_config

    with pytest.raises(SalunError, match=field):
        make_config(method, overrides)


def test_every_registered_method_default_config_is_valid():
    from salun.methods import list_methods, make_config

    for name in list_methods():
        cfg = make_config(name)
        for v in getattr(cfg, "lr_grid", ()):
            assert math.isfinite(v) and v > 0, (name, v)


def _bench_raw(**over):
    raw = {
        "dataset": "digits",
        "arch": "mlp",
        "original": {"epochs": 1},
        "scenarios": ["random10"],
        "seeds": [0],
        "methods": {"rl": {"lr_grid": [0.01]}},
    }
    raw.update(over)
    return raw


@pytest.mark.parametrize(
    "over, message",
    [
        ({"seeds": [-1]}, "seeds[0] must be an integer"),
        ({"seeds": [True]}, "seeds[0] must be an integer, got True"),
        ({"width": NAN}, "width must be a finite number"),
        ({"width": 0}, "width must be a finite number > 0"),
        ({"methods": {"rl": {"lr_grid": [-1, NAN]}}}, "method 'rl': lr_grid[1]"),
        ({"methods": {"iu": {"lr_grid": [1.0, -2.0]}}}, "method 'iu': lr_grid[1]"),
        ({"original": {"momentum": 2}}, "original: momentum must lie in [0, 1)"),
        ({"scenarios": [{"name": "x", "kind": "random", "fraction": 1.5}]}, "fraction"),
        ({"scenarios": [{"name": "x", "kind": "class", "classes": [-1]}]}, "classes[0]"),
    ],
)
def test_bench_config_is_checked_whole_when_parsed(over, message):
    from salun.bench.config import parse_config

    with pytest.raises(SalunError) as e:
        parse_config(_bench_raw(**over))
    assert message in str(e.value)
    parse_config(_bench_raw())  # the base is valid


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        ("salun.generation.ddpm.train:DDPMTrainConfig", {"lr": NAN}, "lr"),
        ("salun.generation.ddpm.train:DDPMTrainConfig", {"beta2": 1.0}, "beta2"),
        ("salun.generation.ddpm.train:DDPMTrainConfig", {"seed": -1}, "seed"),
        ("salun.generation.ddpm.model:DenoiserConfig", {"dropout": NAN}, "dropout"),
        ("salun.generation.ddpm.model:DenoiserConfig", {"in_channels": 0}, "in_channels"),
        ("salun.generation.ddpm.sampler:SamplerConfig", {"guidance": NAN}, "guidance"),
        ("salun.generation.ddpm.sampler:SamplerConfig", {"eta": NAN}, "eta"),
        ("salun.generation.ddpm.mask:DDPMMaskConfig", {"keep": NAN}, "keep"),
        ("salun.generation.ddpm.unlearn:GenUnlearnConfig", {"alpha": NAN}, "alpha"),
        ("salun.generation.ddpm.unlearn:GenUnlearnConfig", {"p_uncond": 1.0}, "p_uncond"),
        ("salun.generation.ddpm.diffusion:NoiseSchedule", {"beta_end": NAN}, "beta_end"),
        ("salun.generation.ddpm.evaluate:GenEvalConfig", {"n_forget": 1.5}, "n_forget"),
        ("salun.generation.sd.train:SDTrainConfig", {"lr": "nan"}, "lr"),
        ("salun.generation.sd.train:SDTrainConfig", {"max_steps": 0}, "max_steps"),
        ("salun.generation.sd.train:SDTrainConfig", {"grad_clip": NAN}, "grad_clip"),
        ("salun.generation.sd.esd:ESDConfig", {"concept": "x", "resolution": 0}, "resolution"),
        ("salun.generation.sd.esd:ESDConfig", {"concept": "x", "lr": NAN}, "lr"),
        ("salun.generation.sd.generate:SampleConfig", {"resolution": 0}, "resolution"),
        ("salun.generation.sd.generate:SampleConfig", {"guidance": NAN}, "guidance"),
        ("salun.generation.sd.methods:SalUnSDConfig", {"alpha": -0.5}, "alpha"),
        ("salun.generation.sd.methods:GASDConfig", {"alpha": NAN}, "alpha"),
    ],
)
def test_generation_configs_refuse(cls, kwargs, field):
    import importlib

    mod, _, name = cls.partition(":")
    klass = getattr(importlib.import_module(mod), name)
    with pytest.raises(SalunError, match=field):
        klass(**kwargs)
    if "concept" in kwargs:
        klass(concept="x")
    else:
        klass()


def test_width_nan_is_refused_by_the_model_registry():
    from salun.models import build_model

    with pytest.raises(SalunError, match="width must be a finite number > 0, got nan"):
        build_model("mlp", in_channels=1, num_classes=3, image_size=8, mean=(0.5,), std=(0.5,),
                    width=NAN)  # fmt: skip


def test_split_seed_must_be_a_non_negative_integer(synthetic):
    from salun.data import make_split

    with pytest.raises(SalunError, match="seed must be an integer"):
        make_split(synthetic, "random", fraction=0.1, seed=-1)
    assert len(make_split(synthetic, "random", fraction=0.1, seed=0).forget) == 24


# ------------------------------------------------------------------ devices, runtime


@pytest.mark.parametrize("name", ["mps", "meta", "bogus", "cpu:0", "CUDA", "cuda:x", "", "cuda:"])
def test_resolve_device_refuses_everything_but_auto_cpu_cuda(name):
    from salun.utils import resolve_device

    with pytest.raises(SalunError, match="unknown device"):
        resolve_device(name)


def test_resolve_device_accepts_auto_and_cpu():
    from salun.utils import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(SalunError, match="no CUDA GPU"):
                resolve_device(name)


def test_model_json_records_threads_and_device(tmp_path):
    from salun.artifacts import save_model
    from salun.models import build_model, model_kwargs_for  # noqa: F401
    from salun.utils import runtime_info

    kwargs = {"arch": "mlp", "in_channels": 1, "num_classes": 3, "image_size": 8,
              "mean": [0.5], "std": [0.5], "width": 0.25}  # fmt: skip
    model = build_model(**kwargs)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        save_model(tmp_path / "m", model, kwargs, {"dataset": "synthetic"})
    finally:
        torch.set_num_threads(before)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["runtime"]["torch_threads"] == 1
    assert meta["runtime"]["device"] == "cpu"
    info = runtime_info("cpu")
    assert info["torch_threads"] == torch.get_num_threads() and info["device"] == "cpu"
    assert "device" not in runtime_info()


# ------------------------------------------------------------------ data files


def _npz(path, **over):
    arrays = {
        "x_train": np.zeros((6, 4, 4), np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": np.zeros((3, 4, 4), np.uint8),
        "y_test": np.array([0, 1, 2]),
        **over,
    }
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize(
    "over, message",
    [
        ({"y_train": np.array([100, 101, 102, 100, 101, 102])}, r"y_train labels must be 0\.\.2"),
        ({"y_train": np.array([0, 2, 3, 0, 2, 3])}, r"found 0\.\.3"),  # a gap: class 1 missing
        ({"y_test": np.array([0, 1, 3])}, r"y_test holds label 3, outside \[0, 3\)"),
        ({"y_test": np.array([0, -1, 2])}, r"y_test holds label -1"),
        ({"classes": np.array(["a", "b"])}, r"y_train holds label 2, outside \[0, 2\)"),
        ({"x_train": np.full((6, 4, 4), np.nan)}, r"x_train: image 0 holds NaN or infinite"),
        ({"x_test": np.where(np.eye(4)[None] > 0, np.inf, 0.5).repeat(3, 0)}, r"x_test: image 0"),
    ],
)
def test_npz_refuses_bad_labels_and_pixels(tmp_path, over, message):
    from salun.data import load_dataset

    with pytest.raises(SalunError, match=message):
        load_dataset(_npz(tmp_path / "d.npz", **over))


def test_npz_with_a_classes_array_may_leave_a_class_out_of_training(tmp_path):
    from salun.data import load_dataset

    spec = _npz(tmp_path / "d.npz", y_train=np.array([0, 1, 0, 1, 0, 1]),
                classes=np.array(["a", "b", "c"]))  # fmt: skip
    assert load_dataset(spec).num_classes == 3


def _png(path: Path, w: int, h: int) -> None:
    """A grayscale PNG of any header size (the pixel data is cut short: never decoded)."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    rows = b"".join(b"\x00" + b"\x80" * w for _ in range(min(h, 16)))
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_imagefolder_refuses_a_decompression_bomb_from_its_header(tmp_path):
    from salun.data.sources import imagefolder

    _png(tmp_path / "ok.png", 16, 16)
    assert imagefolder._read_image(tmp_path / "ok.png", 8).shape == (8, 8, 3)
    side = int(math.isqrt(imagefolder.MAX_PIXELS)) + 1  # just over the cap, PIL stays silent
    _png(tmp_path / "bomb.png", side, side)
    with pytest.raises(SalunError, match="decompression bomb"):
        imagefolder._read_image(tmp_path / "bomb.png", 8)
    _png(tmp_path / "giant.png", 30000, 30000)  # PIL's own DecompressionBombError
    with pytest.raises(SalunError, match="decompression bomb"):
        imagefolder._read_image(tmp_path / "giant.png", 8)


def _tiny_imagenet(root: Path, entry: str) -> str:
    for c in ("n01", "n02"):
        _png(root / "train" / c / "images" / "a.png", 8, 8)
    _png(root / "val" / "images" / "v.png", 8, 8)
    (root / "val" / "val_annotations.txt").write_text(f"v.png\tn01\t0\t0\t8\t8\n{entry}\tn02\n")
    return f"imagefolder:{root}"


@pytest.mark.parametrize("entry", ["../../../secret.png", "/etc/secret.png", "sub/../../x.png"])
def test_val_annotations_are_confined_to_val_images(tmp_path, entry):
    from salun.data import load_dataset

    with pytest.raises(SalunError, match="outside"):
        load_dataset(_tiny_imagenet(tmp_path / "tin", entry))


def test_val_annotations_inside_the_folder_load(tmp_path):
    from salun.data import load_dataset

    spec = _tiny_imagenet(tmp_path / "tin", "v.png")
    assert load_dataset(spec).test.labels.tolist() == [0, 1]


def test_cifar_unpickler_accepts_protocol_5_and_refuses_everything_else(tmp_path):
    from salun.data.sources.cifar import safe_unpickle

    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = {b"data": data, b"labels": [3, 7], b"mean": np.linspace(0, 1, 3)}
    for protocol in (2, 4, 5):
        f = tmp_path / f"p{protocol}"
        f.write_bytes(pickle.dumps(batch, protocol=protocol))
        out = safe_unpickle(f)
        assert out[b"labels"] == [3, 7]
        np.testing.assert_array_equal(out[b"data"], data)
        np.testing.assert_array_equal(out[b"mean"], batch[b"mean"])

    class Evil:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    f = tmp_path / "evil"
    f.write_bytes(pickle.dumps({b"data": Evil()}, protocol=5))
    with pytest.raises(SalunError, match="refusing to unpickle builtins.eval"):
        safe_unpickle(f)
    f.write_bytes(pickle.dumps({b"data": np.array([object()], dtype=object)}, protocol=5))
    with pytest.raises(SalunError, match="refusing"):
        safe_unpickle(f)


def test_protocol_5_buffer_loader_refuses_object_dtypes():
    from salun.data.sources.cifar import _frombuffer

    out = _frombuffer(bytearray(b"\x01\x02\x03\x04"), np.uint8, (2, 2))
    assert out.tolist() == [[1, 2], [3, 4]]
    with pytest.raises(SalunError, match="Python objects"):
        _frombuffer(bytearray(8), np.dtype(object), (1,))


# ------------------------------------------------------------------ pickles behind a flag


def test_torchscript_classifier_only_with_trust_code(tmp_path):
    from salun.generation.sd.classify import load_classifier

    class Double(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Double()).save(str(tmp_path / "c.pt"))
    with pytest.raises(SalunError, match="--trust-code"):
        load_classifier(str(tmp_path / "c.pt"))
    clf = load_classifier(str(tmp_path / "c.pt"), trust_code=True)
    assert clf(torch.ones(2)).tolist() == [2.0, 2.0]


def test_fid_networks_only_with_trust_code(tmp_path, monkeypatch):
    from salun.generation.ddpm import metrics as gen_metrics
    from salun.generation.sd.fid import fid_report

    (tmp_path / "inception.pt").write_bytes(b"not loaded")
    imgs = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(SalunError, match="FID network .* --trust-code"):
        fid_report(imgs, imgs, weights=tmp_path / "inception.pt")
    monkeypatch.setattr(gen_metrics, "find_inception_weights", lambda: tmp_path / "inception.pt")
    with pytest.raises(SalunError, match="FID network .* --trust-code"):
        gen_metrics.inception_fid(imgs, imgs)


def test_sd_loaders_ask_for_safetensors_and_refuse_pickles(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from salun.errors import ArtifactError
    from salun.generation.sd import pipeline

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"only as \.safetensors.*pickle"):
        pipeline.load_pipeline(ckpt)
    folder = tmp_path / "sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"diffusion_pytorch_model\.bin.*pickle"):
        pipeline.load_pipeline(folder)

    seen = {}

    class FakePipeline:
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            seen.update(kwargs)
            raise OSError("stop here")

    import diffusers

    monkeypatch.setattr(diffusers, "StableDiffusionPipeline", FakePipeline)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="stop here"):
        pipeline.load_pipeline(folder)
    assert seen["use_safetensors"] is True and seen["local_files_only"] is True


# ------------------------------------------------------------------ the CLI contract


def test_argparse_errors_are_one_salun_error_at_every_level(capsys):
    from salun.cli import build_parser, main
    from salun.config_cli import UsageError

    parser = build_parser()
    for argv in (["nosuchverb"], ["train", "--data"], ["gen", "sample", "--bogus", "1"],
                 ["bench", "--executor", "slurm", "--preset", "ci", "--out", "x"]):  # fmt: skip
        with pytest.raises(UsageError):
            parser.parse_args(argv)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("salun: error: ")
        assert not err.startswith("salun: error: salun")  # one prefix, not the prog again


def test_warnings_are_held_back_on_a_user_error_and_shown_on_success(monkeypatch, capsys):
    import salun.cli as cli

    def noisy_fail(args):
        warnings.warn("a library notice", UserWarning, stacklevel=1)
        raise SalunError("the real problem\nwith a second line")

    def noisy_ok(args):
        warnings.warn("a library notice", UserWarning, stacklevel=1)

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    methods = parser._subparsers._group_actions[0].choices["methods"]
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda msg, *a, **k: shown.append(str(msg)))
    methods.set_defaults(handler=noisy_fail)
    assert cli.main(["methods"]) == 2
    err = capsys.readouterr().err
    assert err == "salun: error: the real problem | with a second line\n"
    assert shown == []  # dropped: they would bury the error line
    methods.set_defaults(handler=noisy_ok)
    assert cli.main(["methods"]) == 0
    assert shown == ["a library notice"]


def test_os_errors_are_one_line(monkeypatch, capsys):
    import salun.cli as cli

    def denied(args):
        raise PermissionError(13, "Permission denied", "/ro/out")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["methods"].set_defaults(handler=denied)
    assert cli.main(["methods"]) == 2
    assert capsys.readouterr().err == "salun: error: Permission denied: /ro/out\n"


def test_bench_builds_every_grid_config_when_parsed(monkeypatch):
    """A grid value can be valid as an ``lr_grid`` entry yet invalid for the field it is
    put into (``grid_field``): the parse builds each config the search will build."""
    from salun.bench.config import parse_config
    from salun.methods import registry

    @dataclasses.dataclass(frozen=True)
    class CappedConfig:
        grid_field = "alpha"  # a class attribute, as IU's
        alpha: float = 0.5
        lr_grid: tuple[float, ...] = ()

        def __post_init__(self):
            check_range("alpha", self.alpha, 0, 1, low_open=True)

    spec = registry.MethodSpec("capped", lambda *a: None, CappedConfig, "test")
    monkeypatch.setitem(registry._REGISTRY, "capped", spec)
    parse_config(_bench_raw(methods={"capped": {"lr_grid": [0.1, 0.9]}}))
    with pytest.raises(SalunError, match=r"method 'capped': lr_grid value 2.0: alpha must lie"):
        parse_config(_bench_raw(methods={"capped": {"lr_grid": [0.1, 2.0]}}))


def test_resolve_device_checks_the_gpu_index(monkeypatch):
    """No GPU here: pretend one exists to test the cuda:N range check."""
    from salun.utils import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(SalunError, match=r"only 1 CUDA GPU\(s\) \(cuda:0\.\.cuda:0\)"):
        resolve_device("cuda:1")


def test_to_nchw_refuses_text_pixels_and_keeps_numbers():
    from salun.data.dataset import to_nchw

    with pytest.raises(SalunError, match="pixels must be integers or floats"):
        to_nchw(np.array([[["a", "b"]]]), source="x")
    floats = np.array([[[0.0, 0.5], [1.0, 0.25]]])
    assert to_nchw(floats, source="x").flatten().tolist() == [0, 128, 255, 64]
