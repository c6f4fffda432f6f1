"""Evaluation: accuracies, MIA-efficacy, gap to Retrain. Plain functions first."""

from salun.metrics.accuracy import accuracy, predict_logits
from salun.metrics.base import GAP_METRICS, METRICS, MetricInfo
from salun.metrics.evaluate import evaluate_unlearning
from salun.metrics.gap import avg_gap, gaps
from salun.metrics.mia import (
    FEATURES,
    BlindAttackWarning,
    ShadowSets,
    balanced_shadow_sets,
    mia_efficacy,
    mia_features,
    svc_attack,
    svc_mia_efficacy,
)

__all__ = [
    "FEATURES",
    "BlindAttackWarning",
    "ShadowSets",
    "balanced_shadow_sets",
    "svc_attack",
    "GAP_METRICS",
    "METRICS",
    "MetricInfo",
    "accuracy",
    "avg_gap",
    "evaluate_unlearning",
    "gaps",
    "mia_efficacy",
    "mia_features",
    "predict_logits",
    "svc_mia_efficacy",
]
