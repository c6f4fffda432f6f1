"""Time-budget arithmetic of a whole benchmark preset, from measured per-image costs.

Every run is counted in training image-passes (one forward + backward of one image) and
forward-only evaluation passes, then divided by the measured one-thread throughputs and by
the number of parallel one-thread workers (the Ray executor on 2 cores: 2).

    .venv/bin/python benchmarks/regime/budget.py --train-img-s 266 --eval-img-s 612 \
        --n-train 2500 --n-test 2500 --epochs 15 --unlearn-epochs 5

Per-method work per run (U unlearning epochs, N_f forget, N_r retain images):
  ft, l1_sparse      U·N_r                  (retain passes)
  rl, salun, soft    U·(N_f + N_r)          (forget + retain passes; SalUn adds one
                                             gradient pass over D_f for its mask)
  ga, be             U·N_f
  bs                 2·U·N_f                (an FGSM forward/backward per step on top)
  iu                 N_f + N_r + 3·S        (summed gradients, S per-sample gradients)
Evaluation of every model: a forward pass over D_f ∪ D_r and the test set.
Grids (the ``tuned`` protocol's defaults): 7 log-spaced lr values (1e-4 .. 0.1) for the
lr methods, 5 values for BS, BE (lr) and IU (alpha); ``paper`` and ``tuned`` each run every
method once per reported seed. One Original per seed (the scenarios share it).
"""

from __future__ import annotations

import argparse
import json

SCENARIOS = {"random10": 0.1, "random50": 0.5, "class-wise": 0.1}  # forget fraction
UNLEARN = ("ft", "l1_sparse", "rl", "salun", "salun_soft", "ga", "be", "bs", "iu")
GRID = {"bs": 5, "be": 5, "iu": 5}  # the others: the lr grid, --grid values


def method_passes(m: str, nf: float, nr: float, u: int, iu_samples: int) -> float:
    if m in ("ft", "l1_sparse"):
        return u * nr
    if m in ("rl", "salun_soft"):
        return u * (nf + nr)
    if m == "salun":
        return u * (nf + nr) + nf
    if m in ("ga", "be"):
        return u * nf
    if m == "bs":
        return 2 * u * nf
    if m == "iu":
        return nf + nr + 3 * min(iu_samples, nr)
    raise ValueError(m)


def budget(a) -> dict:
    n = a.n_train
    seeds = a.reported_seeds + a.tune_seeds
    train_passes = seeds * n * a.epochs  # one Original per seed, shared by the scenarios
    unlearn_passes = 0.0
    runs = 0
    for frac in SCENARIOS.values():
        nf, nr = frac * n, (1 - frac) * n
        train_passes += seeds * nr * a.epochs  # Retrain per scenario and seed
        tune = sum(GRID.get(m, a.grid) * method_passes(m, nf, nr, a.unlearn_epochs,
                                                        a.iu_samples)
                   for m in UNLEARN) * a.tune_seeds
        final = sum(method_passes(m, nf, nr, a.unlearn_epochs, a.iu_samples)
                    for m in UNLEARN) * a.reported_seeds * a.protocols
        unlearn_passes += tune + final
        runs += sum(GRID.get(m, a.grid) for m in UNLEARN) * a.tune_seeds
        runs += len(UNLEARN) * a.reported_seeds * a.protocols + seeds  # + Retrain
    runs += seeds  # Originals
    eval_images = runs * (n + a.n_test)
    cpu_s = (train_passes + unlearn_passes) / a.train_img_s + eval_images / a.eval_img_s
    cpu_s += runs * a.svc_s
    wall = cpu_s / a.workers
    return {
        "inputs": vars(a),
        "train_image_passes": train_passes, "unlearn_image_passes": unlearn_passes,
        "eval_images": eval_images, "runs": runs,
        "train_cpu_s": train_passes / a.train_img_s,
        "unlearn_cpu_s": unlearn_passes / a.train_img_s,
        "eval_cpu_s": eval_images / a.eval_img_s + runs * a.svc_s,
        "cpu_s": cpu_s, "wall_h": wall / 3600,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-img-s", type=float, required=True)
    ap.add_argument("--eval-img-s", type=float, required=True)
    ap.add_argument("--n-train", type=int, required=True)
    ap.add_argument("--n-test", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True, help="Original / Retrain epochs")
    ap.add_argument("--unlearn-epochs", type=int, required=True)
    ap.add_argument("--grid", type=int, default=7, help="values per searched lr method")
    ap.add_argument("--reported-seeds", type=int, default=3)
    ap.add_argument("--tune-seeds", type=int, default=1)
    ap.add_argument("--protocols", type=int, default=2, help="paper + tuned")
    ap.add_argument("--iu-samples", type=int, default=1024)
    ap.add_argument("--svc-s", type=float, default=1.0, help="SVC MIA fit per run, seconds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    b = budget(a)
    if a.json:
        print(json.dumps(b, indent=1))
    else:
        print(f"runs {b['runs']}: train {b['train_cpu_s'] / 60:.0f} min, unlearn "
              f"{b['unlearn_cpu_s'] / 60:.0f} min, eval {b['eval_cpu_s'] / 60:.0f} min "
              f"(one-thread CPU) -> {b['wall_h']:.2f} h on {a.workers} workers")


if __name__ == "__main__":
    main()
