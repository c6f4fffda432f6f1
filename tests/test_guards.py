"""The checks salun.unlearn / salun.evaluate run first (issue #29): each user error one
SalunError, each suspicious input a warning with its reason, and the cost known up front."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

import salun
from salun.data import ImageDataset
from salun.data.sources.synthetic import synthetic_bundle
from salun.errors import SalunError
from salun.guards import InputWarning

MEAN, STD = 0.5, 0.1  # the normalisation the model below was trained with


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 64, 4)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def trained():
    """A model that memorises its 300 training images (train 100 %, test ~70 %), trained on
    (x − 0.5) / 0.1; forget = its first 40 training images, retain the other 260."""
    torch.manual_seed(0)
    b = synthetic_bundle(n_train=300, n_test=400, noise=250.0)
    x, y = b.train.images.float() / 255, b.train.labels
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(60):
        perm = torch.randperm(300)
        for i in range(0, 300, 50):
            idx = perm[i : i + 50]
            opt.zero_grad()
            F.cross_entropy(model((x[idx] - MEAN) / STD), y[idx]).backward()
            opt.step()
    model.eval()
    train = b.train
    return model, train.subset(range(40)), train.subset(range(40, 300)), b.test


def _input_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, InputWarning)]


def test_forgotten_normalisation_warns_with_the_batchnorm_statistics(trained):
    model, f, r, _ = trained
    norm = ((MEAN,), (STD,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = salun.unlearn(model, f, r, "ga", epochs=1, quiet=True)  # normalize forgotten
    (msg,) = _input_warnings(caught)
    # the expected statistics, computed here from the layer's definition: the conv's output
    # on the raw first 256 retain images against the BatchNorm's running statistics
    with torch.no_grad():
        z = model.conv(r.images[:256].float() / 255)
    run_std = (model.bn.running_var + model.bn.eps).sqrt()
    shift = ((z.mean((0, 2, 3)) - model.bn.running_mean).abs() / run_std).median()
    scale = (z.std((0, 2, 3)) / run_std).median()
    assert f"BatchNorm 'bn' receives inputs {float(shift):.2f} running standard deviations" in msg
    assert f"and {float(scale):.2f}× its training spread" in msg
    assert "pass normalize=(mean, std)" in msg and res.warnings == [msg]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = salun.unlearn(model, f, r, "ga", epochs=1, quiet=True, normalize=norm)
    assert _input_warnings(caught) == [] and res.warnings == []


def test_a_model_at_chance_on_its_retain_set_is_warned_about():
    # no BatchNorm: the accuracy signal. A model that always answers class 0.
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0, 0, 0]))
    b = synthetic_bundle(n_train=300)
    f, r = b.train.subset(range(40)), b.train.subset(range(40, 300))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        salun.unlearn(model, f, r, "ga", epochs=1, quiet=True)
    (msg,) = _input_warnings(caught)
    acc = 100 * float((r.labels[:256] == 0).float().mean())  # what "always 0" scores
    assert f"classifies only {acc:.1f} % of the first 256 retain examples" in msg
    assert "(chance: 25.0 %)" in msg


def test_test_images_passed_as_the_forget_set_are_warned_about(trained):
    model, f, r, test = trained
    norm = ((MEAN,), (STD,))
    never_seen, held_out = test.subset(range(40)), test.subset(range(40, 400))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = salun.unlearn(model, never_seen, r, "ga", epochs=1, quiet=True, normalize=norm,
                            test=held_out)  # fmt: skip
    (msg,) = _input_warnings(caught)
    assert "fits the forget set no better than unseen test data" in msg
    assert res.warnings == [msg]
    # the real forget set (trained on: 100 % against ~70 %) passes silently
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        salun.unlearn(model, f, r, "ga", epochs=1, quiet=True, normalize=norm, test=held_out)
    assert _input_warnings(caught) == []


def test_the_fit_check_weighs_test_accuracy_by_the_forget_sets_classes(trained):
    """Pins the weighting: test accuracy per class, weighted by D_f's class shares."""
    from salun.guards import check_forget_was_trained
    from salun.models.adapter import adapt_model

    model, _, _, test = trained
    work = adapt_model(Net(), ((MEAN,), (STD,)))
    work.load_state_dict(model.state_dict())
    work.eval()
    x = test.images.float() / 255
    with torch.no_grad():
        ok = work(x).argmax(1) == test.labels
    # a forget set of test images of classes 0 and 1 only, 3:1
    idx0 = torch.nonzero(test.labels == 0).flatten()[:30]
    idx1 = torch.nonzero(test.labels == 1).flatten()[:10]
    forget = test.subset(torch.cat([idx0, idx1]))
    acc_f = float(ok[torch.cat([idx0, idx1])].float().mean())
    acc_t = 0.75 * float(ok[test.labels == 0].float().mean()) + 0.25 * float(
        ok[test.labels == 1].float().mean()
    )
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        reason = check_forget_was_trained(work, forget, test, "cpu")
    assert acc_f <= acc_t  # the same data: it cannot fit them better
    assert f"forget accuracy {100 * acc_f:.1f} %, test {100 * acc_t:.1f} %" in reason


def test_forget_and_retain_sharing_an_example_is_an_error(trained):
    _, f, r, _ = trained
    model = Net()
    # by index: two views of one dataset
    base = TensorDataset(f.images.float() / 255, f.labels)
    with pytest.raises(SalunError, match=r"overlap: 2 index\(es\) of the same .*\(first: 3\)"):
        salun.unlearn(model, Subset(base, [1, 3, 5]), Subset(base, [3, 5, 7, 9]), "ga", epochs=1)
    # by content: the same image and label in both
    r2 = ImageDataset(torch.cat([r.images, f.images[7:8]]), torch.cat([r.labels, f.labels[7:8]]))
    with pytest.raises(SalunError, match=r"1 of the 40 forget examples \(first: forget\[7\]\)"):
        salun.unlearn(model, f, r2, "ga", epochs=1, quiet=True)
    # the same image under another label is another example
    other = (f.labels[7:8] + 1) % 4
    r3 = ImageDataset(torch.cat([r.images, f.images[7:8]]), torch.cat([r.labels, other]))
    salun.unlearn(model, f, r3, "ga", epochs=1, quiet=True)


def test_a_model_with_every_parameter_frozen_is_an_error(trained):
    _, f, r, _ = trained
    model = Net().requires_grad_(False)
    with pytest.raises(SalunError, match=r"every parameter of the model is frozen"):
        salun.unlearn(model, f, r, "rl", epochs=1, quiet=True)
    model.head.requires_grad_(True)  # a partly frozen model trains what it may
    res = salun.unlearn(model, f, r, "rl", epochs=1, quiet=True)
    assert torch.equal(res.model.conv.weight, model.conv.weight)
    assert not torch.equal(res.model.head.weight, model.head.weight)


def test_unlearn_inside_no_grad_works_and_gives_the_same_weights(trained):
    model, f, r, _ = trained
    norm = ((MEAN,), (STD,))
    plain = salun.unlearn(model, f, r, "salun", epochs=1, quiet=True, normalize=norm)
    with torch.no_grad():
        inside = salun.unlearn(model, f, r, "salun", epochs=1, quiet=True, normalize=norm)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    a, b = plain.model.state_dict(), inside.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.inference_mode(), pytest.raises(SalunError, match="inference_mode"):
        salun.unlearn(model, f, r, "salun", epochs=1, quiet=True)


def test_evaluate_with_a_label_the_model_has_no_logit_for_is_one_error(trained):
    model, f, r, test = trained
    bad = ImageDataset(test.images[:20], torch.full((20,), 4))  # 4 classes: 0..3
    with pytest.raises(SalunError, match=r"test: a label is 4 but the model has 4 classes"):
        salun.evaluate(model, f, r, bad)


def test_the_cost_is_estimated_printed_and_stored(trained, monkeypatch, capsys):
    model, f, r, _ = trained
    monkeypatch.delenv("SALUN_QUIET", raising=False)
    res = salun.unlearn(model, f, r, "salun", epochs=2, normalize=((MEAN,), (STD,)))
    # SalUn: 2 epochs of a forget and a retain pass, plus the saliency pass over D_f
    passes = 2 * (40 + 260) + 40
    assert res.cost == {"example_passes": passes, "train_epochs": passes / 300}
    assert f"about {passes / 300:.1f} epochs of training on D_f ∪ D_r" in capsys.readouterr().err
    ga = salun.unlearn(model, f, r, "ga", epochs=3, quiet=True)
    assert ga.cost["example_passes"] == 3 * 40  # GA passes over D_f only
    assert "epochs of training" not in capsys.readouterr().err  # quiet, and < 1 epoch anyway
