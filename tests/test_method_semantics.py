"""What each method feeds its model, and the update it makes, worked out in the test.

Every image here is filled with its sample id, so a spy on the model's inputs and on the
cross-entropy targets tells exactly which sample was trained toward which label. Each test
guards one real bug (named in its docstring) that used to pass the whole suite.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salun.data import ImageDataset
from salun.methods import UnlearnContext, make_config, run_method
from salun.methods.salun_soft import ProximalStepper
from salun.models import build_model

K = 5
N_F, N_R = 40, 60  # forget ids 0..39, retain ids 40..99


def id_dataset(ids, labels) -> ImageDataset:
    images = torch.tensor(ids, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 4, 4)
    return ImageDataset(images.contiguous(), torch.tensor(labels, dtype=torch.int64))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    forget = id_dataset(range(N_F), rng.integers(0, K, N_F))
    retain = id_dataset(range(N_F, N_F + N_R), rng.integers(0, K, N_R))
    return forget, retain


def true_label(forget, retain):
    labels = torch.cat([forget.labels, retain.labels])
    return {i: int(labels[i]) for i in range(N_F + N_R)}


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_model(
        "mlp", in_channels=1, num_classes=K, image_size=4, mean=(0.2,), std=(0.1,), width=0.05
    )


CTX = UnlearnContext(num_classes=K, flip=False, quiet=True)


class Spy:
    """Records, per training step, the sample ids fed to the model and the CE targets."""

    def __init__(self, model, monkeypatch):
        self.ids: list[list[int]] = []
        self.targets: list[list[int]] = []
        # a closure, not a bound method: run_method deep-copies the model and its hooks,
        # and a bound method would be copied along with this spy
        ids = self.ids
        model.register_forward_pre_hook(
            lambda _m, args: ids.append(torch.round(args[0][:, 0, 0, 0] * 255).long().tolist())
        )
        real = F.cross_entropy

        def ce(logits, target, *a, **k):
            self.targets.append(target.tolist())
            return real(logits, target, *a, **k)

        monkeypatch.setattr(F, "cross_entropy", ce)

    def pairs(self):
        """(sample id, target) for every sample of every step, in order."""
        assert len(self.ids) == len(self.targets)
        return [list(zip(i, t)) for i, t in zip(self.ids, self.targets)]


def run(name, model, forget, retain, **over):
    cfg = make_config(name, over)
    return run_method(name, model, forget, retain, cfg, CTX).model


# ----------------------------------------------------------------------------- RL


def test_rl_forget_pass_uses_random_labels_then_retain_pass_true_labels(data, monkeypatch):
    """Bugs: random labels equal to the true labels; the retain pass dropped."""
    forget, retain = data
    y = true_label(forget, retain)
    model = tiny_model()
    spy = Spy(model, monkeypatch)
    run("rl", model, forget, retain, epochs=5, batch_size=10, lr=1e-3)
    steps = spy.pairs()
    per_epoch = N_F // 10 + N_R // 10
    assert len(steps) == 5 * per_epoch
    forget_draws = []
    for e in range(5):
        epoch = steps[e * per_epoch : (e + 1) * per_epoch]
        f_steps, r_steps = epoch[: N_F // 10], epoch[N_F // 10 :]
        # the forget pass first, over every forget sample once ...
        assert sorted(i for s in f_steps for i, _ in s) == list(range(N_F))
        forget_draws += [(i, t) for s in f_steps for i, t in s]
        # ... then the retain pass, over every retain sample once, with its true label
        assert sorted(i for s in r_steps for i, _ in s) == list(range(N_F, N_F + N_R))
        assert all(t == y[i] for s in r_steps for i, t in s)
    equal = np.mean([t == y[i] for i, t in forget_draws])
    # uniform over K = 5 classes: about 1/5 equal the true label (the reference allows it)
    assert 0.1 < equal < 0.3
    assert {t for _, t in forget_draws} == set(range(K))
    # fresh labels every epoch: a sample's label changes across epochs
    by_id: dict[int, set[int]] = {}
    for i, t in forget_draws:
        by_id.setdefault(i, set()).add(t)
    assert np.mean([len(v) > 1 for v in by_id.values()]) > 0.8


def test_exclude_true_label_never_draws_the_true_label(data, monkeypatch):
    """Bug: ``exclude_true_label`` still drawing y."""
    forget, retain = data
    y = true_label(forget, retain)
    model = tiny_model()
    spy = Spy(model, monkeypatch)
    run("rl", model, forget, retain, epochs=5, batch_size=10, lr=1e-3, exclude_true_label=True)
    draws = [(i, t) for s in spy.pairs() for i, t in s if i < N_F]
    assert len(draws) == 5 * N_F
    assert all(t != y[i] for i, t in draws)
    # still uniform over the other K − 1 classes: each sample gets several of them
    per_sample = {i: {t for j, t in draws if j == i} for i in range(N_F)}
    assert np.mean([len(v) >= 2 for v in per_sample.values()]) > 0.8


def sgd_step(model: nn.Module, loss: torch.Tensor, lr: float) -> None:
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g


@pytest.mark.parametrize("alpha", [0.25, 1.0])
def test_rl_sequential_update_is_forget_step_then_alpha_weighted_retain_step(
    data, monkeypatch, alpha
):
    """Bug: α ignored. One epoch, one batch per pass, plain SGD: θ2 = θ1 − lr·α·∇CE_r(θ1),
    θ1 = θ0 − lr·∇CE_f(θ0; random labels)."""
    forget, retain = data
    model = tiny_model()
    spy = Spy(model, monkeypatch)
    lr = 0.5
    got = run(
        "rl",
        model,
        forget,
        retain,
        epochs=1,
        batch_size=100,
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        alpha=alpha,
    )
    (f_step, r_step) = spy.pairs()
    monkeypatch.undo()
    hand = copy.deepcopy(model)
    for step, scale in ((f_step, 1.0), (r_step, alpha)):
        ids = torch.tensor([i for i, _ in step])
        targets = torch.tensor([t for _, t in step])
        x = torch.full((len(ids), 1, 4, 4), 0.0) + (ids.float() / 255)[:, None, None, None]
        sgd_step(hand, scale * F.cross_entropy(hand(x), targets), lr)
    for a, b in zip(got.parameters(), hand.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    unweighted = copy.deepcopy(model)
    for step in (f_step, r_step):  # what α ignored would give: the test can tell it apart
        ids = torch.tensor([i for i, _ in step])
        x = torch.zeros(len(ids), 1, 4, 4) + (ids.float() / 255)[:, None, None, None]
        sgd_step(unweighted, F.cross_entropy(unweighted(x), torch.tensor([t for _, t in step])), lr)
    if alpha != 1.0:
        diff = max(
            (a - b).abs().max().item() for a, b in zip(got.parameters(), unweighted.parameters())
        )
        assert diff > 1e-3


def test_rl_joint_batches_weight_retain_samples_by_alpha(data, monkeypatch):
    """The joint regime: one mean over forget (weight 1) and retain (weight α) samples."""
    forget, retain = data
    model = tiny_model()
    spy = Spy(model, monkeypatch)
    lr, alpha = 0.5, 0.3
    got = run(
        "rl",
        model,
        forget,
        retain,
        epochs=1,
        batch_size=100,
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        alpha=alpha,
        regime="joint",
    )
    ((step),) = spy.pairs()
    monkeypatch.undo()
    # the joint batch carries positions as labels; map them back to the CE targets used
    assert sorted(i for i, _ in step) == list(range(N_F + N_R))
    hand = copy.deepcopy(model)
    ids = torch.tensor([i for i, _ in step])
    x = torch.zeros(len(ids), 1, 4, 4) + (ids.float() / 255)[:, None, None, None]
    targets = torch.tensor([t for _, t in step])
    w = torch.where(ids < N_F, 1.0, alpha)
    sgd_step(hand, (w * F.cross_entropy(hand(x), targets, reduction="none")).mean(), lr)
    for a, b in zip(got.parameters(), hand.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    y = true_label(forget, retain)
    assert all(t == y[i] for i, t in step if i >= N_F)  # retain samples keep their labels


# ----------------------------------------------------------------------------- FT


def test_ft_trains_on_the_retain_set_only_with_true_labels(data, monkeypatch):
    """Bug: FT training on the forget set."""
    forget, retain = data
    y = true_label(forget, retain)
    model = tiny_model()
    spy = Spy(model, monkeypatch)
    run("ft", model, forget, retain, epochs=3, batch_size=16, lr=1e-3)
    steps = spy.pairs()
    per_epoch = -(-N_R // 16)
    assert len(steps) == 3 * per_epoch
    for e in range(3):
        seen = [i for s in steps[e * per_epoch : (e + 1) * per_epoch] for i, _ in s]
        assert sorted(seen) == list(range(N_F, N_F + N_R))  # every retain sample, once
    assert all(t == y[i] for s in steps for i, t in s)


# ----------------------------------------------------------------------------- IU


def per_sample_grad(model, x, y) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x[None]), y[None])
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()


@pytest.mark.parametrize("reference", [False, True])
def test_iu_update_is_plus_alpha_times_woodfisher_direction(data, reference):
    """Bug: IU's update with the wrong sign. θ_u − θ_o = +α·k, k from plain loops."""
    forget, retain = data
    model = tiny_model().eval()
    alpha, damping, samples = 0.7, 5.0, 8
    got = run(
        "iu",
        model,
        forget,
        retain,
        alpha=alpha,
        damping=damping,
        num_samples=samples,
        batch_size=16,
        reference=reference,
    )
    xf, xr = forget.images.float() / 255, retain.images.float() / 255
    g_f = sum(per_sample_grad(model, xf[i], forget.labels[i]) for i in range(N_F))
    g_r = sum(per_sample_grad(model, xr[i], retain.labels[i]) for i in range(N_R))
    n = N_F + N_R
    v = (N_F / n) * (g_f / N_F - g_r / N_R)  # (N_f/N)·(mean_f ∇ℓ − mean_r ∇ℓ)
    k, o = v.clone(), None
    for j in range(samples):  # the first retain samples, in index order
        g = per_sample_grad(model, xr[j], retain.labels[j])
        if o is None:
            o = g
            continue
        s = float(o @ g)
        k = k - float(k @ g) / (damping + s) * o
        o = o - s / (damping + s) * o
    assert (k - v).abs().max() > 1e-6 * v.abs().max()  # the recursion did something
    before = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    after = torch.cat([p.detach().reshape(-1) for p in got.parameters()]).double()
    torch.testing.assert_close(after - before, alpha * k, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------- SalUn-soft


def test_salun_soft_proximal_step_shrinks_toward_the_anchor():
    """Bug: the soft threshold expanding instead of shrinking. Hand-computed on 8 weights."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)  # 6 weights + 2 biases
    cfg = make_config("salun_soft", {"prox_ratio": 0.5})
    stepper = ProximalStepper(model, cfg, None, total_steps=4)
    stepper.start_epoch(0)
    anchor = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()
    delta = np.array([0.5, -0.1, 0.02, -0.3, 0.05, -0.8, 0.2, -0.01], dtype=np.float32)
    with torch.no_grad():
        model.weight.copy_(torch.tensor((anchor + delta)[:6]).view(2, 3))
        model.bias.copy_(torch.tensor((anchor + delta)[6:]))
    stepper.after_step()  # t = 1: k = ⌊0.5·(4 − 1)/4·8⌋ = 3

    tau = np.sort(np.abs(delta))[3 - 1]  # the 3rd smallest |Δ| = 0.05
    expected = np.where(np.abs(delta) > tau, anchor + delta - tau * np.sign(delta), anchor)
    got = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    moved = np.abs(got - anchor)
    assert (moved <= np.abs(delta) + 1e-7).all()  # shrinks: never farther than before
    assert int((moved == 0).sum()) == 3  # k coordinates back at the anchor exactly
