"""DDPM unlearning semantics pinned against oracles written out in the test.

Each test recomputes, from the documented formula, the exact quantity the code must produce
(the gradient handed to the optimizer, the saliency scores, ESD's x_t and t) with plain
torch, replaying the same random draws, and compares. A change to a sign, a target, a
weight, the clip order or the thresholding scope makes one of them fail.
"""

import copy

import diffusers  # noqa: F401  (CI installs the [diffusion] extra)
import pytest
import torch
import torch.nn.functional as F

from ddpm_fixtures import K, class_templates, tiny_denoiser
from salun.generation.ddpm.data import BatchStream
from salun.generation.ddpm.diffusion import NoiseSchedule
from salun.generation.ddpm.esd import esd_ddim_sample
from salun.generation.ddpm.mask import DDPMMaskConfig, ddpm_saliency, ddpm_saliency_mask
from salun.generation.ddpm.model import build_denoiser
from salun.generation.ddpm.sampler import timestep_sequence
from salun.generation.ddpm.unlearn import (
    GenUnlearnConfig,
    resolve_schedule,
    unlearn_ddpm,
)

def noisy_batch(schedule, x0, gen):
    """The forward process written out here, not the package's helper, so that a wrong
    coefficient, a swapped √ᾱ / √(1−ᾱ) or a timestep drawn otherwise turns these oracles
    red: linear betas in float64, ᾱ_t = Π_{s<=t}(1 − β_s); antithetic t (n/2+1 uniform draws,
    then T−1−t, cut to n), then ε ~ N(0, I), in that order from the same generator (the
    reference's ``antithetic_sampling``); x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε."""
    T = schedule.num_steps
    betas = [schedule.beta_start + (schedule.beta_end - schedule.beta_start) * i / (T - 1)
             for i in range(T)]
    abar, prod = [], 1.0
    for b in betas:
        prod *= 1.0 - b
        abar.append(prod)
    half = torch.randint(0, T, (len(x0) // 2 + 1,), generator=gen)
    t = torch.cat([half, T - 1 - half])[: len(x0)]
    eps = torch.randn(x0.shape, generator=gen)
    a = torch.tensor([abar[i] for i in t.tolist()], dtype=torch.float64)
    a = a.to(x0.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps, t, eps


# dropout 0: the oracle must see the same network function as the code under test
TINY = tiny_denoiser(dropout=0.0)
SCHED = NoiseSchedule()


@pytest.fixture(scope="module")
def data():
    _, forget, retain = class_templates(36, seed=1)
    return forget, retain


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_denoiser(TINY, seed=0)
    with torch.no_grad():  # a non-degenerate class table (rows differ, null row included)
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def first_step_grads(monkeypatch, model, forget, retain, cfg, mask=None):
    """The gradients ``unlearn_ddpm`` hands to Adam on its first step."""
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        if not seen:
            seen.append([p.grad.detach().clone() for g in self.param_groups for p in g["params"]])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    unlearn_ddpm(model, forget, retain, cfg, mask=mask, quiet=True)
    return seen[0]


def oracle_grads(model, forget, retain, cfg, alpha, forget_loss_fn, mask=None, clip=1.0):
    """∇(forget + α·retain), clipped to norm ``clip`` over ALL parameters, then masked."""
    net = copy.deepcopy(model).train()
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]
    gen = torch.Generator().manual_seed(cfg.seed)
    _, bs = resolve_schedule(cfg)
    fs = BatchStream(forget, bs, gen, "cpu", flip=False)
    rs = BatchStream(retain, bs, gen, "cpu", flip=False) if alpha > 0 else None
    xf, cf = next(fs)
    loss = forget_loss_fn(net, xf, cf, gen)
    if rs is not None:
        xr, cr = next(rs)
        x_t, t, eps = noisy_batch(SCHED, xr, gen)
        loss = loss + alpha * (eps - net(x_t, t, cr)).square().mean()
    grads = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum(g.double().square().sum() for g in grads))
    coef = min(1.0, clip / (float(norm) + 1e-6))
    grads = [g * coef for g in grads]
    if mask is not None:
        grads = [g * mask[n] for n, g in zip(names, grads)]
    return grads


def salun_forget(net, xf, cf, gen):
    x_t, t, _ = noisy_batch(SCHED, xf, gen)
    with torch.no_grad():
        target = net(x_t, t, (cf + 1) % K)  # the NEXT class, stop-gradient
    return F.mse_loss(net(x_t, t, cf), target)


def assert_grads_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-7), (g - w).abs().max()


def base_cfg(**kw):
    kw = {"iterations": 1, "batch_size": 6, "lr": 1e-3, "p_uncond": 0.0, "flip": False, **kw}
    return GenUnlearnConfig(**kw)


@pytest.fixture(scope="module")
def mask(model, data):
    return ddpm_saliency_mask(model, data[0], DDPMMaskConfig(batch_size=6))


def test_salun_gradient_is_next_class_target_plus_alpha_retain_clipped_then_masked(
    monkeypatch, model, data, mask
):
    forget, retain = data
    cfg = base_cfg(method="salun", alpha=0.37, seed=3)
    got = first_step_grads(monkeypatch, model, forget, retain, cfg, mask=mask)
    want = oracle_grads(model, forget, retain, cfg, 0.37, salun_forget, mask=mask)
    assert_grads_close(got, want)
    # the clip really bites here, so "clip after masking" would give other numbers
    unclipped = oracle_grads(model, forget, retain, cfg, 0.37, salun_forget, clip=1e9)
    assert sum(float(g.square().sum()) for g in unclipped) > 1.0


def test_alpha_weights_the_retain_term(monkeypatch, model, data):
    forget, retain = data
    grads = {}
    for a in (0.1, 3.0):
        cfg = base_cfg(method="rl", alpha=a, seed=4, grad_clip=0.0)
        grads[a] = first_step_grads(monkeypatch, model, forget, retain, cfg)
        want = oracle_grads(model, forget, retain, cfg, a, salun_forget, clip=1e9)
        assert_grads_close(grads[a], want)


def test_ga_ascends_the_pixel_summed_diffusion_loss(monkeypatch, model, data):
    forget, retain = data

    def ga_forget(reduction):
        def f(net, xf, cf, gen):
            x_t, t, eps = noisy_batch(SCHED, xf, gen)
            err = (eps - net(x_t, t, cf)).square()
            per = err.flatten(1).sum(1).mean() if reduction == "sum" else err.mean()
            return -per  # minimising the negative = ascent

        return f

    for reduction in ("sum", "mean"):
        cfg = base_cfg(method="ga", alpha=0.0, seed=5, grad_clip=0.0, ga_reduction=reduction)
        got = first_step_grads(monkeypatch, model, forget, retain, cfg)
        want = oracle_grads(model, forget, retain, cfg, 0.0, ga_forget(reduction), clip=1e9)
        assert_grads_close(got, want)


def test_ga_default_is_the_reference_sum():
    assert GenUnlearnConfig(method="ga").ga_reduction == "sum"


def test_esd_pulls_toward_negative_guidance_of_the_frozen_original(monkeypatch, model, data):
    forget, retain = data
    eta = 2.5
    frozen = copy.deepcopy(model).eval()

    def esd_forget(net, xf, cf, gen):
        x_t, t, _ = noisy_batch(SCHED, xf, gen)
        with torch.no_grad():
            e_c = frozen(x_t, t, cf)
            e_null = frozen(x_t, t, torch.full_like(cf, K))
            target = e_null - eta * (e_c - e_null)
        return F.mse_loss(net(x_t, t, cf), target)

    # salun's order (zero, backward, clip, step): the reference's first step has no gradient
    cfg = base_cfg(
        method="esd",
        alpha=0.0,
        seed=6,
        grad_clip=0.0,
        esd_eta=eta,
        esd_xt="forward",
        esd_update="standard",
        esd_frozen_mode="eval",
    )
    got = first_step_grads(monkeypatch, model, forget, retain, cfg)
    assert_grads_close(got, oracle_grads(model, forget, retain, cfg, 0.0, esd_forget, clip=1e9))


def test_esd_defaults_are_the_reference_ddpm_esd():
    # train_esd @ b874ee9: --negative_guidance 7.5, ddim_steps = 50, --cond_scale 2.0, the
    # step-before-backward order and model_orig never put in eval mode
    cfg = GenUnlearnConfig(method="esd")
    assert (cfg.esd_eta, cfg.esd_xt, cfg.esd_ddim_steps) == (7.5, "reference", 50)
    assert (cfg.esd_start_guidance, cfg.esd_update, cfg.esd_frozen_mode) == (
        2.0,
        "reference",
        "train",
    )
    assert resolve_schedule(cfg) == (10000, 1)
    assert resolve_schedule(GenUnlearnConfig(method="salun")) == (1000, 128)
    assert resolve_schedule(GenUnlearnConfig(method="esd", iterations=7, batch_size=3)) == (7, 3)


def test_esd_ddim_variant_runs_ddim_to_a_random_step_and_maps_t_into_its_bucket(model):
    c = torch.zeros(2, dtype=torch.long)
    seq = timestep_sequence(SCHED.num_steps, 10)
    abar = SCHED.alphas_cumprod
    ts = set()
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        x_t, t = esd_ddim_sample(model, SCHED, c, (1, 8, 8), 10, 3.0, gen)
        # oracle: the same draws in the same order
        g = torch.Generator().manual_seed(seed)
        stop = int(torch.randint(0, 10, (1,), generator=g))
        x = torch.randn((2, 1, 8, 8), generator=g)
        with torch.no_grad():
            for i in range(stop):
                tt = torch.full((2,), seq[i], dtype=torch.long)
                cond = model(x, tt, c)
                unc = model(x, tt, torch.full_like(c, K))
                eps = 4.0 * cond - 3.0 * unc  # (1 + w)·cond − w·uncond, w = 3
                a_t, a_n = float(abar[seq[i]]), float(abar[seq[i + 1]])
                x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
                x = a_n**0.5 * x0 + (1 - a_n) ** 0.5 * eps
        off = int(torch.randint(0, 100, (1,), generator=g))
        assert torch.allclose(x_t, x, rtol=1e-4, atol=1e-4)
        assert t.tolist() == [seq[stop] + off] * 2
        ts.add(int(t[0]))
    assert len(ts) > 6  # not a constant mapping


def test_ddpm_saliency_is_abs_of_summed_per_batch_clipped_cfg_gradients(model, data):
    forget, _ = data
    cfg = DDPMMaskConfig(batch_size=4, guidance=2.0, clip_grad_norm=1.0, seed=2)
    scores = ddpm_saliency(model, forget, cfg)
    net = copy.deepcopy(model).eval()
    names = [n for n, _ in net.named_parameters()]
    params = list(net.parameters())
    acc = [torch.zeros_like(p) for p in params]
    gen = torch.Generator().manual_seed(2)
    for start in range(0, len(forget), 4):  # the forget set in order, batches of 4
        xb = forget.images[start : start + 4].float() / 255 * 2 - 1
        cb = forget.labels[start : start + 4]
        x_t, t, eps = noisy_batch(SCHED, xb, gen)
        # CFG-combined output: the gradient flows through the null row too
        out = 3.0 * net(x_t, t, cb) - 2.0 * net(x_t, t, torch.full_like(cb, K))
        loss = (eps - out).square().flatten(1).sum(1).mean()
        grads = torch.autograd.grad(loss, params)
        norm = float(torch.sqrt(sum(g.double().square().sum() for g in grads)))
        assert norm > 1.0  # so the per-batch clip matters
        coef = min(1.0, 1.0 / (norm + 1e-6))
        acc = [a + g * coef for a, g in zip(acc, grads)]
    for n, a in zip(names, acc):
        assert torch.allclose(scores[n], a.abs(), rtol=1e-4, atol=1e-8), n
    emb = [n for n in names if "class_embedding" in n]
    assert emb and float(scores[emb[0]][K].abs().sum()) > 0  # the null row is salient too


def test_ddpm_mask_is_a_global_top_half(model, data):
    forget, _ = data
    cfg = DDPMMaskConfig(batch_size=6)
    scores = ddpm_saliency(model, forget, cfg)
    mask = ddpm_saliency_mask(model, forget, cfg)
    flat = torch.cat([scores[n].flatten() for n in scores])
    k = int(flat.numel() * 0.5)
    threshold = flat.sort(descending=True).values[k - 1]
    total = sum(int(m.sum()) for m in mask.values())
    assert total == k
    for n in scores:  # every kept score is >= the global k-th, every dropped one <=
        assert bool((scores[n][mask[n]] >= threshold).all()), n
        assert bool((scores[n][~mask[n]] <= threshold).all()), n
    # layers are far from half-kept each: a per-layer threshold would differ
    fractions = [float(mask[n].float().mean()) for n in mask if mask[n].numel() > 50]
    assert max(fractions) - min(fractions) > 0.3
