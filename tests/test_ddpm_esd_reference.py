"""DDPM ESD as the removed reference ran it (OPTML-Group/Unlearn-Saliency @ b874ee9,
``DDPM/runners/diffusion.py``, ``train_esd``, and ``DDPM/functions/denoising.py``,
``generalized_steps_conditional``), pinned against that code's arithmetic written out here.

The reference loop, per iteration::

    t_enc = random.randint(0, 50)                         # 0..50 inclusive
    t = randint(round(t_enc / 50 * 1000), round((t_enc + 1) / 50 * 1000))
    seq = range(0, t_enc, 1000 // 1000)                   # args.timesteps = 1000
    x = generalized_steps_conditional(noise, c, seq, model, betas, cond_scale=2.0, eta=1.0)
    e_0, e_p = model_orig(x, t, ∅), model_orig(x, t, c)   # model_orig never put in eval()
    loss = mse(model(x, t, c), e_0 - 7.5 * (e_p - e_0))
    clip_grad_norm_(model.parameters(), 1.0); optimizer.step(); loss.backward()   # no zero_grad
"""

import copy

import diffusers  # noqa: F401  (CI installs the [diffusion] extra)
import pytest
import torch
from torch.func import functional_call

import salun.generation.ddpm.unlearn as unlearn_mod
from ddpm_fixtures import K, class_templates, tiny_denoiser
from salun.errors import SalunError
from salun.generation.ddpm.diffusion import NoiseSchedule
from salun.generation.ddpm.esd import esd_noisy_input, esd_reference_sample
from salun.generation.ddpm.model import build_denoiser
from salun.generation.ddpm.unlearn import GenUnlearnConfig, unlearn_ddpm

SCHED = NoiseSchedule()
T = 1000


@pytest.fixture(scope="module")
def model():
    m = build_denoiser(tiny_denoiser(dropout=0.0), seed=0)
    with torch.no_grad():  # a non-degenerate class table, as in test_gen_semantics.py
        g = torch.Generator().manual_seed(1)
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m.eval()


@pytest.fixture(scope="module")
def data():
    _, forget, retain = class_templates(24, seed=2)
    return forget, retain


class Spy(torch.nn.Module):
    """The wrapped denoiser, recording the timestep of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.ts: list[int] = []

    @property
    def null_class(self):
        return self.inner.null_class

    def forward(self, x, t, c):
        self.ts.append(int(t[0]))
        return self.inner(x, t, c)


def reference_visits(t_enc: int) -> list[int]:
    """The timesteps generalized_steps_conditional feeds the model, from its own loop."""
    skip = 1000 // 1000  # self.num_timesteps // self.args.timesteps (default 1000)
    seq = range(0, t_enc, skip)
    seq_next = [-1] + list(seq[:-1])
    return [i for i, _ in zip(reversed(seq), reversed(seq_next))]


@pytest.mark.parametrize("t_enc", [0, 1, 3, 7, 50])
def test_reference_sampler_visits_t_enc_minus_1_down_to_0(model, t_enc):
    spy = Spy(model)
    c = torch.zeros(1, dtype=torch.long)
    esd_reference_sample(spy, SCHED, c, (1, 8, 8), t_enc, 2.0, torch.Generator())
    assert spy.ts == reference_visits(t_enc)


def test_reference_draws_t_enc_from_0_to_K_and_t_from_its_bucket(model):
    """The number of sampler calls is t_enc; the loss's t is the reference's bucket of it."""
    grid = 5
    c = torch.zeros(1, dtype=torch.long)
    x0 = torch.zeros(1, 1, 8, 8)
    seen = set()
    for seed in range(150):
        spy = Spy(model)
        gen = torch.Generator().manual_seed(seed)
        _, t = esd_noisy_input(spy, SCHED, x0, c, "reference", grid, 2.0, gen)
        t_enc = len(spy.ts)
        og_num = round((int(t_enc) / grid) * 1000)
        og_num_lim = round((int(t_enc + 1) / grid) * 1000)
        assert og_num <= int(t[0]) < og_num_lim, (t_enc, int(t[0]))
        seen.add(t_enc)
    assert seen == set(range(grid + 1))  # random.randint(0, 50) includes both ends


def reference_alpha(betas: torch.Tensor, t: int) -> float:
    """compute_alpha of the reference: ᾱ with a 1 prepended, indexed at t + 1."""
    b = torch.cat([torch.zeros(1, dtype=betas.dtype), betas])
    return float((1 - b).cumprod(0)[t + 1])


@pytest.mark.parametrize("t_enc", [1, 2, 6])
def test_reference_sampler_is_ddim_eta_1_under_guidance_2(model, t_enc):
    guidance = GenUnlearnConfig(method="esd").esd_start_guidance
    c = torch.tensor([0, 2])
    got = esd_reference_sample(
        model, SCHED, c, (1, 8, 8), t_enc, guidance, torch.Generator().manual_seed(3)
    )
    # generalized_steps_conditional with cond_scale = 2 (train.py's --cond_scale), eta = 1
    betas = torch.linspace(0.0001, 0.02, 1000, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, 1, 8, 8), generator=g)
    seq = range(0, t_enc, 1)
    seq_next = [-1] + list(seq[:-1])
    with torch.no_grad():
        for i, j in zip(reversed(seq), reversed(seq_next)):
            at, at_next = reference_alpha(betas, i), reference_alpha(betas, j)
            tt = torch.full((2,), i)
            logits = model(x, tt, c)
            null_logits = model(x, tt, torch.full_like(c, K))
            et = (1 + 2.0) * logits - 2.0 * null_logits
            x0_t = (x - et * (1 - at) ** 0.5) / at**0.5
            c1 = 1.0 * ((1 - at / at_next) * (1 - at_next) / (1 - at)) ** 0.5
            c2 = ((1 - at_next) - c1**2) ** 0.5
            x = at_next**0.5 * x0_t + c1 * torch.randn(x.shape, generator=g) + c2 * et
    assert torch.allclose(got, x, rtol=1e-4, atol=1e-5)


def test_old_name_sample_is_refused_with_the_new_names():
    with pytest.raises(SalunError, match="'ddim'"):
        GenUnlearnConfig(method="esd", esd_xt="sample")
    for field, bad in (("esd_update", "lagged"), ("esd_frozen_mode", "frozen")):
        with pytest.raises(SalunError, match=field):
            GenUnlearnConfig(method="esd", **{field: bad})


def fixed_losses(n: int, seed: int):
    """n deterministic ESD-like losses ``loss_k(call)``; ``call(x, t, c)`` runs the net."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, 2, 1, 8, 8, generator=g)
    ts = torch.randint(0, T, (n, 2), generator=g)
    ys = 5 * torch.randn(n, 2, 1, 8, 8, generator=g)  # far off: the summed gradient is clipped
    c = torch.tensor([0, 1])
    return [lambda call, k=k: (call(xs[k], ts[k], c) - ys[k]).square().mean() for k in range(n)]


@pytest.mark.parametrize("iterations", [1, 4])
def test_reference_update_steps_on_the_running_sum_then_backpropagates(
    monkeypatch, model, data, iterations
):
    forget, retain = data
    losses = fixed_losses(iterations, seed=4)
    calls = []

    def fake_forget_term(net, frozen, schedule, xf, cf, cfg, gen):
        calls.append(None)
        return losses[len(calls) - 1](net)

    monkeypatch.setattr(unlearn_mod, "forget_term", fake_forget_term)
    cfg = GenUnlearnConfig(method="esd", iterations=iterations, batch_size=2, lr=1e-2)
    got = unlearn_ddpm(model, forget, retain, cfg, quiet=True).model

    # the reference's order, literally: forward, clip the old .grad, step, then backward.
    # The forward runs on a snapshot of the weights, so that the backward after the step is
    # the one the forward's graph defines (autograd refuses it on the stepped weights).
    ref = copy.deepcopy(model).train()
    params = dict(ref.named_parameters())
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    clipped = 0
    for k in range(iterations):
        snap = {n: p.detach().clone().requires_grad_() for n, p in params.items()}
        loss = losses[k](lambda x, t, c, s=snap: functional_call(ref, s, (x, t, c)))
        if any(p.grad is not None for p in params.values()):
            norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
            clipped += int(norm > 1.0)
        opt.step()
        loss.backward()
        for n, p in params.items():  # accumulate: nothing ever zeroes .grad
            p.grad = snap[n].grad.clone() if p.grad is None else p.grad + snap[n].grad
    if iterations > 1:
        assert clipped >= 2  # the clip acts on the running sum, more than once
    for (n, p), q in zip(ref.named_parameters(), got.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), n
    if iterations == 1:  # the first step had no gradient: nothing moved
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), got.parameters()))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_frozen_copy_is_the_original_at_step_3_in_the_mode_the_switch_says(monkeypatch, data, mode):
    forget, retain = data
    original = build_denoiser(tiny_denoiser(dropout=0.5), seed=0).eval()
    start = {k: v.clone() for k, v in original.state_dict().items()}
    real = unlearn_mod.esd_loss
    seen = []

    def spy(net, frozen, x_t, t, c, eta):
        seen.append(None)
        if len(seen) == 3:  # two steps taken (the second moves: the first had no gradient)
            assert frozen is not net
            assert all(torch.equal(v, start[k]) for k, v in frozen.state_dict().items())
            assert not all(torch.equal(v, start[k]) for k, v in net.state_dict().items())
            assert not any(p.requires_grad for p in frozen.parameters())
            assert {m.training for m in frozen.modules()} == {mode == "train"}
            with torch.no_grad():  # dropout acts in train mode only
                same = torch.equal(frozen(x_t, t, c), frozen(x_t, t, c))
            assert same == (mode == "eval")
        return real(net, frozen, x_t, t, c, eta)

    monkeypatch.setattr(unlearn_mod, "esd_loss", spy)
    cfg = GenUnlearnConfig(
        method="esd", iterations=4, batch_size=2, lr=1e-2, esd_xt="forward", esd_frozen_mode=mode
    )
    unlearn_ddpm(original, forget, retain, cfg, quiet=True)
    assert len(seen) == 4


@pytest.mark.parametrize("how, training", [("reference", True), ("ddim", False)])
def test_partial_sampler_runs_the_trained_model_in_the_mode_its_variant_says(model, how, training):
    """The reference's loop calls model.train() and samples with it (dropout on); salun's
    ddim variant samples in eval mode."""
    net = copy.deepcopy(model).train()
    modes = []
    net.register_forward_pre_hook(lambda m, args: modes.append(m.training))
    c = torch.zeros(1, dtype=torch.long)
    for seed in range(10):
        gen = torch.Generator().manual_seed(seed)
        esd_noisy_input(net, SCHED, torch.zeros(1, 1, 8, 8), c, how, 5, 2.0, gen)
    assert modes and set(modes) == {training}
    assert net.training  # and it is left as it was
