"""Training throughput (images/s, one thread) of the CPU-preset candidates, in one process so
that the numbers compare on the same (shared) machine state.

    .venv/bin/python benchmarks/regime/throughput.py --out benchmarks/regime/throughput.json
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from salun.data import Augment
from salun.data.batches import augment_batch
from salun.io import atomic_write_json
from salun.models import build_model

CANDIDATES = [("resnet18", 0.25), ("resnet18", 0.125), ("resnet20", 1.0), ("resnet20", 0.5)]


def measure(arch: str, width: float, steps: int, batch: int, augment: bool) -> dict:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, num_classes=10, image_size=28,
                        mean=(0.286,), std=(0.353,), width=width)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    aug = Augment(pad=2, flip=True)
    model.train()

    def step():
        x = augment_batch(x0, aug, gen) if augment else x0
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    train_s = time.perf_counter() - t
    model.eval()
    with torch.no_grad():
        t = time.perf_counter()
        for _ in range(steps):
            model(x0)
        eval_s = time.perf_counter() - t
    params = sum(p.numel() for p in model.parameters())
    return {"arch": arch, "width": width, "params": params, "augment": augment,
            "train_img_s": steps * batch / train_s, "eval_img_s": steps * batch / eval_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = [measure(arch, w, a.steps, a.batch, True) for arch, w in CANDIDATES]
    for r in rows:
        print(f"{r['arch']:9s} w{r['width']:<5} {r['params'] / 1e6:.3f}M "
              f"train {r['train_img_s']:.0f} img/s  eval {r['eval_img_s']:.0f} img/s")
    atomic_write_json(a.out, {"threads": 1, "batch": a.batch, "machine": platform.node(),
                              "note": "2 shared cores; other engineers' jobs may be running",
                              "rows": rows})


if __name__ == "__main__":
    main()
