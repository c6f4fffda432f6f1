"""Class-forgetting accuracy with a user-supplied classifier (docs/generation.md).

The reference classifies generated Imagenette images with torchvision's ImageNet ResNet-50
and reads the top-1 prediction; UA = 1 − accuracy on the forgotten class's prompts. salun
does not bundle or download a classifier: pass a TorchScript file, a ``torch.export``
program (``.pt2``) or ``module:function`` returning a model that maps float (B, 3, S, S)
images (normalised with ``mean``/``std``) to logits. With 1 000 ImageNet outputs,
``class_to_output`` maps Imagenette classes to ImageNet indices (package data); a 10-way
Imagenette classifier needs no map.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from salun.errors import SalunError
from salun.generation.sd.prompts import imagenette_classes
from salun.trust import load_torchscript, require_trust

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_CLASSIFIER = (
    "class-forgetting accuracy needs a classifier: pass --classifier with a TorchScript file "
    "(e.g. torch.jit.script(torchvision.models.resnet50(weights='DEFAULT')).save('r50.pt'), "
    "made on a machine with torchvision) or module:function returning an nn.Module"
)


def load_classifier(spec: str | None, *, trust_code: bool = False) -> Any:
    """A classifier from a TorchScript / ``torch.export`` file (only with ``trust_code``:
    both are pickle-based and can run code) or a ``module:function`` factory."""
    if not spec:
        raise SalunError(NO_CLASSIFIER)
    p = Path(spec).expanduser()
    if p.is_file():
        require_trust(p, trust_code, "classifier")
    if p.is_file() and p.suffix == ".pt2":
        try:
            return torch.export.load(str(p)).module()
        except (RuntimeError, ValueError) as e:
            raise SalunError(f"{p} is not a torch.export classifier: {e}") from None
    if p.is_file():
        try:
            return load_torchscript(p, trust_code=trust_code)
        except (RuntimeError, ValueError) as e:
            raise SalunError(f"{p} is not a TorchScript classifier: {e}") from None
    if ":" in spec:
        mod, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise SalunError(f"cannot import classifier factory {spec!r}: {e}") from None
        return factory().eval()
    raise SalunError(f"classifier {spec!r} is neither a file nor module:function. {NO_CLASSIFIER}")


def imagenet_map() -> list[int]:
    """ImageNet-1k output index of each Imagenette class (0–9)."""
    return [c.imagenet_index for c in imagenette_classes()]


@torch.no_grad()
def predict_classes(
    classifier: Any,
    images: torch.Tensor,
    *,
    class_to_output: Sequence[int] | None = None,
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Top-1 class per uint8 image (N, 3, H, W); −1 when the top-1 output is none of the
    mapped classes (e.g. an ImageNet class outside Imagenette)."""
    if classifier is None:
        raise SalunError(NO_CLASSIFIER)
    classifier = classifier.to(device)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    preds = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(device).float() / 255.0
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True)
        top = classifier((x - m) / s).argmax(dim=1).cpu()
        if class_to_output is not None:
            lookup = {o: c for c, o in enumerate(class_to_output)}
            top = torch.tensor([lookup.get(int(o), -1) for o in top])
        preds.append(top)
    return torch.cat(preds)


def class_forgetting_accuracy(
    preds: torch.Tensor, labels: Sequence[int], forget_class: int | None = None
) -> dict[str, Any]:
    """Per-class top-1 accuracy; with ``forget_class`` also UA (= 1 − its accuracy) and the
    mean accuracy over the remaining classes."""
    labels_t = torch.as_tensor(list(labels))
    if len(labels_t) != len(preds):
        raise SalunError(f"{len(preds)} predictions but {len(labels_t)} labels")
    per_class = {
        int(c): float((preds[labels_t == c] == c).float().mean()) for c in labels_t.unique()
    }
    out: dict[str, Any] = {"accuracy_per_class": per_class, "n_images": len(preds)}
    if forget_class is not None:
        if forget_class not in per_class:
            raise SalunError(
                f"no generated image is labelled with the forgotten class {forget_class}"
            )
        out["forget_class"] = forget_class
        out["UA"] = 1.0 - per_class[forget_class]
        rest = [a for c, a in per_class.items() if c != forget_class]
        out["remaining_accuracy"] = sum(rest) / len(rest) if rest else None
    return out
