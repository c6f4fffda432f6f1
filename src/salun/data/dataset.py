"""In-memory image datasets: uint8 images N×C×H×W (or float32 in [0, 1]) and int64 labels.

Everything downstream (training, saliency, unlearning, metrics) works on these tensors
directly, so there are no DataLoader workers and no per-sample Python in hot loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from salun.errors import SalunError


@dataclass(frozen=True)
class ImageDataset:
    """A set of images and labels held as tensors.

    Attributes:
        images: uint8 tensor of shape (N, C, H, W), pixel values 0..255; or float32 in
            [0, 1] (user data off the 8-bit grid, e.g. resized by a transform: see
            docs/your-model.md), batched as they are.
        labels: int64 tensor of shape (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype not in (torch.uint8, torch.float32) or self.images.dim() != 4:
            raise SalunError(
                f"images must be a uint8 (or float32 in [0, 1]) tensor N×C×H×W, got "
                f"{self.images.dtype} with shape {tuple(self.images.shape)}"
            )
        if self.images.dtype == torch.float32 and self.images.numel():
            lo, hi = torch.aminmax(self.images)  # NaN fails both comparisons below
            if not (float(lo) >= 0.0 and float(hi) <= 1.0):
                raise SalunError(
                    f"float images must lie in [0, 1], found {float(lo):.4g}..{float(hi):.4g}"
                )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise SalunError(f"labels must be an int64 vector, got {self.labels.dtype}")
        if len(self.labels) != len(self.images):
            raise SalunError(
                f"{len(self.images)} images but {len(self.labels)} labels: they must match"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray | torch.Tensor | list[int]) -> ImageDataset:
        """A new dataset holding the rows at ``indices`` (in that order)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(self.images[idx], self.labels[idx])

    def with_labels(self, labels: torch.Tensor) -> ImageDataset:
        """The same images with other labels (e.g. random labels for RL)."""
        return ImageDataset(self.images, labels.to(torch.int64))


@dataclass(frozen=True)
class DataBundle:
    """A dataset's train and test sets with what models need to know about them.

    Attributes:
        name: the source name, e.g. ``"fashion-mnist"``.
        train: the training set (the forget/retain split is drawn from it).
        test: the test set (TA and the MIA non-member set).
        classes: class names; ``len(classes)`` is the number of classes.
        mean, std: per-channel statistics of the training images in [0, 1]; models
            normalise inside themselves with these (docs/method.md).
        flip: whether horizontal flips are a valid augmentation (off for digits).
    """

    name: str
    train: ImageDataset
    test: ImageDataset
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (or [0, 1] float) images, on the [0, 1] scale."""
    x = images.to(torch.float64)
    if images.dtype == torch.uint8:
        x = x.div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def make_bundle(
    name: str,
    train: ImageDataset,
    test: ImageDataset,
    classes: tuple[str, ...] | list[str] | None = None,
    *,
    flip: bool = True,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> DataBundle:
    """Build a :class:`DataBundle`, checking shapes and labels and filling in statistics."""
    if train.images.shape[1:] != test.images.shape[1:]:
        raise SalunError(
            f"{name}: train images are {tuple(train.images.shape[1:])} but test images are "
            f"{tuple(test.images.shape[1:])}"
        )
    if len(train) == 0 or len(test) == 0:
        raise SalunError(f"{name}: the train and test sets must both be non-empty")
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    if classes is None:
        classes = tuple(str(i) for i in range(n_classes))
    classes = tuple(classes)
    if int(min(train.labels.min(), test.labels.min())) < 0 or n_classes > len(classes):
        raise SalunError(
            f"{name}: labels must lie in 0..{len(classes) - 1}, found "
            f"{int(min(train.labels.min(), test.labels.min()))}..{n_classes - 1}"
        )
    if mean is None or std is None:
        mean, std = channel_stats(train.images)
    return DataBundle(name, train, test, classes, tuple(mean), tuple(std), flip)


def to_nchw(images: np.ndarray, *, source: str) -> torch.Tensor:
    """Turn N×H×W, N×H×W×C or N×C×H×W uint8-compatible arrays into a uint8 N×C×H×W tensor.

    A trailing axis of size 1 or 3 is read as channels-last; a second axis of size 1 or 3
    as channels-first. Values outside 0..255 are an error, not silently clipped.
    """
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None, :, :]
    elif a.ndim == 4:
        if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
            a = a.transpose(0, 3, 1, 2)
    else:
        raise SalunError(f"{source}: images must have 3 or 4 dimensions, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind not in "biuf":  # bool, int, uint, float: not strings or objects
            raise SalunError(f"{source}: pixels must be integers or floats, got {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            bad = int(np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0])
            raise SalunError(f"{source}: image {bad} holds NaN or infinite pixels")
        if np.issubdtype(a.dtype, np.floating) and a.size and a.max() <= 1.0 and a.min() >= 0:
            a = np.rint(a * 255.0)
        if a.size and (a.min() < 0 or a.max() > 255):
            raise SalunError(f"{source}: pixel values must lie in 0..255 (or 0..1 floats)")
        a = a.astype(np.uint8)
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # e.g. np.frombuffer: torch wants memory it may own
        a = a.copy()
    return torch.from_numpy(a)
