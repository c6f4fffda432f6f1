"""Images/s of salun's loops against a plain PyTorch loop, same model, same run.

Measures, on whatever device is given (default: CUDA if present, else CPU):
  1. training: ``salun.train.train_supervised`` (batches cut from tensors resident on the
     device, augmentation there) vs a plain loop over a ``torch.utils.data.DataLoader`` of
     the same uint8 tensors (host batches copied to the device each step);
  2. one SalUn epoch (the saliency mask, then RL with the strict masked update: a forget
     pass with random labels and a retain pass) vs the same masked update written by hand
     over DataLoaders.
Both sides use the same device policy (precision, memory format), the same model
initialisation and optimizer, so the ratio salun ÷ plain isolates the data path and loop.

Usage:
  python benchmarks/throughput.py                        # ResNet-18, batch 256, auto device
  python benchmarks/throughput.py --width 0.25 --steps 8 --threads 1   # the CPU record
  python benchmarks/throughput.py --device cuda --precision bf16 --json out.json
Images are random Fashion-MNIST-shaped tensors (1×28×28, 10 classes): speed does not
depend on their content. Timings are medians over ``--repeats``, sides interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from salun.data import ImageDataset
from salun.methods import UnlearnContext, make_config
from salun.methods.rl import forget_saliency_mask, random_label_unlearning
from salun.models import build_model
from salun.precision import (
    add_policy_arguments,
    apply_policy_arguments,
    autocast,
    prepare_input,
    prepare_model,
    use_policy,
)
from salun.train import TrainConfig, train_supervised


def make_data(n: int, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.randint(0, 10, (n,), generator=g))


def make_model(args):
    torch.manual_seed(0)
    return build_model(
        args.arch,
        in_channels=1,
        num_classes=10,
        image_size=28,
        mean=(0.286,),
        std=(0.353,),
        width=args.width,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def loader(data: ImageDataset, batch: int, device: torch.device, labels=None) -> DataLoader:
    y = data.labels if labels is None else labels
    ds = TensorDataset(data.images, y)
    return DataLoader(ds, batch_size=batch, shuffle=True, pin_memory=device.type == "cuda")


def plain_epoch(model, dl, opt, device, masked=None) -> None:
    """What a user writes by hand: host batches to the device, a forward, a step; with
    ``masked`` = [(param, bool mask, start values)] the strict update done by hand."""
    model.train()
    for x, y in dl:
        x = prepare_input(x.to(device, non_blocking=True).float().div_(255))
        y = y.to(device, non_blocking=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if masked:
            for p, m, _ in masked:
                p.grad.mul_(m)
        opt.step()
        if masked:
            with torch.no_grad():
                for p, m, p0 in masked:
                    p.copy_(torch.where(m, p, p0))
                    buf = opt.state[p].get("momentum_buffer")
                    if buf is not None:
                        buf.mul_(m)


def sgd(model, lr=0.01):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def bench_training(args, device, data):
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=0.01, schedule="constant")
    salun_model, plain_model = make_model(args), make_model(args)
    prepare_model(plain_model, device)
    opt = sgd(plain_model)
    dl = loader(data, args.batch, device)
    warm = data.subset(list(range(min(len(data), 2 * args.batch))))
    train_supervised(salun_model, warm, cfg, device=device, quiet=True)  # warm-up both
    plain_epoch(plain_model, loader(warm, args.batch, device), opt, device)
    t_salun, t_plain = [], []
    for _ in range(args.repeats):
        t_salun.append(
            timed(
                lambda: train_supervised(salun_model, data, cfg, device=device, quiet=True), device
            )
        )
        t_plain.append(timed(lambda: plain_epoch(plain_model, dl, opt, device), device))
    return len(data), t_salun, t_plain


def bench_salun_step(args, device, data):
    n_forget = max(args.batch, len(data) // 10)
    forget = data.subset(list(range(n_forget)))
    retain = data.subset(list(range(n_forget, len(data))))
    cfg = make_config("salun", {"epochs": 1, "lr": 0.01, "batch_size": args.batch})
    ctx = UnlearnContext(num_classes=10, device=device, quiet=True)
    model = make_model(args).to(device)
    mask_t = timed(lambda: forget_saliency_mask(model, forget, cfg, ctx), device)
    mask = forget_saliency_mask(model, forget, cfg, ctx)
    plain_model = make_model(args)
    prepare_model(plain_model, device)
    opt = sgd(plain_model)
    masked = [
        (p, mask[n].to(device), p.detach().clone()) for n, p in plain_model.named_parameters()
    ]
    g = torch.Generator().manual_seed(1)
    rand_labels = torch.randint(0, 10, (len(forget),), generator=g)

    # fresh copies, as run_method gives each run; built outside the timed region
    works = [make_model(args).to(device) for _ in range(args.repeats)]

    def salun_epoch():
        random_label_unlearning(works.pop(), forget, retain, cfg, ctx, mask)

    def plain():
        plain_epoch(
            plain_model, loader(forget, args.batch, device, rand_labels), opt, device, masked
        )
        plain_epoch(plain_model, loader(retain, args.batch, device), opt, device, masked)

    t_salun, t_plain = [], []
    for _ in range(args.repeats):
        t_salun.append(timed(salun_epoch, device))
        t_plain.append(timed(plain, device))
    return len(data), t_salun, t_plain, mask_t, n_forget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=40, help="batches per timed epoch")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    add_policy_arguments(ap)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the SalUn epoch needs a forget and a retain batch)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev
    )
    policy = apply_policy_arguments(args)
    data = make_data(args.batch * args.steps)
    with use_policy(policy):
        n_train, ts, tp = bench_training(args, device, data)
    with use_policy(replace(policy, compile=False)):  # methods never compile (docs/gpu.md)
        n_step, ss, sp, mask_t, n_forget = bench_salun_step(args, device, data)

    med = statistics.median
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    n_params = sum(p.numel() for p in make_model(args).parameters())
    rec = {
        "device": f"{device} ({name})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "arch": args.arch,
        "width": args.width,
        "parameters": n_params,
        "batch": args.batch,
        "images_per_epoch": n_train,
        "policy": policy.as_record(),
        "train_salun_img_s": n_train / med(ts),
        "train_plain_img_s": n_train / med(tp),
        "salun_step_img_s": n_step / med(ss),
        "salun_step_plain_img_s": n_step / med(sp),
        "mask_seconds": mask_t,
        "mask_images": n_forget,
    }
    rec["train_ratio"] = rec["train_salun_img_s"] / rec["train_plain_img_s"]
    rec["salun_step_ratio"] = rec["salun_step_img_s"] / rec["salun_step_plain_img_s"]
    print(
        f"device {rec['device']}, torch {rec['torch']}, {rec['threads']} thread(s) of "
        f"{rec['cpus']} CPUs; {args.arch} width {args.width} ({n_params:,} parameters), "
        f"batch {args.batch}, {n_train} images per timed epoch, precision {policy.precision}, "
        f"median of {args.repeats}"
    )
    print()
    print("| loop | salun img/s | plain PyTorch img/s | salun ÷ plain |")
    print("|---|---|---|---|")
    print(
        f"| training (train_supervised vs DataLoader loop) | {rec['train_salun_img_s']:.1f} | "
        f"{rec['train_plain_img_s']:.1f} | {rec['train_ratio']:.3f} |"
    )
    print(
        f"| SalUn epoch: RL forget + retain pass, strict mask | {rec['salun_step_img_s']:.1f} | "
        f"{rec['salun_step_plain_img_s']:.1f} | {rec['salun_step_ratio']:.3f} |"
    )
    print()
    print(
        f"saliency mask (compute_saliency + saliency_mask) over {n_forget} forget images: "
        f"{mask_t:.2f} s ({n_forget / mask_t:.1f} img/s)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
