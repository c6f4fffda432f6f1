import numpy as np
import pytest

from salun.data import Augment, augment_batch, iterate_batches, load_split, make_split, save_split
from salun.errors import ArtifactError, SalunError


def test_random_split_is_deterministic_disjoint_and_covers(synthetic):
    a = make_split(synthetic, "random", fraction=0.1, seed=3, val_fraction=0.1)
    b = make_split(synthetic, "random", fraction=0.1, seed=3, val_fraction=0.1)
    c = make_split(synthetic, "random", fraction=0.1, seed=4, val_fraction=0.1)
    assert a.hash == b.hash and np.array_equal(a.forget, b.forget)
    assert a.hash != c.hash
    parts = [a.forget, a.retain, a.val]
    assert sum(len(p) for p in parts) == len(synthetic.train)
    assert len(np.unique(np.concatenate(parts))) == len(synthetic.train)
    assert len(a.forget) == round(0.1 * (len(synthetic.train) - len(a.val)))


def test_class_split_takes_every_sample_of_the_class(synthetic):
    s = make_split(synthetic, "class", classes=[2], seed=0)
    labels = synthetic.train.labels.numpy()
    assert np.array_equal(s.forget, np.flatnonzero(labels == 2))
    assert not np.isin(s.retain, s.forget).any()
    assert set(labels[s.retain]) == {0, 1, 3}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scenario": "random", "fraction": 0.0},
        {"scenario": "random", "fraction": 1.0},
        {"scenario": "random"},
        {"scenario": "class", "classes": [9]},
        {"scenario": "class", "classes": []},
        {"scenario": "class", "classes": [0, 1, 2, 3]},
        {"scenario": "bogus"},
    ],
)
def test_bad_split_requests_are_clear_errors(synthetic, kwargs):
    with pytest.raises(SalunError):
        make_split(synthetic, **kwargs)


def test_split_file_round_trip_and_tamper_detection(synthetic, tmp_path):
    s = make_split(synthetic, "random", count=17, seed=1)
    path = tmp_path / "split.json"
    assert save_split(s, path) == s.hash
    loaded = load_split(path)
    assert loaded.hash == s.hash and np.array_equal(loaded.retain, s.retain)
    path.write_text(path.read_text().replace('"forget": [', '"forget": [0, ', 1))
    with pytest.raises(ArtifactError):
        load_split(path)
    with pytest.raises(ArtifactError):
        load_split(tmp_path / "missing.json")


def test_augmentation_is_batched_seeded_and_shape_preserving():
    import torch

    x = torch.rand(10, 3, 8, 8)
    a = augment_batch(x, Augment(pad=2, flip=True), torch.Generator().manual_seed(0))
    b = augment_batch(x, Augment(pad=2, flip=True), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(augment_batch(x, Augment(pad=0, flip=False), torch.Generator()), x)
    # a crop with padding only shifts pixels: every output pixel is an input pixel or zero
    flipped = augment_batch(x, Augment(pad=0, flip=True), torch.Generator().manual_seed(1))
    for i in range(10):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))


def test_batches_cover_every_sample_once(synthetic):
    import torch

    seen = torch.cat(
        [
            y
            for _, y in iterate_batches(
                synthetic.train.with_labels(torch.arange(len(synthetic.train))),
                33,
                shuffle=True,
                generator=torch.Generator().manual_seed(0),
            )
        ]
    )
    assert sorted(seen.tolist()) == list(range(len(synthetic.train)))
