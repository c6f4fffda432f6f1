"""Training throughput (images/s) per architecture on this machine.

Usage: python benchmarks/train_speed.py [--batch-size 128] [--steps 10]
Each architecture trains ``--steps`` SGD steps on random Fashion-MNIST-shaped (1×28×28)
and CIFAR-shaped (3×32×32) batches after one warm-up step.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from salun.models import build_model, list_archs


def throughput(arch: str, channels: int, size: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(
        arch,
        in_channels=channels,
        num_classes=10,
        image_size=size,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--archs", nargs="*", default=list_archs())
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'arch':10s} {'1x28x28 img/s':>14s} {'3x32x32 img/s':>14s}  s/epoch (60k, 1x28x28)")
    for arch in args.archs:
        a = throughput(arch, 1, 28, args.batch_size, args.steps)
        b = throughput(arch, 3, 32, args.batch_size, args.steps)
        print(f"{arch:10s} {a:14.0f} {b:14.0f}  {60000 / a:8.1f}")


if __name__ == "__main__":
    main()
