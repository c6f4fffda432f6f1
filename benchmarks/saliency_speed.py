"""Cost of SalUn's machinery, measured against its own baselines in the same run.

Prints, for one model on the Fashion-MNIST forget set (10 % random):
  1. mask time (compute_saliency + saliency_mask) ÷ one plain forward+backward pass over
     the forget set (target ≤ 1.2);
  2. SalUn step time (strict masked update) ÷ unmasked RL step time (target ≤ 1.05);
  3. memory held by the mask and the strict update, as a multiple of the parameter bytes;
  4. thresholding alone: ``saliency_mask`` (global top 50 %) against the reference's way (a
     full argsort of the concatenated scores, an int64 mask) and one ``torch.kthvalue``,
     on 11.2 M scores shaped like ResNet-18's parameters (target: ours ≤ 0.25× argsort);
     with ``--big`` also on 860 M scores (Stable Diffusion's UNet), each way only where the
     free memory allows it.

Usage: python benchmarks/saliency_speed.py [--arch cnn] [--width 1.0] [--repeats 5]
       python benchmarks/saliency_speed.py --threshold-only [--big] [--device cuda]
Ratios are medians over repeats, interleaved, so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from salun.data import iterate_batches, load_dataset, make_split
from salun.masking import MaskedUpdate
from salun.models import build_from_kwargs, build_model, model_kwargs_for
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


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of ResNet-18 (CIFAR stem, 10 classes): 11.2 M scalars."""
    model = build_model(
        "resnet18", in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3
    )
    return [tuple(p.shape) for p in model.parameters()]


def fake_scores(shapes, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """|Gaussian| scores (like |summed gradients|), one tensor per shape."""
    g = torch.Generator(device=device).manual_seed(seed)
    return {
        f"p{i}": torch.randn(s, generator=g, device=device).abs_() for i, s in enumerate(shapes)
    }


def argsort_way(scores, keep: float) -> dict[str, torch.Tensor]:
    """The reference's thresholding: concatenate, argsort everything, an int64 0/1 mask."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = int(flat.numel() * keep)
    order = torch.argsort(flat, descending=True)
    mask = torch.zeros_like(flat, dtype=torch.int64)
    mask[order[:k]] = 1
    return dict(zip(scores, mask.split([s.numel() for s in scores.values()])))


def kthvalue_way(scores, keep: float) -> dict[str, torch.Tensor]:
    """One ``torch.kthvalue`` over the concatenation, then ``s >= t`` (ties not exact)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = int(flat.numel() * keep)
    t = torch.kthvalue(flat, flat.numel() - k + 1).values
    return {n: s >= t for n, s in scores.items()}


def free_bytes(device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info["MemAvailable"]


# extra bytes per score each way needs beyond the scores themselves (measured layout:
# ours = bool mask; kthvalue = a concatenated copy + its working copy + bool mask;
# argsort = concatenated copy + int64 order + int64 mask + the sort's working memory)
EXTRA_BYTES = {"salun": 1, "kthvalue": 9, "argsort": 28}


def threshold_comparison(n_label, shapes, device, repeats: int, only=None) -> None:
    scores = fake_scores(shapes, device)
    n = sum(s.numel() for s in scores.values())
    ways = {"salun": saliency_mask, "argsort": argsort_way, "kthvalue": kthvalue_way}
    ways = {w: f for w, f in ways.items() if only is None or w in only}
    times: dict[str, list[float]] = {w: [] for w in ways}
    skipped = {}
    for w in ways:
        need = EXTRA_BYTES[w] * n * 1.2
        if need > free_bytes(device):
            skipped[w] = f"skipped: needs ~{need / 2**30:.1f} GiB beyond the scores"
    for _ in range(repeats):
        for w, fn in ways.items():
            if w in skipped:
                continue
            sync(device)
            t0 = time.perf_counter()
            out = fn(scores, 0.5)
            sync(device)
            times[w].append(time.perf_counter() - t0)
            del out
    if "salun" not in skipped:
        ours = saliency_mask(scores, 0.5)
        assert sum(int(m.sum()) for m in ours.values()) == n // 2  # exactly ⌊N/2⌋ ones
    med = statistics.median
    print(f"thresholding {n:,} scores ({n_label}), global top 50 %, device {device}:")
    base = med(times["argsort"]) if times.get("argsort") else None
    for w in ways:
        if w in skipped:
            print(f"  {w:9s} {skipped[w]}")
            continue
        ratio = f"{med(times[w]) / base:.3f}x argsort" if base else "argsort not run"
        print(f"  {w:9s} {med(times[w]):8.3f} s  ({ratio})")
    if base and times.get("salun"):
        r = med(times["salun"]) / base
        verdict = "met" if r <= 0.25 else "NOT met"
        print(f"  saliency_mask / argsort way = {r:.3f}  (target <= 0.25: {verdict})")
    if torch.device(device).type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(
            f"  process peak memory so far: {peak / 2**30:.2f} GiB "
            f"(scores: {n * 4 / 2**30:.2f} GiB)"
        )


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="SGD steps per timing")
    ap.add_argument("--threshold-only", action="store_true", help="only part 4")
    ap.add_argument("--big", action="store_true", help="part 4 on 860 M scores too (~4+ GB)")
    ap.add_argument(
        "--big-ways",
        default="salun,argsort,kthvalue",
        help="which ways --big runs (comma-separated; each also only where memory allows)",
    )
    ap.add_argument("--device", default="cpu", help="device of part 4 (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    if not args.threshold_only:
        overheads(args)
    threshold_comparison("ResNet-18 size", resnet18_shapes(), args.device, args.repeats)
    if args.big:
        # 860 M scores in 1 000 tensors of 860 k: Stable Diffusion's UNet size
        only = set(args.big_ways.split(","))
        threshold_comparison("SD UNet size", [(860_000,)] * 1000, args.device, 1, only)


def overheads(args) -> None:

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
