"""One-seed mechanism check of a regime: Original, Retrain and a few unlearning runs on one
split, each evaluated (UA, RA, TA, MIA) and compared with Retrain (Avg. Gap).

Stages, so that two one-thread processes can share the work:

    P=benchmarks/regime/mechanism.py; A="--arch resnet18 --width 0.125 --n-train 2500 ..."
    python $P $A --stage original & python $P $A --stage retrain; wait
    python $P $A --stage unlearn --runs rl:0.01 salun:0.01 &
    python $P $A --stage unlearn --runs ft:0.03
    python $P $A --stage table

Models go to --work (not committed); each evaluation is a small JSON under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subset import subset_bundle  # noqa: E402

from salun.data import load_dataset, make_split  # noqa: E402
from salun.io import atomic_write_json  # noqa: E402
from salun.methods import UnlearnContext, make_config, run_method  # noqa: E402
from salun.metrics.evaluate import evaluate_unlearning  # noqa: E402
from salun.models import build_from_kwargs, model_kwargs_for  # noqa: E402
from salun.train import TrainConfig, train_supervised  # noqa: E402

METRICS = ("UA", "RA", "TA", "MIA")


def setup(a):
    bundle = subset_bundle(load_dataset("fashion-mnist"), a.n_train, a.n_test)
    if a.scenario == "random10":
        split = make_split(bundle, "random", fraction=0.1, seed=a.seed)
    elif a.scenario == "random50":
        split = make_split(bundle, "random", fraction=0.5, seed=a.seed)
    else:
        split = make_split(bundle, "class", classes=[0], seed=a.seed)
    kwargs = model_kwargs_for(bundle, a.arch, a.width)
    recipe = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                         weight_decay=5e-4, schedule="cosine", augment=a.augment, pad=a.pad,
                         seed=a.seed)
    return bundle, split, kwargs, recipe


def evaluate(model, bundle, split):
    return evaluate_unlearning(model, bundle, split, mia_features=("confidence",))


def gap(m: dict, ref: dict) -> float:
    return sum(abs(m[k] - ref[k]) for k in METRICS) / len(METRICS)


def train_stage(a, which: str) -> None:
    bundle, split, kwargs, recipe = setup(a)
    data = bundle.train.subset(split.train if which == "original" else split.retain)
    torch.manual_seed(a.seed)
    model = build_from_kwargs(kwargs)
    t = time.perf_counter()
    res = train_supervised(model, data, recipe, flip_allowed=bundle.flip, quiet=True)
    secs = time.perf_counter() - t
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), work / f"{which}.pt")
    rec = {"run": which, "seconds": secs, "metrics": evaluate(model, bundle, split),
           "recipe": asdict(recipe), "last_epoch": res.history[-1], "n_trained": len(data),
           "split": split.describe()}
    atomic_write_json(Path(a.out) / f"{which}.json", rec)
    print(which, f"{secs:.0f}s", {k: round(rec["metrics"][k], 2) for k in METRICS})


def unlearn_stage(a) -> None:
    bundle, split, kwargs, recipe = setup(a)
    original = build_from_kwargs(kwargs)
    original.load_state_dict(torch.load(Path(a.work) / "original.pt", weights_only=True))
    original.eval()
    forget, retain = bundle.train.subset(split.forget), bundle.train.subset(split.retain)
    ctx = UnlearnContext(num_classes=bundle.num_classes, flip=bundle.flip,
                         model_kwargs=kwargs, original_train=asdict(recipe), quiet=True)
    for run in a.runs:
        method, lr = run.split(":")
        over = {"epochs": a.unlearn_epochs, "lr": float(lr), "seed": a.seed}
        if a.unlearn_batch_size:
            over["batch_size"] = a.unlearn_batch_size
        if a.unlearn_augment:
            over["augment"] = True
        cfg = make_config(method, over)
        t = time.perf_counter()
        res = run_method(method, original, forget, retain, cfg, ctx)
        secs = time.perf_counter() - t
        bs = cfg.batch_size
        steps = {"forget_steps_per_epoch": -(-len(forget) // bs),
                 "retain_steps_per_epoch": -(-len(retain) // bs), "epochs": cfg.epochs}
        rec = {"run": f"{method}@{lr}", "method": method, "lr": float(lr), "seconds": secs,
               "metrics": evaluate(res.model, bundle, split), "config": asdict(cfg),
               "steps": steps}
        tag = f"_b{a.unlearn_batch_size}" if a.unlearn_batch_size else ""
        if tag:
            rec["run"] += f" b{a.unlearn_batch_size}"
        atomic_write_json(Path(a.out) / f"{method}_lr{lr}{tag}.json", rec)
        print(rec["run"], f"{secs:.0f}s", {k: round(rec["metrics"][k], 2) for k in METRICS})


def table(a) -> str:
    out = Path(a.out)
    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    by = {r["run"]: r for r in recs}
    ref = by["retrain"]["metrics"]
    order = ["original", "retrain"] + sorted(r for r in by if r not in ("original", "retrain"))
    lines = ["| run | UA | RA | TA | MIA | gap | seconds |", "|---|---|---|---|---|---|---|"]
    for name in order:
        r = by[name]
        m = r["metrics"]
        cells = " | ".join(f"{m[k]:.2f}" for k in METRICS)
        lines.append(f"| {name} | {cells} | {gap(m, ref):.2f} | {r['seconds']:.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", choices=("original", "retrain", "unlearn", "table"), required=True)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--n-train", type=int, default=2500)
    ap.add_argument("--n-test", type=int, default=2250)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--pad", type=int, default=2)
    ap.add_argument("--scenario", default="random10", choices=("random10", "random50", "class0"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unlearn-epochs", type=int, default=5)
    ap.add_argument("--unlearn-augment", action="store_true")
    ap.add_argument("--unlearn-batch-size", type=int, default=0, help="0 = the method's own")
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--work", required=True, help="model folder (not committed)")
    ap.add_argument("--out", required=True, help="records folder")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.stage in ("original", "retrain"):
        train_stage(a, a.stage)
    elif a.stage == "unlearn":
        unlearn_stage(a)
    else:
        print(table(a))


if __name__ == "__main__":
    main()
