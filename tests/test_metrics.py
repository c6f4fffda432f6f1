"""Metrics against independent references (numpy one-liners, sklearn directly)."""

import math

import numpy as np
import torch
from sklearn.svm import SVC

from salun.data import make_split
from salun.metrics import (
    METRICS,
    accuracy,
    avg_gap,
    evaluate_unlearning,
    gaps,
    mia_efficacy,
    mia_features,
)
from salun.models import build_model
from salun.train import TrainConfig, train_supervised


def test_accuracy_matches_numpy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g)
    labels = torch.randint(0, 7, (500,), generator=g)
    expected = 100 * np.mean(logits.numpy().argmax(1) == labels.numpy())
    assert math.isclose(accuracy(logits, labels), expected, abs_tol=1e-9)
    assert math.isnan(accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))


def test_mia_efficacy_matches_sklearn_reference():
    rng = np.random.default_rng(0)

    def probs(n, sharp):
        z = torch.tensor(rng.normal(size=(n, 5)) * sharp)
        return z.softmax(1), torch.tensor(rng.integers(0, 5, n))

    mp, ml = probs(120, 4.0)
    # make members confident on their own label
    mp = 0.3 * mp + 0.7 * torch.nn.functional.one_hot(ml, 5)
    np_, nl = probs(100, 1.0)
    tp, tl = probs(60, 2.0)
    got = mia_efficacy(mp, ml, np_, nl, tp, tl)

    conf = lambda p, y: p.numpy()[np.arange(len(y)), y.numpy()][:, None]  # noqa: E731
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.concatenate([conf(mp, ml), conf(np_, nl)]), np.r_[np.ones(120), np.zeros(100)]
    )
    expected = 100 * (1 - clf.predict(conf(tp, tl)).mean())
    assert math.isclose(got["MIA"], expected, abs_tol=1e-9)
    assert set(got) == {"MIA", "MIA_correctness", "MIA_entropy", "MIA_m_entropy", "MIA_prob"}
    assert all(0 <= v <= 100 for v in got.values())


def test_modified_entropy_is_song_and_mittal():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    got = mia_features(p, y, "m_entropy")[:, 0]
    for i in range(2):
        py = p[i, y[i]].item()
        ref = -(1 - py) * math.log(py) - sum(
            p[i, j].item() * math.log(1 - p[i, j].item()) for j in range(3) if j != y[i]
        )
        assert math.isclose(got[i], ref, rel_tol=1e-12)


def test_avg_gap_reproduces_table_one():
    salun = {"UA": 2.85, "RA": 99.62, "TA": 93.93, "MIA": 14.39}
    retrain = {"UA": 5.24, "RA": 100.00, "TA": 94.26, "MIA": 12.88}
    assert math.isclose(avg_gap(salun, retrain), 1.1525, abs_tol=1e-9)
    assert math.isclose(gaps(salun, retrain)["MIA"], 1.51, abs_tol=1e-9)


def test_every_metric_declares_a_direction():
    assert METRICS["RA"].higher_is_better is True
    assert METRICS["avg_gap"].higher_is_better is False
    assert METRICS["MIA"].higher_is_better is None  # closeness to Retrain is the target


def test_evaluation_is_deterministic_and_class_wise_drops_class(synthetic):
    split = make_split(synthetic, "class", classes=[1], seed=0)
    torch.manual_seed(0)
    model = build_model(
        "mlp",
        in_channels=1,
        num_classes=4,
        image_size=8,
        mean=synthetic.mean,
        std=synthetic.std,
        width=0.1,
    )
    train_supervised(
        model,
        synthetic.train.subset(split.train),
        TrainConfig(epochs=5, lr=0.05, batch_size=32),
        quiet=True,
    )
    a = evaluate_unlearning(model, synthetic, split)
    b = evaluate_unlearning(model, synthetic, split)
    assert a == b
    test_idx = split.test_indices(synthetic)
    assert (synthetic.test.labels[test_idx] != 1).all()
    assert len(test_idx) == int((synthetic.test.labels != 1).sum())
