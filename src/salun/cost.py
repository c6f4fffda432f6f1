"""What an unlearning run will cost, in epochs of training on D_f ∪ D_r, known before it runs.

One training epoch of the original model passes every example of D_f ∪ D_r through a
forward and a backward once. A method's cost is counted the same way, from its settings
and the set sizes: e.g. SalUn's defaults (10 epochs, a forget pass and a retain pass each,
plus one saliency pass over D_f) cost about 10 training epochs, which on a small model can
be more than training it from scratch took. The count ignores forward-only work (SCRUB's
teacher, BS's frozen copy), so it is a lower bound within a small factor.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


def example_passes(method: str, cfg: Any, n_forget: int, n_retain: int) -> float:
    """Forward+backward passes of single examples the method makes (see module doc)."""
    c = asdict(cfg) if not isinstance(cfg, dict) else cfg
    epochs = c.get("epochs") or 0
    f, r = n_forget, n_retain
    if method in ("ga", "be"):
        return epochs * f
    if method == "bs":  # an FGSM forward/backward before every update
        return 2 * epochs * f
    if method in ("ft", "l1_sparse"):
        return epochs * r
    if method in ("rl", "salun", "salun_soft"):
        per_epoch = f + (r if c.get("alpha", 1.0) > 0 else 0)
        mask_pass = f if method != "rl" and c.get("mask_source", "saliency") == "saliency" else 0
        return epochs * per_epoch + mask_pass
    if method == "neggrad_plus":  # a forget batch replayed beside every retain batch
        fb = c.get("forget_batch_size") or c.get("batch_size") or 1
        return epochs * (r + r * fb / max(1, c.get("batch_size") or 1))
    if method == "scrub":
        return min(c.get("msteps", 0), epochs) * f + epochs * r
    if method in ("iu", "ssd"):  # one gradient pass over the sets
        return f + r
    if method == "retrain":
        return epochs * r
    return epochs * (f + r)  # an unknown method: one pass over both per epoch


def estimate(method: str, cfg: Any, n_forget: int, n_retain: int) -> dict[str, float]:
    """``{"example_passes", "train_epochs"}``: the run's cost, and that cost in epochs of
    training on D_f ∪ D_r."""
    passes = float(example_passes(method, cfg, n_forget, n_retain))
    return {"example_passes": passes, "train_epochs": passes / max(1, n_forget + n_retain)}


def describe(method: str, cost: dict[str, float]) -> str:
    return (
        f"{method} will cost about {cost['train_epochs']:.1f} epochs of training on D_f ∪ D_r "
        f"({cost['example_passes']:.0f} example passes); compare with what training the "
        "original took (fewer epochs or a smaller retain set make it cheaper)"
    )
