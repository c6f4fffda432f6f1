"""``npz:PATH``: a user's own arrays ``x_train, y_train, x_test, y_test`` in one .npz file."""

from __future__ import annotations

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
    """The arrays of an .npz file, never unpickling anything (object arrays are refused)."""
    try:
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
    train = ImageDataset(to_nchw(arrays["x_train"], source=f"{source}: x_train"), y_train)
    test = ImageDataset(to_nchw(arrays["x_test"], source=f"{source}: x_test"), y_test)
    return make_bundle(path.stem, train, test, classes, flip=True)
