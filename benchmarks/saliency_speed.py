"""Cost of SalUn's machinery, measured against its own baselines in the same run.

Prints, for one model on the Fashion-MNIST forget set (10 % random):
  1. mask time (compute_saliency + saliency_mask) ÷ one plain forward+backward pass over
     the forget set (target ≤ 1.2);
  2. SalUn step time (strict masked update) ÷ unmasked RL step time (target ≤ 1.05);
  3. memory held by the mask and the strict update, as a multiple of the parameter bytes.

Usage: python benchmarks/saliency_speed.py [--arch cnn] [--width 1.0] [--repeats 5]
Ratios are medians over repeats, interleaved, so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from salun.data import iterate_batches, load_dataset, make_split
from salun.masking import MaskedUpdate
from salun.models import build_from_kwargs, model_kwargs_for
from salun.saliency import compute_saliency, saliency_mask


def plain_pass(model, batches):
    model.eval()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()


def mask_pass(model, batches):
    saliency_mask(compute_saliency(model, batches), keep=0.5)


def steps(model, batches, mask):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    masked = MaskedUpdate(model, mask, "strict")
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        masked.step(opt)
    return time.perf_counter() - t0, masked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="SGD steps per timing")
    args = ap.parse_args()

    bundle = load_dataset("fashion-mnist")
    split = make_split(bundle, "random", fraction=0.1, seed=0)
    forget = bundle.train.subset(split.forget)
    torch.manual_seed(0)
    model = build_from_kwargs(model_kwargs_for(bundle, args.arch, args.width))
    batches = list(iterate_batches(forget, 256))
    step_batches = batches[: args.steps]
    n_params = sum(p.numel() for p in model.parameters())
    mask = saliency_mask(compute_saliency(model, batches), keep=0.5)

    plain_t, mask_t, rl_t, salun_t = [], [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain_pass(model, batches)
        plain_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        mask_pass(model, batches)
        mask_t.append(time.perf_counter() - t0)
        rl_t.append(
            steps(
                build_from_kwargs(model_kwargs_for(bundle, args.arch, args.width)),
                step_batches,
                None,
            )[0]
        )
        m2 = build_from_kwargs(model_kwargs_for(bundle, args.arch, args.width))
        t, masked = steps(m2, step_batches, mask)
        salun_t.append(t)
    param_bytes = n_params * 4
    mask_bytes = sum(m.numel() for m in mask.values())  # bool: one byte per weight
    held = masked.extra_bytes()

    med = statistics.median
    print(
        f"model: {args.arch} (width {args.width}), {n_params:,} parameters; forget set "
        f"{len(forget)} images; {torch.get_num_threads()} threads; torch {torch.__version__}"
    )
    print(
        f"mask time / forward+backward pass   = {med(mask_t) / med(plain_t):.3f}  "
        f"({med(mask_t):.3f} s vs {med(plain_t):.3f} s; target <= 1.2)"
    )
    print(
        f"SalUn step / RL step                = {med(salun_t) / med(rl_t):.3f}  "
        f"({med(salun_t) / args.steps * 1e3:.1f} ms vs {med(rl_t) / args.steps * 1e3:.1f} ms;"
        f" target <= 1.05)"
    )
    print(f"bool mask bytes / parameter bytes   = {mask_bytes / param_bytes:.3f}")
    print(
        f"strict update held / parameter bytes = {held / param_bytes:.3f} "
        "(float mask + frozen values; the masked step itself is in place)"
    )


if __name__ == "__main__":
    main()
