"""SVHN (Street View House Numbers), cropped-digits format, from its MATLAB files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle
from salun.data.registry import find_first, register_loader
from salun.errors import SalunError

_FILES = ["train_32x32.mat", "test_32x32.mat"]


def read_svhn_mat(path: Path) -> ImageDataset:
    """Read one ``*_32x32.mat`` file: X is H×W×C×N uint8, y is N×1 with 10 meaning digit 0."""
    from scipy.io import loadmat  # scipy comes with scikit-learn; import lazily (slow)

    try:
        m = loadmat(path, variable_names=["X", "y"])
    except NotImplementedError:  # MATLAB v7.3 files are HDF5, which loadmat cannot read
        raise SalunError(f"{path} is a MATLAB v7.3 file; use the original SVHN .mat") from None
    except Exception as e:
        raise SalunError(f"cannot read {path} as a MATLAB file ({type(e).__name__}: {e})") from None
    if "X" not in m or "y" not in m:
        raise SalunError(f"{path} is not an SVHN file: it needs variables X and y")
    x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise SalunError(f"{path}: X has shape {x.shape}, expected H×W×3×N with N = {len(y)}")
    if x.dtype != np.uint8:
        raise SalunError(f"{path}: X must hold uint8 pixels, got {x.dtype}")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10 or not np.array_equal(labels, y)):
        raise SalunError(f"{path}: labels must be integers 0..10, got {y.min()}..{y.max()}")
    labels[labels == 10] = 0  # SVHN stores digit 0 as label 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # H×W×C×N → N×C×H×W
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels))


@register_loader(
    "svhn",
    "Download train_32x32.mat and test_32x32.mat (the cropped digits, format 2) from "
    "http://ufldl.stanford.edu/housenumbers/ and place them there.",
)
def load_svhn(root: Path | None, arg: str | None) -> DataBundle:
    """SVHN: 73,257 train / 26,032 test 32×32 colour digits (the extra set is not used).

    Horizontal flips are off: they turn digits into other shapes.
    """
    _, found = find_first("svhn", root, _FILES)
    train, test = (read_svhn_mat(found[f]) for f in _FILES)
    return make_bundle("svhn", train, test, tuple(str(i) for i in range(10)), flip=False)
