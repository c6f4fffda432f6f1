"""Model registry: resnet18 (CIFAR stem), vgg16_bn, cnn, mlp — all normalise inside."""

from salun.models.common import Classifier, Normalize
from salun.models.registry import build_from_kwargs, build_model, list_archs, model_kwargs_for

__all__ = [
    "Classifier",
    "Normalize",
    "build_from_kwargs",
    "build_model",
    "list_archs",
    "model_kwargs_for",
]
