"""Metric declarations: every metric says which direction is better.

Avg. Gap, rankings and plots read ``higher_is_better`` instead of special-casing names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    name: str
    description: str
    higher_is_better: bool | None  # None: neither; closeness to Retrain is what counts
    unit: str = "%"


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in [
        MetricInfo("UA", "unlearning accuracy: 100 − accuracy on the forget set D_f", None),
        MetricInfo("RA", "remaining accuracy: accuracy on the retain set D_r", True),
        MetricInfo("TA", "testing accuracy (forgotten classes removed for class-wise)", True),
        MetricInfo(
            "MIA",
            "MIA-efficacy: % of D_f that an SVC on the confidence feature calls non-member",
            None,
        ),
        MetricInfo("MIA_correctness", "MIA-efficacy with the correctness feature", None),
        MetricInfo("MIA_entropy", "MIA-efficacy with the entropy feature", None),
        MetricInfo("MIA_m_entropy", "MIA-efficacy with Song & Mittal's modified entropy", None),
        MetricInfo("MIA_prob", "MIA-efficacy with the full probability vector", None),
        MetricInfo(
            "RTE", "run-time efficiency: wall-clock seconds of the unlearning run", False, "s"
        ),
        MetricInfo("avg_gap", "mean |metric − Retrain| over UA, RA, TA, MIA", False, "pts"),
    ]
}

GAP_METRICS = ("UA", "RA", "TA", "MIA")
