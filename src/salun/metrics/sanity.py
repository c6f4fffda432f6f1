"""Sanity guard: plain-language warnings when an unlearned model looks broken.

A method can win on Avg. Gap while wrecking the model (GA at a high learning rate) or can
forget far more than Retrain would. These checks flag such results in reports; they never
change a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def _value(metrics: Mapping[str, float] | None, name: str) -> float | None:
    if metrics is None or name not in metrics:
        return None
    v = float(metrics[name])
    return None if math.isnan(v) else v


def sanity_warnings(
    metrics: Mapping[str, float],
    original: Mapping[str, float] | None = None,
    retrain: Mapping[str, float] | None = None,
    scenario: str | None = None,
    *,
    max_drop: float = 10.0,
    max_over_forget: float = 10.0,
) -> list[str]:
    """Warnings about one unlearned model's metrics (all in %).

    Args:
        metrics: the model's UA, RA, TA (as :func:`evaluate_unlearning` returns them).
        original: the original model's metrics; RA or TA more than ``max_drop`` points
            below them is a warning (the model was damaged, not unlearned).
        retrain: Retrain's metrics on the same split.
        scenario: ``"random"`` or ``"class"``. In random forgetting, UA more than
            ``max_over_forget`` points above Retrain's is over-forgetting (Retrain still
            generalises to D_f); in class-wise forgetting Retrain's UA is ~100, so no check.
        max_drop, max_over_forget: thresholds in points (default 10).

    Returns:
        One message per problem; an empty list when nothing looks wrong. Missing or NaN
        values skip their check.

    Example:
        >>> sanity_warnings({"RA": 60.0}, original={"RA": 99.0})
        ['RA 60.00 is 39.00 points below the original model (99.00)']
    """
    out: list[str] = []
    for name in ("RA", "TA"):
        now, before = _value(metrics, name), _value(original, name)
        if now is not None and before is not None and before - now > max_drop:
            out.append(
                f"{name} {now:.2f} is {before - now:.2f} points below the original model "
                f"({before:.2f})"
            )
    ua, ua_retrain = _value(metrics, "UA"), _value(retrain, "UA")
    if scenario == "random" and ua is not None and ua_retrain is not None:
        if ua - ua_retrain > max_over_forget:
            out.append(
                f"over-forgetting: UA {ua:.2f} exceeds Retrain's {ua_retrain:.2f} by "
                f"{ua - ua_retrain:.2f} points in random forgetting"
            )
    return out
