"""Train one CPU-preset candidate on a fixed Fashion-MNIST subset and record its cost and
whether it memorises (train accuracy in eval mode on the clean images).

    .venv/bin/python benchmarks/regime/pilot_train.py --arch resnet18 --width 0.25 \
        --n-train 2500 --epochs 40 --augment --pad 2 --out benchmarks/regime/pilots/NAME.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subset import subset_bundle  # noqa: E402

from salun.data import load_dataset  # noqa: E402
from salun.io import atomic_write_json  # noqa: E402
from salun.models import build_model, model_kwargs_for  # noqa: E402
from salun.train import TrainConfig, quick_accuracy, train_supervised  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--n-train", type=int, required=True)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--pad", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="save the model's state_dict here (not committed)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    bundle = subset_bundle(load_dataset("fashion-mnist"), a.n_train, a.n_test)
    model = build_model(**{**model_kwargs_for(bundle, a.arch, a.width)})
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                      weight_decay=a.weight_decay, schedule="cosine", augment=a.augment,
                      pad=a.pad, seed=a.seed)
    t = time.perf_counter()
    res = train_supervised(model, bundle.train, cfg, flip_allowed=bundle.flip, quiet=True)
    train_s = time.perf_counter() - t
    rec = {
        "arch": a.arch, "width": a.width,
        "params": sum(p.numel() for p in model.parameters()),
        "n_train": len(bundle.train), "n_test": len(bundle.test),
        "recipe": {"epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size,
                   "weight_decay": a.weight_decay, "schedule": "cosine", "momentum": 0.9,
                   "augment": a.augment, "pad": a.pad if a.augment else 0,
                   "flip": bool(a.augment and bundle.flip), "seed": a.seed},
        "threads": 1,
        "train_seconds": train_s,
        "seconds_per_epoch": train_s / a.epochs,
        "train_acc_clean": quick_accuracy(model, bundle.train, "cpu"),
        "test_acc": quick_accuracy(model, bundle.test, "cpu"),
        "history": res.history,
        "command": " ".join(sys.argv),
    }
    if a.save:
        torch.save(model.state_dict(), a.save)
    atomic_write_json(a.out, rec)
    print(f"{a.arch} w{a.width} n{a.n_train} e{a.epochs} aug={a.augment}: "
          f"{rec['seconds_per_epoch']:.1f} s/epoch, train {rec['train_acc_clean']:.2f} "
          f"test {rec['test_acc']:.2f}")


if __name__ == "__main__":
    main()
