"""CIFAR-10 and CIFAR-100 from the official "python" (pickled) or binary distributions.

The pickled batches are read with a restricted unpickler that can only rebuild numpy
arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle
from salun.data.registry import find_first, register_loader
from salun.errors import SalunError

_PIXELS = 3 * 32 * 32

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower",
    "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit",
    "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower",
    "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor", "train",
    "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


def _frombuffer(buf: object, dtype: object, shape: object, order: str = "C") -> np.ndarray:
    """What protocol-5 array pickles call (numpy's ``_frombuffer``), limited to plain data:
    an object dtype would mean Python objects, which a CIFAR batch never holds."""
    dt = np.dtype(dtype)
    if dt.hasobject:
        raise SalunError(f"refusing an array of Python objects (dtype {dt})")
    if order not in ("C", "F"):
        raise SalunError(f"refusing an array with memory order {order!r}")
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order)


# numpy's array pickles name these callables; the reconstruct function moved from
# numpy.core to numpy._core in numpy 2, so take it from ndarray.__reduce__ itself.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # protocol 5 (pickle.dumps(..., protocol=5)) rebuilds arrays from raw buffers instead
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain containers and numpy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise SalunError(
                f"refusing to unpickle {module}.{name}: CIFAR files hold only numpy arrays, "
                "so this file is not a genuine CIFAR batch (it may be malicious)"
            ) from None


def safe_unpickle(path: Path) -> object:
    """Load a CIFAR "python" pickle, admitting only numpy array reconstruction."""
    try:
        with open(path, "rb") as f:
            return _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except SalunError as e:
        raise SalunError(f"{path}: {e}") from None
    except Exception as e:  # a corrupt pickle can fail in many ways; all mean the same
        raise SalunError(f"cannot read {path} as a CIFAR batch ({type(e).__name__}: {e})") from None


def _field(d: dict, key: str, path: Path) -> object:
    # The official files have bytes keys; a re-pickled copy may have str keys.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise SalunError(f"{path} is not a CIFAR batch: it has no {key!r} entry")


def _read_pickled(path: Path, label_key: str) -> ImageDataset:
    d = safe_unpickle(path)
    if not isinstance(d, dict):
        raise SalunError(f"{path} is not a CIFAR batch: expected a dict, got {type(d).__name__}")
    data = _field(d, "data", path)
    labels = np.asarray(_field(d, label_key, path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise SalunError(f"{path}: 'data' must be a uint8 array N×{_PIXELS}")
    if data.shape[1] != _PIXELS or labels.shape != (data.shape[0],):
        raise SalunError(
            f"{path}: 'data' has shape {data.shape} and labels {labels.shape}; "
            f"expected N×{_PIXELS} and N"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise SalunError(f"{path}: labels must be integers")
    # Rows hold the red, green and blue planes in turn, each 32×32 row-major.
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageDataset(images, torch.from_numpy(labels.astype(np.int64)))


def _read_binary(path: Path, label_bytes: int) -> ImageDataset:
    raw = path.read_bytes()
    record = label_bytes + _PIXELS
    if not raw or len(raw) % record:
        raise SalunError(
            f"{path} is truncated or corrupted: {len(raw)} bytes is not a multiple of the "
            f"{record}-byte CIFAR record"
        )
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    # CIFAR-100 records start with (coarse, fine); the fine label is the class.
    labels = rows[:, label_bytes - 1].astype(np.int64)
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy()
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels))


def _read_batch(path: Path, label_key: str, label_bytes: int) -> ImageDataset:
    if not path.is_file():
        raise SalunError(f"{path} is not a file; expected a CIFAR batch there")
    if path.suffix == ".bin":
        return _read_binary(path, label_bytes)
    return _read_pickled(path, label_key)


def _concat(parts: list[ImageDataset]) -> ImageDataset:
    return ImageDataset(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def _class_names(folder: Path, meta: str, meta_key: str, text: str, default: tuple) -> tuple:
    """Names from the pickled or text meta file next to the batches, else ``default``."""
    if (folder / meta).is_file():
        d = safe_unpickle(folder / meta)
        names = _field(d, meta_key, folder / meta) if isinstance(d, dict) else None
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in (names or [])]
    elif (folder / text).is_file():
        names = [s.strip() for s in (folder / text).read_text().splitlines() if s.strip()]
    else:
        return default
    if len(names) != len(default):
        raise SalunError(f"{folder}: the meta file lists {len(names)} classes, not {len(default)}")
    return tuple(names)


def _alternatives(py_dir: str, bin_dir: str, name: str) -> str:
    # Parent folder or the batches folder itself, python version before binary.
    return f"{py_dir}/{name}|{name}|{bin_dir}/{name}.bin|{name}.bin"


@register_loader(
    "cifar10",
    "Download the CIFAR-10 python version (cifar-10-python.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there; the binary version "
    "(cifar-10-batches-bin/) works too.",
)
def load_cifar10(root: Path | None, arg: str | None) -> DataBundle:
    """CIFAR-10: 50k train / 10k test 32×32 colour images, 10 classes."""
    py, bn = "cifar-10-batches-py", "cifar-10-batches-bin"
    wanted = [_alternatives(py, bn, f"data_batch_{i}") for i in range(1, 6)]
    wanted.append(_alternatives(py, bn, "test_batch"))
    _, found = find_first("cifar10", root, wanted)
    batches = [_read_batch(found[w], "labels", 1) for w in wanted]
    first = found[wanted[0]]
    classes = _class_names(
        first.parent, "batches.meta", "label_names", "batches.meta.txt", CIFAR10_CLASSES
    )
    return make_bundle("cifar10", _concat(batches[:5]), batches[5], classes, flip=True)


@register_loader(
    "cifar100",
    "Download the CIFAR-100 python version (cifar-100-python.tar.gz) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there; the binary version "
    "(cifar-100-binary/) works too.",
)
def load_cifar100(root: Path | None, arg: str | None) -> DataBundle:
    """CIFAR-100: 50k train / 10k test 32×32 colour images, 100 fine classes."""
    py, bn = "cifar-100-python", "cifar-100-binary"
    wanted = [_alternatives(py, bn, "train"), _alternatives(py, bn, "test")]
    _, found = find_first("cifar100", root, wanted)
    train, test = (_read_batch(found[w], "fine_labels", 2) for w in wanted)
    classes = _class_names(
        found[wanted[0]].parent,
        "meta",
        "fine_label_names",
        "fine_label_names.txt",
        CIFAR100_CLASSES,
    )
    return make_bundle("cifar100", train, test, classes, flip=True)
