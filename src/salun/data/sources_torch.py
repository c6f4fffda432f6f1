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
the methods' ``augment`` setting for per-epoch augmentation. The stored tensor is allocated
once and filled batch by batch (:class:`_Filler`): reading peaks at the stored images
plus one batch, at most 1.25× the images' float32 size. (To read a dataset batch
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
    return _read_all(loader, name, _sample_count(data))


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


class _Filler:
    """The images and labels of a pass, written in place into tensors allocated once.

    The images are kept as uint8 while every batch so far sits on the 8-bit grid (4× less
    memory than float32, and bit-equal to salun's own datasets once batched); the first
    batch off the grid turns the store into float32 once, converting what was filled in
    place. So the peak is the stored tensor plus one batch: at most 1.25× the images as
    float32 (the moment of the switch), 1× for uint8 input — never a list of batches next
    to their concatenation. With ``capacity`` unknown (an iterable source), batches are
    kept as read and copied into one tensor at the end (at most 2× the stored size).
    """

    def __init__(self, name: str, capacity: int | None):
        self.name, self.capacity, self.n = name, capacity, 0
        self.images: torch.Tensor | None = None  # N×C×H×W, uint8 or float32
        self.labels: torch.Tensor | None = None
        self.chunks: list[tuple[torch.Tensor, torch.Tensor]] = []  # capacity unknown

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.images is None and not self.chunks:
            self.shape = tuple(x.shape[1:])
            self.uint8 = True  # until a batch says otherwise
            if self.capacity is not None:
                self.images = torch.empty((self.capacity, *self.shape), dtype=torch.uint8)
                self.labels = torch.empty(self.capacity, dtype=torch.int64)
        if tuple(x.shape[1:]) != self.shape:
            shapes = sorted({self.shape, tuple(x.shape[1:])})
            raise SalunError(f"{self.name}: images of different shapes {shapes}; resize them")
        q = _on_grid(x) if self.uint8 else None
        if self.uint8 and q is None:
            self._to_float()
        if self.uint8:
            x = q
        elif x.dtype == torch.uint8:  # a uint8 batch after float ones
            x = _as_float(x)
        b = len(x)
        if self.images is None:
            self.chunks.append((x, y))
        else:
            if self.n + b > len(self.images):
                raise SalunError(
                    f"{self.name} gave more samples than its length ({len(self.images)}); "
                    "make __len__ return the number of samples"
                )
            self.images[self.n : self.n + b].copy_(x)
            self.labels[self.n : self.n + b].copy_(y)
        self.n += b

    def _to_float(self) -> None:
        self.uint8 = False
        if self.images is not None:
            f = torch.empty(self.images.shape, dtype=torch.float32)
            _as_float(self.images[: self.n], out=f[: self.n])
            self.images = f  # the uint8 store is freed here
        else:
            self.chunks = [(_as_float(x), y) for x, y in self.chunks]

    def result(self) -> ImageDataset:
        if self.n == 0:
            raise SalunError(f"{self.name} is empty: it gave no samples")
        if self.images is None:  # capacity unknown: one copy of the batches at the end
            dtype = torch.uint8 if self.uint8 else torch.float32
            images = torch.empty((self.n, *self.shape), dtype=dtype)
            labels = torch.empty(self.n, dtype=torch.int64)
            at = 0
            while self.chunks:
                x, y = self.chunks.pop(0)  # each batch freed once copied
                images[at : at + len(x)].copy_(x)
                labels[at : at + len(x)].copy_(y)
                at += len(x)
            return ImageDataset(images, labels)
        if self.n < len(self.images):  # a length that overstated the samples
            return ImageDataset(self.images[: self.n].clone(), self.labels[: self.n].clone())
        return ImageDataset(self.images, self.labels)


def _read_all(loader: Any, name: str, capacity: int | None) -> ImageDataset:
    filler = _Filler(name, capacity)
    try:
        for i, batch in enumerate(loader):
            x, y = split_batch(batch, name, i)
            x = check_images(x, name, i)
            filler.add(x, check_labels(y, len(x), name, i))
    except (TypeError, RuntimeError) as e:
        if isinstance(e, SalunError):
            raise
        raise SalunError(f"{name}: the data loader failed to batch its samples: {e}") from None
    return filler.result()


def _sample_count(data: Any) -> int | None:
    """How many samples a pass over ``data`` gives, when that is known without reading."""
    try:
        if isinstance(data, DataLoader):
            if isinstance(data.dataset, torch.utils.data.IterableDataset):
                return None
            if data.batch_size is None:  # a custom batch_sampler, or no batching
                return None  # counting would draw the sampler's random order
            n = len(data.sampler)
            return n - n % data.batch_size if data.drop_last else n
        if isinstance(data, torch.utils.data.IterableDataset):
            return None
        return len(data)
    except TypeError:  # no __len__
        return None


def _on_grid(x: torch.Tensor) -> torch.Tensor | None:
    """``x`` as uint8 if it sits exactly on the 8-bit grid (``x·255`` an integer, what
    ``ToTensor`` of an 8-bit image gives), else ``None``."""
    if x.dtype == torch.uint8:
        return x
    q = torch.round(x * 255.0)
    if torch.equal(q / 255.0, x):
        return q.to(torch.uint8)
    return None


def _as_float(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 → float32 in [0, 1], bit-equal to what ``_on_grid`` read (``q / 255``)."""
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32)
    return out.copy_(x).div_(255.0)
