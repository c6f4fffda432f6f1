"""Forget the examples a user names: a deletion request as a list of training-set indices.

A request arrives as a file (one index per line, ``#`` comments and blank lines ignored,
or a JSON list) or as a Python list. Every id is checked before anything is written:
an empty request, a non-integer, an id outside the training set and a repeated id each
get one clear error naming the offending value (a repeated id is refused rather than
merged: it usually means the request was assembled wrongly).

The data sources salun reads (IDX, npz, CIFAR, folders, ...) carry no id column of their
own, so an id is the example's position in the training set as salun loads it.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from salun.errors import SalunError


def read_forget_ids(path: str | Path) -> list[int]:
    """The ids of a deletion-request file, checked to be integers (not yet their range).

    Args:
        path: a text file with one index per line, or a JSON list of indices.

    Returns:
        The ids in the file's order.
    """
    path = Path(path)
    if not path.is_file():
        raise SalunError(f"forget-ids file {path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise SalunError(f"{path} is not a text file of ids (not UTF-8)") from None
    if text.lstrip()[:1] in ("[", "{"):  # JSON; a bare number per line is text
        try:
            ids = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise SalunError(f"{path} is not a JSON list of ids ({e})") from None
        if not isinstance(ids, list):
            raise SalunError(f"{path} is not a JSON list of ids")
        for i, v in enumerate(ids):
            if type(v) is not int:  # 3.0, "3", true: refused, not converted
                raise SalunError(f"{path}: entry {i} is {v!r}, not an integer index")
        return ids
    ids = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            ids.append(int(line, 10))
        except ValueError:
            raise SalunError(f"{path}, line {lineno}: {line!r} is not an integer index") from None
    return ids


def check_forget_ids(ids: Any, n: int, where: str = "forget ids") -> np.ndarray:
    """``ids`` as sorted int64 indices into a training set of ``n`` examples.

    Raises :class:`SalunError` for an empty request, a non-integer, an id outside
    ``0..n-1`` or a repeated id.
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise SalunError(f"{where} must be a list of integer indices, got {type(ids).__name__}")
    values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if not values:
        raise SalunError(f"{where}: the request is empty; name at least one example to forget")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise SalunError(f"{where}: {v!r} is not an integer index")
    bad = [int(v) for v in values if not 0 <= v < n]  # Python ints: 2**70 is just out of range
    if bad:
        raise SalunError(
            f"{where}: id {bad[0]} is out of range: the training set has {n} examples (0..{n - 1})"
        )
    arr = np.asarray(values, dtype=np.int64)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        dup = int(uniq[counts > 1][0])
        raise SalunError(f"{where}: id {dup} is listed {int(counts[counts > 1][0])} times")
    if len(uniq) >= n:
        raise SalunError(f"{where}: every example is named; nothing would be left to retain")
    return uniq


def split_by_ids(data: Any, ids: Any) -> tuple[Any, Any]:
    """``(forget, retain)`` views of a training set: the examples at ``ids`` and the rest.

    Args:
        data: an :class:`~salun.data.ImageDataset` or a map-style torch ``Dataset``.
        ids: the deletion request: indices into ``data`` (checked by
            :func:`check_forget_ids`).

    Returns:
        Two ``ImageDataset`` subsets, or two ``torch.utils.data.Subset`` views of ``data``
        (which :func:`salun.unlearn` also checks for overlap by index).

    Example:
        >>> forget, retain = salun.split_by_ids(train_set, [12, 7, 1003])
    """
    from salun.data.dataset import ImageDataset

    try:
        n = len(data)
    except TypeError:
        raise SalunError(
            f"split_by_ids needs a dataset with a length, got {type(data).__name__}"
        ) from None
    forget = check_forget_ids(ids, n)
    retain = np.setdiff1d(np.arange(n, dtype=np.int64), forget)
    if isinstance(data, ImageDataset):
        return data.subset(forget), data.subset(retain)
    from torch.utils.data import Dataset, Subset

    if not isinstance(data, Dataset):
        raise SalunError(f"split_by_ids needs a Dataset or ImageDataset, got {type(data).__name__}")
    return Subset(data, forget.tolist()), Subset(data, retain.tolist())


def make_id_split(
    bundle,
    ids: Any,
    *,
    seed: int = 0,
    val_fraction: float = 0.0,
    data_spec: str | None = None,
):
    """The :class:`~salun.data.Split` of a deletion request (scenario ``"ids"``): D_f the
    named training examples, D_r every other one (less ``val_fraction`` of each class,
    drawn with ``seed`` from the examples not named, for validation)."""
    from salun.data.splits import Split, data_fingerprint
    from salun.validate import check_seed

    labels = bundle.train.labels.numpy()
    n = len(labels)
    forget = check_forget_ids(ids, n)
    if not 0.0 <= val_fraction < 1.0:
        raise SalunError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    check_seed("seed", seed)
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), forget)
    val = [
        rng.choice(members, int(round(len(members) * val_fraction)), replace=False)
        for c in np.unique(labels[rest])
        for members in [rest[labels[rest] == c]]
    ]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    retain = np.setdiff1d(rest, val_idx).astype(np.int64)
    if len(retain) == 0:
        raise SalunError("nothing is left to retain once the named examples are forgotten")
    return Split(
        bundle.name,
        "ids",
        forget,
        retain,
        val_idx,
        (),
        seed,
        n,
        data_spec=data_spec,
        fingerprint=data_fingerprint(bundle),
    )


def split_request(scenario: str | None, forget_ids: str | Path | None):
    """``salun split``'s scenario and ids: ``--forget-ids FILE`` means scenario ``"ids"``
    with the file's ids; otherwise ``--scenario`` is needed."""
    if forget_ids is None:
        if scenario is None:
            raise SalunError(
                "salun split needs --scenario random|class, or --forget-ids FILE with the "
                "training-set indices to forget"
            )
        return scenario, None
    if scenario is not None:
        raise SalunError(f"--forget-ids names the examples to forget: drop --scenario {scenario}")
    return "ids", read_forget_ids(forget_ids)
