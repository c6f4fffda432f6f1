"""The CLI error contract, one bad input per row.

Every row runs ``salun ...`` in-process (a few through a real subprocess) inside its own
copy of a small fixture tree (a trained model, a split, a mask, data files) and asserts:
exit code 2, exactly one non-empty line on stderr, no traceback, the line names the
problem (``match``), and every file that existed before is byte-for-byte unchanged, with
nothing new left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from salun.cli import main

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--data", "digits", "--arch", "mlp", "--width", "0.25", "--epochs", "1"]
DEV = ["--device", "cpu"]


# ---------------------------------------------------------------- fixture files


def _png(path: Path, width: int, height: int, gray: int = 128) -> None:
    """A valid 8-bit grayscale PNG written by hand (any size: a huge one stays tiny)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes([gray]) * width for _ in range(min(height, 64)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))  # short data: we refuse before decoding
        + chunk(b"IEND", b"")
    )


def _imagefolder(root: Path, *, bomb: tuple[int, int] | None = None, annotation: str = "") -> None:
    for c in ("a", "b"):
        for i in range(3):
            _png(root / "train" / c / f"{i}.png", 8, 8, 40 + 80 * (c == "b"))
    if bomb:
        _png(root / "train" / "a" / "bomb.png", *bomb)
    if annotation:
        _png(root / "val" / "images" / "v0.png", 8, 8)
        (root / "val" / "val_annotations.txt").write_text(f"v0.png\ta\n{annotation}\tb\n")
    else:
        for c in ("a", "b"):
            _png(root / "val" / c / "0.png", 8, 8)


def _npz(path: Path, **over) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
        "y_train": np.arange(20) % 5,
        "x_test": rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
        "y_test": np.arange(10) % 5,
        **over,
    }
    np.savez(path, **arrays)


def _bench_yaml(path: Path, **over) -> None:
    cfg = {
        "dataset": "digits",
        "arch": "mlp",
        "width": 0.25,
        "original": {"epochs": 1, "batch_size": 64, "lr": 0.05},
        "scenarios": ["random10"],
        "seeds": [0],
        "methods": {"ft": {"epochs": 1, "lr_grid": []}},
    }
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Model, split, mask and bad data files, made once; each row gets a copy."""
    from salun.data import load_split, save_split

    root = tmp_path_factory.mktemp("bad-inputs-base")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", *TRAIN, "--out", "m", *DEV]) == 0
        assert main(["split", "--data", "digits", "--scenario", "random", "--fraction", "0.1",
                     "--out", "s.json"]) == 0  # fmt: skip
        assert main(["mask", "--model", "m", "--forget", "s.json", "--out", "mask.safetensors",
                     *DEV]) == 0  # fmt: skip
    finally:
        os.chdir(cwd)
    split = load_split(root / "s.json")
    from dataclasses import replace

    # Splits another tool (or a hand) wrote: the hash is right, the content is not.
    save_split(replace(split, forget=np.zeros(0, np.int64)), root / "empty_forget.json")
    past = np.append(split.forget, split.n_train + 10)
    save_split(replace(split, forget=past), root / "index_past.json")
    bigger = replace(split, n_train=split.n_train + 500, forget=np.array([split.n_train + 100]))
    save_split(bigger, root / "bigger_data.json")

    # Hand-edited or damaged model folders.
    def variant(name: str, edit) -> None:
        shutil.copytree(root / "m", root / name)
        meta = root / name / "model.json"
        meta.write_text(json.dumps(edit(json.loads(meta.read_text()))))

    variant("m_no_dataset", lambda d: {k: v for k, v in d.items() if k != "dataset"})
    variant("m_no_arch", lambda d: {**d, "model": {k: v for k, v in d["model"].items()
                                                   if k != "arch"}})  # fmt: skip
    variant("m_extra_key", lambda d: {**d, "model": {**d["model"], "dropout": 0.5}})
    variant("m_list", lambda d: [d])
    shutil.copytree(root / "m", root / "m_flipped")
    w = root / "m_flipped" / "model.safetensors"
    raw = bytearray(w.read_bytes())
    for i in range(len(raw) // 2, len(raw), 97):  # every 97th byte of the tensor data
        raw[i] ^= 0xFF
    w.write_bytes(bytes(raw))

    # Bad data.
    _npz(root / "labels_out.npz", y_train=100 + np.arange(20) % 5, y_test=100 + np.arange(10) % 5)
    _npz(root / "labels_classes.npz", y_test=np.arange(10) % 7,
         classes=np.array(["a", "b", "c", "d", "e"]))  # fmt: skip
    nan = np.random.default_rng(0).random((20, 8, 8))
    nan[3, 2, 2] = np.nan
    _npz(root / "nan_pixels.npz", x_train=nan)
    _imagefolder(root / "bomb", bomb=(7000, 7000))  # 49 MP: over salun's cap
    _imagefolder(root / "giant", bomb=(20000, 20000))  # 400 MP: PIL's own bomb error
    _imagefolder(root / "escape", annotation="../../../secret.png")
    _imagefolder(root / "absolute", annotation=str(root / "secret.png"))
    _png(root / "secret.png", 8, 8, 255)

    # Bench configs.
    _bench_yaml(root / "bench_seeds.yaml", seeds=[-1])
    bad_grid = {"rl": {"epochs": 1, "lr_grid": [-1, float("nan")]}}
    _bench_yaml(root / "bench_grid.yaml", methods=bad_grid)
    _bench_yaml(root / "bench_nan_grid.yaml", methods={"rl": {"lr_grid": [0.01, float("nan")]}})
    _bench_yaml(root / "bench_iu.yaml", methods={"iu": {"alpha": -1, "lr_grid": []}})
    _bench_yaml(root / "bench_original.yaml", original={"epochs": 1, "momentum": -1})
    (root / "bench_list.yaml").write_text("- 1\n- 2\n")

    # Folders and files a user already has.
    (root / "userdir").mkdir()
    (root / "userdir" / "notes.txt").write_text("my own notes\n")
    (root / "fake.ckpt").write_bytes(b"not really a checkpoint")
    (root / "clf.pt").write_bytes(b"a TorchScript archive would be here")
    sd_bin = root / "sd_bin"
    (sd_bin / "unet").mkdir(parents=True)
    (sd_bin / "model_index.json").write_text("{}")
    (sd_bin / "unet" / "config.json").write_text("{}")
    (sd_bin / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (root / "empty_dir").mkdir()
    _hostile_inputs(root)
    return root


def _hostile_inputs(root: Path) -> None:
    """Files of issue #27: wrong types, bombs, damaged headers, numbers past every range."""
    # bench configs with values of the wrong type (each was a traceback or silently cut)
    _bench_yaml(root / "bench_width_abc.yaml", width="abc")
    _bench_yaml(root / "bench_val_abc.yaml", val_fraction="abc")
    _bench_yaml(root / "bench_scenarios_int.yaml", scenarios=5)
    for name, sc in {
        "classes_str": {"name": "c", "kind": "class", "classes": ["a"]},
        "classes_float": {"name": "c", "kind": "class", "classes": [3.7]},
        "fraction_str": {"name": "r", "kind": "random", "fraction": "x"},
        "count_float": {"name": "r", "kind": "random", "count": 10.9},
    }.items():
        _bench_yaml(root / f"bench_{name}.yaml", scenarios=[sc])
    _bench_yaml(root / "bench_method_str.yaml", methods={"ft": "abc"})
    _bench_yaml(root / "bench_name_list.yaml", name=[1, 2])
    _bench_yaml(root / "bench_root_file.yaml", data_root=str(root / "fake.ckpt"))
    # YAML bombs: nine anchors of nine aliases each (9**9 values), and deep nesting
    lol = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    (root / "bench_laughs.yaml").write_text(lol)
    (root / "bench_deep.yaml").write_text("[" * 100_000 + "]" * 100_000)
    # audit configs
    audit = {
        "dataset": "digits", "arch": "mlp", "width": 0.25, "shadows": 4,
        "original": {"epochs": 1}, "methods": {"ft": {"epochs": 1}},
    }  # fmt: skip
    for name, over in {
        "subset": {"subset": 600.5},
        "shadows": {"shadows": 3.5},
        "seed": {"seed": -3},
        "methods": {"methods": {"ft": "x"}},
    }.items():
        (root / f"audit_{name}.yaml").write_text(yaml.safe_dump({**audit, **over}))
    # split files edited by hand: the hash check comes after these
    good = json.loads((root / "s.json").read_text())
    for name, edit in {
        "split_index_2_70": lambda d: d["forget"].__setitem__(0, 2**70),
        "split_index_float": lambda d: d["forget"].__setitem__(0, 12.7),
        "split_index_str": lambda d: d["forget"].__setitem__(0, "12"),
        "split_seed_inf": lambda d: d.__setitem__("seed", "INF"),
    }.items():
        d = json.loads(json.dumps(good))
        edit(d)
        text = json.dumps(d).replace('"INF"', "1e999")  # json.dumps cannot write 1e999
        (root / f"{name}.json").write_text(text)
    (root / "split_nested.json").write_text("[" * 100_000 + "]" * 100_000)
    # data
    rng = np.random.default_rng(0)
    _npz(root / "non_square.npz", x_train=rng.integers(0, 256, (20, 8, 6), dtype=np.uint8),
         x_test=rng.integers(0, 256, (10, 8, 6), dtype=np.uint8))  # fmt: skip
    _npz(root / "float_103.npz", x_train=rng.random((20, 8, 8)) * 1.03)
    _npz(root / "test_shape.npz", x_test=rng.integers(0, 256, (10, 9, 9), dtype=np.uint8))
    _npz_declaring(root / "header_913gib.npz", (1_000_000, 1000, 980))
    # image folders whose class folders are not classes
    _imagefolder(root / "if_link")
    _png(root / "elsewhere" / "0.png", 8, 8)
    (root / "if_link" / "train" / "c").symlink_to(root / "elsewhere", target_is_directory=True)
    _imagefolder(root / "if_empty")
    (root / "if_empty" / "train" / "c").mkdir()
    _imagefolder(root / "if_output")
    (root / "if_output" / "train" / "model").mkdir()
    (root / "if_output" / "train" / "model" / "model.json").write_text("{}")
    shutil.copytree(root / "m", root / "m_image_size")
    meta = root / "m_image_size" / "model.json"
    d = json.loads(meta.read_text())
    d["model"]["image_size"] = 10**9  # an int: the schema lets it through, the model not
    meta.write_text(json.dumps(d))


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose x_train header declares ``shape`` but holds the 20x8x8 bytes."""
    import zipfile

    _npz(path)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members["x_train.npy"]
    n = struct.unpack("<H", raw[8:10])[0]
    header = raw[10 : 10 + n].decode("latin1").replace("(20, 8, 8)", str(shape))
    header = header.rstrip("\n").ljust(n - 1) + "\n"  # same length: same data offset
    members["x_train.npy"] = raw[:10] + header.encode("latin1") + raw[10 + n :]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (folders as None, files as their bytes)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def _readonly_dir(tmp: Path) -> Path:
    """A folder no one may write into: chmod works for users; root ignores it, so root
    gets /sys (a read-only mount for new files)."""
    if os.geteuid() == 0:
        return Path("/sys")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


# ---------------------------------------------------------------- the table

F = SimpleNamespace  # rows are lambdas of the row's paths: f.w (work dir), f.ro, f.tmp

# One row per bad input reads better than one argument per line.
# fmt: off
ROWS = [
    # split
    ("split-seed-negative", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--fraction", "0.1", "--seed", "-1", "--out", "x.json"], r"seed"),
    ("split-fraction-above-1", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--fraction", "1.5", "--out", "x.json"], r"fraction"),
    ("split-fraction-nan", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--fraction", "nan", "--out", "x.json"], r"fraction"),
    ("split-count-zero", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--count", "0", "--out", "x.json"], r"count"),
    ("split-class-out-of-range", lambda f: ["split", "--data", "digits", "--scenario", "class",
     "--classes", "10", "--out", "x.json"], r"class 10"),
    ("split-val-fraction-1", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--fraction", "0.1", "--val-fraction", "1", "--out", "x.json"], r"val_fraction"),
    ("split-unknown-dataset", lambda f: ["split", "--data", "nosuchdata", "--scenario",
     "random", "--fraction", "0.1", "--out", "x.json"], r"nosuchdata"),
    ("split-missing-npz", lambda f: ["split", "--data", "npz:missing.npz", "--scenario",
     "random", "--fraction", "0.1", "--out", "x.json"], r"missing\.npz"),
    ("split-out-is-folder", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--fraction", "0.1", "--out", "userdir"], r"userdir"),
    ("split-out-read-only", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--fraction", "0.1", "--out", str(f.ro / "x.json")], r"cannot write|read-only|denied"),
    ("split-bad-scenario", lambda f: ["split", "--data", "digits", "--scenario", "half",
     "--out", "x.json"], r"--scenario"),
    ("split-seed-not-int", lambda f: ["split", "--data", "digits", "--scenario", "random",
     "--seed", "one", "--out", "x.json"], r"--seed"),
    # train
    ("train-width-nan", lambda f: ["train", *TRAIN[:4], "--width", "nan", "--out", "t", *DEV],
     r"width"),
    ("train-momentum-negative", lambda f: ["train", *TRAIN, "--momentum", "-1", "--out", "t"],
     r"momentum"),
    ("train-pad-negative", lambda f: ["train", *TRAIN, "--augment", "true", "--pad", "-3",
     "--out", "t"], r"pad"),
    ("train-milestones-not-increasing", lambda f: ["train", *TRAIN, "--schedule", "multistep",
     "--milestones", "5", "-1", "--out", "t"], r"milestones"),
    ("train-lr-zero", lambda f: ["train", *TRAIN, "--lr", "0", "--out", "t"], r"\blr\b"),
    ("train-weight-decay-nan", lambda f: ["train", *TRAIN, "--weight-decay", "nan", "--out",
     "t"], r"weight_decay"),
    ("train-epochs-zero", lambda f: ["train", *TRAIN[:6], "--epochs", "0", "--out", "t"],
     r"epochs"),
    ("train-seed-negative", lambda f: ["train", *TRAIN, "--seed", "-5", "--out", "t"], r"seed"),
    ("train-bad-bool", lambda f: ["train", *TRAIN, "--nesterov", "maybe", "--out", "t"],
     r"--nesterov"),
    ("train-device-mps", lambda f: ["train", *TRAIN, "--out", "t", "--device", "mps"], r"mps"),
    ("train-device-meta", lambda f: ["train", *TRAIN, "--out", "t", "--device", "meta"],
     r"meta"),
    ("train-device-bogus", lambda f: ["train", *TRAIN, "--out", "t", "--device", "bogus"],
     r"bogus"),
    ("train-device-cuda-without-gpu", lambda f: ["train", *TRAIN, "--out", "t", "--device",
     "cuda"], r"no CUDA GPU", pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU")),
    ("train-out-user-folder", lambda f: ["train", *TRAIN, "--out", "userdir", *DEV],
     r"userdir"),
    ("train-out-parent-of-cwd", lambda f: ["train", *TRAIN, "--out", "..", *DEV],
     r"working|contains|refus"),
    ("train-out-read-only", lambda f: ["train", *TRAIN, "--out", str(f.ro / "t"), *DEV],
     r"cannot write|read-only|denied"),
    ("train-npz-labels-out-of-range", lambda f: ["train", *TRAIN[2:], "--data",
     "npz:labels_out.npz", "--out", "t", *DEV], r"labels? .*0\.\.4|outside"),
    ("train-npz-test-label-past-classes", lambda f: ["train", *TRAIN[2:], "--data",
     "npz:labels_classes.npz", "--out", "t", *DEV], r"y_test .*label 5"),
    ("train-npz-nan-pixels", lambda f: ["train", *TRAIN[2:], "--data", "npz:nan_pixels.npz",
     "--out", "t", *DEV], r"NaN"),
    ("train-imagefolder-bomb", lambda f: ["train", *TRAIN[2:], "--data", "imagefolder:bomb",
     "--out", "t", *DEV], r"bomb|pixel"),
    ("train-imagefolder-giant-bomb", lambda f: ["train", *TRAIN[2:], "--data",
     "imagefolder:giant", "--out", "t", *DEV], r"bomb|pixel"),
    ("train-imagefolder-escaping-annotation", lambda f: ["train", *TRAIN[2:], "--data",
     "imagefolder:escape", "--out", "t", *DEV], r"outside"),
    ("train-imagefolder-absolute-annotation", lambda f: ["train", *TRAIN[2:], "--data",
     "imagefolder:absolute", "--out", "t", *DEV], r"outside"),
    ("train-split-index-past-data", lambda f: ["train", *TRAIN, "--split", "index_past.json",
     "--out", "t", *DEV], r"out of range"),
    # mask
    ("mask-out-is-folder", lambda f: ["mask", "--model", "m", "--forget", "s.json", "--out",
     "userdir", *DEV], r"userdir"),
    ("mask-model-without-dataset", lambda f: ["mask", "--model", "m_no_dataset", "--forget",
     "s.json", "--out", "k.safetensors", *DEV], r"dataset"),
    ("mask-model-json-list", lambda f: ["mask", "--model", "m_list", "--forget", "s.json",
     "--out", "k.safetensors", *DEV], r"model\.json|object|mapping"),
    ("mask-keep-above-1", lambda f: ["mask", "--model", "m", "--forget", "s.json", "--keep",
     "1.5", "--out", "k.safetensors", *DEV], r"keep"),
    ("mask-keep-nan", lambda f: ["mask", "--model", "m", "--forget", "s.json", "--keep", "nan",
     "--out", "k.safetensors", *DEV], r"keep"),
    ("mask-batch-size-zero", lambda f: ["mask", "--model", "m", "--forget", "s.json",
     "--batch-size", "0", "--out", "k.safetensors", *DEV], r"batch"),
    ("mask-empty-forget", lambda f: ["mask", "--model", "m", "--forget", "empty_forget.json",
     "--out", "k.safetensors", *DEV], r"forget set is empty"),
    # unlearn
    ("unlearn-iu-alpha-nan", lambda f: ["unlearn", "--method", "iu", "--model", "m", "--forget",
     "s.json", "--out", "u", "--alpha", "nan", *DEV], r"alpha .*nan"),
    ("unlearn-iu-alpha-negative", lambda f: ["unlearn", "--method", "iu", "--model", "m",
     "--forget", "s.json", "--out", "u", "--alpha", "-1", *DEV], r"alpha .*-1"),
    ("unlearn-l1-alpha-nan", lambda f: ["unlearn", "--method", "l1_sparse", "--model", "m",
     "--forget", "s.json", "--out", "u", "--alpha", "nan", *DEV], r"alpha .*nan"),
    ("unlearn-salun-keep-above-1", lambda f: ["unlearn", "--method", "salun", "--model", "m",
     "--forget", "s.json", "--out", "u", "--keep", "2", *DEV], r"keep"),
    ("unlearn-unknown-method", lambda f: ["unlearn", "--method", "forgetall", "--model", "m",
     "--forget", "s.json", "--out", "u"], r"forgetall"),
    ("unlearn-unknown-flag", lambda f: ["unlearn", "--method", "ft", "--model", "m",
     "--forget", "s.json", "--out", "u", "--alpha", "1"], r"--alpha"),
    ("unlearn-missing-out", lambda f: ["unlearn", "--method", "ft", "--model", "m", "--forget",
     "s.json"], r"--out"),
    ("unlearn-out-is-model", lambda f: ["unlearn", "--method", "ft", "--model", "m", "--forget",
     "s.json", "--out", "m", *DEV], r"\bm\b"),
    ("unlearn-flipped-weights", lambda f: ["unlearn", "--method", "ft", "--model", "m_flipped",
     "--forget", "s.json", "--out", "u", *DEV], r"sha256|corrupt|changed"),
    ("unlearn-model-extra-key", lambda f: ["unlearn", "--method", "ft", "--model",
     "m_extra_key", "--forget", "s.json", "--out", "u", *DEV], r"dropout"),
    ("unlearn-empty-forget", lambda f: ["unlearn", "--method", "ft", "--model", "m", "--forget",
     "empty_forget.json", "--out", "u", *DEV], r"forget set is empty"),
    ("unlearn-split-for-bigger-data", lambda f: ["unlearn", "--method", "ft", "--model", "m",
     "--forget", "bigger_data.json", "--out", "u", *DEV], r"1937|1437|images|size"),
    # evaluate
    ("evaluate-model-without-arch", lambda f: ["evaluate", "--model", "m_no_arch", "--forget",
     "s.json", *DEV], r"arch"),
    ("evaluate-flipped-weights", lambda f: ["evaluate", "--model", "m_flipped", "--forget",
     "s.json", *DEV], r"sha256|corrupt|changed"),
    ("evaluate-missing-split", lambda f: ["evaluate", "--model", "m", "--forget", "nope.json",
     *DEV], r"nope\.json"),
    ("evaluate-index-past-data", lambda f: ["evaluate", "--model", "m", "--forget",
     "index_past.json", *DEV], r"out of range"),
    ("evaluate-device-meta", lambda f: ["evaluate", "--model", "m", "--forget", "s.json",
     "--device", "meta"], r"meta"),
    # bench
    ("bench-seeds-negative", lambda f: ["bench", "--config", "bench_seeds.yaml", "--out", "b"],
     r"seeds"),
    ("bench-lr-grid-negative", lambda f: ["bench", "--config", "bench_grid.yaml", "--out", "b"],
     r"lr_grid"),
    ("bench-lr-grid-nan", lambda f: ["bench", "--config", "bench_nan_grid.yaml", "--out", "b"],
     r"lr_grid\[1\].*nan"),
    ("bench-iu-alpha-negative", lambda f: ["bench", "--config", "bench_iu.yaml", "--out", "b"],
     r"alpha"),
    ("bench-original-momentum", lambda f: ["bench", "--config", "bench_original.yaml", "--out",
     "b"], r"original: momentum"),
    ("bench-config-not-mapping", lambda f: ["bench", "--config", "bench_list.yaml", "--out",
     "b"], r"mapping"),
    ("bench-config-missing", lambda f: ["bench", "--config", "none.yaml", "--out", "b"],
     r"none\.yaml"),
    ("bench-unknown-preset", lambda f: ["bench", "--preset", "gigantic", "--out", "b"],
     r"gigantic"),
    ("bench-bad-executor", lambda f: ["bench", "--preset", "ci", "--executor", "slurm",
     "--out", "b"], r"--executor"),
    ("bench-out-user-folder", lambda f: ["bench", "--preset", "ci", "--out", "userdir"],
     r"userdir"),
    ("bench-device-mps", lambda f: ["bench", "--preset", "ci", "--out", "b", "--device", "mps"],
     r"mps"),
    ("bench-cpus-per-run-nan", lambda f: ["bench", "--preset", "ci", "--out", "b",
     "--cpus-per-run", "nan"], r"--cpus-per-run"),
    ("bench-gpus-per-run-negative", lambda f: ["bench", "--preset", "ci", "--out", "b",
     "--gpus-per-run", "-1"], r"--gpus-per-run"),
    # report
    ("report-missing-folder", lambda f: ["report", "nowhere"], r"nowhere"),
    ("report-not-a-bench-folder", lambda f: ["report", "empty_dir"], r"empty_dir"),
    ("report-user-folder", lambda f: ["report", "userdir"], r"userdir"),
    # gen
    ("gen-sample-n-per-class-zero", lambda f: ["gen", "sample", "--model", "ddpm", "--out",
     "g.png", "--n-per-class", "0"], r"n-per-class"),
    ("gen-train-lr-nan", lambda f: ["gen", "train", "--data", "digits", "--out", "g", "--lr",
     "nan"], r"\blr\b"),
    ("gen-train-steps-zero", lambda f: ["gen", "train", "--data", "digits", "--out", "g",
     "--steps", "0"], r"steps"),
    ("gen-mask-keep-above-1", lambda f: ["gen", "mask", "--model", "ddpm", "--forget-class",
     "1", "--out", "g.safetensors", "--keep", "1.5"], r"keep"),
    ("gen-unlearn-unknown-method", lambda f: ["gen", "unlearn", "--model", "ddpm",
     "--forget-class", "1", "--out", "g", "--method", "wipe"], r"wipe"),
    ("gen-no-subcommand", lambda f: ["gen"], r"salun gen"),
    ("gen-sample-missing-model", lambda f: ["gen", "sample", "--model", "ddpm", "--out",
     "g.png"], r"ddpm"),
    # sd
    ("sd-esd-lr-nan", lambda f: ["sd", "unlearn", "--method", "esd", "--model", "sd", "--out",
     "u", "--set", "lr=nan", "--set", "concept=x"], r"\blr\b.*nan"),
    ("sd-generate-resolution-zero", lambda f: ["sd", "generate", "--model", "sd", "--prompt",
     "a cat", "--out", "g", "--resolution", "0"], r"resolution"),
    ("sd-unlearn-set-without-equals", lambda f: ["sd", "unlearn", "--method", "salun",
     "--model", "sd", "--out", "u", "--set", "lr"], r"key=value"),
    ("sd-classifier-without-trust", lambda f: ["sd", "evaluate", "classes", "--images", "g",
     "--classifier", "clf.pt"], r"--trust-code"),
    ("sd-ckpt-refused", lambda f: ["sd", "generate", "--model", "fake.ckpt", "--prompt", "a",
     "--out", "g", *DEV], r"safetensors"),
    ("sd-bin-folder-refused", lambda f: ["sd", "generate", "--model", "sd_bin", "--prompt",
     "a", "--out", "g", *DEV], r"pickle"),
    ("sd-missing-model", lambda f: ["sd", "generate", "--model", "nothere", "--prompt", "a",
     "--out", "g", *DEV], r"nothere"),
    # issue 27: every input checked by type and range before work starts
    ("bench-width-not-a-number", lambda f: ["bench", "--config", "bench_width_abc.yaml",
     "--out", "b"], r"width must be a number, got 'abc'"),
    ("bench-val-fraction-not-a-number", lambda f: ["bench", "--config", "bench_val_abc.yaml",
     "--out", "b"], r"val_fraction must be a number, got 'abc'"),
    ("bench-scenarios-not-a-list", lambda f: ["bench", "--config", "bench_scenarios_int.yaml",
     "--out", "b"], r"scenarios must be a list, got 5"),
    ("bench-class-not-an-integer", lambda f: ["bench", "--config", "bench_classes_str.yaml",
     "--out", "b"], r"classes\[0\] must be an integer, got 'a'"),
    ("bench-class-3.7-not-cut-to-3", lambda f: ["bench", "--config",
     "bench_classes_float.yaml", "--out", "b"], r"classes\[0\] must be an integer, got 3\.7"),
    ("bench-fraction-not-a-number", lambda f: ["bench", "--config", "bench_fraction_str.yaml",
     "--out", "b"], r"fraction must be a number, got 'x'"),
    ("bench-count-10.9-not-cut-to-10", lambda f: ["bench", "--config",
     "bench_count_float.yaml", "--out", "b"], r"count must be an integer, got 10\.9"),
    ("bench-method-settings-not-a-mapping", lambda f: ["bench", "--config",
     "bench_method_str.yaml", "--out", "b"], r"method 'ft': its settings must be a mapping"),
    ("bench-name-a-list", lambda f: ["bench", "--config", "bench_name_list.yaml", "--out",
     "b"], r"name must be a string, got \[1, 2\]"),
    ("bench-data-root-a-file", lambda f: ["bench", "--config", "bench_root_file.yaml",
     "--out", "b"], r"data_root .*fake\.ckpt is not a folder"),
    ("bench-billion-laughs", lambda f: ["bench", "--config", "bench_laughs.yaml", "--out",
     "b"], r"expands to more than 100000 values"),
    ("bench-100000-nested-brackets", lambda f: ["bench", "--config", "bench_deep.yaml",
     "--out", "b"], r"nests deeper than 64 levels"),
    ("bench-threads-past-the-cpus", lambda f: ["bench", "--preset", "ci", "--out", "b",
     "--threads", "100000"], r"--threads must be an integer in \[1, \d+\], got 100000"),
    ("audit-subset-not-an-integer", lambda f: ["audit", "--config", "audit_subset.yaml",
     "--out", "a"], r"subset must be an integer, got 600\.5"),
    ("audit-shadows-not-an-integer", lambda f: ["audit", "--config", "audit_shadows.yaml",
     "--out", "a"], r"shadows must be an integer, got 3\.5"),
    ("audit-seed-negative", lambda f: ["audit", "--config", "audit_seed.yaml", "--out", "a"],
     r"seed must be an integer in \[0, \d+\], got -3"),
    ("audit-method-settings-not-a-mapping", lambda f: ["audit", "--config",
     "audit_methods.yaml", "--out", "a"], r"method 'ft': its settings must be a mapping"),
    ("evaluate-split-index-2-70", lambda f: ["evaluate", "--model", "m", "--forget",
     "split_index_2_70.json", *DEV], r"forget must hold integers .*got 1180591620717411303424"),
    ("evaluate-split-index-12.7", lambda f: ["evaluate", "--model", "m", "--forget",
     "split_index_float.json", *DEV], r"forget must hold integers .*got 12\.7"),
    ("evaluate-split-index-string", lambda f: ["evaluate", "--model", "m", "--forget",
     "split_index_str.json", *DEV], r"forget must hold integers .*got '12'"),
    ("evaluate-split-seed-1e999", lambda f: ["evaluate", "--model", "m", "--forget",
     "split_seed_inf.json", *DEV], r"seed must be an integer, got inf"),
    ("evaluate-split-100000-nested-brackets", lambda f: ["evaluate", "--model", "m",
     "--forget", "split_nested.json", *DEV], r"nested too deeply"),
    ("evaluate-model-image-size-1e9", lambda f: ["evaluate", "--model", "m_image_size",
     "--forget", "s.json", *DEV], r"image_size must be an integer in \[1, 4096\]"),
    ("evaluate-threads-past-the-cpus", lambda f: ["evaluate", "--model", "m", "--forget",
     "s.json", "--threads", "100000", *DEV], r"--threads must be an integer in \[1, \d+\]"),
    ("train-npz-non-square-mlp", lambda f: ["train", *TRAIN[2:], "--data",
     "npz:non_square.npz", "--out", "t", *DEV], r"mlp needs square images.*8x6"),
    ("train-npz-float-pixels-1.03", lambda f: ["train", *TRAIN[2:], "--data",
     "npz:float_103.npz", "--out", "t", *DEV], r"float pixels up to 1\.0\d+"),
    ("train-npz-test-images-other-shape", lambda f: ["train", *TRAIN[2:], "--data",
     "npz:test_shape.npz", "--out", "t", *DEV], r"x_test images are \(1, 9, 9\)"),
    ("train-npz-header-declares-913-gib", lambda f: ["train", *TRAIN[2:], "--data",
     "npz:header_913gib.npz", "--out", "t", *DEV], r"declares shape \(1000000, 1000, 980\)"),
    ("train-synthetic-99999999999", lambda f: ["train", *TRAIN[2:], "--data",
     "synthetic:99999999999", "--out", "t", *DEV], r"synthetic:N needs N in 8\.\.1000000"),
    ("train-lr-1e308", lambda f: ["train", *TRAIN, "--lr", "1e308", "--out", "t", *DEV],
     r"lr must lie within float32's range"),
    ("train-width-1e-9", lambda f: ["train", *TRAIN[:4], "--width", "1e-9", "--out", "t",
     *DEV], r"width must lie in \[1/64, 64\]"),
    ("train-threads-100000", lambda f: ["train", *TRAIN, "--threads", "100000", "--out", "t",
     *DEV], r"--threads must be an integer in \[1, \d+\], got 100000"),
    ("train-imagefolder-class-links-outside", lambda f: ["train", *TRAIN[2:], "--data",
     "imagefolder:if_link", "--out", "t", *DEV], r"train/c links to .*elsewhere, outside"),
    ("train-imagefolder-empty-class", lambda f: ["train", *TRAIN[2:], "--data",
     "imagefolder:if_empty", "--out", "t", *DEV], r"class folder .*train/c holds no"),
    ("train-imagefolder-salun-output-as-class", lambda f: ["train", *TRAIN[2:], "--data",
     "imagefolder:if_output", "--out", "t", *DEV], r"train/model is a salun output"),
    ("mask-keep-density-zero", lambda f: ["mask", "--model", "m", "--forget", "s.json",
     "--keep", "1e-12", "--out", "k.safetensors", *DEV], r"keep 1e-12 keeps none of the"),
    ("unlearn-salun-keep-density-zero", lambda f: ["unlearn", "--method", "salun", "--model",
     "m", "--forget", "s.json", "--out", "u", "--keep", "1e-12", *DEV], r"keeps none of"),
]
# fmt: on


def _rows():
    """Rows are (id, argv, match) or (id, argv, match, mark)."""
    for name, argv, match, *marks in ROWS:
        yield pytest.param(argv, match, id=name, marks=marks)


def _work(base: Path, tmp_path: Path) -> SimpleNamespace:
    work = tmp_path / "w"
    shutil.copytree(base, work, symlinks=True)
    return F(w=work, tmp=tmp_path, ro=_readonly_dir(tmp_path))


def _check(code, err: str, match: str, before: dict, after: dict) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith("salun: error: "), lines[0]
    import re

    assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    changed = [k for k in before if after.get(k, b"<gone>") != before[k]]
    assert not changed, f"pre-existing paths changed or removed: {changed}"
    new = sorted(set(after) - set(before))
    assert not new, f"left behind: {new}"


@pytest.mark.parametrize("argv, match", list(_rows()))
def test_bad_input_is_one_line_exit_2(argv, match, base, tmp_path, monkeypatch, capsys):
    f = _work(base, tmp_path)
    monkeypatch.chdir(f.w)
    monkeypatch.setenv("SALUN_QUIET", "1")
    before = _snapshot(tmp_path)
    code = main(argv(f))
    err = capsys.readouterr().err
    _check(code, err, match, before, _snapshot(tmp_path))


def test_table_is_large_and_covers_every_verb():
    assert len(ROWS) >= 40
    dummy = F(w=Path("w"), tmp=Path("."), ro=Path("ro"))
    verbs = {r[1](dummy)[0] for r in ROWS}
    assert verbs >= {"split", "train", "mask", "unlearn", "evaluate", "bench", "report",
                     "gen", "sd"}  # fmt: skip


SUBPROCESS_ROWS = [
    pytest.param(["split", "--data", "digits", "--scenario", "random", "--fraction", "0.1",
                  "--seed", "-1", "--out", "x.json"], r"seed", id="split-seed-negative"),
    # diffusers/transformers are imported here: their notices must not precede the error
    pytest.param(["sd", "generate", "--model", "fake.ckpt", "--prompt", "a", "--out", "g",
                  "--device", "cpu"], r"safetensors", id="sd-ckpt-refused"),
]  # fmt: skip


@pytest.mark.parametrize("argv, match", SUBPROCESS_ROWS)
def test_bad_input_in_a_real_process(argv, match, base, tmp_path):
    f = _work(base, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("SALUN_QUIET",)}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "salun", *argv],
        cwd=f.w, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    _check(proc.returncode, proc.stderr, match, before, _snapshot(tmp_path))


def test_bad_grid_fails_before_anything_trains(base, tmp_path, monkeypatch, capsys):
    """``lr_grid: [-1, .nan]`` used to fail after Original and Retrain had trained."""
    import salun.bench.cli as bench_cli

    started = []
    monkeypatch.setattr(bench_cli, "run_bench", lambda *a, **k: started.append(a) or Path(a[1]))
    monkeypatch.chdir(base)
    code = main(["bench", "--config", "bench_grid.yaml", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "lr_grid" in err
    assert started == [] and not (tmp_path / "b").exists()
    # the same file with a valid grid does reach the runner
    good = tmp_path / "good.yaml"
    _bench_yaml(good, methods={"rl": {"epochs": 1, "lr_grid": [0.01, 0.03]}})
    assert main(["bench", "--config", str(good), "--out", str(tmp_path / "b")]) in (0, None)
    assert len(started) == 1


def test_gen_train_resume_refuses_other_settings_and_keeps_the_recorded_ones(
    tmp_path, monkeypatch, capsys
):
    """``gen train --resume`` with another architecture, lr or batch size is refused
    (the folder is untouched); a setting left at its default takes the recorded value."""
    monkeypatch.chdir(tmp_path)
    data = ["--data", "synthetic:64", "--quiet", "--device", "cpu", "--out", "g"]
    tiny = ["--block-out-channels", "8", "16", "--attention-levels", "--norm-num-groups", "4"]
    assert main(["gen", "train", *data, *tiny, "--batch-size", "16", "--lr", "0.001",
                 "--steps", "2"]) == 0  # fmt: skip
    before = _snapshot(tmp_path / "g")
    for flags, match in (
        (["--block-out-channels", "8", "32"], r"block_out_channels was \[8, 16\], now \[8, 32\]"),
        (["--lr", "0.005"], r"lr was 0.001, now 0.005"),
        (["--batch-size", "32"], r"batch_size was 16, now 32"),
    ):
        capsys.readouterr()
        code = main(["gen", "train", *data, "--steps", "3", "--resume", *flags])
        _check(code, capsys.readouterr().err, match, before, _snapshot(tmp_path / "g"))
    assert main(["gen", "train", *data, "--steps", "3", "--resume"]) == 0
    meta = json.loads((tmp_path / "g" / "model.json").read_text())
    assert meta["steps_done"] == 3
    assert (meta["train"]["lr"], meta["train"]["batch_size"]) == (0.001, 16)


def test_imagefolder_skips_hidden_folders(tmp_path):
    """``.ipynb_checkpoints`` or ``.git`` inside train/ is not a class (issue #27)."""
    from salun.data import load_dataset

    _imagefolder(tmp_path / "tree")
    _png(tmp_path / "tree" / "train" / ".hidden" / "0.png", 8, 8)
    bundle = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert bundle.classes == ("a", "b") and len(bundle.train) == 6


def test_internal_error_keeps_its_traceback(monkeypatch):
    """A bug is not a user error: it must surface as an exception, not as exit 2."""
    import salun.cli as cli

    def boom(args):
        raise ZeroDivisionError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["methods"].set_defaults(handler=boom)
    with pytest.raises(ZeroDivisionError):
        cli.main(["methods"])
