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
