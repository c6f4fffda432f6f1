"""A map-style torch ``Dataset`` read batch by batch, never held in memory.

:func:`salun.data.iterate_batches` draws its index order exactly as for an in-memory
:class:`ImageDataset` and asks :meth:`StreamedImages.stream` for those index batches; a
``DataLoader`` (the user's transforms, ``num_workers`` processes) fetches them. So a
streamed set gives the same batches — and a method the same result — as the same samples
in memory. Only the labels are held (one int64 per sample). Methods that need every image
at once (concatenating D_f and D_r, copying the set) cannot stream; docs/your-model.md
lists which do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from salun.data.sources_torch import check_images, check_labels, split_batch
from salun.errors import SalunError


class StreamedImages:
    """``dataset`` (``(image, label)`` samples, images in [0, 1]) as a salun data set.

    Args:
        dataset: a map-style ``torch.utils.data.Dataset`` with ``len``.
        name: how messages call it.
        num_workers: ``DataLoader`` worker processes for reading.
    """

    def __init__(self, dataset: Dataset, name: str = "data", *, num_workers: int = 0):
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise SalunError(
                f"{name}: streaming needs a map-style Dataset with a length (salun draws the "
                "sample order itself)"
            ) from None
        if n == 0:
            raise SalunError(f"{name} is empty: it holds no samples")
        self.dataset, self.name, self.num_workers, self._n = dataset, name, num_workers, n
        self.labels = self._read_labels()

    def __len__(self) -> int:
        return self._n

    @property
    def images(self):
        raise SalunError(
            f"{self.name} is streamed, but this step needs all its images in memory; "
            "call without stream=True"
        )

    def stream(self, chunks: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` for each index batch in ``chunks``, in that order, on the CPU."""
        if not chunks:
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.num_workers,
        )
        for i, batch in enumerate(loader):
            x, y = split_batch(batch, self.name, i)
            x = check_images(x, self.name, i)
            yield x, check_labels(y, len(x), self.name, i)

    def first_image(self) -> torch.Tensor:
        """A one-image batch (the class-count probe)."""
        return next(self.stream([torch.arange(1)]))[0]

    def _read_labels(self) -> torch.Tensor:
        # torchvision-style datasets carry their labels; otherwise one reading pass
        targets = getattr(self.dataset, "targets", None)
        relabelled = getattr(self.dataset, "target_transform", None) is not None
        if targets is not None and not relabelled and len(targets) == self._n:
            return check_labels(targets, self._n, self.name, 0)
        chunks = list(torch.arange(self._n).split(256))
        return torch.cat([y for _, y in self.stream(chunks)])


class StreamedIterable:
    """An ``IterableDataset`` (``(image, label)`` samples, images in [0, 1]) as a salun data
    set, for the methods that only pass over their data (docs/your-model.md, "Data that
    does not fit").

    An iterable has no indices, so salun cannot draw the sample order: every pass reads
    the dataset from its start, in the order it yields (shuffle inside your dataset if the
    method should see a new order each epoch), cut into the method's batch sizes. One
    counting pass at the start reads the labels (one int64 per sample) and the length.
    The dataset must yield the same samples on every pass.

    Args:
        dataset: a ``torch.utils.data.IterableDataset``.
        name: how messages call it.
        num_workers: ``DataLoader`` worker processes (the dataset must split its work
            between them itself, as torch requires of an iterable with workers).
    """

    def __init__(self, dataset, name: str = "data", *, num_workers: int = 0):
        self.dataset, self.name, self.num_workers = dataset, name, num_workers
        self.labels = torch.cat([y for _, y in self._batches(256)])
        self._n = len(self.labels)
        if self._n == 0:
            raise SalunError(f"{name} is empty: it holds no samples")

    def __len__(self) -> int:
        return self._n

    images = StreamedImages.images

    def _batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(self.dataset, batch_size=size, num_workers=self.num_workers)
        for i, batch in enumerate(loader):
            x, y = split_batch(batch, self.name, i)
            x = check_images(x, self.name, i)
            yield x, check_labels(y, len(x), self.name, i)

    def stream(self, chunks: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass from the start, cut into batches of the chunks' sizes (their indices
        are not used: an iterable has none)."""
        if not chunks:
            return
        sizes = [len(c) for c in chunks]
        pending_x: list[torch.Tensor] = []
        pending_y: list[torch.Tensor] = []
        have = 0
        for x, y in self._batches(256):
            pending_x.append(x)
            pending_y.append(y)
            have += len(y)
            while sizes and have >= sizes[0]:
                xs, ys = torch.cat(pending_x), torch.cat(pending_y)
                k = sizes.pop(0)
                yield xs[:k], ys[:k]
                pending_x, pending_y, have = [xs[k:]], [ys[k:]], have - k
            if not sizes:
                return
        if sizes:
            raise SalunError(
                f"{self.name} yielded fewer samples than on its first pass ({self._n}): an "
                "iterable dataset must give the same samples on every pass"
            )

    def first_image(self) -> torch.Tensor:
        """A one-image batch (the class-count probe)."""
        return next(self.stream([torch.arange(1)]))[0]
