"""What one unlearning image costs at each batch size and precision, on this CPU.

Measures RL (a forget pass + a retain pass, salun's own ``run_method``) on the paper-steps
regime's network (ResNet-18 topology, width 0.125, 28×28×1) at unlearning batch 16 and 256,
in fp32 and in bf16 autocast with channels-last, in ONE process, the variants interleaved
round by round, so the ratios hold on a shared machine. Prints images/s per variant and each
variant's ratio to fp32 at batch 256.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/regime/step_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from salun.data.sources.synthetic import synthetic_bundle
from salun.methods import UnlearnContext, make_config, run_method
from salun.models import build_from_kwargs, model_kwargs_for
from salun.precision import DevicePolicy, use_policy


def cpu_flags() -> list[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return []
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=1024, help="D_f ∪ D_r size per run")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    bundle = synthetic_bundle(n_train=a.images, n_test=16, num_classes=10, size=28)
    kwargs = model_kwargs_for(bundle, "resnet18", width=0.125)
    torch.manual_seed(0)
    model = build_from_kwargs(kwargs)
    n_f = a.images // 10
    forget = bundle.train.subset(range(n_f))
    retain = bundle.train.subset(range(n_f, a.images))
    ctx = UnlearnContext(num_classes=10, flip=False, model_kwargs=kwargs, quiet=True)
    variants = {
        "fp32 b256": (256, DevicePolicy()),
        "fp32 b16": (16, DevicePolicy()),
        "bf16+cl b256": (256, DevicePolicy(precision="bf16", channels_last=True)),
        "bf16+cl b16": (16, DevicePolicy(precision="bf16", channels_last=True)),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.rounds):
        for name, (batch, policy) in variants.items():
            cfg = make_config("rl", {"epochs": 1, "batch_size": batch, "lr": 1e-3})
            with use_policy(policy):
                t = time.perf_counter()
                run_method("rl", model, forget, retain, cfg, ctx)
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times["fp32 b256"])
    rows = {
        name: {
            "images_per_s": a.images / statistics.median(t),
            "ratio_to_fp32_b256": base / statistics.median(t),
        }
        for name, t in times.items()
    }
    print(
        f"{platform.processor() or platform.machine()}, flags {cpu_flags() or 'none of amx/avx512'}"
    )
    print("| variant | images/s | vs fp32 b256 |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['images_per_s']:.0f} | {r['ratio_to_fp32_b256']:.2f} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"cpu_flags": cpu_flags(), "rows": rows, "rounds": a.rounds}, f, indent=1)


if __name__ == "__main__":
    main()
