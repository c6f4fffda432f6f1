"""evaluate_unlearning against metrics computed by hand (numpy, sklearn) on the subsets it
must use: D_f for UA, D_r for RA, the test set without the forgotten class for TA and the
MIA non-members, retain samples as members, balanced sizes (docs/evaluation.md)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from salun.data import make_split
from salun.data.sources.synthetic import synthetic_bundle
from salun.metrics import BlindAttackWarning, balanced_shadow_sets, evaluate_unlearning
from salun.metrics.mia import mia_efficacy
from salun.models import build_from_kwargs, model_kwargs_for
from salun.train import TrainConfig, train_supervised


def trained_model(bundle, train_idx, epochs=6):
    torch.manual_seed(0)
    model = build_from_kwargs(model_kwargs_for(bundle, "mlp", width=0.1))
    train_supervised(
        model,
        bundle.train.subset(train_idx),
        TrainConfig(epochs=epochs, lr=0.05, batch_size=32),
        quiet=True,
    )
    return model.eval()


def probs_of(model, images: torch.Tensor) -> np.ndarray:
    """Softmax of the model on uint8 images, computed here (not via salun.metrics)."""
    with torch.no_grad():
        return model(images.float() / 255.0).softmax(1).double().numpy()


def acc(p: np.ndarray, y: np.ndarray) -> float:
    return 100.0 * float(np.mean(p.argmax(1) == y))


def svc_efficacy(member_conf, nonmember_conf, target_conf) -> float:
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(
        np.r_[member_conf, nonmember_conf][:, None],
        np.r_[np.ones(len(member_conf)), np.zeros(len(nonmember_conf))],
    )
    return 100.0 * (1.0 - clf.predict(target_conf[:, None]).mean())


def conf(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return p[np.arange(len(y)), y]


def test_class_wise_evaluation_equals_hand_computed_metrics():
    bundle = synthetic_bundle(n_train=240, n_test=120, num_classes=4, noise=150.0)
    split = make_split(bundle, "class", classes=[1], seed=3)
    # a briefly trained model: UA, TA and the attack all sit away from their edge values
    model = trained_model(bundle, split.train, epochs=2)
    got = evaluate_unlearning(model, bundle, split, mia_features=("confidence",))

    xtr, ytr = bundle.train.images, bundle.train.labels.numpy()
    xte, yte = bundle.test.images, bundle.test.labels.numpy()
    pf, yf = probs_of(model, xtr[split.forget]), ytr[split.forget]
    pr, yr = probs_of(model, xtr[split.retain]), ytr[split.retain]
    keep = yte != 1
    pt, yt = probs_of(model, xte[keep]), yte[keep]

    ua, ra, ta = 100.0 - acc(pf, yf), acc(pr, yr), acc(pt, yt)
    n = min(len(yr), len(yt))  # here |D_r| = 180 > |test \ class 1| ≈ 90
    assert n == len(yt) < len(yr)
    mia = svc_efficacy(conf(pr[:n], yr[:n]), conf(pt, yt), conf(pf, yf))

    assert math.isclose(got["UA"], ua, abs_tol=1e-9)
    assert math.isclose(got["RA"], ra, abs_tol=1e-9)
    assert math.isclose(got["TA"], ta, abs_tol=1e-9)
    assert math.isclose(got["MIA"], mia, abs_tol=1e-9)
    assert got["mia_members"] == got["mia_nonmembers"] == n
    assert got["mia_subsampled"] == "members" and got["mia_seed"] == 3

    # the test has the power to see each bug it guards against
    assert abs(ua - (100.0 - ua)) > 1  # UA = accuracy instead of 100 − accuracy
    pt_all = probs_of(model, xte)
    assert abs(acc(pt_all, yte) - ta) > 0.5  # TA keeping the forgotten class
    swapped = svc_efficacy(conf(pt, yt), conf(pr[:n], yr[:n]), conf(pf, yf))
    assert abs(swapped - mia) > 1  # members and non-members swapped
    m_all = min(len(yr), len(yte))
    kept_class = svc_efficacy(conf(pr[:m_all], yr[:m_all]), conf(pt_all, yte), conf(pf, yf))
    assert abs(kept_class - mia) > 1  # MIA non-members keeping the forgotten class


def test_mia_is_balanced_when_retain_is_smaller_than_test():
    # 54 retain samples against 200 test samples: the unbalanced attack is blind
    bundle = synthetic_bundle(n_train=60, n_test=200, num_classes=4, noise=150.0)
    split = make_split(bundle, "random", count=6, seed=7)
    model = trained_model(bundle, split.train, epochs=30)
    got = evaluate_unlearning(model, bundle, split, mia_features=("confidence",))

    n_r, n_t = len(split.retain), len(bundle.test)
    assert n_r == 54 < n_t == 200
    assert got["mia_members"] == got["mia_nonmembers"] == 54
    assert got["mia_seed"] == split.seed == 7 and got["mia_subsampled"] == "nonmembers"

    # the non-members: 54 of the 200 drawn without replacement with the split's seed
    chosen = np.sort(np.random.default_rng(7).choice(n_t, 54, replace=False))
    np.testing.assert_array_equal(balanced_shadow_sets(n_r, n_t, 7).nonmembers, chosen)
    np.testing.assert_array_equal(balanced_shadow_sets(n_r, n_t, 7).members, np.arange(54))
    xtr, ytr = bundle.train.images, bundle.train.labels.numpy()
    pr, yr = probs_of(model, xtr[split.retain]), ytr[split.retain]
    pt, yt = probs_of(model, bundle.test.images[chosen]), bundle.test.labels.numpy()[chosen]
    pf, yf = probs_of(model, xtr[split.forget]), ytr[split.forget]
    expected = svc_efficacy(conf(pr, yr), conf(pt, yt), conf(pf, yf))
    assert math.isclose(got["MIA"], expected, abs_tol=1e-9)


def test_shadow_sets_cut_the_larger_side_only():
    s = balanced_shadow_sets(500, 100, seed=1)
    np.testing.assert_array_equal(s.members, np.arange(100))  # first |test| of D_r
    np.testing.assert_array_equal(s.nonmembers, np.arange(100))
    assert s.subsampled == "members"
    e = balanced_shadow_sets(100, 100, seed=1)
    assert e.subsampled == "none" and len(e.members) == len(e.nonmembers) == 100
    a, b = balanced_shadow_sets(10, 50, seed=1), balanced_shadow_sets(10, 50, seed=2)
    assert len(np.unique(a.nonmembers)) == 10 and not np.array_equal(a.nonmembers, b.nonmembers)


def test_blind_attack_warns_and_is_flagged():
    # members and non-members with the same confidence: the SVC can only predict one class
    k = 4
    y = torch.arange(40) % k
    p = torch.full((40, k), 1.0 / k, dtype=torch.float64)
    target = torch.rand(10, k, generator=torch.Generator().manual_seed(0)).softmax(1)
    blind: list[str] = []
    with pytest.warns(BlindAttackWarning, match="one class"):
        out = mia_efficacy(p, y, p, y, target, y[:10], features=("confidence",), blind=blind)
    assert blind == ["MIA"] and 0 <= out["MIA"] <= 100


def test_blind_flag_in_evaluation_and_no_warning_when_informative():
    bundle = synthetic_bundle(n_train=80, n_test=40, num_classes=4)
    split = make_split(bundle, "random", count=8, seed=0)
    model = build_from_kwargs(model_kwargs_for(bundle, "mlp", width=0.1))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # constant logits: every sample has p_y = 1/K
    with pytest.warns(BlindAttackWarning):
        got = evaluate_unlearning(model, bundle, split, mia_features=("confidence",))
    assert got["mia_blind"] == ["MIA"]

    trained = trained_model(bundle, split.train, epochs=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlindAttackWarning)
        got = evaluate_unlearning(trained, bundle, split, mia_features=("confidence",))
    assert got["mia_blind"] == []
