"""Evaluate a (possibly unlearned) DDPM: generate per class, then score with a classifier.

Samples are generated once with a fixed seed, so every model of a comparison (Original,
Retrain, SalUn, baselines) is scored on the same initial noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.generation.ddpm.diffusion import NoiseSchedule
from salun.generation.ddpm.metrics import (
    HIGHER_IS_BETTER,
    accuracy,
    classify,
    frechet_distance,
    inception_fid,
    reference_images,
    unlearning_accuracy,
)
from salun.generation.ddpm.model import Denoiser
from salun.generation.ddpm.sampler import SamplerConfig, sample
from salun.validate import check_fields


@dataclass(frozen=True)
class GenEvalConfig:
    """How many samples to score.

    Attributes:
        n_forget: samples of the forgotten class for UA (paper: 500).
        n_per_class: samples per retained class for accuracy and FD (paper: 5 000 for FID).
        n_ref_per_class: real training images per retained class as the FD reference
            (reference code: the first 500).
        inception: also compute Inception FID when its offline weights are installed.
    """

    n_forget: int = 500
    n_per_class: int = 100
    n_ref_per_class: int = 500
    inception: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        if self.n_forget < 1 or self.n_per_class < 2 or self.n_ref_per_class < 2:
            raise SalunError("n_forget must be >= 1 and n_per_class, n_ref_per_class >= 2")


def generate_eval_set(
    model: Denoiser,
    forget_class: int,
    cfg: GenEvalConfig,
    sampler: SamplerConfig,
    *,
    schedule: NoiseSchedule | None = None,
    device: torch.device | str = "cpu",
    quiet: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 images, labels)``: ``n_forget`` of the forget class, then ``n_per_class`` of
    each other class."""
    if not 0 <= forget_class < model.num_classes:
        raise SalunError(f"forget class {forget_class} is out of range 0..{model.num_classes - 1}")
    labels = [forget_class] * cfg.n_forget
    for c in range(model.num_classes):
        if c != forget_class:
            labels += [c] * cfg.n_per_class
    labels_t = torch.tensor(labels, dtype=torch.long)
    images = sample(model.to(device), labels_t, sampler, schedule=schedule, quiet=quiet)
    return images, labels_t


def score_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    forget_class: int,
    classifier: nn.Module,
    reference: ImageDataset,
    cfg: GenEvalConfig,
    *,
    device: torch.device | str = "cpu",
    trust_code: bool = False,
) -> dict[str, Any]:
    """UA, retained accuracy, feature FD (and Inception FID, whose TorchScript network
    needs ``trust_code``) of generated samples."""
    probs, feats = classify(classifier, images, device=device)
    is_f = labels == forget_class
    if not bool(is_f.any()) or bool(is_f.all()):
        raise SalunError("the samples need both forget-class and retained-class images")
    out: dict[str, Any] = unlearning_accuracy(probs[is_f], forget_class)
    out["retain_acc"] = accuracy(probs[~is_f], labels[~is_f])
    out["retain_acc_per_class"] = {
        int(c): accuracy(probs[labels == c], labels[labels == c])
        for c in labels.unique().tolist()
        if c != forget_class
    }
    retained = [c for c in range(probs.shape[1]) if c != forget_class]
    ref = reference_images(reference, retained, cfg.n_ref_per_class)
    _, ref_feats = classify(classifier, ref, device=device)
    out["feature_fd"] = frechet_distance(feats[~is_f], ref_feats)
    if cfg.inception:
        out["inception_fid"], out["inception_fid_note"] = inception_fid(
            images[~is_f], ref, device, trust_code=trust_code
        )
    return out


def evaluate_generator(
    model: Denoiser,
    classifier: nn.Module,
    forget_class: int,
    reference: ImageDataset,
    cfg: GenEvalConfig,
    sampler: SamplerConfig,
    *,
    device: torch.device | str = "cpu",
    quiet: bool = False,
) -> dict[str, Any]:
    """Generate the evaluation set and score it; the record includes the settings used."""
    images, labels = generate_eval_set(
        model, forget_class, cfg, sampler, device=device, quiet=quiet
    )
    metrics = score_samples(images, labels, forget_class, classifier, reference, cfg, device=device)
    return {
        "forget_class": forget_class,
        "metrics": metrics,
        "higher_is_better": {k: v for k, v in HIGHER_IS_BETTER.items() if k in metrics},
        "eval": asdict(cfg),
        "sampler": asdict(sampler),
    }
