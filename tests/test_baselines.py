"""The paper's baselines behind the method contract, on a tiny synthetic task (CPU, seconds)."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from salun.data import iterate_batches
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError
from salun.methods import (
    SGDConfig,
    UnlearnContext,
    get_method,
    list_methods,
    make_config,
    run_method,
)
from salun.methods.be import BEConfig
from salun.methods.bs import neighbour_labels
from salun.methods.iu import woodfisher_fast, woodfisher_reference
from salun.methods.l1_sparse import L1SparseConfig, l1_weight
from salun.methods.retrain import RetrainConfig, retrain_recipe
from salun.models import build_from_kwargs, model_kwargs_for
from salun.saliency import random_mask
from salun.train import TrainConfig, quick_accuracy, train_supervised

BASELINES = ("retrain", "ft", "ga", "iu", "l1_sparse", "bs", "be")
RECIPE = {"epochs": 15, "batch_size": 32, "lr": 0.05, "seed": 0}


@pytest.fixture(scope="module")
def task():
    """A BatchNorm CNN that memorises a noisy 4-class 8×8 task, and a 10 % forget set."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    bundle = synthetic_bundle(n_train=240, n_test=80, num_classes=4, size=8, noise=150.0)
    kwargs = model_kwargs_for(bundle, "cnn", width=0.25)
    torch.manual_seed(0)
    model = build_from_kwargs(kwargs)
    train_supervised(model, bundle.train, TrainConfig(**RECIPE), quiet=True)
    forget = bundle.train.subset(range(0, 240, 10))
    retain = bundle.train.subset([i for i in range(240) if i % 10])
    ctx = UnlearnContext(
        num_classes=4, flip=False, model_kwargs=kwargs, original_train=RECIPE, quiet=True
    )
    return model, forget, retain, ctx


def quick_cfg(name: str, **extra):
    """The method's config, shortened for tests (small batches, 2 epochs)."""
    names = {f.name for f in fields(get_method(name).config)}
    over = {}
    if issubclass(get_method(name).config, SGDConfig):
        over = {"batch_size": 32, "epochs": 2}
    if "num_samples" in names:
        over["num_samples"] = 20
    if name == "retrain":
        over = {"epochs": 2}
    return make_config(name, {**over, **extra})


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_baseline_is_registered():
    assert set(BASELINES) <= set(list_methods())
    for name in list_methods():
        cfg = get_method(name).config()
        assert isinstance(cfg.lr_grid, tuple)
        assert name == "retrain" or cfg.lr_grid, f"{name} has no search grid"


def test_ga_lowers_forget_accuracy(task):
    model, forget, retain, ctx = task
    before = quick_accuracy(model, forget, "cpu")
    out = run_method(
        "ga", model, forget, retain, quick_cfg("ga", lr=0.01, epochs=5, batch_size=8), ctx
    ).model
    assert quick_accuracy(out, forget, "cpu") < before - 20


def test_retrain_never_sees_a_forget_sample(task, monkeypatch):
    import salun.methods.retrain as retrain_mod

    model, forget, retain, ctx = task
    seen = []

    def spy(net, data, cfg, **kw):
        seen.append((data, cfg))
        return train_supervised(net, data, cfg, **kw)

    monkeypatch.setattr(retrain_mod, "train_supervised", spy)
    out = run_method("retrain", model, forget, retain, RetrainConfig(), ctx).model
    ((data, cfg),) = seen
    rows = {bytes(img.numpy()) for img in data.images}
    assert not rows & {bytes(img.numpy()) for img in forget.images}
    assert len(data) == len(retain)
    assert cfg == TrainConfig(**RECIPE)  # RetrainConfig() = exactly the original recipe
    assert not any(torch.equal(a, b) for a, b in zip(out.parameters(), model.parameters()))


def test_retrain_recipe_overrides_and_errors(task):
    model, forget, retain, ctx = task
    assert retrain_recipe({}, RetrainConfig()) == TrainConfig()
    r = retrain_recipe({**RECIPE, "milestones": [3, 6]}, RetrainConfig(epochs=4, seed=7))
    assert (r.epochs, r.seed, r.lr, r.milestones) == (4, 7, 0.05, (3, 6))
    with pytest.raises(SalunError, match="unknown setting"):
        retrain_recipe({"epochz": 3}, RetrainConfig())
    with pytest.raises(SalunError, match="mask"):
        run_method("retrain", model, forget, retain, ctx=ctx, mask=random_mask(model, 0.5))


@pytest.mark.parametrize("remove", [True, False])
def test_be_adds_then_removes_the_shadow_class(task, monkeypatch, remove):
    import salun.methods.be as be_mod

    model, forget, retain, ctx = task
    widths = []

    class Spy(be_mod.Stepper):
        def after_step(self) -> None:
            widths.append(self.model.head.out_features)

    monkeypatch.setattr(be_mod, "Stepper", Spy)
    cfg = BEConfig(batch_size=8, epochs=3, lr=0.01, remove_shadow=remove)
    out = run_method("be", model, forget, retain, cfg, ctx).model
    assert widths and set(widths) == {5}
    assert out.head.out_features == (4 if remove else 5)
    # the original classes' rows were copied, then trained: same shape, other values
    assert out.head.weight[:4].shape == model.head.weight.shape
    if not remove:  # trained toward the shadow class K = 4
        x, _ = next(iterate_batches(forget, len(forget)))
        assert (out(x).argmax(1) == 4).float().mean() > 0.5


def test_bs_neighbour_labels_differ_from_true_labels(task):
    model, forget, _, _ = task
    before = state(model)
    model.zero_grad(set_to_none=True)
    model.train()
    x, y = next(iterate_batches(forget, len(forget)))
    nb = neighbour_labels(model, x, y, eps=0.1)
    assert (nb != y).float().mean() > 0.5
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()


def test_iu_fast_recursion_equals_reference(task):
    _, _, retain, ctx = task
    torch.manual_seed(1)
    model = build_from_kwargs(ctx.model_kwargs).eval()  # untrained: large per-sample grads
    n = sum(p.numel() for p in model.parameters())
    v = torch.randn(n, generator=torch.Generator().manual_seed(0))
    fast = woodfisher_fast(model, retain, v, 1.0, 40, 16, "cpu")
    ref = woodfisher_reference(model, retain, v, 1.0, 40, "cpu")
    assert (ref - v).abs().max() > 0.1  # the recursion really changed k
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)


def test_iu_fast_path_equals_reference_path(task):
    model, forget, retain, ctx = task
    outs = [
        run_method("iu", model, forget, retain, quick_cfg("iu", reference=r, alpha=5.0), ctx)
        for r in (False, True)
    ]
    a, b = (state(o.model) for o in outs)
    assert any(not torch.equal(a[k], v) for k, v in model.state_dict().items())
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)


def test_l1_schedule():
    assert [round(l1_weight(0.2, e, 10), 10) for e in (0, 5, 9)] == [0.2, 0.1, 0.02]
    assert [l1_weight(1.0, e, 4, 2) for e in range(4)] == [1.0, 0.5, 0.0, 0.0]
    assert l1_weight(1.0, 0, 3, 3) == 0.0
    with pytest.raises(SalunError, match="no_l1_epochs"):
        L1SparseConfig(epochs=3, no_l1_epochs=4)


def test_l1_sparse_penalty_follows_the_schedule(task, monkeypatch):
    import salun.methods.l1_sparse as l1_mod

    model, forget, retain, ctx = task
    used = []

    def spy(alpha, epoch, epochs, no_l1_epochs=0):
        used.append((epoch, l1_weight(alpha, epoch, epochs, no_l1_epochs)))
        return used[-1][1]

    monkeypatch.setattr(l1_mod, "l1_weight", spy)
    cfg = quick_cfg("l1_sparse", epochs=4, no_l1_epochs=1, alpha=0.3)
    run_method("l1_sparse", model, forget, retain, cfg, ctx)
    assert sorted(set(used)) == [(0, 0.3), (1, 0.2), (2, pytest.approx(0.1)), (3, 0.0)]
    # a strong penalty shrinks the weights more than none at all
    norm = {}
    for alpha in (0.0, 0.05):
        out = run_method("l1_sparse", model, forget, retain, quick_cfg("l1_sparse", alpha=alpha))
        norm[alpha] = sum(float(p.detach().abs().sum()) for p in out.model.parameters())
    assert norm[0.05] < norm[0.0]


@pytest.mark.parametrize("name", sorted(list_methods()))
def test_no_method_mutates_its_inputs(task, name):
    model, forget, retain, ctx = task
    mask = None if name == "retrain" else random_mask(model, 0.5, seed=1)
    before = state(model)
    data = [t.clone() for t in (forget.images, forget.labels, retain.images, retain.labels)]
    mask_before = None if mask is None else {k: v.clone() for k, v in mask.items()}
    run_method(name, model, forget, retain, quick_cfg(name), ctx, mask=mask)
    assert before.keys() == model.state_dict().keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    after = (forget.images, forget.labels, retain.images, retain.labels)
    assert all(torch.equal(a, b) for a, b in zip(data, after))
    if mask is not None:
        assert all(torch.equal(mask_before[k], v) for k, v in mask.items())


@pytest.mark.parametrize("name", sorted(set(list_methods()) - {"retrain"}))
def test_masked_weights_are_bit_identical(task, name):
    model, forget, retain, ctx = task
    mask = random_mask(model, 0.5, seed=3)
    extra = {"lr": 0.01} if name in ("ga", "bs", "be") else {}
    if name == "iu":
        extra = {"alpha": 5.0}
    out = run_method(name, model, forget, retain, quick_cfg(name, **extra), ctx, mask=mask).model
    moved = 0
    for (n, p0), p in zip(model.named_parameters(), out.parameters()):
        m = mask[n]
        assert torch.equal(p[~m], p0[~m]), f"{name} moved masked weights of {n}"
        moved += int((p[m] != p0[m]).sum())
    assert moved > 0, f"{name} moved no salient weight"


def test_be_mask_keeps_shadow_row_trainable(task):
    model, forget, retain, ctx = task
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    heads = [
        run_method("be", model, forget, retain, cfg, ctx, mask=mask).model.head
        for cfg in (BEConfig(epochs=e, lr=0.01, batch_size=32, remove_shadow=False) for e in (0, 2))
    ]
    untrained, trained = heads
    assert torch.equal(trained.weight[:4], model.head.weight)  # everything else masked
    assert torch.equal(trained.bias[:4], model.head.bias)
    assert not torch.equal(trained.weight[4], untrained.weight[4])  # the shadow row trains
