"""MNIST and Fashion-MNIST from their IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle, to_nchw
from salun.data.idx import read_idx
from salun.data.registry import find_first, register_loader
from salun.errors import SalunError

_FILES = [
    "train-images-idx3-ubyte.gz|train-images-idx3-ubyte",
    "train-labels-idx1-ubyte.gz|train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte.gz|t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte.gz|t10k-labels-idx1-ubyte",
]

FASHION_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def _load_idx_dataset(name: str, root: Path | None, system: list[str], classes, flip: bool):
    _, found = find_first(name, root, _FILES, system)
    xtr, ytr, xte, yte = (read_idx(found[k]) for k in _FILES)
    train = ImageDataset(to_nchw(xtr, source=name), torch.from_numpy(ytr.astype("int64")))
    test = ImageDataset(to_nchw(xte, source=name), torch.from_numpy(yte.astype("int64")))
    return make_bundle(name, train, test, classes, flip=flip)


@register_loader(
    "fashion-mnist",
    "On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs them under "
    "/usr/share/datasets/fashion-mnist).",
)
def load_fashion_mnist(root: Path | None, arg: str | None) -> DataBundle:
    """Fashion-MNIST: 60k train / 10k test 28×28 grey images, 10 clothing classes.

    ``fashion-mnist:train=N[,test=M]`` keeps a fixed, class-balanced subset: the first
    N/10 (M/10) images of each class in file order, normalised with the full training
    set's statistics (the CPU regime preset trains on ``train=2500``)."""
    bundle = _load_idx_dataset(
        "fashion-mnist", root, ["/usr/share/datasets/fashion-mnist"], FASHION_CLASSES, True
    )
    return bundle if not arg else _first_per_class_subset(bundle, arg)


def _first_per_class_subset(bundle: DataBundle, arg: str) -> DataBundle:
    sizes = {}
    for part in arg.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in ("train", "test") or not value.strip().isdigit() or key in sizes:
            raise SalunError(
                f"fashion-mnist:{arg}: give train=N and/or test=M once each, e.g. "
                "fashion-mnist:train=2500"
            )
        sizes[key] = int(value)
    k = bundle.num_classes
    parts = {}
    for key, data in (("train", bundle.train), ("test", bundle.test)):
        n = sizes.get(key)
        if n is None:
            parts[key] = data
            continue
        labels = data.labels.numpy()
        per = n // k
        if n % k or per < 1 or any((labels == c).sum() < per for c in range(k)):
            raise SalunError(
                f"fashion-mnist:{arg}: {key}={n} must be a positive multiple of {k} "
                f"with at most {min((labels == c).sum() for c in range(k))} images per class"
            )
        idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(k)]))
        parts[key] = data.subset(idx)
    return make_bundle(bundle.name, parts["train"], parts["test"], bundle.classes,
                       flip=bundle.flip, mean=bundle.mean, std=bundle.std)  # fmt: skip


@register_loader(
    "mnist",
    "Place the four IDX files (train-images-idx3-ubyte.gz, ...) from the MNIST "
    "distribution in that folder.",
)
def load_mnist(root: Path | None, arg: str | None) -> DataBundle:
    """MNIST digits, 28×28 grey. Horizontal flips are off (they change digits)."""
    return _load_idx_dataset(
        "mnist", root, ["/usr/share/datasets/mnist"], tuple(str(i) for i in range(10)), False
    )
