"""Strict masked updates: masked-out weights stay bit-identical; legacy mode leaks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salun.data.sources.synthetic import synthetic_bundle
from salun.masking import MaskedUpdate
from salun.methods import UnlearnContext, make_config, run_method
from salun.models import build_model
from salun.saliency import random_mask


def tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd_nesterov": lambda p: torch.optim.SGD(
        p, lr=0.1, momentum=0.9, weight_decay=5e-3, nesterov=True
    ),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
}


def train_steps(model, mask, opt_name, mode, steps=25):
    opt = OPTIMIZERS[opt_name](model.parameters())
    masked = MaskedUpdate(model, mask, mode)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g)
        y = torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        masked.step(opt)


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_strict_mode_keeps_masked_weights_bit_identical(opt_name):
    model = tiny()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = random_mask(model, 0.5, seed=1)
    train_steps(model, mask, opt_name, "strict")
    moved = 0
    for n, p in model.named_parameters():
        frozen = ~mask[n]
        assert torch.equal(p[frozen], start[n][frozen]), n
        moved += int((p[mask[n]] != start[n][mask[n]]).sum())
    assert moved > 0, "salient weights must still train"


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_legacy_mode_lets_weight_decay_move_masked_weights(opt_name):
    model = tiny()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = random_mask(model, 0.5, seed=1)
    train_steps(model, mask, opt_name, "legacy")
    drift = [not torch.equal(p[~mask[n]], start[n][~mask[n]]) for n, p in model.named_parameters()]
    assert any(drift)


def test_strict_mode_resets_optimizer_state_of_masked_coordinates():
    model = tiny()
    mask = random_mask(model, 0.5, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    masked = MaskedUpdate(model, mask)
    F.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
    masked.step(opt)
    for n, p in model.named_parameters():
        buf = opt.state[p]["momentum_buffer"]
        assert torch.all(buf[~mask[n]] == 0)


def salun_setup():
    bundle = synthetic_bundle(n_train=200, n_test=40, num_classes=4, size=8)
    model = build_model(
        "cnn",
        in_channels=1,
        num_classes=4,
        image_size=8,
        mean=bundle.mean,
        std=bundle.std,
        width=0.25,
    )
    forget, retain = bundle.train.subset(range(20)), bundle.train.subset(range(20, 200))
    return model, forget, retain, UnlearnContext(num_classes=4, quiet=True)


@pytest.mark.parametrize("mode", ["strict", "legacy"])
def test_salun_method_with_sgd_momentum_and_weight_decay(mode):
    model, forget, retain, ctx = salun_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = random_mask(model, 0.5, seed=0)
    cfg = make_config("salun", {"epochs": 2, "batch_size": 32, "lr": 0.05, "mask_mode": mode})
    out = run_method("salun", model, forget, retain, cfg, ctx, mask=mask).model
    frozen_equal = all(
        torch.equal(p[~mask[n]], before[n][~mask[n]]) for n, p in out.named_parameters()
    )
    assert frozen_equal == (mode == "strict")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "input mutated"


def test_salun_keep_one_reproduces_rl_exactly():
    model, forget, retain, ctx = salun_setup()
    common = {"epochs": 2, "batch_size": 32, "lr": 0.05, "seed": 3}
    rl = run_method("rl", model, forget, retain, make_config("rl", common), ctx).model
    full = run_method(
        "salun", model, forget, retain, make_config("salun", {**common, "keep": 1.0}), ctx
    ).model
    half = run_method(
        "salun", model, forget, retain, make_config("salun", {**common, "keep": 0.5}), ctx
    ).model
    sd_rl, sd_full, sd_half = rl.state_dict(), full.state_dict(), half.state_dict()
    assert all(torch.equal(sd_rl[k], sd_full[k]) for k in sd_rl)
    assert not all(torch.equal(sd_rl[k], sd_half[k]) for k in sd_rl)
