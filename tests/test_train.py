import torch

from salun.models import build_model
from salun.train import TrainConfig, quick_accuracy, train_supervised


def make(synthetic, seed=0):
    torch.manual_seed(seed)
    return build_model(
        "cnn",
        in_channels=1,
        num_classes=4,
        image_size=8,
        mean=synthetic.mean,
        std=synthetic.std,
        width=0.25,
    )


def test_trainer_learns_and_is_deterministic(synthetic):
    cfg = TrainConfig(epochs=6, lr=0.05, batch_size=32, augment=True, pad=1, seed=1)
    a, b = make(synthetic), make(synthetic)
    ra = train_supervised(a, synthetic.train, cfg, quiet=True)
    train_supervised(b, synthetic.train, cfg, quiet=True)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert quick_accuracy(a, synthetic.test, "cpu") > 80
    assert len(ra.history) == 6 and ra.history[-1]["loss"] < ra.history[0]["loss"]


def test_val_best_keeps_the_best_epoch(synthetic):
    model = make(synthetic)
    cfg = TrainConfig(
        epochs=4, lr=0.05, batch_size=32, val_best=True, schedule="multistep", milestones=(2,)
    )
    res = train_supervised(model, synthetic.train, cfg, val=synthetic.test, quiet=True)
    best = max(h["val_acc"] for h in res.history)
    assert res.history[res.best_epoch - 1]["val_acc"] == best
    assert quick_accuracy(model, synthetic.test, "cpu") == best
