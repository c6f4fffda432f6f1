"""salun.unlearn / salun.evaluate on a user's own nn.Module fed by torch Datasets/DataLoaders."""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import salun
from salun.api import STREAMING_METHODS
from salun.data import ImageDataset
from salun.data.sources_torch import as_image_dataset
from salun.errors import ArtifactError, SalunError
from salun.methods import get_method, list_methods
from salun.metrics.accuracy import accuracy
from salun.saliency import compute_saliency, model_fingerprint, saliency_mask, save_mask
from salun.train import TrainConfig, train_supervised
from salun.utils import seed_everything

K = 3


class UserNet(nn.Module):
    """Not from salun's registry: a conv body + BatchNorm + a linear ``.head``."""

    def __init__(self, k: int = K):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, k)

    def forward(self, x):
        return self.head(self.body(x))


class UserData(Dataset):
    """A map-style dataset yielding ``(float image in [0, 1], int label)`` as ToTensor does."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, off_grid: bool = False):
        self.x, self.y, self.off_grid = images_u8, labels, off_grid

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i].float() / 255
        if self.off_grid:  # e.g. a resize: values no longer k/255
            x = (x * 0.9 + 0.05).clamp(0, 1)
        return x, int(self.y[i])


def make_u8(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return ImageDataset(x, torch.randint(0, K, (n,), generator=g))


@pytest.fixture(scope="module")
def sets():
    torch.set_num_threads(1)
    f, r, t = make_u8(12, 1), make_u8(24, 2), make_u8(10, 3)
    return f, r, t


def user_model(seed: int = 0) -> UserNet:
    torch.manual_seed(seed)
    return UserNet()


def snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def settings_for(method: str) -> dict:
    """One short epoch of small batches, for the settings the method has (IU, SSD: none)."""
    have = {f.name for f in fields(get_method(method).config)}
    out = {k: v for k, v in {"epochs": 1, "batch_size": 8}.items() if k in have}
    if method == "ssd":  # it dampens only where I_f > α·I_r: a low α, so random data moves
        out["alpha"] = 1.0
    return out


def retrain_fn_seen():
    calls = []

    def fn(model, retain):
        calls.append((model, retain))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in DataLoader(retain, batch_size=8):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return model

    return fn, calls


@pytest.mark.parametrize("method", list_methods())
def test_every_method_unlearns_a_user_module_fed_by_a_dataset(sets, method):
    f, r, _ = sets
    model = user_model()
    model.train()  # its mode must survive too
    before = snapshot(model)
    forget_ds, retain_ds = UserData(f.images, f.labels), UserData(r.images, r.labels)
    extra = {}
    if method == "retrain":
        fn, calls = retrain_fn_seen()
        extra = {"retrain_fn": fn, "model_factory": lambda: user_model(seed=7)}
        res = salun.unlearn(model, forget_ds, retain_ds, method, quiet=True, **extra)
        ((fresh, seen),) = calls
        assert seen is retain_ds  # the user's own data object, D_r only
        assert res.model is fresh
        assert res.config["retrain_fn"].endswith("fn")
    else:
        res = salun.unlearn(model, forget_ds, retain_ds, method, quiet=True, **settings_for(method))
        assert res.config == {
            **res.config,
            **settings_for(method),
        }  # the settings reached the config
    assert same_state(snapshot(model), before), f"{method} mutated the input model"
    assert model.training
    assert res.model is not model and type(res.model) is UserNet
    assert [n for n, _ in res.model.named_parameters()] == [n for n, _ in model.named_parameters()]
    moved = any(
        not torch.equal(p, before[n]) for n, p in res.model.state_dict().items() if n in before
    )
    assert moved, f"{method} left the weights where they were"
    assert res.method == method and res.seconds > 0
    # the result behaves as the user's class: no salun hooks left on it
    assert not res.model._forward_hooks and not res.model._forward_pre_hooks


def test_every_registered_method_is_covered():
    # a new method joins the parametrised test above automatically; none is skipped there
    assert {"salun", "rl", "ga", "ft", "retrain", "bs", "be", "iu"} <= set(list_methods())


def test_dataloader_fed_salun_equals_tensor_fed_salun_bit_exactly(sets):
    f, r, _ = sets
    model = user_model()
    kw = {"epochs": 2, "batch_size": 5, "quiet": True}
    tensors = salun.unlearn(model, f, r, "salun", **kw)
    loaders = salun.unlearn(
        model,
        DataLoader(UserData(f.images, f.labels), batch_size=7, shuffle=False),
        DataLoader(UserData(r.images, r.labels), batch_size=4, shuffle=False),
        "salun",
        **kw,
    )
    datasets = salun.unlearn(
        model, UserData(f.images, f.labels), UserData(r.images, r.labels), "salun", **kw
    )
    a, b, c = (snapshot(x.model) for x in (tensors, loaders, datasets))
    assert same_state(a, b) and same_state(a, c)
    # the check is not vacuous: another order of D_f (a shuffling loader) changes the result
    perm = torch.randperm(len(f), generator=torch.Generator().manual_seed(5))
    shuffled = salun.unlearn(model, f.subset(perm), r, "salun", **kw)
    assert not same_state(a, snapshot(shuffled.model))


def test_off_grid_float_images_stay_float_and_match_a_float_image_dataset(sets):
    f, r, _ = sets
    fd, rd = UserData(f.images, f.labels, True), UserData(r.images, r.labels, True)
    mf = as_image_dataset(fd, "forget")
    assert mf.images.dtype == torch.float32  # not rounded onto the 8-bit grid
    assert torch.equal(mf.images[3], fd[3][0]) and int(mf.labels[3]) == fd[3][1]
    on_grid = as_image_dataset(UserData(f.images, f.labels), "forget")
    assert on_grid.images.dtype == torch.uint8 and torch.equal(on_grid.images, f.images)
    assert as_image_dataset(f) is f  # the in-memory fast path: no copy
    model = user_model()
    kw = {"epochs": 1, "batch_size": 5, "quiet": True}
    a = salun.unlearn(model, fd, rd, "salun", **kw)
    b = salun.unlearn(model, mf, as_image_dataset(rd), "salun", **kw)
    assert same_state(snapshot(a.model), snapshot(b.model))


class DictSamples(UserData):
    key = "pixel_values"

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {self.key: x, "label": y}


class BadKeys(DictSamples):
    key = "img"


def test_dict_samples_read_like_tuples(sets):
    f, _, _ = sets
    got = as_image_dataset(DictSamples(f.images, f.labels), "forget")
    assert torch.equal(got.images, f.images) and torch.equal(got.labels, f.labels)
    with pytest.raises(SalunError, match="needs an image"):
        as_image_dataset(BadKeys(f.images, f.labels), "forget")


def test_uint8_forget_with_float_retain_share_one_storage(sets):
    f, r, _ = sets
    rd = UserData(r.images, r.labels, True)  # float retain, uint8 forget: RL's joint cat
    kw = {"regime": "joint", "epochs": 1, "batch_size": 8, "quiet": True}
    mixed = salun.unlearn(user_model(), f, rd, "rl", **kw)
    # the uint8 forget set becomes float exactly as batching would have made it
    f_float = ImageDataset(f.images.float() / 255, f.labels)
    both_float = salun.unlearn(user_model(), f_float, rd, "rl", **kw)
    assert same_state(snapshot(mixed.model), snapshot(both_float.model))


class Normalised(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.full((3, 8, 8), -1.5 + i), 0


def test_images_outside_unit_range_are_a_clear_error(sets):
    f, r, _ = sets
    with pytest.raises(SalunError, match=r"outside \[0, 1\].*normalize=\(mean, std\)"):
        salun.unlearn(user_model(), Normalised(), r, "ga", quiet=True)


class PILish(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return object(), 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (PILish(), "ToTensor"),
        ([1, 2, 3], "must be a salun ImageDataset, a torch Dataset"),
        (DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 8, 8)), batch_size=2), "items"),
    ],
)
def test_unusable_inputs_are_clear_errors(sets, bad, message):
    _, r, _ = sets
    with pytest.raises(SalunError, match=message):
        salun.unlearn(user_model(), bad, r, "ga", quiet=True)


SEEN: list[torch.Tensor] = []


class Spy(UserNet):
    """Records what reaches its forward (a module-level list: copies record too)."""

    def forward(self, x):
        SEEN.append(x.detach().clone())
        return super().forward(x)


def test_normalize_reaches_the_model_in_training_and_evaluation(sets):
    f, r, t = sets
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    torch.manual_seed(0)
    spy = Spy()
    SEEN.clear()
    salun.evaluate(spy, f, r, t, normalize=(mean, std))
    # after the class-count probe (one image), evaluation batches the forget set, in order
    assert torch.equal(SEEN[0], (f.images[:1].float() / 255 - m) / s)
    assert torch.equal(SEEN[1], (f.images.float() / 255 - m) / s)
    SEEN.clear()
    salun.unlearn(spy, f, r, "ft", normalize=(mean, std), epochs=1, batch_size=8, quiet=True)
    # the class-count probe, the input check on the retain set, 3 retain batches of one epoch
    assert len(SEEN) == 1 + 1 + 3
    assert torch.equal(SEEN[1], (r.images.float() / 255 - m) / s)
    for x in SEEN:
        back = x * s + m
        assert back.min() >= -1e-6 and back.max() <= 1 + 1e-6
        assert torch.allclose(back * 255, torch.round(back * 255), atol=1e-3)  # 8-bit pixels
    assert x.min() < 0  # normalised, not the raw [0, 1] pixels
    SEEN.clear()
    # BS: the FGSM step is taken on the [0, 1] pixels and clamped there, then normalised
    salun.unlearn(spy, f, r, "bs", normalize=(mean, std), epochs=1, lr=1.0, eps=0.5, quiet=True)
    adv = [x * s + m for x in SEEN[1:]]
    assert (
        min(float(x.min()) for x in adv) >= -1e-6 and max(float(x.max()) for x in adv) <= 1 + 1e-6
    )
    SEEN.clear()
    salun.unlearn(spy, f, r, "ft", epochs=1, batch_size=8, quiet=True)  # no normalize
    assert all(x.min() >= 0 and x.max() <= 1 for x in SEEN)


@dataclass
class Output:
    logits: torch.Tensor


class LogitsObject(UserNet):
    """Returns an object with ``.logits``, as Hugging Face classifiers do."""

    def forward(self, x):
        return Output(super().forward(x))


def test_logits_outputs_are_unwrapped_and_the_result_keeps_the_users_output(sets):
    f, r, t = sets
    torch.manual_seed(0)
    model = LogitsObject()
    res = salun.unlearn(model, f, r, "salun", epochs=1, batch_size=8, quiet=True)
    out = res.model(f.images[:2].float() / 255)
    assert isinstance(out, Output) and out.logits.shape == (2, K)
    # the same weights as a plain-tensor model trained identically
    torch.manual_seed(0)
    plain = UserNet()
    ref = salun.unlearn(plain, f, r, "salun", epochs=1, batch_size=8, quiet=True)
    assert same_state(snapshot(res.model), snapshot(ref.model))
    got, want = salun.evaluate(res.model, f, r, t), salun.evaluate(ref.model, f, r, t)
    assert [got[k] for k in ("UA", "RA", "TA", "MIA")] == [
        want[k] for k in ("UA", "RA", "TA", "MIA")
    ]


def forget_mask(model, f):
    scores = compute_saliency(model, [(f.images.float() / 255, f.labels)])
    return saliency_mask(scores, keep=0.5)


def test_a_mask_file_for_a_user_model_is_checked_and_applied(sets, tmp_path):
    f, r, _ = sets
    model = user_model()
    mask = forget_mask(model, f)
    path = tmp_path / "mask.safetensors"
    save_mask(path, mask, model_fingerprint=model_fingerprint(model))
    res = salun.unlearn(model, f, r, "ft", mask=path, epochs=1, batch_size=8, quiet=True)
    after = dict(res.model.named_parameters())
    for n, p in model.named_parameters():
        frozen = ~mask[n]
        assert torch.equal(after[n].detach()[frozen], p.detach()[frozen]), n  # strict mask
        if mask[n].any():
            assert not torch.equal(after[n].detach()[mask[n]], p.detach()[mask[n]]), n
    with pytest.raises(ArtifactError, match="computed on another model"):
        salun.unlearn(user_model(seed=1), f, r, "ft", mask=path, epochs=1, quiet=True)
    # a dict mask works as well, and its names must be the model's
    salun.unlearn(model, f, r, "ft", mask=mask, epochs=1, batch_size=8, quiet=True)
    with pytest.raises(ArtifactError, match="does not fit"):
        salun.unlearn(model, f, r, "ft", mask={"fc.weight": mask["head.weight"]}, quiet=True)


def test_retrain_with_a_recipe_and_a_factory_is_salun_training_on_retain_only(sets):
    f, r, _ = sets
    model = user_model()
    recipe = {"epochs": 2, "batch_size": 8, "lr": 0.05, "schedule": "constant"}
    res = salun.unlearn(
        model, f, UserData(r.images, r.labels), "retrain",
        model_factory=UserNet, recipe=recipe, seed=3, quiet=True,
    )  # fmt: skip
    cfg = TrainConfig(**{**recipe, "seed": 3})
    seed_everything(3)
    expected = UserNet()
    train_supervised(expected, r, cfg, quiet=True)
    assert same_state(snapshot(res.model), snapshot(expected))
    assert res.config["epochs"] == 2 and res.config["seed"] == 3
    # D_f is never seen: a different forget set gives the same Retrain
    other = salun.unlearn(
        model, make_u8(5, 9), r, "retrain",
        model_factory=UserNet, recipe=TrainConfig(**recipe), seed=3, quiet=True,
    )  # fmt: skip
    assert same_state(snapshot(other.model), snapshot(expected))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "retrain_fn=.*missing: model_factory, recipe"),
        ({"model_factory": UserNet}, "missing: recipe"),
        ({"recipe": {"epochs": 1}}, "missing: model_factory"),
        ({"retrain_fn": lambda m, r: m, "epochs": 3}, r"settings \['epochs'\]"),
        ({"retrain_fn": lambda m, r: "nope"}, "must return an nn.Module"),
        ({"model_factory": lambda: MODEL, "recipe": {"epochs": 1}}, "input model itself"),
        ({"model_factory": UserNet, "recipe": {"epochs": 1}, "stream": True}, "cannot stream"),
    ],
)
def test_retrain_says_what_is_missing(sets, kwargs, message):
    f, r, _ = sets
    with pytest.raises(SalunError, match=message):
        salun.unlearn(MODEL, f, r, "retrain", quiet=True, **kwargs)


MODEL = user_model()


def test_settings_of_other_methods_and_bad_settings_fail_early(sets):
    f, r, _ = sets
    with pytest.raises(SalunError, match="has no setting 'epoch'"):
        salun.unlearn(MODEL, "not even data", r, "salun", epoch=3)
    with pytest.raises(SalunError, match="for method='retrain'"):
        salun.unlearn(MODEL, f, r, "salun", model_factory=UserNet)
    with pytest.raises(SalunError, match="nn.Module"):
        salun.unlearn(lambda x: x, f, r, "salun")


def test_num_classes_comes_from_the_output_width_and_labels_must_fit(sets):
    f, r, _ = sets
    torch.manual_seed(0)
    wide = UserNet(k=5)  # labels only use 0..2
    res = salun.unlearn(wide, f, r, "rl", epochs=1, quiet=True)
    assert res.num_classes == 5
    assert salun.unlearn(wide, f, r, "rl", epochs=1, num_classes=4, quiet=True).num_classes == 4
    with pytest.raises(SalunError, match="outputs only 5 logits"):
        salun.unlearn(wide, f, r, "rl", num_classes=6)
    narrow = UserNet(k=2)
    with pytest.raises(SalunError, match="a label is 2 but the model has 2 classes"):
        salun.unlearn(narrow, f, r, "rl")


class ByMean(nn.Module):
    """Predicts class 0 when an image's mean pixel is below 0.5, else class 1 (K = 2)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        z = (x.mean(dim=(1, 2, 3)) - 0.5) * self.w
        return torch.stack([-z, z], 1)


def test_evaluate_gives_the_papers_metrics_and_the_gap_to_a_retrain_model():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 4, 4), generator=g, dtype=torch.uint8)
    truth = (x.float().mean(dim=(1, 2, 3)) >= 127.5).long()
    y = truth.clone()
    y[:6] = 1 - y[:6]  # six forget samples the model gets wrong
    f, r, t = (
        ImageDataset(x[:10], y[:10]),
        ImageDataset(x[10:30], y[10:30]),
        ImageDataset(x[30:], y[30:]),
    )
    model = ByMean()
    out = salun.evaluate(model, f, r, t)
    assert out["UA"] == pytest.approx(60.0)  # 6 of 10 wrong
    assert out["RA"] == pytest.approx(100.0) and out["TA"] == pytest.approx(100.0)
    assert 0 <= out["MIA"] <= 100 and out["mia_members"] == out["mia_nonmembers"] == 10
    ref = {"UA": 50.0, "RA": 90.0, "TA": 95.0, "MIA": out["MIA"] - 8.0}
    gapped = salun.evaluate(model, f, r, t, retrain=ref)
    assert gapped["gaps"] == pytest.approx({"UA": 10.0, "RA": 10.0, "TA": 5.0, "MIA": 8.0})
    assert gapped["avg_gap"] == pytest.approx(33.0 / 4)
    with_model = salun.evaluate(model, f, r, t, retrain=copy.deepcopy(model))
    assert with_model["avg_gap"] == 0.0 and with_model["retrain"]["UA"] == pytest.approx(60.0)
    logits = model(f.images.float() / 255)
    assert out["UA"] == pytest.approx(100 - accuracy(logits, f.labels))


class Counting(UserData):
    """Counts every sample read (a module-level counter: DataLoader copies share it)."""

    reads = 0

    def __getitem__(self, i):
        Counting.reads += 1
        return super().__getitem__(i)


@pytest.mark.parametrize("method", STREAMING_METHODS)
def test_streamed_datasets_give_the_in_memory_result_bit_exactly(sets, method):
    f, r, _ = sets
    model = user_model()
    kw = {"epochs": 1, "batch_size": 5, "quiet": True}
    if method == "salun":
        kw["augment"] = True  # augmentation is drawn on the streamed batches the same way
    in_memory = salun.unlearn(model, f, r, method, **kw)
    Counting.reads = 0
    fd, rd = Counting(f.images, f.labels), Counting(r.images, r.labels)
    streamed = salun.unlearn(model, fd, DataLoader(rd, batch_size=64), method, stream=True, **kw)
    assert same_state(snapshot(in_memory.model), snapshot(streamed.model))
    assert same_state(snapshot(model), snapshot(user_model()))  # the input is untouched
    assert Counting.reads > len(f) + len(r)  # read again on every pass, not held


def test_streaming_reads_with_workers_and_refuses_methods_that_need_memory(sets):
    f, r, t = sets
    fd, rd, td = (UserData(d.images, d.labels, True) for d in (f, r, t))
    model = user_model()
    a = salun.unlearn(model, fd, rd, "ga", epochs=1, batch_size=8, quiet=True)
    b = salun.unlearn(
        model, fd, rd, "ga", stream=True, num_workers=1, epochs=1, batch_size=8, quiet=True
    )
    assert same_state(snapshot(a.model), snapshot(b.model))
    got = salun.evaluate(a.model, fd, rd, td, stream=True)
    want = salun.evaluate(a.model, fd, rd, td)
    assert [got[k] for k in ("UA", "RA", "TA", "MIA")] == [
        want[k] for k in ("UA", "RA", "TA", "MIA")
    ]
    with pytest.raises(SalunError, match="iu needs D_f and D_r in memory"):
        salun.unlearn(model, fd, rd, "iu", stream=True)
    with pytest.raises(SalunError, match="regime='joint' cannot stream"):
        salun.unlearn(model, fd, rd, "rl", regime="joint", stream=True)


class Passes(torch.utils.data.IterableDataset):
    """An iterable dataset: samples in its own order, no indices, no length."""

    def __init__(self, data: ImageDataset, short_after_first: bool = False):
        self.data, self.short, self.passes = data, short_after_first, 0

    def __iter__(self):
        self.passes += 1
        n = len(self.data) - (1 if self.short and self.passes > 2 else 0)
        for i in range(n):
            yield self.data.images[i].float() / 255, int(self.data.labels[i])


def test_an_iterable_dataset_streams_for_methods_that_only_pass_over_the_data(sets):
    f, r, _ = sets
    model = user_model()
    # FT with one batch per pass: each epoch is one SGD step on the whole retain set in the
    # iterable's order; the same two steps done here with torch's SGD
    out = salun.unlearn(model, Passes(f), Passes(r), "ft", stream=True, epochs=2,
                        batch_size=len(r), lr=0.05, quiet=True)  # fmt: skip
    ref = copy.deepcopy(model).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = r.images.float() / 255
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(ref(x), r.labels).backward()
        opt.step()
    got, want = out.model.state_dict(), ref.state_dict()
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=1e-6) for k in want)
    with pytest.raises(SalunError, match="ssd needs D_f and D_r in memory"):
        salun.unlearn(model, Passes(f), Passes(r), "ssd", stream=True, quiet=True)
    with pytest.raises(SalunError, match="must give the same samples on every pass"):
        salun.unlearn(model, Passes(f), Passes(r, short_after_first=True), "ft", stream=True,
                      epochs=3, batch_size=len(r), quiet=True)  # fmt: skip
