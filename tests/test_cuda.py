"""The device path (salun.precision) on CPU, and the same checks on CUDA.

Tests parametrised with ``DEVICES`` run on CPU everywhere and on CUDA where a GPU exists;
tests marked ``cuda`` only there (``pytest -m cuda``; benchmarks/gpu/check.sh runs them).
Without a GPU the conftest skips them, so they are reported as skipped, never as passed.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salun.data import iterate_batches
from salun.errors import SalunError
from salun.masking import MaskedUpdate
from salun.methods import SGDConfig, UnlearnContext, make_config, run_method
from salun.methods.common import Stepper
from salun.methods.rl import forget_saliency_mask
from salun.models import build_from_kwargs, model_kwargs_for
from salun.precision import (
    DevicePolicy,
    GlobalMeanPool,
    current_policy,
    policy_from_env,
    prepare_input,
    prepare_model,
    use_policy,
)
from salun.saliency import random_mask, saliency_mask
from salun.train import TrainConfig, make_scheduler, train_supervised
from salun.utils import seed_everything

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def tiny(bundle, arch="cnn", width=0.25, seed=0):
    torch.manual_seed(seed)
    return build_from_kwargs(model_kwargs_for(bundle, arch, width))


def first_conv(model) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- strict masking under autocast -------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_strict_mask_is_bit_exact_under_autocast(device, precision, synthetic):
    model = tiny(synthetic).to(device)
    start = params(model)
    mask = {n: m.to(device) for n, m in random_mask(model, keep=0.5, seed=1).items()}
    seen = []
    first_conv(model).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with use_policy(DevicePolicy(precision=precision)):
        stepper = Stepper(model, SGDConfig(lr=0.05, momentum=0.9, weight_decay=5e-4), mask)
        assert stepper.scaler.is_enabled() == (precision == "fp16")
        for x, y in iterate_batches(synthetic.train, 48, device=device):
            stepper.step(F.cross_entropy(model(x), y))
    assert seen and set(seen) == {AUTOCAST[precision]}  # the forward really ran autocast
    moved = 0
    for n, p in model.named_parameters():
        m = mask[n]
        assert p.dtype == torch.float32, n  # fp32 master weights
        assert torch.equal(p.detach()[~m], start[n][~m]), n  # frozen: bit-identical
        buf = stepper.optimizer.state[p]["momentum_buffer"]
        assert torch.all(buf[~m] == 0), n  # and no momentum left to leak
        moved += int((p.detach()[m] != start[n][m]).sum())
    assert moved > 0


@pytest.mark.parametrize("device", DEVICES)
def test_salun_under_bf16_keeps_frozen_weights_and_changes_the_numbers(device, synthetic):
    model = tiny(synthetic).to(device)
    forget = synthetic.train.subset(list(range(24)))
    retain = synthetic.train.subset(list(range(24, 240)))
    ctx = UnlearnContext(num_classes=4, device=torch.device(device), quiet=True)
    cfg = make_config("salun", {"epochs": 1, "lr": 0.02})
    mask = forget_saliency_mask(model, forget, cfg, ctx)
    runs = {}
    for precision in ("fp32", "bf16"):
        with use_policy(DevicePolicy(precision=precision)):
            runs[precision] = run_method("salun", model, forget, retain, cfg, ctx, mask=mask).model
    differ = 0
    for (n, a), b, o in zip(
        runs["fp32"].named_parameters(), runs["bf16"].parameters(), model.parameters()
    ):
        m = mask[n]
        for run in (a, b):
            assert torch.equal(run.detach()[~m], o.detach()[~m]), n  # frozen, bit for bit
        differ += int((a.detach()[m] != b.detach()[m]).sum())
    assert differ > 0  # bf16 really changed the arithmetic of the moving weights


def test_grad_scaler_skips_a_step_with_inf_gradients_and_keeps_frozen_weights():
    lin = nn.Linear(3, 2)
    before = lin.weight.detach().clone()
    mask = {
        "weight": torch.tensor([[True, False, True], [False, True, False]]),
        "bias": torch.tensor([True, False]),
    }
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    masked = MaskedUpdate(lin, mask, "strict")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale((lin.weight * float("inf")).sum() + lin.bias.sum()).backward()
    masked.step(opt, scaler)
    assert torch.equal(lin.weight.detach(), before)  # the inf step was skipped, not taken
    assert scaler.get_scale() == 2.0**15  # and the scale backed off
    opt.zero_grad()
    scaler.scale(lin.weight.sum()).backward()
    masked.step(opt, scaler)
    w = lin.weight.detach()
    assert torch.equal(w[~mask["weight"]], before[~mask["weight"]])
    # a finite step: salient weights move by exactly lr·1 (unscaled gradient of sum = 1)
    assert torch.allclose(w[mask["weight"]], before[mask["weight"]] - 0.1)


# --- training loop ------------------------------------------------------------------------


def test_fp32_training_equals_a_plain_loop_bit_for_bit(synthetic):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05)
    a, b = tiny(synthetic), tiny(synthetic)
    with use_policy(DevicePolicy()):
        res = train_supervised(a, synthetic.train, cfg, quiet=True)
    gen = seed_everything(cfg.seed)
    b.train()
    opt = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    spe = -(-len(synthetic.train) // 64)
    sched = make_scheduler(opt, "cosine", 2 * spe, spe)
    for _ in range(2):
        for x, y in iterate_batches(synthetic.train, 64, shuffle=True, generator=gen):
            loss = F.cross_entropy(b(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert res.device_policy["precision"] == "fp32"
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["loss"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_runs_and_is_recorded(device, precision, synthetic):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05)
    ref, model = tiny(synthetic), tiny(synthetic)
    seen = []
    first_conv(model).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    train_supervised(ref, synthetic.train, cfg, device=device, quiet=True)
    with use_policy(DevicePolicy(precision=precision)):
        res = train_supervised(model, synthetic.train, cfg, device=device, quiet=True)
    assert res.device_policy["precision"] == precision
    assert set(seen) == {AUTOCAST[precision]}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(res.history[-1]["loss"]) and res.history[-1]["train_acc"] > 25
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_reruns_are_bit_identical(device, synthetic):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, augment=True, pad=2)
    runs = []
    with use_policy(DevicePolicy(deterministic=True)):
        for _ in range(2):
            m = tiny(synthetic, arch="resnet18", width=0.125)
            res = train_supervised(m, synthetic.train, cfg, device=device, quiet=True)
            runs.append((params(m), res.history[-1]["loss"]))
    assert runs[0][1] == runs[1][1]
    for n in runs[0][0]:
        assert torch.equal(runs[0][0][n], runs[1][0][n]), n


# --- the policy itself --------------------------------------------------------------------


def test_policy_from_environment():
    p = policy_from_env(
        {"SALUN_PRECISION": "BF16", "SALUN_CHANNELS_LAST": "1", "SALUN_DETERMINISTIC": "yes"}
    )
    assert (p.precision, p.channels_last, p.deterministic, p.compile) == ("bf16", True, True, False)
    assert policy_from_env({}) == DevicePolicy()
    assert policy_from_env({"SALUN_CHANNELS_LAST": "auto"}).channels_last is None
    with pytest.raises(SalunError, match="precision"):
        policy_from_env({"SALUN_PRECISION": "fp8"})
    with pytest.raises(SalunError, match="SALUN_COMPILE"):
        policy_from_env({"SALUN_COMPILE": "maybe"})


def test_command_line_flags_override_the_environment(monkeypatch):
    import argparse

    from salun.precision import add_policy_arguments, apply_policy_arguments

    monkeypatch.setenv("SALUN_PRECISION", "bf16")
    monkeypatch.setenv("SALUN_COMPILE", "1")
    ap = argparse.ArgumentParser()
    add_policy_arguments(ap)
    with use_policy(DevicePolicy()):
        p = apply_policy_arguments(ap.parse_args(["--precision", "fp16", "--channels-last", "off"]))
        assert (p.precision, p.channels_last, p.compile, p.deterministic) == (
            "fp16",
            False,
            True,  # not given: the environment's value
            False,
        )
        assert current_policy() == p
        assert apply_policy_arguments(ap.parse_args([])).precision == "bf16"


def test_use_policy_restores_the_previous_policy_and_torch_switches():
    before = current_policy()
    with use_policy(DevicePolicy(precision="tf32", deterministic=True)):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark  # autotuning is off when deterministic
    assert current_policy() == before
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.allow_tf32  # fp32 means true float32


def test_channels_last_keeps_names_and_values(synthetic):
    model = tiny(synthetic)
    before = params(model)
    prepare_model(model, "cpu", DevicePolicy(channels_last=True))
    conv = first_conv(model)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert list(before) == [n for n, _ in model.named_parameters()]
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    x = torch.rand(2, 1, 8, 8)
    assert prepare_input(x, DevicePolicy(channels_last=True)).is_contiguous(
        memory_format=torch.channels_last
    )
    assert prepare_input(x, DevicePolicy()) is x  # auto: off on CPU


def test_global_mean_pool_matches_adaptive_pooling():
    x = torch.randn(3, 5, 4, 4)
    assert torch.allclose(GlobalMeanPool()(x), nn.AdaptiveAvgPool2d(1)(x), atol=1e-6)


def test_deterministic_pooling_swap_only_on_cuda(synthetic):
    model = tiny(synthetic, arch="resnet18", width=0.125)
    prepare_model(model, "cpu", DevicePolicy(deterministic=True))
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())


# --- CUDA only ----------------------------------------------------------------------------


@pytest.mark.cuda
def test_cuda_deterministic_mode_swaps_the_pooling(synthetic):
    model = tiny(synthetic, arch="resnet18", width=0.125)
    prepare_model(model, "cuda", DevicePolicy(deterministic=True))
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
    assert any(isinstance(m, GlobalMeanPool) for m in model.modules())


@pytest.mark.cuda
def test_cuda_threshold_equals_cpu_threshold():
    g = torch.Generator().manual_seed(0)
    ties = torch.randint(0, 5, (3_000_001,), generator=g).float()
    bits = torch.randint(0, 0x7F800000, (2_000_003,), generator=g, dtype=torch.int32)
    scores = {"ties": ties, "bits": bits.view(torch.float32), "one": torch.ones(1)}
    for keep in (0.0, 0.3, 0.5, 1.0):
        cpu = saliency_mask(scores, keep=keep)
        gpu = saliency_mask({n: s.cuda() for n, s in scores.items()}, keep=keep)
        for n in scores:
            assert gpu[n].device.type == "cuda"
            assert torch.equal(gpu[n].cpu(), cpu[n]), (keep, n)


@pytest.mark.cuda
def test_cuda_channels_last_bf16_strict_salun(synthetic):
    model = tiny(synthetic, arch="resnet18", width=0.125).cuda()
    forget = synthetic.train.subset(list(range(24)))
    retain = synthetic.train.subset(list(range(24, 240)))
    ctx = UnlearnContext(num_classes=4, device=torch.device("cuda"), quiet=True)
    with use_policy(DevicePolicy(precision="bf16", channels_last=True)):
        out = run_method("salun", model, forget, retain, make_config("salun", {"epochs": 1}), ctx)
    kept = sum(int((a == b).sum()) for a, b in zip(out.model.parameters(), model.parameters()))
    total = sum(p.numel() for p in model.parameters())
    assert kept >= total // 2  # at least the frozen half is bit-identical
    assert first_conv(out.model).weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.cuda
def test_cuda_compile_trains_and_keeps_parameter_names(synthetic):
    model = tiny(synthetic, arch="mlp", width=0.25)
    names = [n for n, _ in model.named_parameters()]
    with use_policy(DevicePolicy(compile=True)):
        res = train_supervised(
            model, synthetic.train, TrainConfig(epochs=1, batch_size=80), device="cuda", quiet=True
        )
    assert [n for n, _ in model.named_parameters()] == names
    assert np.isfinite(res.history[-1]["loss"])


@pytest.mark.cuda
def test_cuda_tiny_ddpm_salun_step():
    pytest.importorskip("diffusers")
    from salun.data import ImageDataset
    from salun.generation.ddpm.mask import DDPMMaskConfig, ddpm_saliency_mask
    from salun.generation.ddpm.model import DenoiserConfig, build_denoiser
    from salun.generation.ddpm.train import DDPMTrainConfig, train_ddpm
    from salun.generation.ddpm.unlearn import GenUnlearnConfig, unlearn_ddpm

    cfg = DenoiserConfig(
        image_size=8,
        in_channels=1,
        num_classes=3,
        block_out_channels=(8, 16),
        attention_levels=(),
        norm_num_groups=4,
    )
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 3
    ds = ImageDataset(torch.randint(0, 256, (48, 1, 8, 8), generator=g, dtype=torch.uint8), labels)
    forget = ds.subset(torch.nonzero(labels == 0).flatten())
    retain = ds.subset(torch.nonzero(labels != 0).flatten())
    model = build_denoiser(cfg, seed=0)
    train_ddpm(model, ds, DDPMTrainConfig(steps=2, batch_size=16), device="cuda", quiet=True)
    mask = ddpm_saliency_mask(model, forget, DDPMMaskConfig(batch_size=8), device="cuda")
    before = params(model)
    res = unlearn_ddpm(
        model,
        forget,
        retain,
        GenUnlearnConfig(method="salun", iterations=2, batch_size=8),
        mask=mask,
        device="cuda",
        quiet=True,
    )
    for n, p in res.model.named_parameters():
        m = mask[n].to(p.device)
        assert torch.equal(p.detach()[~m], before[n].to(p.device)[~m]), n


@pytest.mark.cuda
def test_cuda_tiny_sd_salun_step():
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from salun.generation.sd.data import from_tensors
    from salun.generation.sd.mask import sd_mask, sd_saliency
    from salun.generation.sd.methods import SalUnSDConfig
    from salun.generation.sd.tiny import tiny_pipeline
    from salun.generation.sd.unlearn import run_unlearning

    pipe = tiny_pipeline(seed=0, words=("nude",)).to("cuda")
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    forget = from_tensors(imgs[:2], ["a photo of a nude person"] * 2, 16).with_replacements(
        "a photo of a person wearing clothes"
    )
    retain = from_tensors(imgs[2:], ["a photo of a person wearing clothes"] * 2, 16)
    mask = sd_mask(sd_saliency(pipe, forget, batch_size=2, quiet=True), keep=0.5)
    before = copy.deepcopy({n: p.detach() for n, p in pipe.unet.named_parameters()})
    cfg = SalUnSDConfig(lr=1e-2, batch_size=2, epochs=1, alpha=0.5, quiet=True)
    unet, history = run_unlearning(pipe, "salun", cfg, forget=forget, retain=retain, mask=mask)
    assert all(np.isfinite(history))
    for n, p in unet.named_parameters():
        m = mask[n].to(p.device)
        assert torch.equal(p.detach()[~m], before[n][~m]), n


def test_the_cuda_only_tests_import_what_they_use():
    # they are skipped without a GPU, so a renamed module would only surface on one:
    # import everything they use here, on every machine
    pytest.importorskip("diffusers")
    from salun.generation.ddpm.mask import DDPMMaskConfig, ddpm_saliency_mask  # noqa: F401
    from salun.generation.ddpm.model import DenoiserConfig, build_denoiser  # noqa: F401
    from salun.generation.ddpm.train import DDPMTrainConfig, train_ddpm  # noqa: F401
    from salun.generation.ddpm.unlearn import GenUnlearnConfig, unlearn_ddpm  # noqa: F401

    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from salun.generation.sd.data import from_tensors  # noqa: F401
    from salun.generation.sd.mask import sd_mask, sd_saliency  # noqa: F401
    from salun.generation.sd.methods import SalUnSDConfig  # noqa: F401
    from salun.generation.sd.tiny import tiny_pipeline  # noqa: F401
    from salun.generation.sd.unlearn import run_unlearning  # noqa: F401
