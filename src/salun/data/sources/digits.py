"""scikit-learn's bundled 8×8 handwritten digits: a tiny real dataset that needs no files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from salun.data.dataset import DataBundle, ImageDataset, make_bundle
from salun.data.registry import register_loader

TRAIN_FRACTION = 0.8
SPLIT_SEED = 0


@register_loader("digits", "It ships with scikit-learn; no files are needed.")
def load_digits_bundle(root: Path | None, arg: str | None) -> DataBundle:
    """1,797 8×8 grey digits split 80/20 by a fixed seed-0 permutation (1,437 / 360).

    Pixel values 0..16 are scaled to 0..255. Horizontal flips are off (they change digits).
    """
    from sklearn.datasets import load_digits  # reads a CSV inside the package, no download

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = d.target.astype(np.int64)
    # A fixed permutation keeps the train/test split the same on every machine.
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    cut = int(len(labels) * TRAIN_FRACTION)

    def part(idx: np.ndarray) -> ImageDataset:
        return ImageDataset(torch.from_numpy(images[idx].copy()), torch.from_numpy(labels[idx]))

    classes = tuple(str(i) for i in range(10))
    return make_bundle("digits", part(order[:cut]), part(order[cut:]), classes, flip=False)
