"""The switches that reproduce the reference code's behaviour (docs/method.md), each on a
tiny case: augmentation of the unlearning, mask and IU passes; BE's shadow class; the
SalUn-soft schedule; the original's multistep + best-validation recipe; the paper preset."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from salun.bench.presets import load_preset
from salun.data.sources.synthetic import synthetic_bundle
from salun.methods import UnlearnContext, make_config, run_method
from salun.methods.rl import SalUnConfig, forget_saliency_mask
from salun.metrics import evaluate_unlearning
from salun.models import build_from_kwargs, model_kwargs_for
from salun.saliency import random_mask
from salun.train import TrainConfig, train_supervised

PAD = 2  # the original recipe's crop padding; unlearning must reuse it


@pytest.fixture(scope="module")
def bundle():
    return synthetic_bundle(n_train=40, n_test=20, num_classes=4, size=8, noise=150.0)


def fresh_model(bundle, seed=0):
    torch.manual_seed(seed)
    return build_from_kwargs(model_kwargs_for(bundle, "mlp", width=0.1))


def ctx_for(bundle, pad=PAD):
    return UnlearnContext(
        num_classes=bundle.num_classes,
        flip=True,
        model_kwargs=model_kwargs_for(bundle, "mlp", width=0.1),
        original_train={"pad": pad},
        quiet=True,
    )


def record_inputs(model) -> list[torch.Tensor]:
    """Every input the model is called on; the hook survives the copy run_method makes."""
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def crops_and_flips(image_u8: torch.Tensor, pad: int) -> torch.Tensor:
    """Every random-crop (zero padding ``pad``) × flip of one C×H×W uint8 image, in [0, 1]."""
    x = image_u8.float() / 255.0
    c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    out = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            crop = xp[:, oy : oy + h, ox : ox + w]
            out += [crop, crop.flip(-1)]
    return torch.stack(out)


def which_sample(x: torch.Tensor, candidates: dict[str, torch.Tensor]) -> str | None:
    """The name of the sample ``x`` (1×C×H×W) is a crop/flip of, or None."""
    for name, cands in candidates.items():
        if (cands - x).abs().flatten(1).amax(1).min() < 1e-6:
            return name
    return None


# ----------------------------------------------------------------- augmentation of passes

SEES = {"rl": {"f", "r"}, "salun": {"f", "r"}, "ft": {"r"}, "l1_sparse": {"r"}, "ga": {"f"}}
SEES["be"] = {"f"}


@pytest.mark.parametrize("name", sorted(SEES))
@pytest.mark.parametrize("augment", [True, False])
def test_augmented_passes_feed_new_pixels_each_epoch(bundle, name, augment):
    forget, retain = bundle.train.subset([0]), bundle.train.subset([1])
    model = fresh_model(bundle)
    mask = random_mask(model, 0.5, seed=0) if name == "salun" else None
    seen = record_inputs(model)
    cfg = make_config(name, {"epochs": 6, "batch_size": 1, "augment": augment, "lr": 1e-3})
    run_method(name, model, forget, retain, cfg, ctx_for(bundle), mask=mask)

    clean = {"f": forget.images[0].float() / 255.0, "r": retain.images[0].float() / 255.0}
    cands = {k: crops_and_flips(d.images[0], PAD) for k, d in (("f", forget), ("r", retain))}
    by_sample: dict[str, list[torch.Tensor]] = {"f": [], "r": []}
    for x in seen:
        owner = which_sample(x, cands)
        assert owner is not None, "an input that is no crop/flip of D_f or D_r (pad 2)"
        by_sample[owner].append(x[0])
    assert {k for k, v in by_sample.items() if v} == SEES[name]
    for k in SEES[name]:
        assert len(by_sample[k]) == 6  # once per epoch
        distinct = len({tuple(x.flatten().tolist()) for x in by_sample[k]})
        if augment:
            assert distinct > 1  # the same sample, different pixels across epochs
        else:
            assert all(torch.equal(x, clean[k]) for x in by_sample[k])


def test_augmentation_uses_the_original_recipe_padding(bundle):
    forget, retain = bundle.train.subset([0]), bundle.train.subset([1])
    model = fresh_model(bundle)
    seen = record_inputs(model)
    cfg = make_config("ga", {"epochs": 30, "batch_size": 1, "augment": True, "lr": 1e-4})
    run_method("ga", model, forget, retain, cfg, ctx_for(bundle, pad=1))
    pad1 = {"f": crops_and_flips(forget.images[0], 1)}
    assert all(which_sample(x, pad1) == "f" for x in seen)  # never shifted by more than 1


@pytest.mark.parametrize("augment", [True, False])
def test_mask_pass_augmentation(bundle, augment):
    forget = bundle.train.subset(range(6))
    model = fresh_model(bundle)
    seen = record_inputs(model)
    cfg = SalUnConfig(mask_augment=augment, mask_batch_size=6)
    forget_saliency_mask(model, forget, cfg, ctx_for(bundle))
    assert len(seen) == 1 and len(seen[0]) == 6
    # the pass is shuffled: match each input to its own sample
    cands = {str(i): crops_and_flips(forget.images[i], PAD) for i in range(6)}
    owners = [which_sample(x[None], cands) for x in seen[0]]
    assert sorted(owners) == [str(i) for i in range(6)]
    exact = [torch.equal(x, forget.images[int(o)].float() / 255.0) for x, o in zip(seen[0], owners)]
    assert (not all(exact)) if augment else all(exact)


@pytest.mark.parametrize("augment", [True, False])
def test_iu_gradients_on_augmented_images(bundle, augment):
    forget, retain = bundle.train.subset(range(3)), bundle.train.subset(range(3, 8))
    model = fresh_model(bundle)
    seen = record_inputs(model)
    cfg = make_config("iu", {"augment": augment, "num_samples": 3, "reference": True})
    run_method("iu", model, forget, retain, cfg, ctx_for(bundle))
    cands = {str(i): crops_and_flips(bundle.train.images[i], PAD) for i in range(8)}
    clean = bundle.train.images[:8].float() / 255.0
    rows = [x for batch in seen for x in batch]
    assert len(rows) == 3 + 5 + 3  # D_f sum, D_r sum, the recursion's per-sample gradients
    owners = [which_sample(x[None], cands) for x in rows]
    assert owners == [str(i) for i in [0, 1, 2, 3, 4, 5, 6, 7, 3, 4, 5]]
    exact = [torch.equal(x, clean[int(o)]) for x, o in zip(rows, owners)]
    if augment:  # each pass augmented, the two retain passes each with their own draw
        assert not all(exact[:3]) and not all(exact[3:8]) and not all(exact[8:])
        assert any(not torch.equal(a, b) for a, b in zip(rows[3:6], rows[8:]))
    else:
        assert all(exact)


def test_iu_fast_path_equals_reference_path_with_augmentation(bundle):
    forget, retain = bundle.train.subset(range(3)), bundle.train.subset(range(3, 20))
    model = fresh_model(bundle)
    out = {}
    for ref in (True, False):
        cfg = make_config("iu", {"augment": True, "num_samples": 6, "reference": ref})
        out[ref] = run_method("iu", model, forget, retain, cfg, ctx_for(bundle)).model
    for a, b in zip(out[True].parameters(), out[False].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- BE's shadow class


def test_be_keeps_k_plus_one_outputs_when_asked(bundle):
    from salun.data import make_split

    split = make_split(bundle, "random", count=4, seed=0)
    forget, retain = bundle.train.subset(split.forget), bundle.train.subset(split.retain)
    model = fresh_model(bundle)
    cfg = make_config("be", {"epochs": 3, "batch_size": 4, "lr": 0.1, "remove_shadow": False})
    out = run_method("be", model, forget, retain, cfg, ctx_for(bundle)).model
    assert out.head.out_features == bundle.num_classes + 1
    with torch.no_grad():
        logits = out(forget.images.float() / 255.0)
    assert logits.shape[1] == 5
    # D_f trained into the shadow class: evaluation takes argmax over all K+1 logits
    ua = 100.0 - 100.0 * (logits.argmax(1) == forget.labels).double().mean().item()
    got = evaluate_unlearning(out, bundle, split, mia_features=("confidence",))
    assert got["UA"] == pytest.approx(ua, abs=1e-9)


# ------------------------------------------------------------------ SalUn-soft schedule


def soft_schedule(monkeypatch, bundle, schedule: str, epochs=3, n_f=6, n_r=10, bs=4):
    from salun.methods import salun_soft

    log: list[tuple[int, int]] = []
    real = salun_soft.ProximalStepper.snap_count

    def spy(self):
        k = real(self)
        log.append((self.epoch, k))
        return k

    monkeypatch.setattr(salun_soft.ProximalStepper, "snap_count", spy)
    forget, retain = bundle.train.subset(range(n_f)), bundle.train.subset(range(n_f, n_f + n_r))
    model = fresh_model(bundle)
    cfg = make_config(
        "salun_soft", {"epochs": epochs, "batch_size": bs, "schedule": schedule, "lr": 1e-3}
    )
    run_method("salun_soft", model, forget, retain, cfg, ctx_for(bundle))
    n = sum(p.numel() for p in model.parameters())
    return log, n


def test_soft_threshold_constant_within_an_epoch_with_epoch_schedule(monkeypatch, bundle):
    log, n = soft_schedule(monkeypatch, bundle, "epoch")
    loader_batches = 2 + 3  # ⌈6/4⌉ forget + ⌈10/4⌉ retain batches: T counts loader batches
    total = 3 * loader_batches
    joint_steps = 4  # ⌈16/4⌉ joint batches actually taken per epoch
    assert [e for e, _ in log] == [0] * joint_steps + [1] * joint_steps + [2] * joint_steps
    for epoch in range(3):
        ks = {k for e, k in log if e == epoch}
        t = epoch * loader_batches + 1
        assert ks == {int(0.5 * (total - t) / total * n)}  # one value per epoch
    per_epoch = [next(k for e, k in log if e == epoch) for epoch in range(3)]
    assert per_epoch[0] > per_epoch[1] > per_epoch[2] > 0  # decays across epochs


def test_soft_threshold_decays_every_step_with_step_schedule(monkeypatch, bundle):
    log, n = soft_schedule(monkeypatch, bundle, "step")
    total = 3 * 4
    assert [k for _, k in log] == [int(0.5 * (total - t) / total * n) for t in range(1, 13)]


# ---------------------------------------------------------- the original's recipe


def test_multistep_schedule_multiplies_lr_at_epoch_milestones(bundle, monkeypatch):
    lrs: list[float] = []
    real_step = torch.optim.SGD.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    cfg = TrainConfig(
        epochs=5, batch_size=10, lr=0.1, schedule="multistep", milestones=(2, 4), gamma=0.1
    )
    train_supervised(fresh_model(bundle), bundle.train, cfg, quiet=True)
    per_epoch = 4  # 40 samples / batch 10
    expected = [0.1] * 2 * per_epoch + [0.01] * 2 * per_epoch + [0.001] * per_epoch
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_val_best_returns_the_best_validation_epochs_weights(bundle, monkeypatch):
    import salun.train as train_mod

    scripted = iter([40.0, 80.0, 60.0, 80.0, 20.0])  # best: epoch 2 (a later tie loses)
    snapshots: list[dict[str, torch.Tensor]] = []

    def fake_val(model, data, device, batch_size=1024):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(train_mod, "quick_accuracy", fake_val)
    model = fresh_model(bundle)
    cfg = TrainConfig(epochs=5, batch_size=10, lr=0.1, val_best=True)
    res = train_supervised(model, bundle.train, cfg, val=bundle.test, quiet=True)
    assert res.best_epoch == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k
    assert not torch.equal(snapshots[1]["head.weight"], snapshots[4]["head.weight"])


# ------------------------------------------------------------------- the paper preset


def test_paper_preset_sets_every_reference_switch():
    bench = load_preset("paper-cifar10")
    o = bench.original
    assert (o.schedule, o.milestones, o.gamma, o.val_best) == ("multistep", (91, 136), 0.1, True)
    assert (o.epochs, o.lr, o.batch_size, o.augment, o.pad) == (182, 0.1, 256, True, 4)
    cfgs = {m.label: asdict(make_config(m.method, m.overrides)) for m in bench.methods}
    assert set(cfgs) == {"ft", "ga", "rl", "iu", "l1_sparse", "bs", "be", "salun", "salun_soft"}
    for label, cfg in cfgs.items():
        assert cfg["augment"] is True, label  # every unlearning pass (and IU's) augmented
    assert cfgs["salun"]["mask_augment"] is True
    assert cfgs["be"]["remove_shadow"] is False
    assert cfgs["salun_soft"]["schedule"] == "epoch"
    assert cfgs["salun"]["lr"] == 0.013 and cfgs["salun"]["keep"] == 0.5


def test_switches_are_recorded_in_the_config_record():
    for name, keys in {
        "rl": ["augment"],
        "salun": ["augment", "mask_augment"],
        "salun_soft": ["schedule"],
        "be": ["remove_shadow"],
        "iu": ["augment", "seed"],
    }.items():
        rec = asdict(make_config(name, {}))
        assert all(k in rec for k in keys), name
    defaults = {n: asdict(make_config(n, {})) for n in ("rl", "salun", "iu", "be", "salun_soft")}
    # off by default: today's behaviour stays where the paper preset does not ask for it
    assert not defaults["rl"]["augment"] and not defaults["salun"]["mask_augment"]
    assert not defaults["iu"]["augment"] and defaults["be"]["remove_shadow"]
    assert defaults["salun_soft"]["schedule"] == "step"


@pytest.mark.parametrize("augment", [True, False])
def test_write_masks_passes_the_augmentation_setting(tmp_path, monkeypatch, augment):
    import salun.saliency as saliency_mod
    from salun.data import load_dataset, make_split
    from salun.data.splits import save_split
    from salun.saliency import load_mask
    from salun.workflows import train_original, write_masks

    data = load_dataset("synthetic:40")
    split = make_split(data, "random", count=8, seed=0)
    save_split(split, tmp_path / "split.json")
    recipe = TrainConfig(epochs=1, batch_size=16, pad=1)
    train_original(
        data, "mlp", recipe, tmp_path / "orig", split=split, split_file=tmp_path / "split.json",
        width=0.1, device="cpu", quiet=True, data_spec="synthetic:40",
    )  # fmt: skip
    fed: list[torch.Tensor] = []
    real = saliency_mod.compute_saliency

    def spy(model, batches, *a, **k):
        batches = list(batches)
        fed.extend(x for x, _ in batches)
        return real(model, batches, *a, **k)

    monkeypatch.setattr(saliency_mod, "compute_saliency", spy)
    out = tmp_path / "mask.safetensors"
    write_masks(
        tmp_path / "orig", tmp_path / "split.json", [0.5], out, augment=augment, device="cpu"
    )
    rows = torch.cat(fed)
    forget = data.train.subset(split.forget)
    # the recipe's padding (1) and no flips: the synthetic dataset does not allow them
    cands = {str(i): crops_and_flips(forget.images[i], 1)[::2] for i in range(8)}
    owners = [which_sample(x[None], cands) for x in rows]
    assert sorted(owners) == [str(i) for i in range(8)]
    exact = [torch.equal(x, forget.images[int(o)].float() / 255) for x, o in zip(rows, owners)]
    assert (not all(exact)) if augment else all(exact)
    assert load_mask(out)[1]["augment"] is augment


def test_random_mask_source_is_the_seeded_random_mask_and_sees_no_data(bundle):
    """`mask_source: random` (the random-masking ablation): the mask SalUn uses is
    random_mask(θ_o, keep, seed + 1), of the saliency mask's density, whatever the forget
    set; and SalUn then leaves every weight outside it bit-identical."""
    forget, retain = bundle.train.subset(range(6)), bundle.train.subset(range(6, 20))
    model = fresh_model(bundle)
    cfg = SalUnConfig(mask_source="random", keep=0.3, seed=4, epochs=1, lr=0.05)
    got = forget_saliency_mask(model, forget, cfg, ctx_for(bundle))
    want = random_mask(model, keep=0.3, seed=5)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in got)
    other = forget_saliency_mask(model, bundle.train.subset(range(10, 16)), cfg, ctx_for(bundle))
    assert all(torch.equal(got[n], other[n]) for n in got)  # no gradient, no data
    saliency = forget_saliency_mask(model, forget, SalUnConfig(keep=0.3, seed=4), ctx_for(bundle))
    assert sum(int(m.sum()) for m in saliency.values()) == sum(int(m.sum()) for m in got.values())
    assert any(not torch.equal(got[n], saliency[n]) for n in got)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = run_method("salun", model, forget, retain, cfg, ctx_for(bundle))
    params = dict(out.model.named_parameters())
    for n, p in params.items():
        assert torch.equal(p.detach()[~got[n]], before[n][~got[n]]), n
        assert not torch.equal(p.detach()[got[n]], before[n][got[n]]), n


def test_mask_source_is_checked():
    with pytest.raises(Exception, match="mask_source"):
        SalUnConfig(mask_source="gradient")
