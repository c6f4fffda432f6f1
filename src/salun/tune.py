"""Find a method's learning rate without a Retrain: :func:`tune` (docs/your-model.md,
"Settings without a Retrain").

The benchmark picks each method's learning rate by the smallest Avg. Gap to a Retrain
(the authors' protocol); a user unlearning their own model has no Retrain — it is what
they are avoiding. :func:`tune` runs the method at every value of a log-spaced grid and
picks by a target that needs none:

- **class-wise forgetting** (no label of the forget set occurs in the retain set): the
  forget set's accuracy must reach chance (100/K %) or below — a Retrain never saw the
  class; among the values that do, the one that loses the least retain + test accuracy
  (RA + TA, the largest sum). If none does, the one with the lowest forget accuracy, and
  the reason says so.
- **random forgetting**: a Retrain treats the forget set like data it never saw. Unseen
  data is at hand: the test set. It is split in two halves (seeded); the original model's
  error and the membership attack's non-member rate on half B are the levels the forget
  set's UA and MIA should reach; RA and TA should stay the original's. These four numbers
  form a proxy Retrain, and the pick is the smallest Avg. Gap to it (the attack is fitted on
  the retain set against half A, and TA measured on half A, for every candidate and for the
  proxy alike).
- **with a Retrain** (``retrain=`` a model or its metrics dict): the smallest Avg. Gap to it,
  as the benchmark does.

The result's ``table`` lists every value tried with its metrics and score, and ``reason``
says why the pick won. Golatkar et al. (CVPR 2020) and Kurmanji et al. (SCRUB, NeurIPS
2023) use held-out data the same way as a Retrain's stand-in when judging forgetting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from salun.errors import SalunError

METRICS = ("UA", "RA", "TA", "MIA")


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        method: the method tuned.
        field: the setting searched (``lr``; IU searches ``alpha``).
        value: the chosen value.
        scenario: ``"random"`` or ``"class"``.
        target: ``"retrain"``, ``"held-out"`` (random forgetting's proxy) or ``"chance"``
            (class-wise).
        reference: the metrics aimed at (the Retrain's or the proxy's; class-wise: the
            original's RA and TA and the chance level).
        table: one dict per value tried: the value, UA/RA/TA/MIA, ``score`` (lower is
            better), ``eligible`` (class-wise: forget accuracy at chance or below),
            ``seconds``.
        reason: why the chosen value won, in a sentence.
        best: the :class:`~salun.api.UnlearnResult` of the chosen value.
    """

    method: str
    field: str
    value: float
    scenario: str
    target: str
    reference: dict[str, float]
    table: list[dict[str, Any]]
    reason: str
    best: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        """The table as Markdown, the chosen row marked."""
        head = f"| {self.field} | UA | RA | TA | MIA | score | chance ok | s |"
        rows = [head, "|" + " --- |" * 8]
        for row in self.table:
            mark = " **(pick)**" if row[self.field] == self.value else ""
            ok = {True: "yes", False: "no", None: "—"}[row.get("eligible")]
            rows.append(
                f"| {row[self.field]:g}{mark} | "
                + " | ".join(f"{row[k]:.2f}" for k in METRICS)
                + f" | {row['score']:.2f} | {ok} | {row['seconds']:.1f} |"
            )
        return "\n".join(rows) + f"\n\n{self.reason}\n"


def default_grid(method: str) -> tuple[str, tuple[float, ...]]:
    """``(field, values)``: the method's own search grid (``lr_grid``, as the benchmark),
    or five log-spaced values from its default / 10 to its default × 10."""
    from salun.methods import get_method

    cfg = get_method(method).config()
    name = getattr(type(cfg), "grid_field", "lr")
    grid = tuple(getattr(cfg, f"{name}_grid", ()) or ())
    if grid:
        return name, grid
    default = getattr(cfg, name, None)
    if not isinstance(default, float) or default <= 0:
        raise SalunError(f"{method} has no {name} to tune; pass grid= yourself")
    return name, tuple(float(v) for v in np.geomspace(default / 10, default * 10, 5))


def detect_scenario(forget_labels: torch.Tensor, retain_labels: torch.Tensor) -> str:
    """``"class"`` when no label of the forget set occurs in the retain set, else ``"random"``."""
    shared = np.intersect1d(forget_labels.numpy(), retain_labels.numpy())
    return "random" if len(shared) else "class"


def tune(
    model,
    forget: Any,
    retain: Any,
    test: Any,
    method: str = "salun",
    *,
    grid: tuple[float, ...] | list[float] | None = None,
    scenario: str | None = None,
    retrain: Any = None,
    normalize=None,
    num_classes: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    quiet: bool = False,
    **settings: Any,
) -> TuneResult:
    """Run ``method`` at every value of a log-spaced grid and pick one without a Retrain
    (module docstring; docs/your-model.md).

    Args:
        model, forget, retain: as :func:`salun.unlearn` (in memory: sets are read once).
        test: held-out data the model never trained on (random forgetting's stand-in for
            a Retrain; the forgotten classes are left out of it in class-wise forgetting).
        method: the method to tune.
        grid: the values to try (default: :func:`default_grid`).
        scenario: ``"random"`` or ``"class"`` (default: class when no forget label occurs
            in the retain set).
        retrain: a Retrain model or its metrics dict: tune against it (smallest Avg. Gap).
        seed: the method's seed, the MIA's subsample and the test halves.
        **settings: the method's other settings (e.g. ``epochs=5``).

    Returns:
        A :class:`TuneResult`; ``.best.model`` is the unlearned model of the pick.

    Example:
        >>> res = salun.tune(model, forget, retain, test, "salun", epochs=5)
        >>> print(res.markdown()); model = res.best.model
    """
    from salun.api import _prepare, evaluate, unlearn

    name, values = _grid(method, grid)
    if name in settings:
        raise SalunError(f"{name} is what tune searches: pass grid=[...] instead of {name}=")
    if scenario not in (None, "random", "class"):
        raise SalunError(f"scenario must be 'random' or 'class', got {scenario!r}")
    if test is None:
        raise SalunError("tune needs test=: held-out data is what it measures forgetting by")
    f, r, t = _prepare({"forget": forget, "retain": retain, "test": test}, False, None)
    scenario = scenario or detect_scenario(f.labels, r.labels)
    t = _held_out(t, f, scenario)
    kw = {"normalize": normalize, "device": device, "seed": seed}
    if scenario == "random" and retrain is None:  # the model must know D_f better than t
        from salun.guards import check_forget_was_trained
        from salun.models.adapter import adapt_model
        from salun.utils import clone_model, model_device

        work = adapt_model(clone_model(model), normalize)
        check_forget_was_trained(work, f, t, model_device(work))
    ref, t_eval, target = _reference(model, f, r, t, scenario, retrain, kw)
    rows: list[dict[str, Any]] = []
    best, chosen = None, None
    for v in values:
        res = unlearn(
            model, f, r, method, normalize=normalize, num_classes=num_classes, device=device,
            quiet=quiet, **{**settings, name: v, "seed": settings.get("seed", seed)},
        )  # fmt: skip
        m = evaluate(res.model, f, r, t_eval, **kw)
        rows.append({name: float(v), **{k: float(m[k]) for k in METRICS}, "seconds": res.seconds})
        chosen = pick(rows, ref, target, res.num_classes, field=name)  # the rule, as published
        if chosen.index == len(rows) - 1:
            best = res  # only the pick's model is kept
    if chosen is None or chosen.index is None:
        raise SalunError(f"no value of {name} gave finite metrics: {list(values)}")
    return TuneResult(
        method, name, chosen.value, scenario, target, ref, chosen.rows, chosen.reason, best
    )


@dataclass
class Pick:
    """What :func:`pick` chose.

    Attributes:
        index: the chosen row's position in the rows given (None: no row had finite metrics).
        value: its value of the searched field.
        rows: the rows given, each with ``score`` (lower is better), ``eligible`` (class-wise:
            forget accuracy at chance or below; else None) and, class-wise, ``chance``.
        reason: why it won, in a sentence.
    """

    index: int | None
    value: float | None
    rows: list[dict[str, Any]]
    reason: str


def pick(
    rows: Sequence[Mapping[str, Any]],
    reference: Mapping[str, float],
    target: str,
    num_classes: int,
    *,
    field: str = "lr",
) -> Pick:
    """:func:`tune`'s selection rule as a function of the measured metrics alone.

    Args:
        rows: one mapping per value tried, in grid order (ties go to the first): the value
            under ``field`` and ``UA``, ``RA``, ``TA``, ``MIA`` in %. A row with a missing or
            non-finite metric (a failed run) is never picked.
        reference: what :func:`reference` gives: the Retrain's or the held-out proxy's
            UA/RA/TA/MIA, or (class-wise, ``target="chance"``) the original's RA and TA.
        target: ``"retrain"`` / ``"held-out"`` (the smallest Avg. Gap to ``reference``) or
            ``"chance"`` (class-wise: forget accuracy at 100/K % or below, then the least
            RA + TA lost).
        num_classes: K, for the chance level.
        field: the searched setting's key in ``rows``.

    Example:
        >>> p = pick([{"lr": 1e-3, "UA": 2, "RA": 99, "TA": 90, "MIA": 5}], ref, "held-out", 10)
        >>> p.value, p.reason
    """
    if target not in ("retrain", "held-out", "chance"):
        raise SalunError(f"target must be 'retrain', 'held-out' or 'chance', got {target!r}")
    scored, best = [], None
    for i, raw in enumerate(rows):
        row = dict(raw)
        if not all(_finite(row.get(k)) for k in METRICS):
            row.update(score=math.nan, eligible=None if target != "chance" else False)
            scored.append(row)
            continue
        row.update(_score(row, reference, target, num_classes))
        scored.append(row)
        if best is None or _better(row, scored[best]):
            best = i
    if best is None:
        return Pick(None, None, scored, f"no value of {field} gave finite metrics")
    candidates = [r for r in scored if math.isfinite(r["score"])]
    row = scored[best]
    return Pick(best, float(row[field]), scored, _reason(row, candidates, target, field))


def reference(
    model,
    forget: Any,
    retain: Any,
    test: Any,
    scenario: str,
    *,
    retrain: Any = None,
    seed: int = 0,
    normalize=None,
    device: str = "cpu",
) -> tuple[dict[str, float], str]:
    """``(reference metrics, target)`` that :func:`tune` scores candidates against, for
    :func:`pick`: measured on ``model`` (the original) and the sets as :func:`tune` does
    (class-wise, the test set's forgotten classes are left out; random forgetting, the
    held-out proxy from the test set's halves drawn by ``seed``)."""
    from salun.api import _prepare

    if scenario not in ("random", "class"):
        raise SalunError(f"scenario must be 'random' or 'class', got {scenario!r}")
    f, r, t = _prepare({"forget": forget, "retain": retain, "test": test}, False, None)
    t = _held_out(t, f, scenario)
    kw = {"normalize": normalize, "device": device, "seed": seed}
    ref, _, target = _reference(model, f, r, t, scenario, retrain, kw)
    return ref, target


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _held_out(t, f, scenario: str):
    """The test set candidates are measured on: class-wise, without the forgotten classes
    (TA and the attack's non-members: the remaining classes only)."""
    if scenario == "class":
        t = t.subset(np.flatnonzero(~np.isin(t.labels.numpy(), f.labels.unique().numpy())))
    if len(t) < 2:
        raise SalunError("the test set holds fewer than 2 examples of the retained classes")
    return t


def _grid(method: str, grid) -> tuple[str, tuple[float, ...]]:
    name, values = default_grid(method)
    if grid is None:
        return name, values
    values = tuple(grid)
    if not values:
        raise SalunError("grid is empty: give at least one value to try")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SalunError(f"grid values must be positive numbers, got {v!r}")
    if len(set(values)) != len(values):
        raise SalunError(f"grid repeats a value: {list(values)}")
    return name, tuple(float(v) for v in values)


def _reference(model, f, r, t, scenario, retrain, kw):
    """``(reference metrics, the test set candidates are evaluated on, target)``."""
    from salun.api import evaluate

    if retrain is not None:
        if isinstance(retrain, torch.nn.Module):
            got = evaluate(retrain, f, r, t, **kw)
        elif isinstance(retrain, dict):
            got = retrain
        else:
            raise SalunError(f"retrain must be a model or its metrics dict, got {type(retrain)}")
        missing = [k for k in METRICS if k not in got]
        if missing:
            raise SalunError(f"the retrain metrics lack {', '.join(missing)}")
        return {k: float(got[k]) for k in METRICS}, t, "retrain"
    orig = evaluate(model, f, r, t, **kw)
    if scenario == "class":
        ref = {"RA": float(orig["RA"]), "TA": float(orig["TA"])}
        return ref, t, "chance"
    if len(t) < 4:
        raise SalunError("random forgetting's target needs a test set of 4 examples or more")
    order = np.random.default_rng(kw["seed"]).permutation(len(t))
    half_a, half_b = (
        t.subset(np.sort(order[: len(t) // 2])),
        t.subset(np.sort(order[len(t) // 2 :])),
    )
    unseen = evaluate(model, half_b, r, half_a, **kw)  # half B in the forget set's place
    on_a = evaluate(model, f, r, half_a, **kw)
    ref = {"UA": float(unseen["UA"]), "RA": float(on_a["RA"]), "TA": float(on_a["TA"]),
           "MIA": float(unseen["MIA"])}  # fmt: skip
    return ref, half_a, "held-out"


def _score(row: dict, ref: dict, target: str, k: int) -> dict[str, Any]:
    if target in ("retrain", "held-out"):  # the Avg. Gap to the (proxy) Retrain
        return {"score": sum(abs(row[m] - ref[m]) for m in METRICS) / 4, "eligible": None}
    lost = (ref["RA"] - row["RA"]) + (ref["TA"] - row["TA"])  # class-wise: RA + TA lost
    return {"score": lost, "eligible": 100.0 - row["UA"] <= 100.0 / k, "chance": 100.0 / k}


def _better(row: dict, best: dict) -> bool:
    """Class-wise: an eligible row beats an ineligible one; two ineligible ones compare by
    forget accuracy (lower UA is worse); otherwise the lower score. Ties: the first."""
    if row["eligible"] is not None and row["eligible"] != best["eligible"]:
        return bool(row["eligible"])
    if row["eligible"] is False:
        return row["UA"] > best["UA"]
    return row["score"] < best["score"]


def _reason(row: dict, rows: list[dict], target: str, name: str) -> str:
    v = f"{name} {row[name]:g}"
    if target == "retrain":
        return (
            f"{v}: the smallest Avg. Gap to the Retrain ({row['score']:.2f}) of {len(rows)} values"
        )
    if target == "held-out":
        return (
            f"{v}: the smallest Avg. Gap ({row['score']:.2f}) of {len(rows)} values to a held-out "
            "proxy of a Retrain (forget UA and MIA at the test data's level, RA and TA at the "
            "original's)"
        )
    n_ok = sum(bool(x["eligible"]) for x in rows)
    if row["eligible"]:
        return (
            f"{v}: of the {n_ok} of {len(rows)} values that bring the forget accuracy to chance "
            f"({row['chance']:.1f} %) or below, the one losing the least RA + TA "
            f"({row['score']:.2f} points)"
        )
    return (
        f"{v}: no value brought the forget accuracy to chance ({row['chance']:.1f} %); this "
        f"one came closest (forget accuracy {100 - row['UA']:.1f} %): widen the grid or train "
        "longer (epochs=)"
    )


__all__ = ["Pick", "TuneResult", "default_grid", "detect_scenario", "pick", "reference", "tune"]
