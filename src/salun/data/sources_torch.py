"""User data as salun's in-memory :class:`ImageDataset`: a torch ``Dataset`` or ``DataLoader``.

The input convention (docs/your-model.md): images are float tensors in [0, 1], what
``ToTensor`` gives (uint8 tensors 0..255 are accepted too); labels are integers. A batch
outside [0, 1] — typically images already normalised — is refused with a clear error
rather than fed, wrongly scaled, to the model and to FGSM.

Everything is read once, in the order the loader yields it, and held in memory: samples
on the 8-bit grid (x·255 an integer, which ``ToTensor`` of an 8-bit image always gives)
are stored exactly as uint8, anything else as float32. Every method then batches from
memory with its own ``batch_size`` and seeds, so the same samples give the same result
however they were fed. Random transforms of the user's dataset are drawn once here; use
the methods' ``augment`` setting for per-epoch augmentation. (To read a dataset batch
by batch instead, see :mod:`salun.data.streaming`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from salun.data.dataset import ImageDataset
from salun.errors import SalunError

_IMAGE_KEYS = ("pixel_values", "image", "images", "x")
_LABEL_KEYS = ("labels", "label", "y")


def as_image_dataset(data: Any, name: str = "data", *, batch_size: int = 256) -> ImageDataset:
    """``data`` as an :class:`ImageDataset` (returned unchanged if it already is one).

    Args:
        data: an :class:`ImageDataset`, a ``torch.utils.data.Dataset`` of ``(image, label)``
            (or of dicts with ``pixel_values``/``image`` and ``label``/``labels``), or a
            ``DataLoader`` yielding such batches.
        name: how messages call it (``forget``, ``retain``, ``test``).
        batch_size: batches used to read a plain ``Dataset`` (its order is kept).
    """
    if isinstance(data, ImageDataset):
        return data  # the fast path: already in memory
    if isinstance(data, DataLoader):
        loader = data
    elif isinstance(data, Dataset):
        _check_first_sample(data, name)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    else:
        raise SalunError(
            f"{name} must be a salun ImageDataset, a torch Dataset of (image, label) or a "
            f"DataLoader, got {type(data).__name__}"
        )
    images, labels = [], []
    try:
        for i, batch in enumerate(loader):
            x, y = split_batch(batch, name, i)
            images.append(check_images(x, name, i))
            labels.append(check_labels(y, len(x), name, i))
    except (TypeError, RuntimeError) as e:
        if isinstance(e, SalunError):
            raise
        raise SalunError(f"{name}: the data loader failed to batch its samples: {e}") from None
    if not images:
        raise SalunError(f"{name} is empty: it gave no samples")
    shapes = {tuple(x.shape[1:]) for x in images}
    if len(shapes) > 1:
        raise SalunError(f"{name}: images of different shapes {sorted(shapes)}; resize them")
    return ImageDataset(_store(torch.cat(images)), torch.cat(labels))


def same_storage(*sets: ImageDataset) -> list[ImageDataset]:
    """The sets with one image dtype: if any is float32, uint8 ones become float32 (exactly
    what batching would give), so they can be concatenated (RL's joint regime, evaluation)."""
    if all(s.images.dtype == torch.uint8 for s in sets):
        return list(sets)
    return [
        ImageDataset(s.images.float().div_(255.0), s.labels) if s.images.dtype == torch.uint8 else s
        for s in sets
    ]


def _check_first_sample(data: Dataset, name: str) -> None:
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return  # an iterable-style dataset: checked batch by batch
    if n == 0:
        raise SalunError(f"{name} is empty: it holds no samples")
    sample = data[0]
    image = split_batch(sample, name, 0)[0]
    if not isinstance(image, torch.Tensor):
        raise SalunError(
            f"{name}: samples hold a {type(image).__name__}, not a tensor; add "
            "torchvision.transforms.ToTensor() (images in [0, 1]) to the dataset's transform"
        )


def split_batch(batch: Any, name: str, i: int) -> tuple[Any, Any]:
    if isinstance(batch, Mapping):
        x = next((batch[k] for k in _IMAGE_KEYS if k in batch), None)
        y = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
        if x is None or y is None:
            raise SalunError(
                f"{name}: batch {i} is a dict with keys {sorted(batch)}; it needs an image "
                f"({'/'.join(_IMAGE_KEYS)}) and a label ({'/'.join(_LABEL_KEYS)})"
            )
        return x, y
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise SalunError(
        f"{name}: batch {i} must be (images, labels), got a {type(batch).__name__}"
        + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
    )


def check_images(x: Any, name: str, i: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise SalunError(
            f"{name}: batch {i} images are a {type(x).__name__}, not a tensor; add "
            "torchvision.transforms.ToTensor() to the dataset's transform"
        )
    if x.dim() != 4:
        raise SalunError(
            f"{name}: batch {i} images have shape {tuple(x.shape)}; salun needs B×C×H×W "
            "(each image C×H×W, as ToTensor gives)"
        )
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise SalunError(f"{name}: batch {i} images are {x.dtype}; use float in [0, 1] or uint8")
    x = x.float()
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x))
        if not (lo >= 0.0 and hi <= 1.0):  # NaN fails both
            raise SalunError(
                f"{name}: batch {i} has pixel values in {lo:.4g}..{hi:.4g}, outside [0, 1]. "
                "salun takes images in [0, 1] (what ToTensor gives): if your transform "
                "normalises them, drop the Normalize and pass normalize=(mean, std) instead"
            )
    return x


def check_labels(y: Any, n: int, name: str, i: int) -> torch.Tensor:
    y = torch.as_tensor(y).detach().cpu()
    if y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1 or len(y) != n:
        raise SalunError(
            f"{name}: batch {i} labels must be {n} integer class indices, got {y.dtype} "
            f"with shape {tuple(y.shape)}"
        )
    if len(y) and int(y.min()) < 0:
        raise SalunError(f"{name}: batch {i} has a negative label {int(y.min())}")
    return y.to(torch.int64)


def _store(x: torch.Tensor) -> torch.Tensor:
    """uint8 when the images sit exactly on the 8-bit grid (4× less memory, and bit-equal
    to salun's own datasets once batched), else float32 as they are."""
    if x.dtype == torch.uint8:
        return x.contiguous()
    q = torch.round(x * 255.0)
    if torch.equal(q / 255.0, x):
        return q.to(torch.uint8)
    return x.contiguous()
