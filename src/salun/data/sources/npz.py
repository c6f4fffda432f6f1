"""``npz:PATH``: a user's own arrays ``x_train, y_train, x_test, y_test`` in one .npz file."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle, to_nchw
from salun.data.registry import find_first, register_loader
from salun.errors import SalunError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, never unpickling anything (object arrays are refused),
    and never allocating more than the file holds (:func:`check_declared_sizes`)."""
    try:
        if not zipfile.is_zipfile(path):
            raise SalunError(f"{path} is not an .npz archive (np.savez writes one)")
        check_declared_sizes(path)
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise SalunError(f"{path} holds a single array; npz:PATH needs an .npz archive")
        with loaded as archive:
            return {k: archive[k] for k in archive.files}
    except ValueError as e:
        # numpy refuses object arrays and pickles without allow_pickle; say so plainly.
        if "allow_pickle" in str(e):
            raise SalunError(
                f"{path} holds an object array or a pickle, which would need pickle to load; "
                "save plain numeric arrays (and classes as a string array) instead"
            ) from None
        raise SalunError(f"cannot read {path} as .npz: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise SalunError(f"cannot read {path} as .npz: {e}") from None


def check_declared_sizes(path: Path) -> None:
    """Each array's header must declare the bytes its member holds: numpy allocates what
    the header says before reading, so a 100-byte member declaring 980 000 000 000 pixels
    asked for 913 GiB (a MemoryError) instead of being refused as damaged."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                try:
                    major, _ = np.lib.format.read_magic(f)
                    read = {1: np.lib.format.read_array_header_1_0}.get(
                        major, np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(f, max_header_size=10_000)
                except ValueError as e:
                    raise SalunError(
                        f"{path}: {info.filename} is not a numpy array ({e})"
                    ) from None
                header = f.tell()
            if dtype.hasobject:
                continue  # refused by np.load(allow_pickle=False) with its own message
            declared = math.prod(shape) * dtype.itemsize
            if declared != info.file_size - header:
                raise SalunError(
                    f"{path}: {info.filename} declares shape {shape} ({declared} bytes) but "
                    f"holds {info.file_size - header} bytes; the file is damaged"
                )


def _float_pixels(x: np.ndarray, key: str, path: Path) -> None:
    """Float pixels are [0, 1] intensities or whole numbers 0..255. Anything else (1.03:
    a scaling slip) would be cut to uint8 0/1 without a word: a black dataset."""
    if x.dtype.kind != "f" or not x.size or not np.isfinite(x).all():
        return  # ints, and NaN/inf, are checked by to_nchw
    if x.max() > 1.0 and not (x == np.rint(x)).all():
        raise SalunError(
            f"{path}: {key} holds float pixels up to {float(x.max()):g} with fractions: give "
            "floats in [0, 1] or whole numbers in 0..255 (uint8 is best)"
        )


def _labels(y: np.ndarray, key: str, path: Path) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise SalunError(f"{path}: {key} must be a vector of integer class labels, got "
                         f"{y.dtype} with shape {y.shape}")  # fmt: skip
    return torch.from_numpy(y.astype(np.int64))


def _check_label_range(
    y_train: torch.Tensor, y_test: torch.Tensor, classes: tuple[str, ...] | None, path: Path
) -> None:
    """Labels are class indices 0..K-1. K is the length of ``classes`` when the file has
    one; otherwise the number of distinct training labels, which must then be exactly
    0..K-1 (labels 100..104 for five classes would silently make a 105-class model)."""
    if classes is not None:
        k, how = len(classes), f"the file's {len(classes)} classes"
    else:
        seen = torch.unique(y_train)
        k, how = len(seen), f"{len(seen)} distinct training labels"
        if len(y_train) and (seen != torch.arange(k)).any():
            raise SalunError(
                f"{path}: y_train labels must be 0..{k - 1} ({how}), found "
                f"{int(seen.min())}..{int(seen.max())}; relabel them or add a classes array"
            )
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        bad = y[(y < 0) | (y >= k)]
        if len(bad):
            raise SalunError(f"{path}: {key} holds label {int(bad[0])}, outside [0, {k}) ({how})")


def _classes(arrays: dict[str, np.ndarray], path: Path) -> tuple[str, ...] | None:
    if "classes" not in arrays:
        return None
    c = arrays["classes"]
    if c.ndim != 1 or c.dtype.kind not in "US":
        raise SalunError(f"{path}: 'classes' must be a 1-D array of strings")
    return tuple(s.decode() if isinstance(s, bytes) else str(s) for s in c.tolist())


@register_loader(
    "npz",
    "Give the file as npz:PATH; it must hold x_train, y_train, x_test, y_test "
    "(np.savez(PATH, x_train=..., ...)) and optionally classes.",
)
def load_npz(root: Path | None, arg: str | None) -> DataBundle:
    """Images N×H×W, N×H×W×C or N×C×H×W (uint8, or floats in [0, 1]) with integer labels.

    The bundle is named after the file's stem, so splits made for one file do not fit another.
    """
    if not arg:
        raise SalunError("npz needs a file: npz:/data/mine.npz")
    # A relative PATH is tried under each search folder and the working directory.
    _, found = find_first("npz", root, [arg], [os.getcwd()])
    path = found[arg]
    arrays = read_npz(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise SalunError(
            f"{path} lacks {', '.join(missing)}; it has {', '.join(sorted(arrays)) or 'nothing'}"
        )
    source = str(path)
    classes = _classes(arrays, path)
    y_train = _labels(arrays["y_train"], "y_train", path)
    y_test = _labels(arrays["y_test"], "y_test", path)
    _check_label_range(y_train, y_test, classes, path)
    for key in ("x_train", "x_test"):
        _float_pixels(arrays[key], key, path)
    train = ImageDataset(to_nchw(arrays["x_train"], source=f"{source}: x_train"), y_train)
    test = ImageDataset(to_nchw(arrays["x_test"], source=f"{source}: x_test"), y_test)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise SalunError(
            f"{path}: x_train images are {tuple(train.images.shape[1:])} (C, H, W) but x_test "
            f"images are {tuple(test.images.shape[1:])}; both must have one shape"
        )
    return make_bundle(path.stem, train, test, classes, flip=True)
