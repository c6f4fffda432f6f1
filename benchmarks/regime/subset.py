"""The fixed Fashion-MNIST subsets of the regime pilots: the first ``n // 10`` images of
each class, in file order (no seed, so every run and every machine reads the same images)."""

from __future__ import annotations

import numpy as np

from salun.data import DataBundle, ImageDataset, make_bundle


def first_per_class(data: ImageDataset, n: int, num_classes: int) -> np.ndarray:
    """Indices of the first ``n // num_classes`` samples of each class, sorted."""
    labels = data.labels.numpy()
    per = n // num_classes
    idx = [np.flatnonzero(labels == c)[:per] for c in range(num_classes)]
    return np.sort(np.concatenate(idx)).astype(np.int64)


def subset_bundle(bundle: DataBundle, n_train: int, n_test: int | None) -> DataBundle:
    """``bundle`` cut to ``n_train`` training and ``n_test`` test images (None: all test).
    Normalisation statistics are the full training set's, so they do not depend on the cut."""
    k = bundle.num_classes
    train = bundle.train.subset(first_per_class(bundle.train, n_train, k))
    test = bundle.test if n_test is None else bundle.test.subset(
        first_per_class(bundle.test, n_test, k))
    return make_bundle(bundle.name, train, test, bundle.classes, flip=bundle.flip,
                       mean=bundle.mean, std=bundle.std)
