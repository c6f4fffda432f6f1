"""Dataset loaders, each fed small files written in the real on-disk format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from salun.data import load_dataset
from salun.data.idx import write_idx
from salun.data.sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from salun.data.sources.idx_sources import FASHION_CLASSES
from salun.errors import DatasetNotFoundError, SalunError

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_search_path(tmp_path, monkeypatch):
    # Keep real datasets on this machine (env folder, user cache) out of the tests.
    monkeypatch.delenv("SALUN_DATA_DIR", raising=False)
    monkeypatch.delenv("SALUN_IMAGE_SIZE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class _Evil:
    """Pickles to a call of os.system that would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pixels(n: int, *shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _pickle(path: Path, obj: object, protocol: int = 2) -> None:
    # The official CIFAR files are Python 2 pickles (protocol 2) with bytes keys.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


# --- CIFAR -----------------------------------------------------------------------------


def _write_cifar10_py(folder: Path, n: int = 2, meta: bool = True) -> tuple[np.ndarray, list]:
    """Five training batches and a test batch of ``n`` images each; returns data, labels."""
    datas, labels = [], []
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        data = _pixels(n, 3072)
        lab = [(i + k) % 10 for k in range(n)]
        _pickle(folder / name, {
            b"batch_label": f"batch {i}".encode(),
            b"labels": lab,
            b"data": data,
            b"filenames": [f"img{k}.png".encode() for k in range(n)],
        })  # fmt: skip
        datas.append(data)
        labels.append(lab)
    if meta:
        names = [f"c{i}".encode() for i in range(10)]
        _pickle(folder / "batches.meta", {
            b"num_cases_per_batch": n, b"label_names": names, b"num_vis": 3072,
        })  # fmt: skip
    return np.concatenate(datas), sum(labels, [])


def test_cifar10_python_version_from_parent_folder(tmp_path):
    data, labels = _write_cifar10_py(tmp_path / "cifar-10-batches-py")
    b = load_dataset("cifar10", root=tmp_path)
    assert b.train.images.shape == (10, 3, 32, 32) and b.test.images.shape == (2, 3, 32, 32)
    assert b.train.images.dtype == torch.uint8 and b.train.labels.dtype == torch.int64
    both = torch.cat([b.train.images, b.test.images]).numpy()
    assert np.array_equal(both, data.reshape(-1, 3, 32, 32))
    assert torch.cat([b.train.labels, b.test.labels]).tolist() == labels
    assert b.classes == tuple(f"c{i}" for i in range(10))
    assert b.flip and b.name == "cifar10"


def test_cifar10_python_version_pointed_at_batches_folder(tmp_path, monkeypatch):
    _write_cifar10_py(tmp_path / "batches", meta=False)
    monkeypatch.setenv("SALUN_DATA_DIR", str(tmp_path / "batches"))
    b = load_dataset("cifar10")
    assert len(b.train) == 10 and b.classes == CIFAR10_CLASSES


def _write_bin(path: Path, label_rows: list[list[int]], data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.concatenate([np.asarray(label_rows, dtype=np.uint8), data], axis=1)
    path.write_bytes(rows.tobytes())


def test_cifar10_binary_version(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-bin"
    datas, labels = [], []
    for i, name in enumerate([f"data_batch_{j}.bin" for j in range(1, 6)] + ["test_batch.bin"]):
        data, lab = _pixels(3, 3072), [i, 9 - i, 3]
        _write_bin(folder / name, [[v] for v in lab], data)
        datas.append(data)
        labels += lab
    (folder / "batches.meta.txt").write_text("\n".join(f"name{i}" for i in range(10)) + "\n\n")
    monkeypatch.setenv("SALUN_DATA_DIR", str(tmp_path))
    b = load_dataset("cifar10")
    assert b.train.images.shape == (15, 3, 32, 32) and len(b.test) == 3
    both = torch.cat([b.train.images, b.test.images]).numpy()
    assert np.array_equal(both, np.concatenate(datas).reshape(-1, 3, 32, 32))
    assert torch.cat([b.train.labels, b.test.labels]).tolist() == labels
    assert b.classes[3] == "name3"


def test_cifar100_python_version(tmp_path):
    folder = tmp_path / "cifar-100-python"
    parts = {}
    for name, n in (("train", 4), ("test", 2)):
        data, fine = _pixels(n, 3072), [99, 0, 42, 7][:n]
        _pickle(folder / name, {
            b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
            b"fine_labels": fine, b"coarse_labels": [19] * n, b"data": data,
        })  # fmt: skip
        parts[name] = (data, fine)
    _pickle(folder / "meta", {
        b"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
        b"coarse_label_names": [b"coarse"] * 20,
    })  # fmt: skip
    b = load_dataset("cifar100", root=tmp_path)
    assert b.num_classes == 100 and b.classes == CIFAR100_CLASSES and b.flip
    assert np.array_equal(b.train.images.numpy(), parts["train"][0].reshape(-1, 3, 32, 32))
    assert b.train.labels.tolist() == [99, 0, 42, 7] and b.test.labels.tolist() == [99, 0]


def test_cifar100_binary_version_uses_fine_label(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    data = _pixels(3, 3072)
    _write_bin(folder / "train.bin", [[1, 55], [2, 99], [19, 0]], data)
    _write_bin(folder / "test.bin", [[5, 12]], data[:1])
    b = load_dataset("cifar100", root=folder)  # the binary folder itself
    assert b.train.labels.tolist() == [55, 99, 0] and b.test.labels.tolist() == [12]
    assert np.array_equal(b.train.images.numpy(), data.reshape(-1, 3, 32, 32))
    assert b.classes == CIFAR100_CLASSES


def test_cifar_pickle_naming_old_numpy_core_module(tmp_path):
    # Genuine CIFAR files were pickled by numpy 1.x and name numpy.core.multiarray.
    folder = tmp_path / "cifar-10-batches-py"
    data, _ = _write_cifar10_py(folder)
    raw = (folder / "data_batch_1").read_bytes()
    old = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    (folder / "data_batch_1").write_bytes(old)
    b = load_dataset("cifar10", root=tmp_path)
    assert np.array_equal(b.train.images[:2].numpy(), data[:2].reshape(-1, 3, 32, 32))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_cifar_pickle_is_refused_without_running(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10_py(folder)
    marker = tmp_path / "pwned"
    _pickle(folder / "data_batch_3", {b"data": _Evil(marker), b"labels": []}, protocol)
    with pytest.raises(SalunError, match="refusing to unpickle"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_corrupt_cifar_files_give_salun_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10_py(folder)
    (folder / "test_batch").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(SalunError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)
    binary = tmp_path / "bin"
    _write_bin(binary / "train.bin", [[0, 1]], _pixels(1, 3072))
    (binary / "test.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(SalunError, match="truncated"):
        load_dataset("cifar100", root=binary)


def test_missing_dataset_names_the_searched_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("SALUN_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "mine")
    msg = str(err.value)
    assert str(tmp_path / "mine") in msg and str(tmp_path / "data" / "cifar10") in msg
    assert "cifar-10-batches-py/data_batch_1" in msg and "cs.toronto.edu" in msg
    with pytest.raises(DatasetNotFoundError, match="train_32x32.mat"):
        load_dataset("svhn", root=tmp_path)


# --- SVHN ------------------------------------------------------------------------------


def test_svhn_mat_files(tmp_path):
    from scipy.io import savemat

    xs = {}
    for split, y in (("train", [10, 1, 9, 10]), ("test", [3, 10])):
        x = RNG.integers(0, 256, size=(32, 32, 3, len(y)), dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": np.asarray(y, np.uint8)[:, None]})
        xs[split] = x
    b = load_dataset("svhn", root=tmp_path)
    assert b.train.images.shape == (4, 3, 32, 32) and b.train.images.dtype == torch.uint8
    assert b.train.labels.tolist() == [0, 1, 9, 0] and b.test.labels.tolist() == [3, 0]
    assert np.array_equal(b.test.images.numpy(), xs["test"].transpose(3, 2, 0, 1))
    assert not b.flip and b.classes == tuple(str(i) for i in range(10))


# --- image folders ---------------------------------------------------------------------


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_imagefolder_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny"
    wnids = ["n02", "n01"]
    train = {w: [_pixels(1, 64, 64, 3)[0] for _ in range(2)] for w in wnids}
    for w, imgs in train.items():
        for k, img in enumerate(imgs):
            _save_png(root / "train" / w / "images" / f"{w}_{k}.png", img)
        (root / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
    val = [_pixels(1, 64, 64, 3)[0] for _ in range(3)]
    for k, img in enumerate(val):
        _save_png(root / "val" / "images" / f"val_{k}.png", img)
    (root / "val" / "val_annotations.txt").write_text(
        "val_0.png\tn02\t0\t0\t10\t10\nval_1.png\tn01\t1\t1\t5\t5\nval_2.png\tn02\t0\t0\t1\t1\n"
    )
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tbullfrog\n")
    b = load_dataset("imagefolder:tiny", root=tmp_path)
    assert b.classes == ("goldfish", "bullfrog") and b.name == "tiny"  # sorted wnids
    assert b.train.images.shape == (4, 3, 64, 64) and b.train.labels.tolist() == [0, 0, 1, 1]
    expected = np.stack(train["n01"] + train["n02"]).transpose(0, 3, 1, 2)
    assert np.array_equal(b.train.images.numpy(), expected)
    assert b.test.labels.tolist() == [1, 0, 1]
    assert np.array_equal(b.test.images.numpy(), np.stack(val).transpose(0, 3, 1, 2))


def test_imagefolder_imagenette_layout_resizes(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("SALUN_IMAGE_SIZE", "16")
    root = tmp_path / "nette"
    for split in ("train", "val"):
        _save_png(root / split / "cat" / "a.png", np.full((40, 30, 3), 200, np.uint8))
        (root / split / "dog").mkdir(parents=True)
        Image.new("L", (20, 50), 90).save(root / split / "dog" / "b.JPEG")
    b = load_dataset(f"imagefolder:{root}")  # an absolute path
    assert b.train.images.shape == (2, 3, 16, 16) and b.classes == ("cat", "dog")
    assert b.train.labels.tolist() == [0, 1] and b.test.labels.tolist() == [0, 1]
    assert (b.train.images[0] == 200).all()  # a uniform image stays uniform
    assert (b.train.images[1].int() - 90).abs().max() <= 2  # grey JPEG → RGB, lossy


def test_imagefolder_errors(tmp_path):
    with pytest.raises(SalunError, match="imagefolder:"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetNotFoundError, match="nowhere/train"):
        load_dataset("imagefolder:nowhere", root=tmp_path)


# --- npz -------------------------------------------------------------------------------


def test_npz_channels_last_with_classes(tmp_path):
    x_train, x_test = _pixels(5, 6, 6, 3), _pixels(2, 6, 6, 3)
    np.savez(
        tmp_path / "mine.npz", x_train=x_train, y_train=np.array([0, 1, 2, 1, 0]),
        x_test=x_test, y_test=np.array([[2], [0]]), classes=np.array(["a", "b", "c"]),
    )  # fmt: skip
    b = load_dataset("npz:mine.npz", root=tmp_path)
    assert b.name == "mine" and b.classes == ("a", "b", "c") and b.flip
    assert b.train.images.shape == (5, 3, 6, 6) and b.train.labels.dtype == torch.int64
    assert np.array_equal(b.train.images.numpy(), x_train.transpose(0, 3, 1, 2))
    assert b.test.labels.tolist() == [2, 0]


def test_npz_grey_images_without_classes(tmp_path):
    path = tmp_path / "grey.npz"
    x = _pixels(4, 5, 5)
    np.savez(path, x_train=x, y_train=np.arange(4), x_test=x[:1], y_test=np.array([3]))
    b = load_dataset(f"npz:{path}")
    assert b.train.images.shape == (4, 1, 5, 5) and b.classes == ("0", "1", "2", "3")
    assert np.array_equal(b.train.images[:, 0].numpy(), x)


def test_npz_missing_keys_are_named(tmp_path):
    np.savez(tmp_path / "part.npz", x_train=_pixels(2, 4, 4), y_train=np.arange(2))
    with pytest.raises(SalunError, match="lacks x_test, y_test"):
        load_dataset("npz:part.npz", root=tmp_path)


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(marker)
    x = _pixels(2, 4, 4)
    np.savez(tmp_path / "evil.npz", x_train=x, y_train=evil, x_test=x, y_test=np.arange(2))
    with pytest.raises(SalunError, match="object array"):
        load_dataset("npz:evil.npz", root=tmp_path)
    assert not marker.exists()


# --- digits, IDX, synthetic ------------------------------------------------------------


def test_digits_is_deterministic_and_scaled():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.train.images.shape == (1437, 1, 8, 8) and a.test.images.shape == (360, 1, 8, 8)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert int(a.train.images.max()) == 255 and a.num_classes == 10 and not a.flip
    assert set(a.test.labels.tolist()) == set(range(10))


def _write_fashion(folder: Path, n_train: int = 6, n_test: int = 3, gz: bool = True) -> dict:
    arrays = {
        "train-images-idx3-ubyte": _pixels(n_train, 28, 28),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": _pixels(n_test, 28, 28),
        "t10k-labels-idx1-ubyte": np.array([9, 0, 5][:n_test], dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


def test_fashion_mnist_idx_files(tmp_path):
    arrays = _write_fashion(tmp_path)
    b = load_dataset("fashion-mnist", root=tmp_path)
    assert b.train.images.shape == (6, 1, 28, 28) and b.test.images.shape == (3, 1, 28, 28)
    assert np.array_equal(b.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert b.test.labels.tolist() == [9, 0, 5] and b.classes == FASHION_CLASSES and b.flip


def test_truncated_idx_file_is_an_error(tmp_path):
    _write_fashion(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(SalunError, match="truncated"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_synthetic_source():
    b = load_dataset("synthetic:40")
    assert len(b.train) == 40 and len(b.test) == 10 and b.train.images.dtype == torch.uint8
    with pytest.raises(SalunError, match="integer"):
        load_dataset("synthetic:many")
