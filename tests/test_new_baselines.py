"""NegGrad+, SCRUB and SSD on the method contract, each pinned by its defining behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from salun.data import iterate_batches
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError
from salun.methods import UnlearnContext, get_method, make_config, run_method
from salun.methods.common import SGDConfig, Stepper
from salun.methods.neggrad_plus import NegGradPlusConfig
from salun.methods.scrub import SCRUBConfig, distill_kl, epoch_lr, max_step, min_step
from salun.methods.ssd import SSDConfig, fisher_importance
from salun.models import build_from_kwargs, model_kwargs_for
from salun.saliency import random_mask
from salun.train import TrainConfig, train_supervised

NEW = ("neggrad_plus", "scrub", "ssd")


@pytest.fixture(scope="module")
def task():
    """A BatchNorm CNN trained on a noisy 4-class 8×8 task, and a 10 % forget set."""
    bundle = synthetic_bundle(n_train=160, n_test=40, num_classes=4, size=8, noise=150.0)
    kwargs = model_kwargs_for(bundle, "cnn", width=0.25)
    torch.manual_seed(0)
    model = build_from_kwargs(kwargs)
    train_supervised(model, bundle.train, TrainConfig(epochs=8, batch_size=32, lr=0.05), quiet=True)
    forget = bundle.train.subset(range(0, 160, 10))
    retain = bundle.train.subset([i for i in range(160) if i % 10])
    ctx = UnlearnContext(num_classes=4, flip=False, model_kwargs=kwargs, quiet=True)
    return model, forget, retain, ctx


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def full_batch(data):
    return next(iter(iterate_batches(data, len(data))))


def test_registered_with_grids_and_validated_configs():
    for name in NEW:
        cfg = get_method(name).config()
        assert isinstance(cfg.lr_grid, tuple) and cfg.lr_grid
    assert get_method("ssd").config.grid_field == "alpha"
    assert (SSDConfig().alpha, SSDConfig().lam) == (10.0, 1.0)
    s = SCRUBConfig()
    assert (s.epochs, s.msteps, s.lr, s.alpha, s.gamma, s.temperature) == (
        3,
        2,
        5e-4,
        0.001,
        0.99,
        4.0,
    )
    for name, bad in [
        ("neggrad_plus", {"beta": 1.5}),
        ("scrub", {"temperature": 0.0}),
        ("scrub", {"msteps": -1}),
        ("ssd", {"alpha": 0.0}),
        ("ssd", {"reference": "test"}),
        ("ssd", {"alpha": float("nan")}),
        ("ssd", {"batch_size": 2.5}),
        ("neggrad_plus", {"forget_batch_size": 0}),
        ("scrub", {"lr_decay_epochs": (5, 3)}),
        ("scrub", {"gamma": -1.0}),
    ]:
        with pytest.raises(SalunError):
            make_config(name, bad)


@pytest.mark.parametrize("name", NEW)
def test_input_model_untouched_and_mask_respected(task, name):
    model, forget, retain, ctx = task
    before = state(model)
    mask = random_mask(model, keep=0.3, seed=0)
    over = {"epochs": 1, "batch_size": 32} if name != "ssd" else {"alpha": 1.0}
    out = run_method(name, model, forget, retain, make_config(name, over), ctx, mask=mask).model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} mutated the input model ({k})"
    moved = 0
    for n, p in out.named_parameters():
        old = before[n]
        assert torch.equal(p[~mask[n]], old[~mask[n]]), f"{name} moved masked weights of {n}"
        moved += int((p[mask[n]] != old[mask[n]]).sum())
    assert moved > 0, f"{name} changed nothing"


# --- NegGrad+ -------------------------------------------------------------------------


def test_neggrad_plus_beta_one_is_fine_tuning_bit_for_bit(task):
    model, forget, retain, ctx = task
    mask = random_mask(model, keep=0.5, seed=1)
    # the same optimiser for both (NegGrad+'s reference default is plain SGD, FT's not)
    common = {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 3, "momentum": 0.9}
    common["weight_decay"] = 5e-4
    ft = run_method("ft", model, forget, retain, make_config("ft", common), ctx, mask=mask)
    ng = run_method(
        "neggrad_plus",
        model,
        forget,
        retain,
        make_config("neggrad_plus", {**common, "beta": 1.0}),
        ctx,
        mask=mask,
    )
    a, b = ft.model.state_dict(), ng.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # BatchNorm buffers included
    ng2 = run_method(
        "neggrad_plus",
        model,
        forget,
        retain,
        make_config("neggrad_plus", {**common, "beta": 0.9}),
        ctx,
        mask=mask,
    )
    assert not all(torch.equal(a[k], ng2.model.state_dict()[k]) for k in a)


def test_neggrad_plus_one_step_is_beta_descent_minus_ascent(task):
    """One full-batch plain-SGD step: θ' = θ − lr·(β·∇CE_r − (1−β)·∇CE_f), worked out here."""
    model, forget, retain, ctx = task
    beta, lr = 0.7, 0.05
    cfg = NegGradPlusConfig(
        epochs=1,
        lr=lr,
        beta=beta,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=len(retain),
        forget_batch_size=len(forget),
    )
    out = run_method("neggrad_plus", model, forget, retain, cfg, ctx).model
    ref = build_from_kwargs(dict(ctx.model_kwargs))
    ref.load_state_dict(model.state_dict())
    ref.train()
    params = list(ref.parameters())
    (xr, yr), (xf, yf) = full_batch(retain), full_batch(forget)
    g_r = torch.autograd.grad(F.cross_entropy(ref(xr), yr), params)
    g_f = torch.autograd.grad(F.cross_entropy(ref(xf), yf), params)
    for (n, p), p0, gr, gf in zip(out.named_parameters(), params, g_r, g_f):
        expected = p0.detach() - lr * (beta * gr - (1 - beta) * gf)
        assert torch.allclose(p, expected, atol=1e-6), n
        # the ascent term matters: the pure-descent step is measurably different
        if gf.abs().max() > 1e-3:
            assert not torch.allclose(p, p0.detach() - lr * beta * gr, atol=1e-6), n


# --- SCRUB ----------------------------------------------------------------------------


def test_distill_kl_matches_hand_formula():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    T = 4.0
    ps, pt = (s / T).softmax(1), (t / T).softmax(1)
    expected = (pt * (pt.log() - ps.log())).sum(1).mean() * T * T
    assert torch.allclose(distill_kl(s, t, T), expected, atol=1e-6)
    assert distill_kl(t, t, T).abs() < 1e-6


def test_scrub_max_step_raises_kl_to_teacher_on_forget(task):
    model, forget, retain, ctx = task
    teacher = build_from_kwargs(dict(ctx.model_kwargs))
    teacher.load_state_dict(model.state_dict())
    teacher.eval()
    student = build_from_kwargs(dict(ctx.model_kwargs))
    student.load_state_dict(model.state_dict())
    with torch.no_grad():  # at student == teacher the KL and its gradient are 0: move off it
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    xf, _ = full_batch(forget)

    def kl():
        # the objective the max-step sees: the student in train mode (batch statistics,
        # which depend on the weights only), the teacher in eval mode
        student.train()
        with torch.no_grad():
            return distill_kl(student(xf), teacher(xf), 4.0).item()

    before = kl()
    student.train()
    cfg = SGDConfig(lr=0.05, momentum=0.0, weight_decay=0.0)
    max_step(student, teacher, xf, Stepper(student, cfg, None), 4.0, "test")
    after = kl()
    assert after > before * 1.05, (before, after)


def test_scrub_min_step_is_alpha_kl_plus_gamma_ce(task):
    model, forget, retain, ctx = task
    teacher = build_from_kwargs(dict(ctx.model_kwargs))
    teacher.load_state_dict(model.state_dict())
    teacher.eval()
    student = build_from_kwargs(dict(ctx.model_kwargs))
    torch.manual_seed(1)
    with torch.no_grad():  # a student away from the teacher, so the KL term has a gradient
        for p, q in zip(student.parameters(), teacher.parameters()):
            p.copy_(q + 0.05 * torch.randn_like(q))
    for b_s, b_t in zip(student.buffers(), teacher.buffers()):
        b_s.copy_(b_t)
    ref = build_from_kwargs(dict(ctx.model_kwargs))
    ref.load_state_dict(student.state_dict())
    xr, yr = full_batch(retain)
    cfg = SCRUBConfig(alpha=0.3, gamma=0.6, lr=0.1, momentum=0.0, weight_decay=0.0)
    student.train()
    min_step(student, teacher, xr, yr, Stepper(student, cfg, None), cfg, "test")
    ref.train()
    params = list(ref.parameters())
    out = ref(xr)
    with torch.no_grad():
        t_out = teacher(xr)
    pt = (t_out / 4).softmax(1)
    kl = (pt * (pt.log() - (out / 4).log_softmax(1))).sum(1).mean() * 16
    grads = torch.autograd.grad(0.3 * kl + 0.6 * F.cross_entropy(out, yr), params)
    for p, p0, g in zip(student.parameters(), params, grads):
        assert torch.allclose(p, p0.detach() - 0.1 * g, atol=1e-6)


def test_scrub_reads_forget_only_in_max_step_epochs(task):
    model, forget, retain, ctx = task
    other = retain.subset(range(len(forget)))  # a different "forget" set of the same size

    def run(f, msteps):
        cfg = make_config("scrub", {"epochs": 2, "msteps": msteps, "lr": 0.01})
        return run_method("scrub", model, f, retain, cfg, ctx).model.state_dict()

    a, b = run(forget, 0), run(other, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = run(forget, 1), run(other, 1)
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_scrub_lr_decay_as_published():
    cfg = SCRUBConfig()
    assert [epoch_lr(cfg, e) for e in (1, 3)] == [5e-4, 5e-4]
    assert epoch_lr(cfg, 4) == pytest.approx(5e-5)
    assert epoch_lr(cfg, 6) == pytest.approx(5e-6)
    assert epoch_lr(cfg, 10) == pytest.approx(5e-7)


# --- SSD ------------------------------------------------------------------------------


def brute_importance(model, data, batch_size):
    """Σ over batches of (∇ mean-CE)² / #batches with plain backward() calls."""
    model.eval()
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    nb = 0
    for start in range(0, len(data), batch_size):
        x = data.images[start : start + batch_size].float() / 255
        y = data.labels[start : start + batch_size]
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad**2
        nb += 1
    model.zero_grad(set_to_none=True)
    return {n: a / nb for n, a in acc.items()}


def test_ssd_importance_matches_brute_force(task):
    model, forget, retain, ctx = task
    fast = fisher_importance(model, retain, 16, "cpu")
    slow = brute_importance(build_copy(model, ctx), retain, 16)
    for n in slow:
        assert torch.allclose(fast[n], slow[n], rtol=1e-4, atol=1e-10), n


def build_copy(model, ctx):
    m = build_from_kwargs(dict(ctx.model_kwargs))
    m.load_state_dict(model.state_dict())
    return m


@pytest.mark.parametrize("use_mask", [False, True])
def test_ssd_dampens_exactly_the_selected_parameters(task, use_mask):
    model, forget, retain, ctx = task
    alpha, lam = 2.0, 0.5
    mask = random_mask(model, keep=0.5, seed=2) if use_mask else None
    cfg = SSDConfig(alpha=alpha, lam=lam, batch_size=16, reference="retain")
    out = run_method("ssd", model, forget, retain, cfg, ctx, mask=mask).model
    i_f = brute_importance(build_copy(model, ctx), forget, 16)
    i_r = brute_importance(build_copy(model, ctx), retain, 16)
    n_sel = n_keep = 0
    for n, p in out.named_parameters():
        old = model.state_dict()[n]
        sel = i_f[n] > alpha * i_r[n]
        if mask is not None:
            sel &= mask[n]
        factor = torch.clamp(lam * i_r[n][sel] / i_f[n][sel], max=1.0)
        assert torch.allclose(p[sel], old[sel] * factor, rtol=1e-4, atol=1e-8), n
        assert torch.equal(p[~sel], old[~sel]), f"{n}: unselected weights changed"
        n_sel += int(sel.sum())
        n_keep += int((~sel).sum())
    assert n_sel > 20 and n_keep > 20  # the test sees both branches
    for k, v in model.state_dict().items():  # buffers (BatchNorm) untouched too
        if k not in dict(out.named_parameters()):
            assert torch.equal(out.state_dict()[k], v)


def test_ssd_full_reference_uses_forget_too(task):
    model, forget, retain, ctx = task
    a = run_method(
        "ssd", model, forget, retain, SSDConfig(alpha=2.0, reference="retain"), ctx
    ).model
    b = run_method("ssd", model, forget, retain, SSDConfig(alpha=2.0, reference="full"), ctx).model
    sa, sb = a.state_dict(), b.state_dict()
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)
