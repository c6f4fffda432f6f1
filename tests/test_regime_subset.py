"""``fashion-mnist:train=N[,test=M]``: the fixed class-balanced subset of the regime preset."""

import numpy as np
import pytest

from salun.data import load_dataset
from salun.data.idx import write_idx
from salun.errors import SalunError


def _write(folder, train_labels, test_labels):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (len(train_labels), 28, 28), np.uint8),
        "train-labels-idx1-ubyte.gz": np.asarray(train_labels, np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (len(test_labels), 28, 28), np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.asarray(test_labels, np.uint8),
    }
    for name, a in arrays.items():
        write_idx(folder / name, a)
    return arrays


def test_subset_keeps_the_first_images_of_each_class_in_file_order(tmp_path):
    # class c first appears at position c, then every 10 positions, then 3 more of class 0
    train = [i % 10 for i in range(40)] + [0, 0, 0]
    test = [9 - (i % 10) for i in range(30)]
    arrays = _write(tmp_path, train, test)
    full = load_dataset("fashion-mnist", root=tmp_path)
    sub = load_dataset("fashion-mnist:train=20,test=10", root=tmp_path)
    # two per class: positions c and c + 10; the trailing class-0 images are never chosen
    want = sorted([c for c in range(10)] + [c + 10 for c in range(10)])
    assert np.array_equal(sub.train.images[:, 0].numpy(),
                          arrays["train-images-idx3-ubyte.gz"][want])
    assert sub.train.labels.tolist() == [train[i] for i in want]
    assert sub.test.labels.tolist() == test[:10]  # the first of each class are positions 0..9
    # normalised as the full set, so the cut does not shift the model's input statistics
    assert sub.mean == full.mean and sub.std == full.std
    # test alone: the training set stays whole
    only_test = load_dataset("fashion-mnist:test=10", root=tmp_path)
    assert len(only_test.train) == len(train) and len(only_test.test) == 10


@pytest.mark.parametrize(
    "arg", ["train=25", "train=50", "train=0", "size=20", "train=x", "train=20,train=10"]
)
def test_bad_subset_specs_are_refused(tmp_path, arg):
    _write(tmp_path, [i % 10 for i in range(40)], list(range(10)))
    with pytest.raises(SalunError, match="fashion-mnist:"):
        load_dataset(f"fashion-mnist:{arg}", root=tmp_path)
