"""Forget/retain splits: one split per (dataset, scenario, seed), saved and reused everywhere.

Original training, Retrain and every unlearning method of a run use the same indices.
A split file is JSON (no pickles) with a content hash that every later artifact records.
It also records the full data spec (``npz:/abs/path``) and a fingerprint of the data's
content, so a split is never applied to other data that only shares a name and a size
(see docs/safety.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salun.data.dataset import DataBundle
from salun.errors import ArtifactError, SalunError
from salun.io import atomic_write_json, sha256_bytes, stable_hash
from salun.validate import check_seed

SCENARIOS = ("random", "class", "ids")


@dataclass(frozen=True)
class Split:
    """Indices into a bundle's training set.

    Attributes:
        dataset: the dataset name the indices refer to.
        scenario: ``"random"`` (random data forgetting) or ``"class"`` (class-wise).
        forget: sorted int64 indices of D_f.
        retain: sorted int64 indices of D_r.
        val: sorted int64 indices held out for validation (never trained on).
        classes: the forgotten classes (class-wise); empty for random forgetting.
        seed: the seed the split was drawn with.
        n_train: the size of the training set the indices refer to.
        data_spec: the data spec the split was drawn from (``None`` in older files).
        fingerprint: :func:`data_fingerprint` of that data (``None`` in older files).
    """

    dataset: str
    scenario: str
    forget: np.ndarray
    retain: np.ndarray
    val: np.ndarray
    classes: tuple[int, ...]
    seed: int
    n_train: int
    extra: dict = field(default_factory=dict)
    data_spec: str | None = None
    fingerprint: str | None = None

    @property
    def train(self) -> np.ndarray:
        """What the original model trains on: D_f ∪ D_r (validation excluded)."""
        return np.union1d(self.forget, self.retain)

    @property
    def hash(self) -> str:
        return stable_hash(self._content())

    def _content(self) -> dict:
        return {
            "dataset": self.dataset,
            "scenario": self.scenario,
            "forget": self.forget.tolist(),
            "retain": self.retain.tolist(),
            "val": self.val.tolist(),
            "classes": list(self.classes),
            "seed": self.seed,
            "n_train": self.n_train,
            # Absent in older files: left out of the hash then, so their hash still holds.
            **({"data_spec": self.data_spec} if self.data_spec is not None else {}),
            **({"fingerprint": self.fingerprint} if self.fingerprint is not None else {}),
        }

    def test_indices(self, bundle: DataBundle) -> np.ndarray:
        """Test indices for TA and the MIA non-member set: forgotten classes removed
        (docs/evaluation.md)."""
        labels = bundle.test.labels.numpy()
        keep = ~np.isin(labels, np.asarray(self.classes, dtype=np.int64))
        return np.flatnonzero(keep).astype(np.int64)

    def describe(self) -> str:
        what = {"class": f"classes {list(self.classes)}", "ids": "named ids"}.get(
            self.scenario, "random"
        )
        return (
            f"{self.dataset} {what}: forget {len(self.forget)}, retain {len(self.retain)}, "
            f"val {len(self.val)} (seed {self.seed}, hash {self.hash})"
        )


def make_split(
    bundle: DataBundle,
    scenario: str,
    *,
    fraction: float | None = None,
    count: int | None = None,
    classes: tuple[int, ...] | list[int] = (),
    seed: int = 0,
    val_fraction: float = 0.0,
    data_spec: str | None = None,
    ids: Any = None,
) -> Split:
    """Draw the forget/retain/validation split for random or class-wise forgetting, or
    build the split of a deletion request (``"ids"``).

    The validation split (``val_fraction`` of each class, as the reference's 10 %) is drawn
    first; D_f is drawn from what remains, so it never overlaps validation.

    Args:
        bundle: the dataset.
        scenario: ``"random"``, ``"class"`` or ``"ids"`` (forget the examples ``ids`` names:
            see :mod:`salun.data.forget_ids`).
        fraction: random forgetting: the fraction of the (non-validation) training set to forget.
        count: random forgetting: an exact number of samples instead of ``fraction``.
        classes: class-wise forgetting: the classes whose every training sample is forgotten.
        seed: the split's seed (numpy ``default_rng``).
        val_fraction: fraction of each class held out for validation, in [0, 1).
        data_spec: the spec the bundle was loaded with (recorded; see ``canonical_spec``).
        ids: ``"ids"``: the training-set indices to forget (a list, or read from a file by
            :func:`salun.data.forget_ids.read_forget_ids`).

    Example:
        >>> split = make_split(bundle, "random", fraction=0.1, seed=0)
        >>> request = make_split(bundle, "ids", ids=[12, 7, 1003])
    """
    labels = bundle.train.labels.numpy()
    n = len(labels)
    if scenario not in SCENARIOS:
        raise SalunError(f"unknown scenario {scenario!r}; choose 'random', 'class' or 'ids'")
    if (scenario == "ids") != (ids is not None):
        raise SalunError("ids= goes with scenario 'ids' (and scenario 'ids' needs ids=)")
    if scenario == "ids":
        if fraction is not None or count is not None or classes:
            raise SalunError("forgetting named ids takes no fraction, count or classes")
        from salun.data.forget_ids import make_id_split

        return make_id_split(bundle, ids, seed=seed, val_fraction=val_fraction, data_spec=data_spec)
    if not 0.0 <= val_fraction < 1.0:
        raise SalunError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    check_seed("seed", seed)  # numpy refuses negative seeds with a ValueError
    rng = np.random.default_rng(seed)
    val = []
    if val_fraction > 0:
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            val.append(rng.choice(members, int(round(len(members) * val_fraction)), replace=False))
    val_idx = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    pool = np.setdiff1d(np.arange(n, dtype=np.int64), val_idx)

    if scenario == "random":
        if classes:
            raise SalunError("random forgetting takes --fraction or --count, not --classes")
        if (fraction is None) == (count is None):
            raise SalunError("random forgetting needs exactly one of fraction or count")
        if fraction is not None:
            if not 0.0 < fraction < 1.0:
                raise SalunError(f"fraction must lie strictly between 0 and 1, got {fraction}")
            count = int(round(len(pool) * fraction))
        if not 0 < count < len(pool):
            raise SalunError(f"count must lie in 1..{len(pool) - 1}, got {count}")
        forget = np.sort(rng.choice(pool, count, replace=False)).astype(np.int64)
        forgot_classes: tuple[int, ...] = ()
    else:
        if fraction is not None or count is not None:
            raise SalunError("class-wise forgetting takes --classes, not --fraction/--count")
        forgot_classes = tuple(sorted({int(c) for c in classes}))
        if not forgot_classes:
            raise SalunError("class-wise forgetting needs at least one class, e.g. --classes 3")
        bad = [c for c in forgot_classes if not 0 <= c < bundle.num_classes]
        if bad:
            raise SalunError(
                f"class {bad[0]} is out of range: {bundle.name} has classes "
                f"0..{bundle.num_classes - 1}"
            )
        if len(forgot_classes) >= bundle.num_classes:
            raise SalunError("cannot forget every class: nothing would be left to retain")
        forget = pool[np.isin(labels[pool], forgot_classes)]
    if len(forget) == 0:
        raise SalunError("the forget set is empty; choose other classes or a larger fraction")
    retain = np.setdiff1d(pool, forget).astype(np.int64)
    return Split(
        bundle.name,
        scenario,
        forget,
        retain,
        val_idx,
        forgot_classes,
        seed,
        n,
        data_spec=data_spec,
        fingerprint=data_fingerprint(bundle),
    )


def data_fingerprint(bundle: DataBundle) -> str:
    """A hash of the dataset's content (train and test images and labels, with shapes).

    Two files with the same name and size but other pixels or labels differ here.
    """
    parts = []
    for part in (bundle.train, bundle.test):
        for t in (part.images, part.labels):
            t = t.contiguous()
            parts.append(f"{tuple(t.shape)}:{t.dtype}:{sha256_bytes(t.numpy().tobytes())}")
    return sha256_bytes("|".join(parts).encode())[:16]


def save_split(split: Split, path: str | Path) -> str:
    """Write a split as JSON (atomically) and return its hash."""
    atomic_write_json(path, {**split._content(), "hash": split.hash, "format": "salun-split-1"})
    return split.hash


def load_split(path: str | Path) -> Split:
    """Read a split file, checking its format and hash."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"split file {path} does not exist; write one with `salun split`")
    try:
        d = json.loads(path.read_text())
        split = Split(
            d["dataset"],
            d["scenario"],
            _indices(d, "forget"),
            _indices(d, "retain"),
            _indices(d, "val"),
            tuple(_indices(d, "classes").tolist()),
            _integer(d, "seed"),
            _integer(d, "n_train"),
            data_spec=_opt_str(d, "data_spec"),
            fingerprint=_opt_str(d, "fingerprint"),
        )
    except RecursionError:  # 100 000 nested brackets: json's parser recurses per level
        raise ArtifactError(f"{path} is not a salun split file (nested too deeply)") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not a salun split file ({type(e).__name__}: {e})") from None
    if d.get("format", "salun-split-1") != "salun-split-1":
        raise ArtifactError(f"{path} is not a salun split file (format {d.get('format')!r})")
    if d.get("hash") != split.hash:
        raise ArtifactError(f"{path} is corrupted: its indices do not match its recorded hash")
    check_split_indices(split, str(path))
    return split


_INT64 = (-(2**63), 2**63 - 1)


def _integer(d: dict, key: str) -> int:
    """An integer as JSON wrote it: 12.7, "12", true or 1e999 are refused, not converted."""
    v = d[key]
    if type(v) is not int or not _INT64[0] <= v <= _INT64[1]:
        raise ValueError(f"{key} must be an integer, got {v!r}")
    return v


def _indices(d: dict, key: str) -> np.ndarray:
    """A list of integers as int64, checked before numpy converts it (numpy would cut
    12.7 to 12 and fail on 2**70 with an OverflowError)."""
    v = d[key]
    if not isinstance(v, list):
        raise TypeError(f"{key} must be a list of integers, got {type(v).__name__}")
    bad = [i for i in v if type(i) is not int or not _INT64[0] <= i <= _INT64[1]]
    if bad:
        raise ValueError(f"{key} must hold integers that index the training set, got {bad[0]!r}")
    return np.asarray(v, dtype=np.int64)


def _opt_str(d: dict, key: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{key} must be a string, got {v!r}")
    return v


def check_split_indices(split: Split, where: str) -> None:
    """Indices in range, no duplicates, no overlap, and a non-empty forget set."""
    n = split.n_train
    if n <= 0:
        raise ArtifactError(f"{where}: n_train must be positive, got {n}")
    if len(split.forget) == 0:
        raise ArtifactError(f"{where}: the forget set is empty; nothing to unlearn")
    for name in ("forget", "retain", "val"):
        idx = getattr(split, name)
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
            raise ArtifactError(
                f"{where}: {name} index {bad} is out of range: the training set has {n} images "
                f"(0..{n - 1})"
            )
        if len(np.unique(idx)) != len(idx):
            raise ArtifactError(f"{where}: {name} holds duplicate indices")
    if (
        np.intersect1d(split.forget, split.retain).size
        or np.intersect1d(split.train, split.val).size
    ):
        raise ArtifactError(f"{where}: the forget, retain and validation sets overlap")


def check_split_fits(split: Split, bundle: DataBundle, data_spec: str | None = None) -> None:
    """Fail clearly when a split was drawn for other data.

    The recorded content fingerprint decides (a file with the same name and size but other
    content is refused; the same content under a new path is accepted). Older splits
    without a fingerprint are checked by name and size.
    """
    where = f" ({data_spec})" if data_spec else ""
    if split.n_train != len(bundle.train) or (
        split.fingerprint is None and split.dataset != bundle.name
    ):
        raise ArtifactError(
            f"split is for {split.data_spec or split.dataset} with {split.n_train} training "
            f"images, but the data{where} is {bundle.name} with {len(bundle.train)}; write a "
            "split for this dataset"
        )
    if split.fingerprint is not None:
        got = data_fingerprint(bundle)
        if got != split.fingerprint:
            raise ArtifactError(
                f"split was drawn from {split.data_spec or split.dataset} (content "
                f"fingerprint {split.fingerprint}), but the data{where} has other content "
                f"(fingerprint {got}); write a split for this dataset"
            )


def as_tensor_indices(idx: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(idx, dtype=torch.int64)
