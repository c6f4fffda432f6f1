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
    train = ImageDataset(
        to_nchw(arrays["x_train"], source=source), _labels(arrays["y_train"], "y_train", path)
    )
    test = ImageDataset(
        to_nchw(arrays["x_test"], source=source), _labels(arrays["y_test"], "y_test", path)
    )
    return make_bundle(path.stem, train, test, _classes(arrays, path), flip=True)
